//! Tamper evidence for the ledger (docs/audit.md): the hash chain every event carries, the
//! signed checkpoints over every aggregate's head, proofs that one event is in a signed
//! checkpoint, and checking a proof offline.
//!
//! - [`chain`]: an event's canonical bytes, digest and chain hash (the event store's, from
//!   `hub_commands`: computed as events are appended, recomputed here).
//! - [`merkle`]: RFC 9162 trees and inclusion proofs.
//! - [`proof`]: checkpoint statements and signatures, proofs, and their offline check.
//! - [`checkpoints`]: the checkpointer (one leader) and reading checkpoints and proofs.

pub use hub_commands::chain;
pub mod checkpoints;
pub mod merkle;
pub mod proof;

pub use proof::{CheckpointKey, Proof, ProofError, SignedCheckpoint};
