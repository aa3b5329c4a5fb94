use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::usage::UsageRecord;
use crate::ids::{ApiKeyId, IdempotencyKey, RequestId};
use crate::money::Credits;

/// Longest reason an admin may give for a grant.
pub const REASON_LEN_MAX: usize = 500;

/// What may be asked of a credit account. Each variant that carries a key is idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CreditCommand {
    /// Open the account. Opening an open account changes nothing.
    OpenAccount,
    /// An admin gives credits.
    GrantCredits {
        key: IdempotencyKey,
        amount: Credits,
        reason: String,
        granted_by: String,
    },
    /// A completed payment buys credits.
    PurchaseCredits {
        payment_id: IdempotencyKey,
        amount: Credits,
    },
    /// A redeemed promo code gives credits.
    ApplyPromoCredits {
        code: IdempotencyKey,
        amount: Credits,
    },
    /// A refunded payment takes its credits back: as much of `amount` as is available
    /// (`balance - reserved`), never more, so the available balance never goes negative.
    /// What could not be taken (already spent or held) is recorded as the shortfall.
    RevokeCredits {
        /// One per refund step, e.g. `refund:<session id>:<cumulative cents refunded>`.
        key: IdempotencyKey,
        /// The payment whose credits are taken back (its Stripe session id).
        payment_id: IdempotencyKey,
        /// What the refund asks back: more than zero.
        amount: Credits,
    },
    /// Hold `amount` for a request until it is settled, released, or `expires_at` passes.
    /// Reservations already past their time at `now` are expired first. A request made
    /// with an API key names it: the reservation counts against the key's spending limit,
    /// and is refused when the key's charges and holds would pass it.
    ReserveCredits {
        request_id: RequestId,
        amount: Credits,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<KeyLimit>,
    },
    /// Charge the actual cost of a request (at most what was reserved) and release the rest.
    SettleReservation {
        request_id: RequestId,
        charge: Credits,
    },
    /// Settle an inference request from its usage: charge `usage.cost`, capped at what was
    /// reserved, release the rest, and record the usage in the settlement event.
    SettleUsage {
        request_id: RequestId,
        usage: Box<UsageRecord>,
    },
    /// Give a reservation back without charging.
    ReleaseReservation { request_id: RequestId },
    /// Expire every reservation whose time has passed at `now` (at most
    /// [`super::EXPIRE_BATCH_MAX`] per command).
    ExpireReservations { now: DateTime<Utc> },
}

/// The API key a request is made with, and its spending limit as its owner set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimit {
    pub id: ApiKeyId,
    /// The most the key may have charged plus held at once; `None`: no limit.
    pub limit: Option<Credits>,
}

impl CreditCommand {
    /// The key under which this command's decisive event is stored, if it has one.
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Self::OpenAccount | Self::ExpireReservations { .. } => None,
            Self::GrantCredits { key, .. } => Some(format!("grant:{key}")),
            Self::PurchaseCredits { payment_id, .. } => Some(format!("payment:{payment_id}")),
            Self::ApplyPromoCredits { code, .. } => Some(format!("promo:{code}")),
            Self::RevokeCredits { key, .. } => Some(format!("revoke:{key}")),
            Self::ReserveCredits { request_id, .. } => Some(format!("reserve:{request_id}")),
            Self::SettleReservation { request_id, .. } | Self::SettleUsage { request_id, .. } => {
                Some(format!("settle:{request_id}"))
            }
            Self::ReleaseReservation { request_id } => Some(format!("release:{request_id}")),
        }
    }

    /// Keys whose first events decide a repeat of this command, or why it is refused: a
    /// settle or release must know whether its reservation was settled, released or expired.
    pub fn related_keys(&self) -> Vec<String> {
        match self {
            Self::SettleReservation { request_id, .. }
            | Self::SettleUsage { request_id, .. }
            | Self::ReleaseReservation { request_id } => {
                vec![
                    format!("settle:{request_id}"),
                    format!("release:{request_id}"),
                    format!("expire:{request_id}"),
                ]
            }
            other => other.idempotency_key().into_iter().collect(),
        }
    }
}
