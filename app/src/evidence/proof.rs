//! Signed checkpoints and inclusion proofs, and checking one offline with nothing but the
//! proof and the operator's public key (`aihub audit verify-proof`).
//!
//! A checkpoint signs, with Ed25519, its *statement*: the ASCII bytes
//! `aihub-checkpoint-v1` and a zero byte, then the checkpoint's id, its time (microseconds
//! since the Unix epoch) and its tree size, each 8 bytes big-endian, then the tree's root
//! and the previous checkpoint's root (32 bytes each). A proof for one event carries the
//! event as stored, the hash before it, the digests of its aggregate's later events up to
//! the head the checkpoint saw, that head's position among the checkpoint's leaves, its
//! audit path and the signed checkpoint.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chain::{hash_from_hex, link, to_hex, Hash, StoredEvent};
use super::merkle::{head_leaf, verify_inclusion};

/// What a proof file says it is.
pub const PROOF_FORMAT: &str = "aihub-event-proof/1";

const STATEMENT_TAG: &[u8] = b"aihub-checkpoint-v1\0";

/// A checkpoint as published: what was signed, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedCheckpoint {
    pub id: i64,
    /// For people; the signature covers `created_at_micros`.
    pub created_at: DateTime<Utc>,
    pub created_at_micros: i64,
    /// Leaves: aggregates with at least one event when it was taken.
    pub tree_size: u64,
    /// Hex.
    pub root: String,
    /// The previous checkpoint's root, hex (zeros for the first).
    pub previous: String,
    /// SHA-256 of the public key, hex.
    pub key_id: String,
    /// Ed25519 over the statement, hex.
    pub signature: String,
}

/// The bytes a checkpoint's signature covers.
pub fn statement(
    id: i64,
    created_at_micros: i64,
    tree_size: u64,
    root: &Hash,
    previous: &Hash,
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STATEMENT_TAG.len() + 24 + 64);
    bytes.extend_from_slice(STATEMENT_TAG);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&created_at_micros.to_be_bytes());
    bytes.extend_from_slice(&tree_size.to_be_bytes());
    bytes.extend_from_slice(root);
    bytes.extend_from_slice(previous);
    bytes
}

/// The key checkpoints are signed with.
#[derive(Clone)]
pub struct CheckpointKey {
    signing: SigningKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// From a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &Hash) -> CheckpointKey {
        CheckpointKey {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Derived from another secret, when no key of its own is configured.
    pub fn derived_from(secret: &str) -> CheckpointKey {
        let mut hasher = Sha256::new();
        hasher.update(b"aihub audit checkpoint key v1\0");
        hasher.update(secret.as_bytes());
        CheckpointKey::from_seed(&hasher.finalize().into())
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        to_hex(self.public_key().as_bytes())
    }

    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }

    pub fn sign(&self, statement: &[u8]) -> [u8; 64] {
        self.signing.sign(statement).to_bytes()
    }
}

/// SHA-256 of a public key, hex.
pub fn key_id(public: &VerifyingKey) -> String {
    to_hex(&Sha256::digest(public.as_bytes()))
}

/// A public key from hex (64 digits) or standard base64 (44 characters).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, ProofError> {
    let text = text.trim();
    let bytes = super::chain::from_hex(text)
        .or_else(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        })
        .ok_or(ProofError::PublicKey)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ProofError::PublicKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| ProofError::PublicKey)
}

/// An event, and what ties it to a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Proof {
    /// [`PROOF_FORMAT`].
    pub format: String,
    #[schema(value_type = Object)]
    pub event: StoredEvent,
    /// The hash of the aggregate's event before this one (zeros for its first), hex.
    pub previous_hash: String,
    /// This event's chain hash, hex.
    pub hash: String,
    /// Digests of the aggregate's later events up to the head the checkpoint saw, hex.
    pub later_digests: Vec<String>,
    pub head_sequence: i64,
    /// The head's chain hash, hex.
    pub head_hash: String,
    /// The head's position among the checkpoint's leaves.
    pub leaf_index: u64,
    /// The head leaf's audit path, nearest the leaf first, hex.
    pub audit_path: Vec<String>,
    pub checkpoint: SignedCheckpoint,
}

/// The step of a check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("not a proof of format {PROOF_FORMAT}")]
    Format,
    #[error("the public key is not 32 bytes of hex or base64 of an Ed25519 key")]
    PublicKey,
    #[error("{0} is not a 32-byte hex hash")]
    Malformed(&'static str),
    #[error("the event's hash does not follow from the previous hash and the event's bytes")]
    EventHash,
    #[error("the later events do not lead from the event to the head")]
    Chain,
    #[error("the head is not in the checkpoint's tree at the given position")]
    Inclusion,
    #[error("the checkpoint was signed by key {found}, not by key {expected}")]
    WrongKey { expected: String, found: String },
    #[error("the checkpoint's signature does not verify")]
    Signature,
}

fn hash(text: &str, what: &'static str) -> Result<Hash, ProofError> {
    hash_from_hex(text).ok_or(ProofError::Malformed(what))
}

/// Check a proof against the operator's public key: every step from the event's bytes to
/// the signature, nothing taken on trust.
pub fn verify(proof: &Proof, public: &VerifyingKey) -> Result<(), ProofError> {
    if proof.format != PROOF_FORMAT {
        return Err(ProofError::Format);
    }
    // 1. The event's own hash.
    let previous = hash(&proof.previous_hash, "previous_hash")?;
    let claimed = hash(&proof.hash, "hash")?;
    let mut at = link(&previous, &proof.event.digest());
    if at != claimed {
        return Err(ProofError::EventHash);
    }
    // 2. From the event to the head.
    for digest in &proof.later_digests {
        at = link(&at, &hash(digest, "later_digests")?);
    }
    let head_sequence = proof
        .event
        .sequence
        .checked_add(i64::try_from(proof.later_digests.len()).map_err(|_| ProofError::Chain)?)
        .ok_or(ProofError::Chain)?;
    if at != hash(&proof.head_hash, "head_hash")? || head_sequence != proof.head_sequence {
        return Err(ProofError::Chain);
    }
    // 3. The head in the checkpoint's tree.
    let checkpoint = &proof.checkpoint;
    let root = hash(&checkpoint.root, "checkpoint.root")?;
    let leaf = head_leaf(
        &proof.event.aggregate_type,
        &proof.event.aggregate_id,
        proof.head_sequence,
        &at,
    );
    let path = proof
        .audit_path
        .iter()
        .map(|h| hash(h, "audit_path"))
        .collect::<Result<Vec<_>, _>>()?;
    if !verify_inclusion(&leaf, proof.leaf_index, checkpoint.tree_size, &path, &root) {
        return Err(ProofError::Inclusion);
    }
    // 4. The checkpoint's signature, by this key.
    verify_checkpoint(checkpoint, public)
}

/// Check a checkpoint's signature.
pub fn verify_checkpoint(
    checkpoint: &SignedCheckpoint,
    public: &VerifyingKey,
) -> Result<(), ProofError> {
    let expected = key_id(public);
    if checkpoint.key_id != expected {
        return Err(ProofError::WrongKey {
            expected,
            found: checkpoint.key_id.clone(),
        });
    }
    let root = hash(&checkpoint.root, "checkpoint.root")?;
    let previous = hash(&checkpoint.previous, "checkpoint.previous")?;
    let signature: [u8; 64] = super::chain::from_hex(&checkpoint.signature)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ProofError::Malformed("checkpoint.signature"))?;
    let bytes = statement(
        checkpoint.id,
        checkpoint.created_at_micros,
        checkpoint.tree_size,
        &root,
        &previous,
    );
    public
        .verify(&bytes, &Signature::from_bytes(&signature))
        .map_err(|_| ProofError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::chain::GENESIS;
    use crate::evidence::merkle::Tree;

    fn event(sequence: i64) -> StoredEvent {
        StoredEvent {
            aggregate_type: "CreditAccount".into(),
            aggregate_id: "acct-1".into(),
            sequence,
            event_type: "CreditsGranted".into(),
            event_version: "1".into(),
            payload: format!(r#"{{"CreditsGranted":{{"n":{sequence}}}}}"#),
            metadata: "{}".into(),
            recorded_at_micros: 1_000 + sequence,
        }
    }

    /// A proof of event 2 of an aggregate of 4 events, the third of 5 leaves.
    fn proof(key: &CheckpointKey) -> Proof {
        let events: Vec<StoredEvent> = (1..=4).map(event).collect();
        let mut hashes = vec![GENESIS];
        for e in &events {
            let next = link(hashes.last().unwrap_or(&GENESIS), &e.digest());
            hashes.push(next);
        }
        let head = hashes[4];
        let mut leaves: Vec<Hash> = (0..5)
            .map(|i| head_leaf("CreditAccount", &format!("other-{i}"), 1, &[i; 32]))
            .collect();
        leaves[2] = head_leaf("CreditAccount", "acct-1", 4, &head);
        let tree = Tree::new(leaves);
        let root = tree.root();
        let previous = [9; 32];
        let signature = key.sign(&statement(7, 123, 5, &root, &previous));
        Proof {
            format: PROOF_FORMAT.into(),
            event: events[1].clone(),
            previous_hash: to_hex(&hashes[1]),
            hash: to_hex(&hashes[2]),
            later_digests: events[2..].iter().map(|e| to_hex(&e.digest())).collect(),
            head_sequence: 4,
            head_hash: to_hex(&head),
            leaf_index: 2,
            audit_path: tree
                .path(2)
                .unwrap_or_default()
                .iter()
                .map(|h| to_hex(h))
                .collect(),
            checkpoint: SignedCheckpoint {
                id: 7,
                created_at: DateTime::from_timestamp_micros(123).unwrap_or_default(),
                created_at_micros: 123,
                tree_size: 5,
                root: to_hex(&root),
                previous: to_hex(&previous),
                key_id: key.key_id(),
                signature: to_hex(&signature),
            },
        }
    }

    fn flip(hex: &str) -> String {
        let mut bytes = super::super::chain::from_hex(hex).unwrap_or_default();
        if let Some(first) = bytes.first_mut() {
            *first ^= 1;
        }
        to_hex(&bytes)
    }

    #[test]
    fn a_sound_proof_verifies_and_any_changed_part_fails() {
        let key = CheckpointKey::from_seed(&[3; 32]);
        let public = key.public_key();
        let good = proof(&key);
        assert_eq!(verify(&good, &public), Ok(()));

        let mut p = good.clone();
        p.event.payload = p.event.payload.replace("\"n\":2", "\"n\":3");
        assert_eq!(verify(&p, &public), Err(ProofError::EventHash));
        let mut p = good.clone();
        p.later_digests[0] = flip(&p.later_digests[0]);
        assert_eq!(verify(&p, &public), Err(ProofError::Chain));
        let mut p = good.clone();
        p.audit_path[0] = flip(&p.audit_path[0]);
        assert_eq!(verify(&p, &public), Err(ProofError::Inclusion));
        let mut p = good.clone();
        p.leaf_index = 3;
        assert_eq!(verify(&p, &public), Err(ProofError::Inclusion));
        let mut p = good.clone();
        p.checkpoint.signature = flip(&p.checkpoint.signature);
        assert_eq!(verify(&p, &public), Err(ProofError::Signature));
        let mut p = good.clone();
        p.checkpoint.created_at_micros += 1;
        assert_eq!(verify(&p, &public), Err(ProofError::Signature));

        let other = CheckpointKey::from_seed(&[4; 32]).public_key();
        assert!(matches!(
            verify(&good, &other),
            Err(ProofError::WrongKey { .. })
        ));
    }

    #[test]
    fn public_keys_parse_from_hex_and_base64() {
        use base64::Engine;
        let key = CheckpointKey::derived_from("a secret");
        let public = key.public_key();
        assert_eq!(parse_public_key(&key.public_key_hex()), Ok(public));
        let b64 = base64::engine::general_purpose::STANDARD.encode(public.as_bytes());
        assert_eq!(parse_public_key(&b64), Ok(public));
        assert_eq!(parse_public_key("abcd"), Err(ProofError::PublicKey));
        assert_ne!(
            CheckpointKey::derived_from("another").public_key(),
            public,
            "a derived key depends on its secret"
        );
    }
}
