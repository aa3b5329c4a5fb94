//! Signed checkpoints in Postgres and on JetStream, and proofs read from them.
//!
//! The checkpointer (one leader among the processes running it, like the relay) takes,
//! every `audit.checkpoint_interval_ms`, one snapshot of the database: the head (last
//! sequence and chain hash) of every aggregate. When any moved since the last checkpoint it
//! builds the Merkle tree over all heads in `(aggregate_type, aggregate_id)` order (byte
//! order), signs the statement, and stores the checkpoint with the heads that moved in the
//! same transaction. Then it publishes every checkpoint not yet published to
//! `HUB_CHECKPOINTS` (`Nats-Msg-Id: checkpoint:<id>`), so a copy lives outside the database.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use hub_nats::leader::{supervise, Leadership};
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::chain::{to_hex, Hash, StoredEvent, GENESIS};
use super::merkle::{head_leaf, Tree};
use super::proof::{statement, CheckpointKey, Proof, SignedCheckpoint, PROOF_FORMAT};
use hub_commands::SharedClock;

/// The leader role's name (its advisory lock).
pub const ROLE: &str = "checkpointer";

/// Why checkpoints or proofs could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("the database could not be read: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a stored value is not what it should be: {0}")]
    Corrupt(String),
    #[error("the checkpoint could not be published: {0}")]
    Publish(String),
}

/// Why no proof was given.
#[derive(Debug, thiserror::Error)]
pub enum ProofLookupError {
    #[error("no such event")]
    NoSuchEvent,
    /// The event came after the last checkpoint: the next one will cover it.
    #[error("no checkpoint covers this event yet; the next one is due within {0:?}")]
    NotYetCheckpointed(Duration),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

fn hash_of(bytes: Vec<u8>, what: &str) -> Result<Hash, EvidenceError> {
    bytes
        .try_into()
        .map_err(|_| EvidenceError::Corrupt(format!("{what} is not 32 bytes")))
}

/// One aggregate's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub hash: Hash,
}

type HeadKey = (String, String);

/// The heads of checkpoint `id` (every aggregate's latest head row at or before it), in
/// leaf order.
async fn heads_at(
    conn: &mut sqlx::PgConnection,
    id: i64,
) -> Result<BTreeMap<HeadKey, (i64, Hash)>, EvidenceError> {
    let rows = sqlx::query(
        "SELECT DISTINCT ON (aggregate_type, aggregate_id)
                aggregate_type, aggregate_id, sequence, hash
           FROM ledger_checkpoint_heads
          WHERE checkpoint_id <= $1
          ORDER BY aggregate_type, aggregate_id, checkpoint_id DESC",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut heads = BTreeMap::new();
    for row in rows {
        heads.insert(
            (row.try_get("aggregate_type")?, row.try_get("aggregate_id")?),
            (
                row.try_get("sequence")?,
                hash_of(row.try_get("hash")?, "a head hash")?,
            ),
        );
    }
    Ok(heads)
}

/// The tree over `heads` (a `BTreeMap` iterates in byte order of type, then id).
pub(crate) fn tree_of(heads: &BTreeMap<HeadKey, (i64, Hash)>) -> Tree {
    Tree::new(
        heads
            .iter()
            .map(|((t, i), (sequence, hash))| head_leaf(t, i, *sequence, hash))
            .collect(),
    )
}

/// Take one checkpoint if any aggregate moved since the last; `None` if none did.
pub async fn checkpoint_once(
    pool: &PgPool,
    key: &CheckpointKey,
    now: DateTime<Utc>,
) -> Result<Option<SignedCheckpoint>, EvidenceError> {
    let mut tx = pool.begin().await?;
    // One snapshot for every read below.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, root FROM ledger_checkpoints ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (last_id, previous) = match last {
        Some((id, root)) => (id, hash_of(root, "a checkpoint root")?),
        None => (0, GENESIS),
    };
    let mut heads = heads_at(&mut tx, last_id).await?;
    // Each aggregate's last sequence: an index-only walk of the primary key.
    let current: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, max(sequence)
           FROM events GROUP BY aggregate_type, aggregate_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let moved: Vec<(String, String, i64)> = current
        .into_iter()
        .filter(|(t, i, sequence)| {
            heads
                .get(&(t.clone(), i.clone()))
                .is_none_or(|(seen, _)| seen != sequence)
        })
        .collect();
    if moved.is_empty() {
        tx.rollback().await?;
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.hash
           FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS m(t, i, s)
           JOIN events e
             ON e.aggregate_type = m.t AND e.aggregate_id = m.i AND e.sequence = m.s",
    )
    .bind(moved.iter().map(|m| m.0.as_str()).collect::<Vec<_>>())
    .bind(moved.iter().map(|m| m.1.as_str()).collect::<Vec<_>>())
    .bind(moved.iter().map(|m| m.2).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut new_heads = Vec::with_capacity(rows.len());
    for row in rows {
        let head = Head {
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            hash: hash_of(row.try_get("hash")?, "an event hash")?,
        };
        heads.insert(
            (head.aggregate_type.clone(), head.aggregate_id.clone()),
            (head.sequence, head.hash),
        );
        new_heads.push(head);
    }
    tx.rollback().await?;

    let tree = tree_of(&heads);
    let id = last_id + 1;
    let created_at_micros = now.timestamp_micros();
    let created_at = DateTime::from_timestamp_micros(created_at_micros).unwrap_or(now);
    let root = tree.root();
    let signature = key.sign(&statement(
        id,
        created_at_micros,
        tree.size(),
        &root,
        &previous,
    ));
    let tree_size = i64::try_from(tree.size())
        .map_err(|_| EvidenceError::Corrupt("too many aggregates".into()))?;

    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO ledger_checkpoints (id, created_at, tree_size, root, previous, signature,
                                         key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(created_at)
    .bind(tree_size)
    .bind(root.to_vec())
    .bind(previous.to_vec())
    .bind(signature.to_vec())
    .bind(key.key_id())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ledger_checkpoint_heads (checkpoint_id, aggregate_type, aggregate_id,
                                              sequence, hash)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int8[], $5::bytea[])",
    )
    .bind(id)
    .bind(
        new_heads
            .iter()
            .map(|h| h.aggregate_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        new_heads
            .iter()
            .map(|h| h.aggregate_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(new_heads.iter().map(|h| h.sequence).collect::<Vec<_>>())
    .bind(
        new_heads
            .iter()
            .map(|h| h.hash.to_vec())
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(SignedCheckpoint {
        id,
        created_at,
        created_at_micros,
        tree_size: tree.size(),
        root: to_hex(&root),
        previous: to_hex(&previous),
        key_id: key.key_id(),
        signature: to_hex(&signature),
    }))
}

const CHECKPOINT_COLUMNS: &str =
    "id, created_at, tree_size, root, previous, signature, key_id, published";

pub(crate) fn checkpoint_of(
    row: &sqlx::postgres::PgRow,
) -> Result<SignedCheckpoint, EvidenceError> {
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    let tree_size: i64 = row.try_get("tree_size")?;
    Ok(SignedCheckpoint {
        id: row.try_get("id")?,
        created_at,
        created_at_micros: created_at.timestamp_micros(),
        tree_size: u64::try_from(tree_size)
            .map_err(|_| EvidenceError::Corrupt("a negative tree size".into()))?,
        root: to_hex(&row.try_get::<Vec<u8>, _>("root")?),
        previous: to_hex(&row.try_get::<Vec<u8>, _>("previous")?),
        key_id: row.try_get("key_id")?,
        signature: to_hex(&row.try_get::<Vec<u8>, _>("signature")?),
    })
}

/// Publish every checkpoint not yet published, oldest first; how many were.
pub async fn publish_pending(
    pool: &PgPool,
    js: &jetstream::Context,
    topology: &hub_nats::Topology,
) -> Result<usize, EvidenceError> {
    let rows = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints WHERE NOT published ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    let mut published = 0;
    for row in rows {
        let checkpoint = checkpoint_of(&row)?;
        let body =
            serde_json::to_vec(&checkpoint).map_err(|e| EvidenceError::Publish(e.to_string()))?;
        let message = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(format!("checkpoint:{}", checkpoint.id));
        js.send_publish(topology.checkpoint_subject(), message)
            .await
            .map_err(|e| EvidenceError::Publish(e.to_string()))?
            .into_future()
            .await
            .map_err(|e| EvidenceError::Publish(e.to_string()))?;
        sqlx::query("UPDATE ledger_checkpoints SET published = true WHERE id = $1")
            .bind(checkpoint.id)
            .execute(pool)
            .await?;
        published += 1;
    }
    Ok(published)
}

/// Checkpoints, newest first, older than `before` (an id) if given.
pub async fn list(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<SignedCheckpoint>, EvidenceError> {
    let rows = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints
          WHERE $1::int8 IS NULL OR id < $1
          ORDER BY id DESC LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(checkpoint_of).collect()
}

/// The trees of recent checkpoints, so a proof reads a path instead of hashing the tree.
#[derive(Default)]
pub struct Trees {
    kept: Mutex<Vec<(i64, Arc<CheckpointTree>)>>,
}

/// A checkpoint's heads and tree.
pub struct CheckpointTree {
    heads: BTreeMap<HeadKey, (i64, Hash)>,
    tree: Tree,
}

/// Trees kept at once.
const TREES_KEPT: usize = 4;

impl Trees {
    async fn get(
        &self,
        conn: &mut sqlx::PgConnection,
        id: i64,
    ) -> Result<Arc<CheckpointTree>, EvidenceError> {
        if let Some(kept) = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(kept, _)| *kept == id)
        {
            return Ok(Arc::clone(&kept.1));
        }
        let heads = heads_at(conn, id).await?;
        let tree = tree_of(&heads);
        let built = Arc::new(CheckpointTree { heads, tree });
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|(kept, _)| *kept != id);
        kept.push((id, Arc::clone(&built)));
        if kept.len() > TREES_KEPT {
            kept.remove(0);
        }
        Ok(built)
    }
}

/// Columns [`stored_of`] reads.
pub(crate) const STORED_COLUMNS: &str = "aggregate_type, aggregate_id, sequence, event_type,
    event_version, payload::text AS payload, metadata::text AS metadata, recorded_at";

/// An event row (selected with [`STORED_COLUMNS`]) as the chain covers it.
pub(crate) fn stored_of(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, sqlx::Error> {
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
    Ok(StoredEvent {
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at_micros: recorded_at.timestamp_micros(),
    })
}

/// The event as stored, by its key.
pub async fn stored_event(
    conn: &mut sqlx::PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<(StoredEvent, Hash)>, EvidenceError> {
    let row = sqlx::query(&format!(
        "SELECT {STORED_COLUMNS}, hash FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some((
        stored_of(&row)?,
        hash_of(row.try_get("hash")?, "an event hash")?,
    )))
}

/// A proof that event `sequence` of the aggregate is in the first checkpoint that covers it.
pub async fn proof(
    pool: &PgPool,
    trees: &Trees,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    interval: Duration,
) -> Result<Proof, ProofLookupError> {
    let mut conn = pool.acquire().await.map_err(EvidenceError::from)?;
    let (event, hash) = stored_event(&mut conn, aggregate_type, aggregate_id, sequence)
        .await?
        .ok_or(ProofLookupError::NoSuchEvent)?;
    // The first checkpoint whose head of this aggregate is at or past the event.
    let covering: Option<i64> = sqlx::query_scalar(
        "SELECT min(checkpoint_id) FROM ledger_checkpoint_heads
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .fetch_one(&mut *conn)
    .await
    .map_err(EvidenceError::from)?;
    let id = covering.ok_or(ProofLookupError::NotYetCheckpointed(interval))?;
    let row = sqlx::query(&format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM ledger_checkpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(EvidenceError::from)?;
    let checkpoint = checkpoint_of(&row)?;
    let tree = trees.get(&mut conn, id).await?;
    let key = (aggregate_type.to_string(), aggregate_id.to_string());
    let (head_sequence, head_hash) = *tree.heads.get(&key).ok_or_else(|| {
        EvidenceError::Corrupt("a covering checkpoint lacks the aggregate".into())
    })?;
    let leaf_index = tree.heads.range(..key).count() as u64;
    let audit_path = tree
        .tree
        .path(leaf_index)
        .ok_or_else(|| EvidenceError::Corrupt("a leaf outside its tree".into()))?;
    let previous_hash: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT hash FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence - 1)
    .fetch_optional(&mut *conn)
    .await
    .map_err(EvidenceError::from)?;
    let previous_hash = match previous_hash {
        Some(bytes) => hash_of(bytes, "an event hash")?,
        None => GENESIS,
    };
    let later = sqlx::query(&format!(
        "SELECT {STORED_COLUMNS} FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 AND sequence <= $4
          ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(sequence)
    .bind(head_sequence)
    .fetch_all(&mut *conn)
    .await
    .map_err(EvidenceError::from)?;
    let later_digests = later
        .iter()
        .map(|row| Ok(to_hex(&stored_of(row)?.digest())))
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(EvidenceError::from)?;
    Ok(Proof {
        format: PROOF_FORMAT.into(),
        event,
        previous_hash: to_hex(&previous_hash),
        hash: to_hex(&hash),
        later_digests,
        head_sequence,
        head_hash: to_hex(&head_hash),
        leaf_index,
        audit_path: audit_path.iter().map(|h| to_hex(h)).collect(),
        checkpoint,
    })
}

/// What one checkpointer round did, for the logs.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Round {
    pub checkpoint: Option<i64>,
    pub published: usize,
}

/// The checkpointer: one leader signs checkpoints every `interval` and publishes them.
pub struct Checkpointer {
    pub pool: PgPool,
    pub database_url: String,
    pub js: jetstream::Context,
    pub topology: hub_nats::Topology,
    pub key: CheckpointKey,
    pub interval: Duration,
    pub clock: SharedClock,
}

impl Checkpointer {
    /// One round: a checkpoint if anything moved, then publish what is pending.
    pub async fn round(&self) -> Result<Round, EvidenceError> {
        let checkpoint = checkpoint_once(&self.pool, &self.key, self.clock.now()).await?;
        let published = publish_pending(&self.pool, &self.js, &self.topology).await?;
        Ok(Round {
            checkpoint: checkpoint.map(|c| c.id),
            published,
        })
    }

    /// Run until `shutdown`, leading when no other process does.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let this = Arc::new(self);
        supervise(
            ROLE,
            this.interval.min(Duration::from_secs(5)),
            shutdown,
            || {
                let this = Arc::clone(&this);
                async move { this.lead().await }
            },
        )
        .await;
    }

    async fn lead(&self) -> anyhow::Result<()> {
        let Some(mut leadership) = Leadership::try_acquire(&self.database_url, ROLE).await? else {
            tokio::time::sleep(self.interval).await;
            return Ok(());
        };
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leadership.still_held().await {
                return Ok(());
            }
            match self.round().await {
                Ok(round) if round.checkpoint.is_some() || round.published > 0 => {
                    tracing::info!(checkpoint = ?round.checkpoint, published = round.published, "ledger checkpoint");
                }
                Ok(_) => {}
                Err(err) => {
                    leadership.release().await;
                    return Err(err.into());
                }
            }
        }
    }
}
