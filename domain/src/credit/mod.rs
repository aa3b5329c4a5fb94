//! The `CreditAccount` aggregate: one per user.
//!
//! Credits come in (admin grants, purchases, promo codes) and go out only through
//! reservations: a request first *reserves* the most it can cost, then *settles* with the
//! actual charge (never more than reserved), or the reservation is *released* or *expires*.
//! An inference request settles with its [`UsageRecord`], stored in the settlement event:
//! usage and charge are one fact, written once.
//!
//! Rules kept here, for every sequence of commands:
//! - `available = balance - reserved` is never negative, and `reserved` equals the sum of
//!   the active reservations;
//! - a command with an idempotency key (grant key, payment id, promo code, request id) is
//!   applied at most once; a repeat returns the first outcome and writes no event. The
//!   aggregate remembers the last [`RECENT_KEYS_MAX`] keys; the event store's unique index on
//!   the key (see `migrations/`) extends the guarantee to every key ever used;
//! - every event carries the balance and the reserved amount after it, so read models copy,
//!   never recompute;
//! - an API key's charges plus its active reservations never pass the key's spending limit
//!   (checked in the same decision as the reservation, so concurrent requests cannot race
//!   past it);
//! - a refund's shortfall (credits already spent or held when it landed) is a debt, and
//!   credits that become available later repay it first (`DebtRepaid`): while a debt is
//!   owed, nothing is available.

mod aggregate;
mod commands;
mod error;
mod events;
mod recent;
mod usage;

#[cfg(test)]
mod tests;

pub use aggregate::{
    CreditAccount, KeySpend, ReservationState, EXPIRE_BATCH_MAX, RESERVATIONS_MAX,
};
pub use commands::{CreditCommand, KeyLimit, REASON_LEN_MAX};
pub use error::CreditError;
pub use events::{CreditEvent, LateSettlement};
pub use recent::RECENT_KEYS_MAX;
pub use usage::{TokenSource, UsageOutcome, UsageRecord};
