//! The promo code itself, as a user types it and as it is stored.
//!
//! Stored in events forever: a check may be loosened, never tightened, or old events would
//! stop deserializing.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ids::{IdError, IdempotencyKey};

/// Shortest promo code: shorter ones are guessed too easily.
pub const PROMO_CODE_LEN_MIN: usize = 3;
/// Longest promo code. Well inside [`crate::ids::KEY_LEN_MAX`], so every code is also a
/// valid idempotency key on the credit account.
pub const PROMO_CODE_LEN_MAX: usize = 64;

/// Why a promo code was refused. A string that does not parse names no code, so the API
/// may answer it as an unknown code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoCodeValueError {
    /// A promo code must not be empty.
    #[error("a promo code must not be empty")]
    Empty,
    /// A promo code is too short or too long.
    #[error("a promo code must be {min} to {max} characters")]
    Length { min: usize, max: usize },
    /// A promo code holds a character outside `[A-Za-z0-9_-]`.
    #[error("a promo code may only contain letters, digits, _ and -")]
    BadCharacter,
}

/// A promo code, trimmed and uppercased, so that `" welcome10 "` and `"WELCOME10"` are the
/// same code: 3 to 64 characters of `[A-Z0-9_-]`. The `PromoCode` aggregate's id is this.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromoCodeValue(String);

impl PromoCodeValue {
    pub fn parse(s: impl AsRef<str>) -> Result<Self, PromoCodeValueError> {
        let s = s.as_ref().trim();
        if s.is_empty() {
            return Err(PromoCodeValueError::Empty);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(PromoCodeValueError::BadCharacter);
        }
        // Only ASCII is left, so bytes are characters.
        if !(PROMO_CODE_LEN_MIN..=PROMO_CODE_LEN_MAX).contains(&s.len()) {
            return Err(PromoCodeValueError::Length {
                min: PROMO_CODE_LEN_MIN,
                max: PROMO_CODE_LEN_MAX,
            });
        }
        Ok(PromoCodeValue(s.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of `CreditCommand::ApplyPromoCredits { code }` on the redeemer's account
    /// (stored there as `promo:<code>`). Every promo code is a valid idempotency key, so
    /// this never fails; it returns a `Result` only because keys are made by parsing.
    pub fn credit_key(&self) -> Result<IdempotencyKey, IdError> {
        IdempotencyKey::parse(self.0.clone())
    }
}

impl TryFrom<String> for PromoCodeValue {
    type Error = PromoCodeValueError;
    fn try_from(s: String) -> Result<Self, PromoCodeValueError> {
        Self::parse(s)
    }
}

impl From<PromoCodeValue> for String {
    fn from(code: PromoCodeValue) -> String {
        code.0
    }
}

impl fmt::Display for PromoCodeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
