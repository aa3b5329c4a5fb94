use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::StripeId;
use crate::ids::UserId;
use crate::money::Credits;

/// Largest amount of one payment, in the currency's smallest unit: ten billion dollars.
/// Stripe's own limit is far lower; this one keeps `credits × cents` inside `i128`.
pub const AMOUNT_CENTS_MAX: i64 = 1_000_000_000_000;

/// Longest package id (packages come from configuration: `starter`, `pro`, ...).
pub const PACKAGE_ID_LEN_MAX: usize = 64;

/// Longest failure reason kept; Stripe's longer messages are cut, never refused, so that a
/// webhook is never refused for its wording.
pub const FAILURE_REASON_LEN_MAX: usize = 500;

/// What may be asked of a payment: the checkout the hub starts, and what Stripe's webhooks
/// report after it. Every command from a webhook carries the Stripe event's id, and a
/// delivery of an event already applied changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// The hub created a Checkout Session for `user` to buy a package.
    StartCheckout {
        session_id: StripeId,
        user: UserId,
        package_id: String,
        credits: Credits,
        /// In the currency's smallest unit.
        amount_cents: i64,
        /// ISO 4217, any case; stored lowercase as Stripe writes it.
        currency: String,
        now: DateTime<Utc>,
    },
    /// `checkout.session.completed`: `paid` is its `payment_status == "paid"`; `false` for
    /// an asynchronous method (bank debit, voucher) whose money is still to come. The user,
    /// package and credits come from the session's metadata, so a completion is accepted
    /// for a session whose start was never recorded; the amount and currency are what
    /// Stripe charged.
    CompleteCheckout {
        session_id: StripeId,
        user_from_metadata: UserId,
        package_id: String,
        credits: Credits,
        amount_cents: i64,
        currency: String,
        payment_intent: Option<StripeId>,
        paid: bool,
        /// The package's price as configured now, checked when the start was never
        /// recorded (a recorded start's price wins).
        listed_price: Option<ListPrice>,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
    /// `checkout.session.async_payment_succeeded`: the money came.
    MarkPaid {
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
    /// `checkout.session.async_payment_failed` or `payment_intent.payment_failed`.
    MarkFailed {
        /// Stripe's message; cut to [`FAILURE_REASON_LEN_MAX`] characters.
        reason: String,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
    /// `checkout.session.expired`: the customer never paid.
    Expire {
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
    /// `charge.refunded`: Stripe reports the charge's refunded amount so far.
    Refund {
        /// The refund's id, or the charge's when the refund's is not at hand.
        refund_id: StripeId,
        /// Cumulative, as Stripe's `amount_refunded`: everything refunded so far.
        amount_refunded_cents: i64,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
    /// `charge.dispute.created`: the customer's bank took `amount_cents` of the payment
    /// back while the dispute runs; its share of the credits is taken back.
    OpenDispute {
        dispute_id: StripeId,
        amount_cents: i64,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
    /// `charge.dispute.closed`: `won` gives back the credits the dispute took.
    CloseDispute {
        dispute_id: StripeId,
        won: bool,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    },
}

/// A price: an amount in the currency's smallest unit, and the currency (ISO 4217).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPrice {
    pub amount_cents: i64,
    pub currency: String,
}

impl PaymentCommand {
    /// The Stripe event this command reports, if it comes from a webhook.
    pub fn stripe_event_id(&self) -> Option<&StripeId> {
        match self {
            Self::StartCheckout { .. } => None,
            Self::CompleteCheckout {
                stripe_event_id, ..
            }
            | Self::MarkPaid {
                stripe_event_id, ..
            }
            | Self::MarkFailed {
                stripe_event_id, ..
            }
            | Self::Expire {
                stripe_event_id, ..
            }
            | Self::Refund {
                stripe_event_id, ..
            }
            | Self::OpenDispute {
                stripe_event_id, ..
            }
            | Self::CloseDispute {
                stripe_event_id, ..
            } => Some(stripe_event_id),
        }
    }

    /// Keys of the events that decide a repeat of this command (see
    /// `PaymentEvent::idempotency_key`): the bus recalls them after a unique-key conflict.
    pub fn related_keys(&self) -> Vec<String> {
        let mut keys = match self {
            Self::StartCheckout { .. } => vec![super::events::CHECKOUT_KEY.to_string()],
            Self::CompleteCheckout { paid: true, .. } | Self::MarkPaid { .. } => {
                vec![super::events::PAID_KEY.to_string()]
            }
            Self::Refund {
                amount_refunded_cents,
                ..
            } => vec![super::events::refunded_key(*amount_refunded_cents)],
            Self::OpenDispute { dispute_id, .. } => vec![super::events::disputed_key(dispute_id)],
            Self::CloseDispute { dispute_id, .. } => {
                vec![super::events::dispute_closed_key(dispute_id)]
            }
            Self::CompleteCheckout { paid: false, .. }
            | Self::MarkFailed { .. }
            | Self::Expire { .. } => Vec::new(),
        };
        if let Some(id) = self.stripe_event_id() {
            keys.push(super::events::stripe_event_key(id));
        }
        keys
    }
}
