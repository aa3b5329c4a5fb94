//! The pure core of Smart AI Hub: aggregates, their commands and events, and money arithmetic.
//!
//! Nothing here does I/O, spawns tasks, or knows SQL, HTTP or NATS. Every rule that protects
//! credits lives here, so that it can be tested by given/when/then and by property tests
//! without a database.
//!
//! # Layout
//!
//! - [`decider`]: the contract every aggregate keeps. [`Decider`] is one aggregate's rules:
//!   `decide` (state + command → a [`Decision`]: events to write, or the first event of a
//!   repeated key), `evolve` (apply an event), `recall` (take back keyed events the state
//!   forgot), the keys that make commands idempotent (`event_key`, `related_keys`,
//!   `may_be_forgotten`), its name and the version of its serialized state. Each aggregate
//!   implements it, and cqrs-es's `Aggregate` is written from it by one macro; the write
//!   side (`hub_commands`) runs any `Decider` the same way.
//! - [`money`]: [`Credits`], an integer amount in micro-credits, with checked arithmetic.
//! - [`ids`]: validated identifiers (account, user, API key, request, idempotency key).
//! - [`credit`]: the [`CreditAccount`] aggregate — balances, grants, purchases, promo
//!   credits and reservations for inference requests.
//! - [`user`]: the [`User`] aggregate — registration, email verification, passwords,
//!   roles, Google sign-in and API keys — and its values ([`Email`], [`Role`], hashes).
//! - [`promo`]: the [`PromoCode`] aggregate — limits, validity window, once per user.
//! - [`payment`]: the [`Payment`] aggregate — one Stripe Checkout Session, from checkout to
//!   refunds, idempotent under retried and out-of-order webhooks.

pub mod credit;
pub mod decider;
pub mod ids;
pub mod money;
pub mod payment;
pub mod pricing;
pub mod promo;
pub mod user;

pub use credit::{
    CreditAccount, CreditCommand, CreditError, CreditEvent, KeyLimit, KeySpend, LateSettlement,
    ReservationState, TokenSource, UsageOutcome, UsageRecord,
};
pub use decider::{Decider, Decision};
pub use ids::{AccountId, ApiKeyId, IdError, IdempotencyKey, RequestId, UserId};
pub use money::{Credits, MoneyError};
pub use payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus, StripeId};
pub use pricing::{Price, TokenUsage};
pub use promo::{
    PromoCode, PromoCodeValue, PromoCodeValueError, PromoCommand, PromoError, PromoEvent,
};
pub use user::{
    ApiKey, ApiKeyName, ApiKeyPrefix, ApiKeyRateLimits, ApiKeyScope, DisplayName, Email,
    GoogleSubject, PasswordHash, Role, SecretHash, Suspension, SuspensionReason, User, UserCommand,
    UserError, UserEvent, UserValueError,
};
