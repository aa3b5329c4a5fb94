use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::values::PromoCodeValue;
use crate::ids::UserId;
use crate::money::Credits;

/// What happened to a promo code. Stored forever: never rename a variant or a field; add a
/// new version and an upcaster instead.
///
/// A redemption carries the credits it gives and the count after it, so the promo read
/// model and the process manager that credits the user copy, never recompute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromoEvent {
    PromoCodeCreated {
        code: PromoCodeValue,
        credits: Credits,
        max_redemptions: u32,
        valid_from: Option<DateTime<Utc>>,
        valid_until: Option<DateTime<Utc>>,
        active: bool,
        created_by: String,
        created_at: DateTime<Utc>,
    },
    PromoCodeDisabled {
        disabled_by: String,
        disabled_at: DateTime<Utc>,
    },
    PromoCodeEnabled {
        enabled_by: String,
        enabled_at: DateTime<Utc>,
    },
    /// `user` redeemed the code for `credits`; the account is credited next, under the key
    /// `promo:<code>` (see the module's documentation).
    PromoCodeRedeemed {
        user: UserId,
        credits: Credits,
        /// Redemptions of the code so far, this one included.
        redemptions_after: u32,
        redeemed_at: DateTime<Utc>,
    },
}

impl PromoEvent {
    /// The key that makes this event unique within its code, if any. The event store keeps
    /// a unique index on it, so a user redeems a code once, ever, whatever the state says.
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Self::PromoCodeRedeemed { user, .. } => Some(format!("redeem:{user}")),
            _ => None,
        }
    }
}

impl DomainEvent for PromoEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::PromoCodeCreated { .. } => "PromoCodeCreated",
            Self::PromoCodeDisabled { .. } => "PromoCodeDisabled",
            Self::PromoCodeEnabled { .. } => "PromoCodeEnabled",
            Self::PromoCodeRedeemed { .. } => "PromoCodeRedeemed",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
