use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::commands::PromoCommand;
use super::error::PromoError;
use super::events::PromoEvent;
use super::values::PromoCodeValue;
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

    /// Take back into memory redemptions found in the event store by their keys (see
    /// [`PromoCommand::related_keys`]) that the state lacks, so a second redemption by the
    /// same user is refused as such. The count is untouched: it is the count of events.
    pub fn recall(&mut self, events: impl IntoIterator<Item = PromoEvent>) {
        for event in events {
            if let PromoEvent::PromoCodeRedeemed { user, .. } = event {
                self.redeemers.insert(user);
            }
        }
    }

    /// Decide what a command does to this code. Pure: the caller writes the events. An
    /// empty list means the command asked for what already holds.
    ///
    /// A redemption's refusals are checked in this order: unknown, already redeemed by this
    /// user (so a retry learns its first redemption succeeded, whatever happened since),
    /// disabled, not yet valid, expired, exhausted.
    pub fn decide(&self, command: PromoCommand) -> Result<Vec<PromoEvent>, PromoError> {
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

    /// Apply an event. Only assigns: every check happened in [`Self::decide`].
    pub fn evolve(&mut self, event: PromoEvent) {
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

impl Aggregate for PromoCode {
    /// Stored in every event row and subject: fixed forever.
    const TYPE: &'static str = "PromoCode";
    type Command = PromoCommand;
    type Event = PromoEvent;
    type Error = PromoError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PromoCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PromoError> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: PromoEvent) {
        self.evolve(event);
    }
}
