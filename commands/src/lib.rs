//! The write side of Smart AI Hub: commands go to aggregates through cqrs-es, and their
//! events are appended to the Postgres event store of postgres-es.
//!
//! # Layout
//!
//! The contract with the domain: every aggregate is a `hub_domain::Decider` (decide,
//! evolve, recall, the keys of idempotency, the state version) with its cqrs-es
//! `Aggregate` written from it, and [`HubAggregate`] is implemented once for all of them,
//! so the store and the bus run any aggregate the same way: load (snapshot and tail),
//! decide, on a refusal that `may_be_forgotten` recall the command's `related_keys` from
//! the store and decide again, append with each event's `event_key` in its metadata, and on
//! a conflict retry with the keys recalled. A process builds every bus through one
//! [`Buses`] (pool, snapshot interval, cache size, commit hook).
//!
//! - [`store`]: [`HubEventStore`], a cqrs-es `EventStore` over postgres-es's repository
//!   with snapshots of our own (postgres-es 0.5.0's snapshot path applies new events twice),
//!   loaded with their tail in one round trip, and with each event's idempotency key stored
//!   in its metadata, where a unique index holds it.
//! - [`append`]: how events are written: one statement per command, and the commands that
//!   arrive together share one statement (group commit).
//! - [`chain`]: the hash each event carries, chained to the one before it in its aggregate
//!   (tamper evidence, docs/audit.md).
//! - [`bus`]: [`CommandBus`], which runs a command against one aggregate: in-process
//!   serialization per aggregate, bounded retries with jitter on version conflicts (the
//!   framework never retries), and the first outcome of a repeated key; and [`Buses`], the
//!   one way to build a bus (and a store).
//! - [`credit`]: [`CreditAccounts`], the typed entry point for the credit account.
//! - [`user`]: [`Users`], the `User` aggregate's entry point, with the claims that keep an
//!   email address or a Google account to one user.
//! - [`payment`]: [`Payments`], the `Payment` aggregate's entry point (one per Stripe
//!   Checkout Session), the Stripe references that name no session, and the step that
//!   turns a payment's events into purchases and revocations of credits.
//! - [`promo`]: [`Promos`], the `PromoCode` aggregate's entry point and the redemption that
//!   credits the redeemer.
//! - [`db`]: connection pools, lost connections and migrations; [`error`]: the store's and
//!   the commands' errors (`error` uses `db`, never the reverse).
//! - [`metrics`]: the credit events commands wrote, counted by kind and amount.
//! - [`clock`]: [`Clock`], the time every time-based decision reads, so tests can move it.

pub mod append;
pub mod bus;
pub mod chain;
pub mod clock;
pub mod credit;
pub mod db;
pub mod error;
pub mod metrics;
pub mod payment;
pub mod promo;
pub mod store;
pub mod trace;
pub mod user;

pub use bus::{Buses, CommandBus, Committed, RetryPolicy};
pub use clock::{Clock, SharedClock, ShiftedClock, SystemClock};
pub use credit::CreditAccounts;
pub use error::{CommandError, StoreError};
pub use payment::{Handled, PaymentFlowError, Payments, RefKind};
pub use promo::{Promos, RedeemError, Redemption};
pub use store::{CommitHook, HubAggregate, HubEventStore, Loaded};
pub use user::{RegisterError, Registration, UserResult, Users};
