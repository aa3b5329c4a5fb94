//! The pure core of Smart AI Hub: aggregates, their commands and events, and money arithmetic.
//!
//! Nothing here does I/O, spawns tasks, or knows SQL, HTTP or NATS. Every rule that protects
//! credits lives here, so that it can be tested by given/when/then and by property tests
//! without a database.
//!
//! # Layout
//!
//! - [`money`]: [`Credits`], an integer amount in micro-credits, with checked arithmetic.
//! - [`ids`]: validated identifiers (account, request, idempotency key).
//! - [`credit`]: the [`CreditAccount`] aggregate — balances, grants, purchases, promo
//!   credits and reservations for inference requests.

pub mod credit;
pub mod ids;
pub mod money;

pub use credit::{
    CreditAccount, CreditCommand, CreditError, CreditEvent, Decision, ReservationState,
};
pub use ids::{AccountId, IdError, IdempotencyKey, RequestId};
pub use money::{Credits, MoneyError};
