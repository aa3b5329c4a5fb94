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

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::db::session_ended;
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
    /// When it was written (microsecond precision, as Postgres keeps it).
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    /// Its chain hash ([`crate::chain`]).
    pub hash: crate::chain::Hash,
}

const INSERT_SQL: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, recorded_at, hash)
SELECT t, i, s, et, ev, p::json, m::json, ra, h
  FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::timestamptz[], $9::bytea[])
       WITH ORDINALITY AS r(t, i, s, et, ev, p, m, ra, h, n)
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

/// Take queued commands as statements, [`PARALLEL`] writers at a time, until the store is
/// dropped.
///
/// A writer holds its pooled connection for as long as commands keep queueing and gives it
/// back when the queue runs dry. Every acquire and release is a round trip to Postgres of its
/// own (sqlx pings a connection when it comes back), so under load that would triple the
/// round trips of a one-statement command.
async fn run(pool: PgPool, queue: mpsc::UnboundedReceiver<Request>) {
    let queue = Arc::new(Mutex::new(queue));
    let writers = (0..PARALLEL).map(|_| writer(pool.clone(), queue.clone()));
    futures::future::join_all(writers).await;
}

async fn writer(pool: PgPool, queue: Arc<Mutex<mpsc::UnboundedReceiver<Request>>>) {
    loop {
        // Wait for work without a connection.
        let mut batch = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            fill(&mut queue, &mut batch);
            batch
        };
        let Some(mut conn) = acquire(&pool, &mut batch).await else {
            continue;
        };
        let mut reconnected = false;
        loop {
            match write_batch(&mut conn, batch).await {
                Written::Told => {}
                // Give the connection back (the pool tests it) after a failure that was not
                // a lost race.
                Written::Broken => break,
                // A connection the server had already ended (a restart, a failover, an
                // administrator): the statement was not committed; send it again, once, on
                // a new connection. (Were it committed after all, it conflicts on its
                // sequence, and the command bus decides the command again.)
                Written::NotRun(back) => {
                    batch = back;
                    if reconnected {
                        fail(batch, "the database ended the session");
                        break;
                    }
                    reconnected = true;
                    match acquire_live(&pool, &mut batch).await {
                        Some(fresh) => conn = fresh,
                        None => break,
                    }
                    continue;
                }
            }
            // Keep the connection while more is waiting. Held by another writer, the queue
            // is empty (it waits for work) or being taken.
            let Ok(mut queue) = queue.try_lock() else {
                break;
            };
            batch = Vec::new();
            fill(&mut queue, &mut batch);
            if batch.is_empty() {
                break;
            }
        }
    }
}

/// A connection for `batch`, or every command in it told the database is unavailable.
async fn acquire(pool: &PgPool, batch: &mut Vec<Request>) -> Option<PoolConnection<Postgres>> {
    match pool.acquire().await {
        Ok(conn) => Some(conn),
        Err(err) => {
            fail(std::mem::take(batch), &err.to_string());
            None
        }
    }
}

/// Like [`acquire`], but pinged: after the server ended one session, the pool's other idle
/// connections are likely ended too. Each one found dead is closed, so at most the pool's
/// size of them is tried.
async fn acquire_live(pool: &PgPool, batch: &mut Vec<Request>) -> Option<PoolConnection<Postgres>> {
    let tries = pool.options().get_max_connections() + 1;
    for _ in 0..tries {
        let mut conn = acquire(pool, batch).await?;
        if conn.ping().await.is_ok() {
            return Some(conn);
        }
        conn.close_on_drop();
    }
    fail(std::mem::take(batch), "no live connection to the database");
    None
}

fn fail(batch: Vec<Request>, why: &str) {
    for request in batch {
        let _ = request
            .done
            .send(Err(StoreError::Unavailable(why.to_string().into())));
    }
}

/// Add whatever is queued to `batch`, up to [`ROWS_MAX`] rows.
fn fill(queue: &mut mpsc::UnboundedReceiver<Request>, batch: &mut Vec<Request>) {
    let mut rows: usize = batch.iter().map(|r| r.rows.len()).sum();
    while rows < ROWS_MAX {
        match queue.try_recv() {
            Ok(request) => {
                rows += request.rows.len();
                batch.push(request);
            }
            Err(_) => break,
        }
    }
}

/// What became of a batch.
enum Written {
    /// Every command was told its outcome; the connection is fine.
    Told,
    /// Every command was told; the connection may be broken.
    Broken,
    /// The server had ended the session before the statement ran: nobody was told.
    NotRun(Vec<Request>),
}

impl Written {
    /// Every command told: the connection is fine if each outcome was a success or a lost
    /// race.
    fn told(outcomes_healthy: bool) -> Self {
        if outcomes_healthy {
            Written::Told
        } else {
            Written::Broken
        }
    }
}

fn healthy(result: &Result<(), StoreError>) -> bool {
    matches!(result, Ok(()) | Err(StoreError::Conflict))
}

/// Write `batch` and tell each command its outcome.
async fn write_batch(conn: &mut PgConnection, batch: Vec<Request>) -> Written {
    let outcome = insert(conn, batch.iter().flat_map(|r| r.rows.iter())).await;
    match outcome {
        Err(err) if session_ended(&err) => {
            crate::db::note_connection_lost(&err);
            Written::NotRun(batch)
        }
        Ok(()) => {
            for request in batch {
                let _ = request.done.send(Ok(()));
            }
            Written::Told
        }
        Err(err) if batch.len() == 1 => {
            let result = Err(StoreError::from_sqlx(err));
            let fine = healthy(&result);
            if let Some(request) = batch.into_iter().next() {
                let _ = request.done.send(result);
            }
            Written::told(fine)
        }
        Err(_) => {
            // Which command failed is unknown: each alone, so only its own outcome is told.
            let mut fine = true;
            for request in batch {
                let result = insert(conn, request.rows.iter())
                    .await
                    .map_err(StoreError::from_sqlx);
                fine &= healthy(&result);
                let _ = request.done.send(result);
            }
            Written::told(fine)
        }
    }
}

async fn insert<'a>(
    conn: &mut PgConnection,
    rows: impl Iterator<Item = &'a EventRow> + Clone,
) -> Result<(), sqlx::Error> {
    let column = |f: fn(&'a EventRow) -> &'a str| rows.clone().map(f).collect::<Vec<&str>>();
    let sequences: Vec<i64> = rows.clone().map(|r| r.sequence).collect();
    let recorded_at: Vec<chrono::DateTime<chrono::Utc>> =
        rows.clone().map(|r| r.recorded_at).collect();
    let hashes: Vec<&[u8]> = rows.clone().map(|r| r.hash.as_slice()).collect();
    sqlx::query(INSERT_SQL)
        .bind(column(|r| &r.aggregate_type))
        .bind(column(|r| &r.aggregate_id))
        .bind(sequences)
        .bind(column(|r| &r.event_type))
        .bind(column(|r| &r.event_version))
        .bind(column(|r| &r.payload))
        .bind(column(|r| &r.metadata))
        .bind(recorded_at)
        .bind(hashes)
        .execute(conn)
        .await?;
    Ok(())
}
