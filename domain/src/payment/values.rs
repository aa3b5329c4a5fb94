//! Stripe's identifiers, validated once at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::ids::{IdError, IdempotencyKey, KEY_LEN_MAX};

/// A Stripe object's id: a Checkout Session (`cs_...`), an event (`evt_...`), a payment
/// intent (`pi_...`), a refund (`re_...`) or a charge (`ch_...`). Stripe's ids are letters,
/// digits and `_`, and far shorter than the bound (a session's is 66 characters, an event's
/// 28); the bound and the alphabet are those of every key the hub indexes
/// ([`IdempotencyKey`]), so a session id is always a valid key of its purchase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StripeId(String);

impl StripeId {
    pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
        const WHAT: &str = "Stripe id";
        let s = s.into();
        if s.is_empty() {
            return Err(IdError::Empty(WHAT));
        }
        if s.len() > KEY_LEN_MAX {
            return Err(IdError::TooLong { what: WHAT });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(IdError::BadCharacter { what: WHAT });
        }
        Ok(StripeId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This id as the key of a credit command: a session id is the `payment_id` of
    /// `CreditCommand::PurchaseCredits` (stored there as `payment:<session id>`). It never
    /// fails (a Stripe id is checked as a key is); it returns a `Result` only because keys
    /// are made by parsing.
    pub fn to_idempotency_key(&self) -> Result<IdempotencyKey, IdError> {
        IdempotencyKey::parse(self.0.clone())
    }
}

impl TryFrom<String> for StripeId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl From<StripeId> for String {
    fn from(id: StripeId) -> String {
        id.0
    }
}

impl fmt::Display for StripeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
