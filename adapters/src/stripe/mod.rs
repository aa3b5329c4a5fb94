//! Stripe at the edge: settings, the one API call the hub makes (create a Checkout Session,
//! through async-stripe's 1.0 split crates), and webhooks (signature verification and the
//! few fields of the few events the hub reads).
//!
//! Webhook signatures are verified here rather than by `async-stripe-webhook`: its
//! `Webhook::construct_event` verifies *and* parses the whole event into the SDK's types for
//! the API version it was generated for, and exposes no verification alone. An event
//! rendered in the account's own API version that the SDK cannot parse would then be refused
//! after its signature checked out, and Stripe would retry it for days while the money
//! waits. Verification is a few lines of HMAC-SHA256 (`hmac`/`sha2`, already in the
//! workspace), with every `v1` signature accepted and a configurable tolerance; the event
//! itself is read as JSON, field by field, for the fields the hub needs. See
//! `docs/payments.md`.
//!
//! # Layout
//!
//! - [`settings`]: [`PaymentSettings`] (the `[payments]` section) and the [`CreditPackage`]s
//!   for sale.
//! - [`checkout`]: [`StripeCheckout`], the Checkout Session call.
//! - [`webhook`]: [`verify_signature`] and the [`Event`] fields the hub reads.
//! - [`metadata`]: the keys the hub puts on each session and reads back from webhooks.

pub mod checkout;
pub mod settings;
pub mod webhook;

pub use checkout::{CheckoutRequest, CreatedSession, StripeCallError, StripeCheckout};
pub use settings::{CreditPackage, PaymentSettings, PACKAGES_MAX, WEBHOOK_TOLERANCE_S_MAX};
pub use webhook::{
    expandable_id, sign, verify_signature, ChargeObject, DisputeObject, Event, EventData,
    PaymentError, PaymentIntentObject, RefundList, RefundObject, SessionObject, SignatureError,
};

/// Metadata keys the hub puts on each Checkout Session (and its payment intent), read back
/// from webhooks. Stripe keeps them with the session, so a session whose checkout record was
/// lost still names its user, package and credits.
pub mod metadata {
    pub const USER_ID: &str = "aihub_user_id";
    pub const PACKAGE_ID: &str = "aihub_package_id";
    pub const CREDITS_MICROS: &str = "aihub_credits_micros";
    /// The hub's reference of the checkout (also its Stripe idempotency key), on the payment
    /// intent too: a failed payment intent is mapped to its session through it.
    pub const CHECKOUT_REF: &str = "aihub_checkout_ref";
}
