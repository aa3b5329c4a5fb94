use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::values::StripeId;
use crate::ids::UserId;
use crate::money::Credits;

/// Key of `CheckoutStarted`: a session is started once.
pub const CHECKOUT_KEY: &str = "checkout";
/// Key of `PaymentCompleted`: a session is paid, and so credited, once, ever.
pub const PAID_KEY: &str = "paid";

/// Key of `PaymentRefunded`: each cumulative refunded amount is taken back once.
pub fn refunded_key(refunded_cents_total: i64) -> String {
    format!("refunded:{refunded_cents_total}")
}

/// Key of `PaymentDisputed`: a dispute takes credits back once.
pub fn disputed_key(dispute_id: &StripeId) -> String {
    format!("dispute:{dispute_id}")
}

/// Key of `DisputeClosed`: a dispute is closed (and its credits given back) once.
pub fn dispute_closed_key(dispute_id: &StripeId) -> String {
    format!("dispute-closed:{dispute_id}")
}

/// Key of an event that a Stripe event caused and no stronger key covers.
pub fn stripe_event_key(stripe_event_id: &StripeId) -> String {
    format!("stripe-event:{stripe_event_id}")
}

/// What the customer buys, and for how much: the terms every event that can open a
/// payment carries. Stored flattened into those events, so their JSON is the same as when
/// each field was written out in each of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub session_id: StripeId,
    pub user: UserId,
    pub package_id: String,
    pub credits: Credits,
    /// In the currency's smallest unit.
    pub amount_cents: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
}

/// What happened to a payment. Stored forever: never rename a variant or a field; add a
/// new version and an upcaster instead.
///
/// Every event names the user, so the payment history read model copies it; the events
/// that can come first (a completion may arrive for a session whose start was lost) carry
/// the whole checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    CheckoutStarted {
        #[serde(flatten)]
        checkout: Checkout,
        started_at: DateTime<Utc>,
    },
    /// The customer completed the checkout with an asynchronous method: the money is still
    /// to come (`MarkPaid`) or to fail (`MarkFailed`).
    CheckoutAwaitingPayment {
        #[serde(flatten)]
        checkout: Checkout,
        payment_intent: Option<StripeId>,
        stripe_event_id: StripeId,
        completed_at: DateTime<Utc>,
    },
    /// The money came. Written once per session, ever: this is what credits the account,
    /// with `CreditCommand::PurchaseCredits { payment_id: session_id, amount: credits }`.
    PaymentCompleted {
        /// The amount and currency are what Stripe charged.
        #[serde(flatten)]
        checkout: Checkout,
        payment_intent: Option<StripeId>,
        stripe_event_id: StripeId,
        paid_at: DateTime<Utc>,
    },
    PaymentFailed {
        user: UserId,
        reason: String,
        stripe_event_id: StripeId,
        failed_at: DateTime<Utc>,
    },
    CheckoutExpired {
        user: UserId,
        stripe_event_id: StripeId,
        expired_at: DateTime<Utc>,
    },
    /// More of the payment was refunded. `credits_to_take_back` is what the account gives
    /// back for this refund; over all refunds of a payment they add up to
    /// `credits × refunded_cents_total / amount_cents`, rounded down to the micro-credit,
    /// so a full refund takes back exactly the credits bought and never more.
    PaymentRefunded {
        user: UserId,
        refund_id: StripeId,
        /// Refunded by this refund.
        refunded_cents: i64,
        /// Refunded so far, this refund included (Stripe's `amount_refunded`).
        refunded_cents_total: i64,
        /// Whether everything paid is now refunded.
        fully_refunded: bool,
        credits_to_take_back: Credits,
        /// Taken back so far, this refund included.
        credits_taken_back_total: Credits,
        stripe_event_id: StripeId,
        refunded_at: DateTime<Utc>,
    },
    /// Stripe reported a completion whose amount or currency is not the package's price
    /// (less money, or another currency): no credits are given. An operator decides.
    PaymentHeld {
        /// As Stripe charged it.
        #[serde(flatten)]
        checkout: Checkout,
        expected_cents: i64,
        expected_currency: String,
        payment_intent: Option<StripeId>,
        stripe_event_id: StripeId,
        held_at: DateTime<Utc>,
    },
    /// The customer disputed the charge: `credits_to_take_back` (the disputed share of the
    /// credits, at most what refunds and disputes have not taken yet) goes back.
    PaymentDisputed {
        user: UserId,
        dispute_id: StripeId,
        amount_cents: i64,
        credits_to_take_back: Credits,
        stripe_event_id: StripeId,
        disputed_at: DateTime<Utc>,
    },
    /// The dispute ended; when the hub `won`, `credits_to_restore` (what it took) come back.
    DisputeClosed {
        user: UserId,
        dispute_id: StripeId,
        won: bool,
        credits_to_restore: Credits,
        stripe_event_id: StripeId,
        closed_at: DateTime<Utc>,
    },
}

impl PaymentEvent {
    /// The key that makes this event unique within its payment. The event store keeps a
    /// unique index on it, which holds each rule even for a state that lost it:
    ///
    /// | event | key |
    /// |---|---|
    /// | `CheckoutStarted` | `checkout` |
    /// | `PaymentCompleted` | `paid`: credited once per session, whichever Stripe event said so |
    /// | `PaymentRefunded` | `refunded:<refunded_cents_total>`: each cumulative amount once |
    /// | the others | `stripe-event:<id>`: each Stripe event once |
    pub fn idempotency_key(&self) -> Option<String> {
        Some(match self {
            Self::CheckoutStarted { .. } => CHECKOUT_KEY.to_string(),
            Self::PaymentCompleted { .. } => PAID_KEY.to_string(),
            Self::PaymentRefunded {
                refunded_cents_total,
                ..
            } => refunded_key(*refunded_cents_total),
            Self::PaymentDisputed { dispute_id, .. } => disputed_key(dispute_id),
            Self::DisputeClosed { dispute_id, .. } => dispute_closed_key(dispute_id),
            Self::PaymentHeld {
                stripe_event_id, ..
            }
            | Self::CheckoutAwaitingPayment {
                stripe_event_id, ..
            }
            | Self::PaymentFailed {
                stripe_event_id, ..
            }
            | Self::CheckoutExpired {
                stripe_event_id, ..
            } => stripe_event_key(stripe_event_id),
        })
    }

    /// The Stripe event that caused this one, if a webhook did.
    pub fn stripe_event_id(&self) -> Option<&StripeId> {
        match self {
            Self::CheckoutStarted { .. } => None,
            Self::CheckoutAwaitingPayment {
                stripe_event_id, ..
            }
            | Self::PaymentCompleted {
                stripe_event_id, ..
            }
            | Self::PaymentFailed {
                stripe_event_id, ..
            }
            | Self::CheckoutExpired {
                stripe_event_id, ..
            }
            | Self::PaymentRefunded {
                stripe_event_id, ..
            }
            | Self::PaymentHeld {
                stripe_event_id, ..
            }
            | Self::PaymentDisputed {
                stripe_event_id, ..
            }
            | Self::DisputeClosed {
                stripe_event_id, ..
            } => Some(stripe_event_id),
        }
    }

    /// The user whose payment this is.
    pub fn user(&self) -> UserId {
        match self {
            Self::CheckoutStarted { checkout, .. }
            | Self::CheckoutAwaitingPayment { checkout, .. }
            | Self::PaymentCompleted { checkout, .. }
            | Self::PaymentHeld { checkout, .. } => checkout.user,
            Self::PaymentDisputed { user, .. }
            | Self::DisputeClosed { user, .. }
            | Self::PaymentFailed { user, .. }
            | Self::CheckoutExpired { user, .. }
            | Self::PaymentRefunded { user, .. } => *user,
        }
    }
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::CheckoutStarted { .. } => "CheckoutStarted",
            Self::CheckoutAwaitingPayment { .. } => "CheckoutAwaitingPayment",
            Self::PaymentCompleted { .. } => "PaymentCompleted",
            Self::PaymentFailed { .. } => "PaymentFailed",
            Self::CheckoutExpired { .. } => "CheckoutExpired",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
            Self::PaymentHeld { .. } => "PaymentHeld",
            Self::PaymentDisputed { .. } => "PaymentDisputed",
            Self::DisputeClosed { .. } => "DisputeClosed",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
