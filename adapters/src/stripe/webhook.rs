//! Stripe webhooks: the `Stripe-Signature` check (HMAC-SHA256 of `"<t>.<payload>"`, any `v1`
//! signature, a tolerance on `t`) and the few fields of the few events the hub reads.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is missing its `t=` or has no `v1=`.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    /// No `v1` signature matches the payload under the secret.
    #[error("no v1 signature matches the payload")]
    Mismatch,
    /// The signature's timestamp is outside the tolerance.
    #[error("the signature's timestamp is outside the tolerance of {tolerance_s} s")]
    Stale { tolerance_s: u64 },
}

/// Longest `Stripe-Signature` header read: a timestamp and a few signatures (one per active
/// secret during a rotation), each 64 hex digits.
const SIGNATURE_HEADER_LEN_MAX: usize = 4_096;

/// Verify a `Stripe-Signature: t=<unix seconds>,v1=<hex>,v1=<hex>,...` header: one `v1`
/// must be HMAC-SHA256 of `"<t>.<payload>"` under `secret` (compared in constant time), and
/// `t` within `tolerance_s` of `now`. Other schemes (`v0`) are ignored, as Stripe's
/// libraries do.
pub fn verify_signature(
    payload: &[u8],
    header: &str,
    secret: &str,
    now: i64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    if header.len() > SIGNATURE_HEADER_LEN_MAX {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for pair in header.split(',') {
        let Some((key, value)) = pair.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let matches = signatures.iter().any(|candidate| {
        decode_hex(candidate).is_some_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let tolerance = i64::try_from(tolerance_s).unwrap_or(i64::MAX);
    if now.saturating_sub(timestamp).abs() > tolerance {
        return Err(SignatureError::Stale { tolerance_s });
    }
    Ok(())
}

/// `t=<timestamp>,v1=<signature>`: how Stripe signs `payload` (tests and tools use it).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    // HMAC accepts a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A Stripe event, as far as the hub reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// A Checkout Session in an event (`checkout.session.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct SessionObject {
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// An id, or the expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
}

/// A PaymentIntent in an event (`payment_intent.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntentObject {
    pub id: String,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
}

/// A Charge in an event (`charge.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct ChargeObject {
    pub id: String,
    /// An id, or the expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    /// Refunded so far (cumulative), in the smallest unit.
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub refunds: Option<RefundList>,
}

/// A Dispute in an event (`charge.dispute.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct DisputeObject {
    pub id: String,
    /// The disputed charge: an id, or the expanded object.
    pub charge: Option<Value>,
    /// An id, or the expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    /// Disputed, in the smallest unit.
    pub amount: i64,
    /// `warning_needs_response`, `needs_response`, `under_review`, `won`, `lost`, ...
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefundList {
    #[serde(default)]
    pub data: Vec<RefundObject>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefundObject {
    pub id: String,
}

/// The id of an expandable field: `"pi_1"` or `{"id": "pi_1", ...}`.
pub fn expandable_id(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(id) => Some(id.as_str()),
        Value::Object(object) => object.get("id").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_767_225_600;

    #[test]
    fn a_signature_made_the_way_stripe_makes_it_is_accepted() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, SECRET, NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW + 10, 300),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let payload = br#"{"id":"evt_1"}"#;
        let good = sign(payload, SECRET, NOW);
        let good_v1 = good.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let header = format!("t={NOW},v1={},v0=abc,v1={good_v1}", "0".repeat(64));
        assert_eq!(verify_signature(payload, &header, SECRET, NOW, 300), Ok(()));
    }

    #[test]
    fn a_signature_under_another_secret_or_of_another_payload_is_refused() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, "whsec_other", NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let header = sign(br#"{"id":"evt_2"}"#, SECRET, NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_refused_either_way() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, SECRET, NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW + 301, 300),
            Err(SignatureError::Stale { tolerance_s: 300 })
        );
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW - 301, 300),
            Err(SignatureError::Stale { tolerance_s: 300 })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let payload = b"{}";
        for header in ["", "v1=abc", "t=1", "t=x,v1=ab", "garbage"] {
            assert_eq!(
                verify_signature(payload, header, SECRET, NOW, 300),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }
}
