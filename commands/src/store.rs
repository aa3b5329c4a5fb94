//! A cqrs-es `EventStore` with correct snapshots.

use cqrs_es::persist::PersistedEventRepository;
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore,
};
use hub_domain::{Decider, Decision};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::{PgPool, Row};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use crate::append::{EventRow, GroupCommit};
use crate::chain::{link, StoredEvent, GENESIS};
use crate::error::StoreError;

/// What the store and the bus need from an aggregate: cqrs-es's `Aggregate` and the
/// domain's [`Decider`], over the same command, event and refusal.
///
/// Implemented once, for every [`Decider`] whose `Aggregate` is its own (the domain's
/// `cqrs_aggregate!` writes it). The methods only name the decider's under the
/// `Aggregate`'s types, so that generic code here sees one set of associated types.
pub trait HubAggregate: Aggregate + Clone + 'static {
    /// See [`Decider::STATE_VERSION`]: snapshots of another version are ignored.
    const STATE_VERSION: i32;

    /// See [`Decider::event_key`]: stored in the event's metadata, under a unique index.
    fn event_key(event: &Self::Event) -> Option<String>;

    /// See [`Decider::related_keys`].
    fn related_keys(command: &Self::Command) -> Vec<String>;

    /// See [`Decider::decide`].
    fn decide(&self, command: Self::Command) -> Result<Decision<Self::Event>, Self::Error>;

    /// See [`Decider::recall`].
    fn recall(&mut self, events: Vec<Self::Event>);

    /// See [`Decider::may_be_forgotten`].
    fn may_be_forgotten(refusal: &Self::Error) -> bool;
}

impl<D> HubAggregate for D
where
    D: Decider
        + Aggregate<
            Command = <D as Decider>::Command,
            Event = <D as Decider>::Event,
            Error = <D as Decider>::Error,
        > + Clone
        + 'static,
{
    const STATE_VERSION: i32 = <D as Decider>::STATE_VERSION;

    fn event_key(event: &<D as Aggregate>::Event) -> Option<String> {
        <D as Decider>::event_key(event)
    }

    fn related_keys(command: &<D as Aggregate>::Command) -> Vec<String> {
        <D as Decider>::related_keys(command)
    }

    fn decide(
        &self,
        command: <D as Aggregate>::Command,
    ) -> Result<Decision<<D as Aggregate>::Event>, <D as Aggregate>::Error> {
        <D as Decider>::decide(self, command)
    }

    fn recall(&mut self, events: Vec<<D as Aggregate>::Event>) {
        <D as Decider>::recall(self, events);
    }

    fn may_be_forgotten(refusal: &<D as Aggregate>::Error) -> bool {
        <D as Decider>::may_be_forgotten(refusal)
    }
}

/// An aggregate as loaded: its state and the sequence of its last event.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub aggregate_id: String,
    pub aggregate: A,
    /// Sequence of the last event folded into `aggregate` (0 for a new aggregate).
    pub sequence: usize,
    /// Sequence the snapshot it started from was taken at (0: none).
    pub snapshot_sequence: usize,
    /// The chain hash of event `sequence` ([`crate::chain::GENESIS`] before the first): the
    /// next event's hash follows from it.
    pub head_hash: crate::chain::Hash,
}

impl<A: Aggregate> AggregateContext<A> for Loaded<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

/// Events in postgres-es's table, written by a group commit of our own
/// ([`crate::append`]); snapshots in our own table, written from the state the command
/// produced (never re-applying its events) and read with their tail in one query.
pub struct HubEventStore<A> {
    pool: PgPool,
    repo: PostgresEventRepository,
    writer: GroupCommit,
    /// Take a snapshot once this many events have accumulated since the last one.
    snapshot_every: usize,
    on_commit: Option<CommitHook>,
    _aggregate: PhantomData<fn() -> A>,
}

/// Called after every commit that wrote events (the relay's wake-up). Must not block.
pub type CommitHook = Arc<dyn Fn() + Send + Sync>;

/// The snapshot (if its state version matches) followed by the events after it.
const LOAD_SQL: &str = "
WITH snap AS (
    SELECT last_sequence, payload
      FROM aggregate_snapshots
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND state_version = $3
)
SELECT * FROM (
    SELECT last_sequence AS sequence, payload, true AS is_snapshot,
           (SELECT hash FROM events e
             WHERE e.aggregate_type = $1 AND e.aggregate_id = $2
               AND e.sequence = snap.last_sequence) AS hash
      FROM snap
    UNION ALL
    SELECT sequence, payload, false AS is_snapshot, hash
      FROM events
     WHERE aggregate_type = $1 AND aggregate_id = $2
       AND sequence > COALESCE((SELECT last_sequence FROM snap), 0)
) loaded
ORDER BY is_snapshot DESC, sequence";

const SAVE_SNAPSHOT_SQL: &str = "
INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, last_sequence, state_version, payload)
VALUES ($1, $2, $3, $4, $5::json)
ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
   SET last_sequence = excluded.last_sequence,
       state_version = excluded.state_version,
       payload = excluded.payload,
       taken_at = clock_timestamp()
 WHERE aggregate_snapshots.last_sequence < excluded.last_sequence
    OR aggregate_snapshots.state_version <> excluded.state_version";

/// Default snapshot interval: an active account gains two events per request, so an
/// account is never folded from more than a hundred events.
pub const SNAPSHOT_EVERY_DEFAULT: usize = 100;

impl<A: HubAggregate> HubEventStore<A> {
    /// Built by [`crate::Buses::store`] (and for each bus by [`crate::Buses::bus`]).
    pub(crate) fn new(pool: PgPool, snapshot_every: usize) -> Self {
        HubEventStore {
            repo: PostgresEventRepository::new(pool.clone()),
            writer: GroupCommit::new(pool.clone()),
            pool,
            snapshot_every: snapshot_every.max(1),
            on_commit: None,
            _aggregate: PhantomData,
        }
    }

    /// Call `hook` after each commit that wrote events.
    pub(crate) fn with_commit_hook(mut self, hook: CommitHook) -> Self {
        self.on_commit = Some(hook);
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Load from the snapshot and the events after it.
    pub async fn load(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let rows = sqlx::query(LOAD_SQL)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .bind(A::STATE_VERSION)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let mut loaded = Loaded {
            aggregate_id: aggregate_id.to_string(),
            aggregate: A::default(),
            sequence: 0,
            snapshot_sequence: 0,
            head_hash: GENESIS,
        };
        for row in rows {
            let sequence = to_usize(row.try_get::<i64, _>("sequence"))?;
            let payload: Value = row.try_get("payload").map_err(StoreError::from_sqlx)?;
            let hash: Option<Vec<u8>> = row.try_get("hash").map_err(StoreError::from_sqlx)?;
            loaded.head_hash = stored_hash(hash)?;
            if row
                .try_get::<bool, _>("is_snapshot")
                .map_err(StoreError::from_sqlx)?
            {
                loaded.aggregate = serde_json::from_value(payload).map_err(internal)?;
                loaded.snapshot_sequence = sequence;
            } else {
                let event: A::Event = serde_json::from_value(payload).map_err(internal)?;
                loaded.aggregate.apply(event);
            }
            loaded.sequence = sequence;
        }
        Ok(loaded)
    }

    /// The sequence of the aggregate's last event (0: none yet): one lookup in the primary
    /// key's index, without reading any payload.
    pub async fn head(&self, aggregate_id: &str) -> Result<usize, StoreError> {
        let head: Option<i64> = sqlx::query_scalar(
            "SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        to_usize(Ok(head.unwrap_or(0)))
    }

    /// Fold every event from the first, ignoring snapshots: the reference a snapshot must
    /// equal.
    pub async fn load_without_snapshot(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let events = self
            .repo
            .get_events::<A>(aggregate_id)
            .await
            .map_err(|e| StoreError::from_aggregate(AggregateError::<A::Error>::from(e)))?;
        let mut loaded = Loaded {
            aggregate_id: aggregate_id.to_string(),
            aggregate: A::default(),
            sequence: 0,
            snapshot_sequence: 0,
            head_hash: GENESIS,
        };
        for event in events {
            let payload: A::Event = serde_json::from_value(event.payload).map_err(internal)?;
            loaded.aggregate.apply(payload);
            loaded.sequence = event.sequence;
        }
        let hash: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT hash FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(i64::try_from(loaded.sequence).map_err(internal)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        loaded.head_hash = stored_hash(hash)?;
        Ok(loaded)
    }

    /// The first events written under any of `keys`, oldest first.
    pub async fn find_by_keys(
        &self,
        aggregate_id: &str,
        keys: &[String],
    ) -> Result<Vec<A::Event>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT payload FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
                AND (metadata ->> 'idempotency_key') = ANY($3)
              ORDER BY sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.into_iter()
            .map(|row| {
                let payload: Value = row.try_get("payload").map_err(StoreError::from_sqlx)?;
                serde_json::from_value(payload).map_err(internal)
            })
            .collect()
    }

    /// Append events after `loaded.sequence`; `loaded.aggregate` must already have them
    /// applied. On success `loaded` describes the new state (sequence, snapshot). Fails with
    /// [`StoreError::Conflict`] if another writer got there first.
    pub async fn append(
        &self,
        events: Vec<A::Event>,
        loaded: &mut Loaded<A>,
        metadata: &HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        let mut rows = Vec::with_capacity(events.len());
        let mut envelopes = Vec::with_capacity(events.len());
        // Postgres keeps microseconds: the hash covers the time as it will be stored.
        let now = chrono::Utc::now();
        let recorded_at =
            chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        let mut previous = loaded.head_hash;
        for (i, event) in events.into_iter().enumerate() {
            let sequence = loaded.sequence + i + 1;
            let mut event_metadata = metadata.clone();
            crate::trace::annotate(&mut event_metadata);
            if let Some(key) = A::event_key(&event) {
                event_metadata.insert("idempotency_key".to_string(), key);
            }
            let stored = StoredEvent {
                aggregate_type: A::TYPE.to_string(),
                aggregate_id: loaded.aggregate_id.clone(),
                sequence: i64::try_from(sequence).map_err(internal)?,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(&event).map_err(internal)?,
                metadata: serde_json::to_string(&event_metadata).map_err(internal)?,
                recorded_at_micros: recorded_at.timestamp_micros(),
            };
            let hash = link(&previous, &stored.digest());
            previous = hash;
            rows.push(EventRow {
                aggregate_type: stored.aggregate_type,
                aggregate_id: stored.aggregate_id,
                sequence: stored.sequence,
                event_type: stored.event_type,
                event_version: stored.event_version,
                payload: stored.payload,
                metadata: stored.metadata,
                recorded_at,
                hash,
            });
            envelopes.push(EventEnvelope {
                aggregate_id: loaded.aggregate_id.clone(),
                sequence,
                payload: event,
                metadata: event_metadata,
            });
        }
        if rows.is_empty() {
            return Ok(envelopes);
        }
        self.writer.append(rows).await?;
        if let Some(hook) = &self.on_commit {
            hook();
        }

        let last = loaded.sequence + envelopes.len();
        loaded.sequence = last;
        loaded.head_hash = previous;
        if last - loaded.snapshot_sequence >= self.snapshot_interval(&loaded.aggregate_id) {
            // A snapshot is derived data: it is saved in the background, off the command's
            // path (an account's state with its recent outcomes is tens of kilobytes of
            // JSON), and failing to save one costs only load time.
            loaded.snapshot_sequence = last;
            let pool = self.pool.clone();
            let aggregate_id = loaded.aggregate_id.clone();
            let aggregate = loaded.aggregate.clone();
            tokio::spawn(async move {
                if let Err(err) = save_snapshot(&pool, &aggregate_id, last, &aggregate).await {
                    tracing::warn!(aggregate_id = %aggregate_id, error = %err, "could not save snapshot");
                }
            });
        }
        Ok(envelopes)
    }

    /// Events between two snapshots of `aggregate_id`: `snapshot_every`, less a fixed share
    /// of up to half of it derived from the id. Accounts that gain events at the same pace
    /// (a uniform load, or everyone's first requests after a deploy) would otherwise all
    /// snapshot in the same moment.
    fn snapshot_interval(&self, aggregate_id: &str) -> usize {
        let spread = self.snapshot_every / 2;
        if spread == 0 {
            return self.snapshot_every;
        }
        let mut hasher = DefaultHasher::new();
        aggregate_id.hash(&mut hasher);
        let less = usize::try_from(hasher.finish() % spread as u64).unwrap_or(0);
        self.snapshot_every - less
    }
}

/// Save `aggregate` as the state after event `sequence`, unless a later one is saved.
async fn save_snapshot<A: HubAggregate>(
    pool: &PgPool,
    aggregate_id: &str,
    sequence: usize,
    aggregate: &A,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(aggregate).map_err(internal)?;
    sqlx::query(SAVE_SNAPSHOT_SQL)
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(i64::try_from(sequence).map_err(internal)?)
        .bind(A::STATE_VERSION)
        .bind(payload)
        .execute(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}

/// A stored chain hash: none before the first event; 32 bytes otherwise.
fn stored_hash(hash: Option<Vec<u8>>) -> Result<crate::chain::Hash, StoreError> {
    match hash {
        None => Ok(GENESIS),
        Some(bytes) => bytes
            .try_into()
            .map_err(|_| StoreError::Internal("a stored event hash is not 32 bytes".into())),
    }
}

fn to_usize(value: Result<i64, sqlx::Error>) -> Result<usize, StoreError> {
    let value = value.map_err(StoreError::from_sqlx)?;
    usize::try_from(value).map_err(internal)
}

fn internal<E: std::error::Error + Send + Sync + 'static>(err: E) -> StoreError {
    StoreError::Internal(Box::new(err))
}

impl<A: HubAggregate> EventStore<A> for HubEventStore<A> {
    type AC = Loaded<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let events = self.repo.get_events::<A>(aggregate_id).await?;
        events
            .into_iter()
            .map(|e| {
                Ok(EventEnvelope {
                    aggregate_id: e.aggregate_id,
                    sequence: e.sequence,
                    payload: serde_json::from_value(e.payload)?,
                    metadata: serde_json::from_value(e.metadata)?,
                })
            })
            .collect()
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, AggregateError<A::Error>> {
        self.load(aggregate_id).await.map_err(to_aggregate_error)
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Loaded<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let mut context = context;
        self.append(events, &mut context, &metadata)
            .await
            .map_err(to_aggregate_error)
    }
}

fn to_aggregate_error<E: std::error::Error>(err: StoreError) -> AggregateError<E> {
    match err {
        StoreError::Conflict => AggregateError::AggregateConflict,
        StoreError::Unavailable(e) => AggregateError::DatabaseConnectionError(e),
        StoreError::Internal(e) => AggregateError::UnexpectedError(e),
    }
}
