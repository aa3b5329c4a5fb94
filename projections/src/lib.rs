//! Read models built from the JetStream event stream into Postgres.
//!
//! Each projection is a durable JetStream consumer whose rows and checkpoint (the stream
//! sequence it has applied up to) are written in one transaction, so a redelivered message
//! changes nothing. Any projection can be dropped and rebuilt from the stream
//! (`aihub replay <projection>`).
//!
//! # Layout
//!
//! - [`model`]: the projections (`balances`, `ledger`, `users`, `usage`, `payments`,
//!   `promos`, `journal`, `alerts`): which events they read and the rows they write (`users`, `payments` and
//!   `promos` in their own modules).
//! - [`runner`]: the live projector: one leader per projection, batches, checkpoints; the
//!   projections that read one aggregate type may share a consumer and a transaction.
//! - [`replay`]: rebuild from the start of the stream with progress, in place, or as the
//!   tables stood at a time into a schema of their own (`aihub replay usage --until --into`).
//! - [`journal`]: the double-entry view: every credit event posted as balanced legs
//!   between the user's accounts (available, held) and the hub's system accounts.
//! - [`rollups`]: the hourly usage sums kept beside `usage_records`, and their latency
//!   histogram buckets; `load`: how a rebuild loads them without their keys.
//! - [`alerts`]: low-balance alerts: each account's armed state, and a notification row per
//!   fall below its owner's threshold (sent by `hub_app::alerts`).

pub mod alerts;
mod indexes;
pub mod journal;
mod load;
pub mod model;
mod payments;
mod promos;
pub mod replay;
pub mod rollups;
pub mod runner;
mod users;

pub use model::ProjectionKind;
pub use replay::{
    finish_rebuild, replay, replay_until, PointInTime, PointInTimeError, ReplayStats, SchemaName,
};
pub use runner::{checkpoint, Projector, ProjectorConfig};
