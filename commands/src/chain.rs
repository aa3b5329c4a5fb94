//! The hash chain every event carries: computed here as each event is appended
//! ([`crate::store::HubEventStore::append`]), and again by whoever checks
//! (`aihub audit verify`, a proof's verifier).
//!
//! ```text
//! digest(e) = SHA-256(canonical bytes of e)
//! hash(e)   = SHA-256(hash(previous event of the same aggregate) || digest(e))
//! ```
//!
//! with [`GENESIS`] (32 zero bytes) before an aggregate's first event. The canonical bytes
//! are `aggregate_type`, `aggregate_id`, `event_type`, `event_version`, `payload` and
//! `metadata`, each as an 8-byte big-endian length followed by its UTF-8 bytes (payload and
//! metadata exactly as stored), then `sequence` and `recorded_at` in microseconds since the
//! Unix epoch, each an 8-byte big-endian signed integer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// What comes before an aggregate's first event.
pub const GENESIS: Hash = [0; 32];

/// An event exactly as the event store holds it: the fields the chain covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload's JSON text, byte for byte as stored.
    pub payload: String,
    /// The metadata's JSON text, byte for byte as stored.
    pub metadata: String,
    /// When it was written, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
}

impl StoredEvent {
    /// SHA-256 of the event's canonical bytes.
    pub fn digest(&self) -> Hash {
        digest(
            [
                &self.aggregate_type,
                &self.aggregate_id,
                &self.event_type,
                &self.event_version,
                &self.payload,
                &self.metadata,
            ],
            self.sequence,
            self.recorded_at_micros,
        )
    }
}

/// SHA-256 of an event's canonical bytes, from its fields held anywhere (a store row, a
/// stream message): `texts` are `aggregate_type`, `aggregate_id`, `event_type`,
/// `event_version`, `payload` and `metadata`, in that order.
pub fn digest(texts: [&str; 6], sequence: i64, recorded_at_micros: i64) -> Hash {
    let mut hasher = Sha256::new();
    for field in texts {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(sequence.to_be_bytes());
    hasher.update(recorded_at_micros.to_be_bytes());
    hasher.finalize().into()
}

/// The hash of an event whose digest is `digest`, after an event hashed `previous`.
pub fn link(previous: &Hash, digest: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(digest);
    hasher.finalize().into()
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Bytes from hex (either case); `None` if it is not hex of whole bytes.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// A 32-byte hash from hex.
pub fn hash_from_hex(text: &str) -> Option<Hash> {
    from_hex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> StoredEvent {
        StoredEvent {
            aggregate_type: "CreditAccount".into(),
            aggregate_id: "0b7f5c2e-4c1d-4a8e-9a57-3f1e2d3c4b5a".into(),
            sequence: 1,
            event_type: "AccountOpened".into(),
            event_version: "1".into(),
            payload: r#"{"AccountOpened":{}}"#.into(),
            metadata: r#"{"actor":"signup"}"#.into(),
            recorded_at_micros: 1_764_547_200_000_000,
        }
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = event().digest();
        let mut changed = Vec::new();
        let mut e = event();
        e.aggregate_type.push('x');
        changed.push(e.digest());
        let mut e = event();
        e.aggregate_id.push('x');
        changed.push(e.digest());
        let mut e = event();
        e.sequence += 1;
        changed.push(e.digest());
        let mut e = event();
        e.event_type.push('x');
        changed.push(e.digest());
        let mut e = event();
        e.event_version.push('x');
        changed.push(e.digest());
        let mut e = event();
        e.payload = r#"{"AccountOpened": {}}"#.into();
        changed.push(e.digest());
        let mut e = event();
        e.metadata.push(' ');
        changed.push(e.digest());
        let mut e = event();
        e.recorded_at_micros += 1;
        changed.push(e.digest());
        for digest in changed {
            assert_ne!(digest, base);
        }
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let mut a = event();
        a.event_type = "ab".into();
        a.event_version = "c".into();
        let mut b = event();
        b.event_type = "a".into();
        b.event_version = "bc".into();
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001ABff"), Some(bytes.to_vec()));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(hash_from_hex("00"), None);
    }
}
