use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::usage::UsageRecord;
use crate::ids::{ApiKeyId, IdempotencyKey, RequestId};
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
    /// credits already spent or held that the hub did not get back at once. The shortfall
    /// is owed: it is added to the account's debt, which later credits repay first.
    CreditsRevoked {
        key: IdempotencyKey,
        payment_id: IdempotencyKey,
        requested: Credits,
        taken: Credits,
        balance_after: Credits,
        reserved_after: Credits,
        /// The account's whole debt after this refund. Zero in refunds recorded before
        /// shortfalls were kept as debts: those were written off, and stay so.
        #[serde(default)]
        debt_after: Credits,
    },
    CreditsReserved {
        request_id: RequestId,
        amount: Credits,
        expires_at: DateTime<Utc>,
        balance_after: Credits,
        reserved_after: Credits,
        /// The API key the request was made with; absent for a person's request (and in
        /// reservations recorded before keys were named).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_key: Option<ApiKeyId>,
        /// That key's spending limit when the reservation was made (a settlement that
        /// arrives after the reservation expired is capped by it too).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_limit: Option<Credits>,
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
    /// Credits that became available (a grant, a purchase, a promo, a reservation settled
    /// for less than it held, released or expired) repaid part of a refund's shortfall.
    /// Written right after the event that freed them, in the same command; one per refund
    /// repaid, oldest debt first.
    DebtRepaid {
        /// The refunded payment whose shortfall this repays.
        payment_id: IdempotencyKey,
        amount: Credits,
        balance_after: Credits,
        reserved_after: Credits,
        /// The account's whole debt after this repayment.
        debt_after: Credits,
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
            // Part of the keyed command that freed the credits.
            Self::DebtRepaid { .. } => None,
        }
    }

    /// The account's debt after this event, for the events that change it.
    pub fn debt_after(&self) -> Option<Credits> {
        match self {
            Self::CreditsRevoked { debt_after, .. } | Self::DebtRepaid { debt_after, .. } => {
                Some(*debt_after)
            }
            _ => None,
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
            }
            | Self::DebtRepaid {
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
            Self::DebtRepaid { .. } => "DebtRepaid",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
