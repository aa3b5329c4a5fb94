use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::commands::PromoCommand;
use super::error::PromoError;
use super::events::PromoEvent;
use super::values::PromoCodeValue;
use crate::decider::{cqrs_aggregate, Decider, Decision};
use crate::ids::UserId;
use crate::money::Credits;
use crate::user::ACTOR_LEN_MAX;

/// Most redemptions one code may allow. The code keeps every redeemer (see [`PromoCode`]),
/// so this bounds its state: a redeemer is a UUID, about 40 bytes in memory with the
/// B-tree's overhead and 39 bytes in a JSON snapshot, so a code at this cap holds about
/// 40 MB in memory and in each snapshot. A campaign larger than that is split into codes.
pub const REDEMPTIONS_MAX: u32 = 1_000_000;

/// One promo code. Its aggregate id is the normalised code ([`PromoCodeValue`]). The state
/// is what the rules need and no more: who created it and when lives in the events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromoCode {
    /// Set at creation; `None` until then.
    code: Option<PromoCodeValue>,
    /// What each redemption gives.
    credits: Credits,
    max_redemptions: u32,
    /// Redemptions start at this moment, inclusive.
    valid_from: Option<DateTime<Utc>>,
    /// Redemptions stop at this moment, exclusive.
    valid_until: Option<DateTime<Utc>>,
    active: bool,
    /// Equal to `redeemers.len()`: the count every `PromoCodeRedeemed` reports.
    redemptions: u32,
    /// Every user who redeemed the code, so each redeems once. At most `max_redemptions`
    /// of them, so at most [`REDEMPTIONS_MAX`].
    redeemers: BTreeSet<UserId>,
}

impl PromoCode {
    pub fn is_created(&self) -> bool {
        self.code.is_some()
    }

    pub fn code(&self) -> Option<&PromoCodeValue> {
        self.code.as_ref()
    }

    pub fn credits(&self) -> Credits {
        self.credits
    }

    pub fn max_redemptions(&self) -> u32 {
        self.max_redemptions
    }

    pub fn valid_from(&self) -> Option<DateTime<Utc>> {
        self.valid_from
    }

    pub fn valid_until(&self) -> Option<DateTime<Utc>> {
        self.valid_until
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn redemptions(&self) -> u32 {
        self.redemptions
    }

    /// Redemptions still allowed.
    pub fn remaining(&self) -> u32 {
        self.max_redemptions.saturating_sub(self.redemptions)
    }

    pub fn has_redeemed(&self, user: UserId) -> bool {
        self.redeemers.contains(&user)
    }

    /// The events [`Decider::decide`] writes.
    fn decide_events(&self, command: PromoCommand) -> Result<Vec<PromoEvent>, PromoError> {
        match command {
            PromoCommand::CreatePromoCode {
                code,
                credits,
                max_redemptions,
                valid_from,
                valid_until,
                active,
                created_by,
                now,
            } => {
                if self.is_created() {
                    return Err(PromoError::AlreadyExists);
                }
                check_actor(&created_by)?;
                Credits::positive(credits.micros()).map_err(PromoError::InvalidCredits)?;
                if !(1..=REDEMPTIONS_MAX).contains(&max_redemptions) {
                    return Err(PromoError::MaxRedemptionsOutOfRange {
                        max: REDEMPTIONS_MAX,
                    });
                }
                if let Some(until) = valid_until {
                    if valid_from.is_some_and(|from| until <= from) {
                        return Err(PromoError::ValidityWindowEmpty);
                    }
                    if until <= now {
                        return Err(PromoError::ValidUntilNotInFuture);
                    }
                }
                Ok(vec![PromoEvent::PromoCodeCreated {
                    code,
                    credits,
                    max_redemptions,
                    valid_from,
                    valid_until,
                    active,
                    created_by,
                    created_at: now,
                }])
            }
            _ if !self.is_created() => Err(PromoError::Unknown),
            PromoCommand::DisablePromoCode { by, now } => {
                check_actor(&by)?;
                if !self.active {
                    return Ok(Vec::new());
                }
                Ok(vec![PromoEvent::PromoCodeDisabled {
                    disabled_by: by,
                    disabled_at: now,
                }])
            }
            PromoCommand::EnablePromoCode { by, now } => {
                check_actor(&by)?;
                if self.active {
                    return Ok(Vec::new());
                }
                Ok(vec![PromoEvent::PromoCodeEnabled {
                    enabled_by: by,
                    enabled_at: now,
                }])
            }
            PromoCommand::RedeemPromoCode { user, now } => self.redeem(user, now),
        }
    }

    fn redeem(&self, user: UserId, now: DateTime<Utc>) -> Result<Vec<PromoEvent>, PromoError> {
        if self.redeemers.contains(&user) {
            return Err(PromoError::AlreadyRedeemed {
                credits: self.credits,
            });
        }
        if !self.active {
            return Err(PromoError::Disabled);
        }
        if let Some(valid_from) = self.valid_from.filter(|from| now < *from) {
            return Err(PromoError::NotYetValid { valid_from });
        }
        if let Some(valid_until) = self.valid_until.filter(|until| now >= *until) {
            return Err(PromoError::Expired { valid_until });
        }
        if self.redemptions >= self.max_redemptions {
            return Err(PromoError::Exhausted {
                max_redemptions: self.max_redemptions,
            });
        }
        Ok(vec![PromoEvent::PromoCodeRedeemed {
            user,
            credits: self.credits,
            redemptions_after: self.redemptions + 1,
            redeemed_at: now,
        }])
    }
}

fn check_actor(actor: &str) -> Result<(), PromoError> {
    if actor.trim().is_empty() || actor.chars().count() > ACTOR_LEN_MAX {
        return Err(PromoError::ActorInvalid { max: ACTOR_LEN_MAX });
    }
    Ok(())
}

impl Decider for PromoCode {
    const TYPE: &'static str = "PromoCode";
    const STATE_VERSION: i32 = 1;
    type Command = PromoCommand;
    type Event = PromoEvent;
    type Error = PromoError;

    /// Decide what a command does to this code. Pure: the caller writes the events. Never a
    /// replay: no events means the command asked for what already holds.
    ///
    /// A redemption's refusals are checked in this order: unknown, already redeemed by this
    /// user (so a retry learns its first redemption succeeded, whatever happened since),
    /// disabled, not yet valid, expired, exhausted.
    fn decide(&self, command: PromoCommand) -> Result<Decision<PromoEvent>, PromoError> {
        self.decide_events(command).map(Decision::write)
    }

    /// Apply an event. Only assigns: every check happened in [`Decider::decide`].
    fn evolve(&mut self, event: PromoEvent) {
        match event {
            PromoEvent::PromoCodeCreated {
                code,
                credits,
                max_redemptions,
                valid_from,
                valid_until,
                active,
                ..
            } => {
                self.code = Some(code);
                self.credits = credits;
                self.max_redemptions = max_redemptions;
                self.valid_from = valid_from;
                self.valid_until = valid_until;
                self.active = active;
            }
            PromoEvent::PromoCodeDisabled { .. } => self.active = false,
            PromoEvent::PromoCodeEnabled { .. } => self.active = true,
            PromoEvent::PromoCodeRedeemed {
                user,
                redemptions_after,
                ..
            } => {
                self.redeemers.insert(user);
                self.redemptions = redemptions_after;
            }
        }
    }

    /// Take back into memory redemptions found in the event store by their keys (see
    /// [`PromoCommand::related_keys`]) that the state lacks, so a second redemption by the
    /// same user is refused as such. The count is untouched: it is the count of events.
    fn recall(&mut self, events: impl IntoIterator<Item = PromoEvent>) {
        for event in events {
            if let PromoEvent::PromoCodeRedeemed { user, .. } = event {
                self.redeemers.insert(user);
            }
        }
    }

    fn event_key(event: &PromoEvent) -> Option<String> {
        event.idempotency_key()
    }

    fn related_keys(command: &PromoCommand) -> Vec<String> {
        command.related_keys()
    }

    fn may_be_forgotten(_refusal: &PromoError) -> bool {
        // A code keeps every redeemer in its state: it forgets nothing.
        false
    }
}

cqrs_aggregate!(PromoCode);
