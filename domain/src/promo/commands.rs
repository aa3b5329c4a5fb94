use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::PromoCodeValue;
use crate::ids::UserId;
use crate::money::Credits;

/// What may be asked of a promo code. Every time a rule needs arrives as `now`, read by the
/// caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PromoCommand {
    /// An admin creates the code. `code` must be the aggregate's id.
    CreatePromoCode {
        code: PromoCodeValue,
        /// What each redemption gives: more than zero.
        credits: Credits,
        /// How many users may redeem it in all: 1 to [`super::REDEMPTIONS_MAX`].
        max_redemptions: u32,
        /// First moment it may be redeemed; `None` for at once.
        valid_from: Option<DateTime<Utc>>,
        /// First moment it may no longer be redeemed; `None` for never. Later than
        /// `valid_from` and than `now`.
        valid_until: Option<DateTime<Utc>>,
        /// `false` creates it disabled.
        active: bool,
        created_by: String,
        now: DateTime<Utc>,
    },
    /// Stop redemptions until it is enabled again. Disabling a disabled code changes
    /// nothing.
    DisablePromoCode { by: String, now: DateTime<Utc> },
    /// Allow redemptions again. Enabling an active code changes nothing.
    EnablePromoCode { by: String, now: DateTime<Utc> },
    /// A user redeems the code: at most once per user, ever.
    RedeemPromoCode { user: UserId, now: DateTime<Utc> },
}

impl PromoCommand {
    /// The key under which this command's event is unique within the code, if it has one
    /// (see `PromoEvent::idempotency_key`).
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Self::RedeemPromoCode { user, .. } => Some(format!("redeem:{user}")),
            _ => None,
        }
    }

    /// Keys whose events decide a repeat of this command when the state has lost them.
    pub fn related_keys(&self) -> Vec<String> {
        self.idempotency_key().into_iter().collect()
    }
}
