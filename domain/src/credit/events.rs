use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::usage::UsageRecord;
use crate::ids::{IdempotencyKey, RequestId};
use crate::money::Credits;

/// What happened to a credit account. Stored forever: never rename a variant or a field;
/// add a new version and an upcaster instead.
///
/// Every event after `AccountOpened` carries `balance_after` and `reserved_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreditEvent {
    AccountOpened {},
    CreditsGranted {
        key: IdempotencyKey,
        amount: Credits,
        reason: String,
        granted_by: String,
        balance_after: Credits,
        reserved_after: Credits,
    },
    CreditsPurchased {
        payment_id: IdempotencyKey,
        amount: Credits,
        balance_after: Credits,
        reserved_after: Credits,
    },
    PromoCreditsApplied {
        code: IdempotencyKey,
        amount: Credits,
        balance_after: Credits,
        reserved_after: Credits,
    },
    /// A refund took credits back: `taken = min(requested, available before)`, so the
    /// available balance never goes negative; `requested - taken` is the shortfall, the
    /// credits already spent or held that the hub did not get back.
    CreditsRevoked {
        key: IdempotencyKey,
        payment_id: IdempotencyKey,
        requested: Credits,
        taken: Credits,
        balance_after: Credits,
        reserved_after: Credits,
    },
    CreditsReserved {
        request_id: RequestId,
        amount: Credits,
        expires_at: DateTime<Utc>,
        balance_after: Credits,
        reserved_after: Credits,
    },
    ReservationSettled {
        request_id: RequestId,
        /// What was held.
        reserved: Credits,
        /// What was charged: `charged <= reserved`.
        charged: Credits,
        balance_after: Credits,
        reserved_after: Credits,
        /// For an inference request: what it used, from which `charged` was computed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Box<UsageRecord>>,
        /// Set when the settlement came after the reservation had expired (it was delayed,
        /// for example by a database outage, after the answer was delivered): the charge
        /// was taken from the available balance then. `reserved` is what had been held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_expiry: Option<LateSettlement>,
    },
    ReservationReleased {
        request_id: RequestId,
        amount: Credits,
        balance_after: Credits,
        reserved_after: Credits,
    },
    ReservationExpired {
        request_id: RequestId,
        amount: Credits,
        balance_after: Credits,
        reserved_after: Credits,
    },
}

/// How a settlement that arrived after its reservation expired was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateSettlement {
    /// What the usage cost (capped at what had been reserved) beyond the charge: the
    /// available balance was smaller by then, and it never goes negative.
    pub uncollected: Credits,
}

impl CreditEvent {
    /// The key that makes this event unique within its account, if any. The event store
    /// keeps a unique index on it, so a key is used once per account, ever.
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Self::AccountOpened {} => None,
            Self::CreditsGranted { key, .. } => Some(format!("grant:{key}")),
            Self::CreditsPurchased { payment_id, .. } => Some(format!("payment:{payment_id}")),
            Self::PromoCreditsApplied { code, .. } => Some(format!("promo:{code}")),
            Self::CreditsRevoked { key, .. } => Some(format!("revoke:{key}")),
            Self::CreditsReserved { request_id, .. } => Some(format!("reserve:{request_id}")),
            Self::ReservationSettled { request_id, .. } => Some(format!("settle:{request_id}")),
            Self::ReservationReleased { request_id, .. } => Some(format!("release:{request_id}")),
            Self::ReservationExpired { request_id, .. } => Some(format!("expire:{request_id}")),
        }
    }

    /// `(balance, reserved)` after this event.
    pub fn totals_after(&self) -> (Credits, Credits) {
        match self {
            Self::AccountOpened {} => (Credits::ZERO, Credits::ZERO),
            Self::CreditsGranted {
                balance_after,
                reserved_after,
                ..
            }
            | Self::CreditsPurchased {
                balance_after,
                reserved_after,
                ..
            }
            | Self::PromoCreditsApplied {
                balance_after,
                reserved_after,
                ..
            }
            | Self::CreditsRevoked {
                balance_after,
                reserved_after,
                ..
            }
            | Self::CreditsReserved {
                balance_after,
                reserved_after,
                ..
            }
            | Self::ReservationSettled {
                balance_after,
                reserved_after,
                ..
            }
            | Self::ReservationReleased {
                balance_after,
                reserved_after,
                ..
            }
            | Self::ReservationExpired {
                balance_after,
                reserved_after,
                ..
            } => (*balance_after, *reserved_after),
        }
    }
}

impl DomainEvent for CreditEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::AccountOpened {} => "AccountOpened",
            Self::CreditsGranted { .. } => "CreditsGranted",
            Self::CreditsPurchased { .. } => "CreditsPurchased",
            Self::PromoCreditsApplied { .. } => "PromoCreditsApplied",
            Self::CreditsRevoked { .. } => "CreditsRevoked",
            Self::CreditsReserved { .. } => "CreditsReserved",
            Self::ReservationSettled { .. } => "ReservationSettled",
            Self::ReservationReleased { .. } => "ReservationReleased",
            Self::ReservationExpired { .. } => "ReservationExpired",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
