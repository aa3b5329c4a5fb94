//! Integer money. A float never touches a balance.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Micro-credits in one credit. Prices are per million tokens, so one micro-credit per token
/// per credit-per-million keeps every charge an exact integer.
pub const MICROS_PER_CREDIT: i64 = 1_000_000;

/// The largest amount a single command may move: one billion credits. Keeps every sum of a
/// bounded number of amounts far from `i64` overflow.
pub const AMOUNT_MAX: Credits = Credits(1_000_000_000 * MICROS_PER_CREDIT);

/// An amount of credit in micro-credits (1 credit = 1,000,000 micro-credits).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Credits(i64);

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The amount must be greater than zero.
    #[error("amount must be greater than zero, got {0} micro-credits")]
    NotPositive(i64),
    /// The amount must not be negative.
    #[error("amount must not be negative, got {0} micro-credits")]
    Negative(i64),
    /// The amount is larger than one command may move.
    #[error("amount {0} micro-credits exceeds the maximum of {max}", max = AMOUNT_MAX.0)]
    TooLarge(i64),
}

impl Credits {
    pub const ZERO: Credits = Credits(0);

    /// An amount from micro-credits, unchecked: balances and sums.
    pub const fn from_micros(micros: i64) -> Self {
        Credits(micros)
    }

    /// Whole credits; saturates rather than overflowing.
    pub const fn from_credits(credits: i64) -> Self {
        Credits(credits.saturating_mul(MICROS_PER_CREDIT))
    }

    /// The amount in micro-credits.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// An amount a command may move: `0 < micros <= AMOUNT_MAX`.
    pub fn positive(micros: i64) -> Result<Self, MoneyError> {
        if micros <= 0 {
            Err(MoneyError::NotPositive(micros))
        } else if micros > AMOUNT_MAX.0 {
            Err(MoneyError::TooLarge(micros))
        } else {
            Ok(Credits(micros))
        }
    }

    /// A charge: `0 <= micros <= AMOUNT_MAX`.
    pub fn non_negative(micros: i64) -> Result<Self, MoneyError> {
        if micros < 0 {
            Err(MoneyError::Negative(micros))
        } else if micros > AMOUNT_MAX.0 {
            Err(MoneyError::TooLarge(micros))
        } else {
            Ok(Credits(micros))
        }
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }

    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Credits {
    /// Whole credits with six decimals, e.g. `12.500000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = MICROS_PER_CREDIT.unsigned_abs();
        write!(f, "{sign}{}.{:06}", abs / per, abs % per)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_amounts_refuse_zero_negative_and_huge_values() {
        assert_eq!(Credits::positive(0), Err(MoneyError::NotPositive(0)));
        assert_eq!(Credits::positive(-5), Err(MoneyError::NotPositive(-5)));
        assert!(matches!(
            Credits::positive(AMOUNT_MAX.micros() + 1),
            Err(MoneyError::TooLarge(_))
        ));
        assert_eq!(Credits::positive(7).map(Credits::micros), Ok(7));
    }

    #[test]
    fn display_shows_whole_credits_with_six_decimals() {
        assert_eq!(Credits::from_micros(12_500_000).to_string(), "12.500000");
        assert_eq!(Credits::from_micros(-1).to_string(), "-0.000001");
    }
}
