//! Promo codes: the `PromoCode` aggregate's entry point, and the redemption that credits the
//! redeemer.
//!
//! # Redemption → credits
//!
//! 1. `RedeemPromoCode { user }` on the code: the limits are decided here, one command at a
//!    time per code, so racing users get exactly the redemptions left.
//! 2. `ApplyPromoCredits { code }` on the user's account: the ledger entry whose cause is
//!    the code, at most once per account and code.
//!
//! A crash between the two leaves a redemption without credits; the user's retry finds the
//! code redeemed ([`PromoError::AlreadyRedeemed`] carries the credits) and applies them, and
//! only a retry that finds the credits applied too is answered "already redeemed".

use chrono::{DateTime, Utc};
use hub_domain::{
    AccountId, CreditCommand, CreditError, CreditEvent, Credits, PromoCode, PromoCodeValue,
    PromoCommand, PromoError, PromoEvent, UserId,
};
use std::collections::HashMap;

use crate::bus::{CommandBus, Committed};
use crate::credit::CreditAccounts;
use crate::error::{CommandError, StoreError};

pub type PromoResult = Result<Committed<PromoEvent>, CommandError<PromoError>>;

/// Why a redemption did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The code refused it (unknown, disabled, expired, exhausted, already redeemed, ...),
    /// or its store failed.
    #[error(transparent)]
    Promo(#[from] CommandError<PromoError>),
    /// The user's credit account refused or failed.
    #[error("could not apply the promo credits: {0}")]
    Credits(#[source] CommandError<CreditError>),
}

/// A completed redemption.
#[derive(Debug, Clone)]
pub struct Redemption {
    pub code: PromoCodeValue,
    pub credits: Credits,
    /// The code's redemptions after this one (`None` when this call completed an earlier
    /// attempt, whose count is in its own event).
    pub redemptions_after: Option<u32>,
    /// The account's balance right after the credits, from its event.
    pub balance_after: Credits,
    /// The account's sequence after the credits (for read-your-writes).
    pub account_version: usize,
    /// This call completed a redemption an earlier attempt recorded but never credited.
    pub completed_earlier_attempt: bool,
}

/// Commands for promo codes, one aggregate per normalised code.
pub struct Promos {
    bus: CommandBus<PromoCode>,
}

impl Promos {
    pub fn new(bus: CommandBus<PromoCode>) -> Self {
        Promos { bus }
    }

    /// Run a command; `actor` goes into each event's metadata.
    pub async fn execute(
        &self,
        code: &PromoCodeValue,
        command: PromoCommand,
        actor: &str,
    ) -> PromoResult {
        let metadata = HashMap::from([("actor".to_string(), actor.to_string())]);
        self.bus.execute(code.as_str(), command, &metadata).await
    }

    /// The code as the event store has it now.
    pub async fn load(&self, code: &PromoCodeValue) -> Result<PromoCode, StoreError> {
        Ok(self.bus.store().load(code.as_str()).await?.aggregate)
    }

    /// Redeem `code` for `user` and credit the user (see the module's documentation).
    pub async fn redeem(
        &self,
        credits: &CreditAccounts,
        code: &PromoCodeValue,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Redemption, RedeemError> {
        let actor = format!("user:{user}");
        let (amount, redemptions_after) = match self
            .execute(code, PromoCommand::RedeemPromoCode { user, now }, &actor)
            .await
        {
            Ok(committed) => match committed.decisive {
                Some(PromoEvent::PromoCodeRedeemed {
                    credits,
                    redemptions_after,
                    ..
                }) => (credits, Some(redemptions_after)),
                other => {
                    return Err(RedeemError::Promo(CommandError::Internal(
                        format!("a redemption wrote {other:?}").into(),
                    )))
                }
            },
            Err(CommandError::Rejected(PromoError::AlreadyRedeemed { credits: amount })) => {
                // Redeemed before: complete the credit step if that attempt never did.
                let applied = apply(credits, code, user, amount).await?;
                if applied.replayed {
                    return Err(RedeemError::Promo(CommandError::Rejected(
                        PromoError::AlreadyRedeemed { credits: amount },
                    )));
                }
                return redemption(code, amount, None, applied, true);
            }
            Err(other) => return Err(other.into()),
        };
        let applied = apply(credits, code, user, amount).await?;
        redemption(code, amount, redemptions_after, applied, false)
    }
}

/// `ApplyPromoCredits` on the user's account (opened first if it never was).
async fn apply(
    credits: &CreditAccounts,
    code: &PromoCodeValue,
    user: UserId,
    amount: Credits,
) -> Result<Committed<CreditEvent>, RedeemError> {
    let key = code
        .credit_key()
        .map_err(|e| RedeemError::Credits(CommandError::Internal(Box::new(e))))?;
    credits
        .credit(
            AccountId::from(user),
            CreditCommand::ApplyPromoCredits { code: key, amount },
            &format!("user:{user}"),
        )
        .await
        .map_err(RedeemError::Credits)
}

fn redemption(
    code: &PromoCodeValue,
    credits: Credits,
    redemptions_after: Option<u32>,
    applied: Committed<CreditEvent>,
    completed_earlier_attempt: bool,
) -> Result<Redemption, RedeemError> {
    let Some(CreditEvent::PromoCreditsApplied { balance_after, .. }) = applied.decisive else {
        return Err(RedeemError::Credits(CommandError::Internal(
            format!("promo credits wrote {:?}", applied.decisive).into(),
        )));
    };
    Ok(Redemption {
        code: code.clone(),
        credits,
        redemptions_after,
        balance_after,
        account_version: applied.version,
        completed_earlier_attempt,
    })
}
