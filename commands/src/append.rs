//! Writing events: one statement per commit, and concurrent commits share one (group commit).
//!
//! postgres-es writes a command's events as `BEGIN`, one `INSERT` per event, `COMMIT`: three
//! round trips and one WAL flush for every command. Here a command's events are one
//! multi-row `INSERT` in an implicit transaction, so a command costs one round trip. And the
//! commands that arrive while earlier ones are being written go together: up to
//! [`PARALLEL`] statements are in flight, and whatever queued meanwhile becomes the next
//! statement, whatever aggregates it touches. Under light load every command gets its own
//! statement at once; under heavy load a few statements carry many commands, and Postgres
//! flushes its WAL once for each.
//!
//! One statement is atomic, so a batch is all written or not at all. When it fails because
//! one of its commands lost a race (a sequence or idempotency key already taken by another
//! process), the batch is written again one command per statement, so that only the loser
//! sees the conflict. Within one aggregate, events keep their order: the rows are inserted in
//! the order given, so the outbox trigger numbers them in that order.

use sqlx::PgPool;
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::StoreError;

/// Statements in flight at once for one store.
pub const PARALLEL: usize = 4;

/// Rows one statement carries at most.
const ROWS_MAX: usize = 512;

/// One event as stored.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// JSON text.
    pub payload: String,
    /// JSON text.
    pub metadata: String,
}

const INSERT_SQL: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata)
SELECT t, i, s, et, ev, p::json, m::json
  FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
              $7::text[]) WITH ORDINALITY AS r(t, i, s, et, ev, p, m, n)
 ORDER BY n";

/// One command's events and where its outcome goes.
struct Request {
    rows: Vec<EventRow>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The writer of one event store.
pub(crate) struct GroupCommit {
    pool: PgPool,
    /// Started on first use, so that a store can be built outside a runtime.
    queue: OnceLock<mpsc::UnboundedSender<Request>>,
}

impl GroupCommit {
    pub fn new(pool: PgPool) -> Self {
        GroupCommit {
            pool,
            queue: OnceLock::new(),
        }
    }

    /// Write one command's events atomically. [`StoreError::Conflict`] if a sequence or an
    /// idempotency key was taken.
    pub async fn append(&self, rows: Vec<EventRow>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run(self.pool.clone(), receiver));
            sender
        });
        let (done, outcome) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the event writer stopped".into());
        queue.send(Request { rows, done }).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Take queued commands as statements, [`PARALLEL`] at a time, until the store is dropped.
async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Request>) {
    let permits = Arc::new(Semaphore::new(PARALLEL));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut rows = first.rows.len();
        let mut batch = vec![first];
        while rows < ROWS_MAX {
            match queue.try_recv() {
                Ok(request) => {
                    rows += request.rows.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write_batch(&pool, batch).await;
            drop(permit);
        });
    }
}

async fn write_batch(pool: &PgPool, mut batch: Vec<Request>) {
    if batch.len() == 1 {
        if let Some(request) = batch.pop() {
            let result = insert(pool, request.rows.iter()).await;
            let _ = request.done.send(result);
        }
        return;
    }
    match insert(pool, batch.iter().flat_map(|r| r.rows.iter())).await {
        Ok(()) => {
            for request in batch {
                let _ = request.done.send(Ok(()));
            }
        }
        Err(_) => {
            // Which command failed is unknown: each alone, so only its own outcome is told.
            let alone = batch.into_iter().map(|request| async move {
                let result = insert(pool, request.rows.iter()).await;
                let _ = request.done.send(result);
            });
            futures::future::join_all(alone).await;
        }
    }
}

async fn insert<'a>(
    pool: &PgPool,
    rows: impl Iterator<Item = &'a EventRow> + Clone,
) -> Result<(), StoreError> {
    let column = |f: fn(&'a EventRow) -> &'a str| rows.clone().map(f).collect::<Vec<&str>>();
    let sequences: Vec<i64> = rows.clone().map(|r| r.sequence).collect();
    sqlx::query(INSERT_SQL)
        .bind(column(|r| &r.aggregate_type))
        .bind(column(|r| &r.aggregate_id))
        .bind(sequences)
        .bind(column(|r| &r.event_type))
        .bind(column(|r| &r.event_version))
        .bind(column(|r| &r.payload))
        .bind(column(|r| &r.metadata))
        .execute(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}
