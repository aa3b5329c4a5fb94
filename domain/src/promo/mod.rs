//! The `PromoCode` aggregate: one per code, under the normalised code as its id.
//!
//! An admin creates a code (credits per redemption, how many redemptions in all, a validity
//! window, active or not), may disable and enable it, and users redeem it.
//!
//! Rules kept here, for every sequence of commands:
//! - a code is created once; its credits and limits never change afterwards;
//! - each user redeems a code at most once, ever: the code keeps the set of its redeemers,
//!   and the event store's unique index on the key `redeem:<user>` holds the rule even if
//!   that state were lost;
//! - redemptions never exceed `max_redemptions` (at most [`REDEMPTIONS_MAX`]), and each
//!   `PromoCodeRedeemed` reports the count after it;
//! - a redemption is refused, each with its own error, when the code is unknown, already
//!   redeemed by this user, disabled, not yet valid, expired or exhausted.
//!
//! # How a redemption becomes credits
//!
//! Two aggregates, two steps, each idempotent (a process manager in `commands/` runs them):
//! 1. `RedeemPromoCode { user }` on the `PromoCode` writes `PromoCodeRedeemed { user,
//!    credits, .. }` under the key `redeem:<user>`. This is where the limits are decided,
//!    so 50 users racing for the last 5 redemptions serialise here and exactly 5 succeed.
//! 2. `CreditCommand::ApplyPromoCredits { code, amount: credits }` on the user's credit
//!    account, with the same code ([`PromoCodeValue::credit_key`]), writes
//!    `PromoCreditsApplied` under the key `promo:<code>`: the ledger entry whose cause is
//!    the code.
//!
//! A crash between the two is completed by retrying: step 1 then answers
//! [`PromoError::AlreadyRedeemed`] carrying the credits, and step 2 credits at most once
//! per account and code. A process manager that follows `PromoCodeRedeemed` on the event
//! stream completes step 2 even if the caller never retries.

mod aggregate;
mod commands;
mod error;
mod events;
mod values;

#[cfg(test)]
mod tests;

pub use aggregate::{PromoCode, REDEMPTIONS_MAX};
pub use commands::PromoCommand;
pub use error::PromoError;
pub use events::PromoEvent;
pub use values::{PromoCodeValue, PromoCodeValueError, PROMO_CODE_LEN_MAX, PROMO_CODE_LEN_MIN};
