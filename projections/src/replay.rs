//! Rebuild a projection from the start of the stream: the live tables in place
//! ([`replay`]), or the tables as they stood at a time, into a schema of their own
//! ([`replay_until`]), through the same projection code either way.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use hub_nats::leader::Leadership;
use hub_nats::Topology;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::load::{SplitHours, Suspects};
use crate::model::{Decoded, ProjectionKind};
use crate::runner::{
    consumer_name, ensure_checkpoint_row, envelopes, load_decoded_batch, next_batch, role,
};

/// Messages applied per transaction during a replay.
const REPLAY_BATCH_MAX: usize = 5_000;

/// How long a replay's batch waits to fill up once its first message is in. Without it a
/// batch took only the messages already delivered: one pull's worth, ~130 of them, and the
/// per-batch statements (the global rollups, the checkpoint, the commit) cost more than the
/// rows. Messages arrive far faster than they are written, so a batch fills in a few ms;
/// only the last one of the stream waits the whole time.
const REPLAY_LINGER: Duration = Duration::from_millis(100);

/// Decoded batches a replay holds ready while the database writes one.
const REPLAY_BATCHES_AHEAD: usize = 2;

/// How long to wait for the live projector to stand aside.
const PAUSE_WAIT_MAX: Duration = Duration::from_secs(60);

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayStats {
    pub projection: &'static str,
    /// Messages read from the stream (those of other aggregate types included).
    pub messages: u64,
    pub elapsed_ms: u128,
    pub messages_per_second: f64,
    /// The schema a point-in-time replay wrote into (absent: the live tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    /// The time a point-in-time replay stopped at: messages stored in JetStream after it
    /// were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The stream sequence of the last message applied (0: none).
    pub through_sequence: u64,
}

/// Empty the projection's tables and rebuild them from the first message of the stream.
///
/// A live projector is paused (a flag on its checkpoint row) and its leadership taken for
/// the duration; afterwards it resumes from the rebuilt checkpoint. `show_progress` draws a
/// progress bar (events/s, ETA) on stderr.
pub async fn replay(
    pool: &PgPool,
    database_url: &str,
    js: &jetstream::Context,
    topology: &Topology,
    kind: ProjectionKind,
    show_progress: bool,
) -> anyhow::Result<ReplayStats> {
    ensure_checkpoint_row(pool, kind).await?;
    // The pause belongs to this session: if the replay dies, so does the session, and the
    // live projector no longer honours the pause.
    let mut owner = PgConnection::connect(database_url).await?;
    set_paused(&mut owner, kind, true).await?;
    let result = async {
        let deadline = Instant::now() + PAUSE_WAIT_MAX;
        let leadership = loop {
            if let Some(l) = Leadership::try_acquire(database_url, &role(kind)).await? {
                break l;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the live {} projector did not stand aside", kind.name());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stats = rebuild(pool, js, topology, kind, show_progress).await;
        leadership.release().await;
        stats
    }
    .await;
    set_paused(&mut owner, kind, false).await?;
    let _ = owner.close().await;
    result
}

/// Build again what a rebuild of `kind` that died on the way set aside (its secondary
/// indexes, and for `usage` its keys, once the rows loaded without them are made unique);
/// returns how many indexes were built. The live projector does this when it next leads
/// the projection, and the next rebuild when it starts; nothing to do is one indexed read.
pub async fn finish_rebuild(pool: &PgPool, kind: ProjectionKind) -> anyhow::Result<usize> {
    crate::indexes::restore(pool, kind).await
}

async fn set_paused(
    owner: &mut PgConnection,
    kind: ProjectionKind,
    paused: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints
            SET paused = $2, paused_by = CASE WHEN $2 THEN pg_backend_pid() END
          WHERE projection = $1",
    )
    .bind(kind.name())
    .bind(paused)
    .execute(owner)
    .await?;
    Ok(())
}

async fn rebuild(
    pool: &PgPool,
    js: &jetstream::Context,
    topology: &Topology,
    kind: ProjectionKind,
    show_progress: bool,
) -> anyhow::Result<ReplayStats> {
    let started = Instant::now();
    let stream = js.get_stream(topology.events_stream()).await?;

    // Indexes a rebuild that died on the way set aside.
    crate::indexes::restore(pool, kind).await?;
    let mut tx = pool.begin().await?;
    for table in kind.tables() {
        // Table names come from a fixed list in code, never from input.
        sqlx::query(&format!("TRUNCATE {table}"))
            .execute(&mut *tx)
            .await?;
    }
    crate::indexes::set_aside(&mut tx, kind).await?;
    sqlx::query("UPDATE projection_checkpoints SET stream_sequence = 0 WHERE projection = $1")
        .bind(kind.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // The live consumer's position no longer matches; the projector recreates it.
    let _ = stream.delete_consumer(&consumer_name(kind)).await;

    let progress = progress_bar(kind, show_progress)?;
    let (messages_read, through, split) =
        read_stream(js, topology, kind, None, &progress, &mut Sink::Live(pool)).await?;
    crate::indexes::restore_after(pool, kind, Suspects::Hours(&split)).await?;
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    Ok(ReplayStats {
        projection: kind.name(),
        messages: messages_read,
        elapsed_ms: elapsed.as_millis(),
        messages_per_second: messages_read as f64 / elapsed.as_secs_f64().max(1e-9),
        into: None,
        until: None,
        through_sequence: through,
    })
}

fn progress_bar(kind: ProjectionKind, show: bool) -> anyhow::Result<ProgressBar> {
    if !show {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )?
        .progress_chars("=> "),
    );
    bar.set_prefix(kind.name());
    Ok(bar)
}

/// Where the messages a replay reads are applied.
enum Sink<'a> {
    /// The live tables, with the projection's checkpoint (a rebuild in place).
    Live(&'a PgPool),
    /// The tables of another schema, in the caller's transaction, whose `search_path`
    /// names that schema first; no checkpoint is written.
    Schema(&'a mut PgConnection),
}

impl Sink<'_> {
    async fn apply(&mut self, kind: ProjectionKind, chunk: Chunk) -> anyhow::Result<()> {
        match self {
            Sink::Live(pool) => load_decoded_batch(pool, kind, chunk.decoded, chunk.last).await,
            Sink::Schema(conn) => kind.load_decoded(conn, chunk.decoded).await,
        }
    }
}

/// A batch read and decoded, ready to apply.
struct Chunk {
    decoded: Decoded,
    /// The hours its events were recorded in (credit events only).
    hours: BTreeSet<DateTime<Utc>>,
    /// Messages in it (of every aggregate type).
    messages: u64,
    /// The stream sequence of its last message.
    last: u64,
}

/// Read `kind`'s messages from the first of the stream to the last stored when the read
/// began, or, with `until`, to the last stored (JetStream's time) at or before `until`, and
/// apply them in batches. Returns the messages applied, the last one's stream sequence, and
/// the hours more than one batch held.
async fn read_stream(
    js: &jetstream::Context,
    topology: &Topology,
    kind: ProjectionKind,
    until: Option<DateTime<Utc>>,
    progress: &ProgressBar,
    sink: &mut Sink<'_>,
) -> anyhow::Result<(u64, u64, SplitHours)> {
    let mut stream = js.get_stream(topology.events_stream()).await?;
    let last = stream.info().await?.state.last_sequence;
    progress.set_length(last);
    let until_nanos = until
        .map(|t| {
            t.timestamp_nanos_opt()
                .ok_or_else(|| anyhow::anyhow!("until is out of range: {t}"))
        })
        .transpose()?
        .map(i128::from);
    let (mut applied, mut through) = (0u64, 0u64);
    let mut split = SplitHours::default();
    if last == 0 {
        return Ok((applied, through, split));
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: topology.events_of_type(kind.aggregate_type()),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let messages = consumer.messages().await?;
    // Reading and decoding run on a task of their own, a few batches ahead of the writes:
    // the projector's CPU and the database's then work at the same time.
    let (ready, mut chunks) = tokio::sync::mpsc::channel(REPLAY_BATCHES_AHEAD);
    let reader = tokio::spawn(read_chunks(messages, kind, until_nanos, last, ready));
    while let Some(chunk) = chunks.recv().await {
        let (count, seq) = (chunk.messages, chunk.last);
        split.batch(&chunk.hours);
        if count > 0 {
            sink.apply(kind, chunk).await?;
            applied += count;
        }
        through = seq;
        progress.set_position(seq.min(last));
    }
    reader
        .await
        .map_err(|e| anyhow::anyhow!("the replay's reader failed: {e}"))??;
    Ok((applied, through, split))
}

/// Read and decode `kind`'s messages in batches until the last one stored when the read
/// began (or, with `until_nanos`, the last stored at or before it), handing each batch to
/// `ready`. Stops early, without error, if the receiver is gone.
async fn read_chunks<S, E>(
    mut messages: S,
    kind: ProjectionKind,
    until_nanos: Option<i128>,
    last: u64,
    ready: tokio::sync::mpsc::Sender<Chunk>,
) -> anyhow::Result<()>
where
    S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    loop {
        let mut batch = next_batch(
            &mut messages,
            REPLAY_BATCH_MAX,
            Duration::from_secs(5),
            REPLAY_LINGER,
            tokio::time::Instant::now(),
        )
        .await?;
        if batch.is_empty() {
            // Nothing more arrives: every matching message up to `last` was read.
            return Ok(());
        }
        // JetStream stores messages in time order: the first one after `until` ends the read.
        let mut past_until = false;
        if let Some(until) = until_nanos {
            let mut cut = None;
            for (i, m) in batch.iter().enumerate() {
                let info = m
                    .info()
                    .map_err(|e| anyhow::anyhow!("message without JetStream info: {e}"))?;
                if info.published.unix_timestamp_nanos() > until {
                    cut = Some(i);
                    break;
                }
            }
            if let Some(cut) = cut {
                batch.truncate(cut);
                past_until = true;
            }
        }
        let Some((seq, pending)) = batch
            .last()
            .and_then(|m| m.info().ok().map(|i| (i.stream_sequence, i.pending)))
        else {
            return Ok(());
        };
        let end = past_until || pending == 0 || seq >= last;
        let decoded = kind.decode(envelopes(&batch)?)?;
        let chunk = Chunk {
            messages: batch.len() as u64,
            // Only a load without keys needs them (to find its split rollup rows).
            hours: match kind.loads_without_keys() {
                true => decoded.hours()?,
                false => BTreeSet::new(),
            },
            decoded,
            last: seq,
        };
        if ready.send(chunk).await.is_err() || end {
            return Ok(());
        }
    }
}

/// The largest schema name Postgres keeps whole (NAMEDATALEN − 1).
const SCHEMA_NAME_MAX: usize = 63;

/// A schema a point-in-time replay writes into: `^[a-z_][a-z0-9_]{0,62}$`, and neither
/// `public`, `information_schema` nor a `pg_` schema. Being checked, it is safe to quote
/// into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaName(String);

impl SchemaName {
    pub fn parse(raw: &str) -> Result<Self, PointInTimeError> {
        let mut chars = raw.chars();
        let well_formed = raw.len() <= SCHEMA_NAME_MAX
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !well_formed {
            return Err(PointInTimeError::InvalidSchema(raw.to_string()));
        }
        if raw == "public" || raw == "information_schema" || raw.starts_with("pg_") {
            return Err(PointInTimeError::ReservedSchema(raw.to_string()));
        }
        Ok(SchemaName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An identifier in double quotes, its own quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a point-in-time replay was refused or failed. Nothing is left behind either way:
/// the target schema is built in one transaction.
#[derive(Debug, thiserror::Error)]
pub enum PointInTimeError {
    #[error("schema name {0:?}: must match ^[a-z_][a-z0-9_]{{0,62}}$")]
    InvalidSchema(String),
    #[error(
        "schema {0:?} is reserved: the live read models or the system's (pick a name of your own)"
    )]
    ReservedSchema(String),
    #[error("schema {schema:?} is not empty ({relations}); pass --replace to rebuild the {projection} tables in it")]
    NotEmpty {
        schema: String,
        relations: String,
        projection: &'static str,
    },
    #[error("the live {0} table was not found (are the migrations applied?)")]
    NoLiveTable(&'static str),
    #[error("the {0} projection has no point-in-time view: it leaves notifications to send, not a read model to query")]
    NoPointInTime(&'static str),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a point-in-time replay builds.
#[derive(Debug, Clone)]
pub struct PointInTime {
    pub kind: ProjectionKind,
    /// Apply the messages JetStream stored at or before this time (all of them: `None`).
    pub until: Option<DateTime<Utc>>,
    pub into: SchemaName,
    /// Whether a schema that already holds relations may be written to: the projection's
    /// own tables in it are dropped and rebuilt; other relations are left alone.
    pub replace: bool,
}

/// Build `kind`'s tables as they stood at `until` into `into`: the schema is created, each
/// table copied from the live one's definition (`LIKE … INCLUDING ALL`, constraints renamed
/// to the live names the projection's SQL uses), then the stream is replayed from its first
/// message through the live projection code with `search_path` naming the schema first.
///
/// The live tables, their checkpoint and the live projector are not touched: no pause, no
/// lock beyond the `ACCESS SHARE` that copying a table's definition takes (held until the
/// replay commits, so DDL on the live tables, a `TRUNCATE` by [`replay`] included, waits
/// for it). Everything is one transaction: a replay that fails leaves nothing.
pub async fn replay_until(
    pool: &PgPool,
    js: &jetstream::Context,
    topology: &Topology,
    request: &PointInTime,
    show_progress: bool,
) -> Result<ReplayStats, PointInTimeError> {
    let started = Instant::now();
    let kind = request.kind;
    if kind == ProjectionKind::Alerts {
        // Its notifications and their high-water mark are outside its tables: written under
        // another schema's path, they would land in the live ones.
        return Err(PointInTimeError::NoPointInTime(kind.name()));
    }
    let target = request.into.as_str();
    let mut tx = pool.begin().await?;
    let live = live_schema(&mut tx, kind).await?;
    if live == target {
        return Err(PointInTimeError::ReservedSchema(target.to_string()));
    }
    let relations: Option<String> = sqlx::query_scalar(
        "SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')",
    )
    .bind(target)
    .fetch_one(&mut *tx)
    .await?;
    if let Some(relations) = relations.filter(|_| !request.replace) {
        return Err(PointInTimeError::NotEmpty {
            schema: target.to_string(),
            relations,
            projection: kind.name(),
        });
    }
    let (schema, live_q) = (quote_ident(target), quote_ident(&live));
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *tx)
        .await?;
    for table in kind.tables() {
        copy_table(&mut tx, &schema, &live_q, table).await?;
    }
    // The live schema stays on the path, after the target, for the functions the
    // projection calls (`usage_hist_merge`); every table it writes is in the target.
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, {live_q}"))
        .execute(&mut *tx)
        .await?;
    // Loaded without their secondary indexes (and keys, for some), built once at the end.
    let indexes = crate::indexes::secondary(&mut tx, kind.tables()).await?;
    crate::indexes::drop_all(&mut tx, &indexes).await?;
    let keys = crate::indexes::keys(&mut tx, kind.tables_loaded_without_keys()).await?;
    crate::indexes::drop_keys(&mut tx, &keys).await?;
    let progress = progress_bar(kind, show_progress)?;
    let (applied, through, split) = read_stream(
        js,
        topology,
        kind,
        request.until,
        &progress,
        &mut Sink::Schema(&mut tx),
    )
    .await?;
    crate::load::finish(&mut tx, kind, Suspects::Hours(&split)).await?;
    let keys: Vec<_> = keys.into_iter().map(|k| k.index).collect();
    crate::indexes::create_missing(&mut tx, keys).await?;
    crate::indexes::create_all(&mut tx, &indexes).await?;
    tx.commit().await?;
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    Ok(ReplayStats {
        projection: kind.name(),
        messages: applied,
        elapsed_ms: elapsed.as_millis(),
        messages_per_second: applied as f64 / elapsed.as_secs_f64().max(1e-9),
        into: Some(target.to_string()),
        until: request.until,
        through_sequence: through,
    })
}

/// The schema the live tables of `kind` are in (the one the pool's `search_path` finds).
async fn live_schema(
    conn: &mut PgConnection,
    kind: ProjectionKind,
) -> Result<String, PointInTimeError> {
    let mut found: Option<String> = None;
    for table in kind.tables() {
        let schema: Option<String> = sqlx::query_scalar(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.oid = to_regclass($1)",
        )
        .bind(table)
        .fetch_optional(&mut *conn)
        .await?;
        let schema = schema.ok_or(PointInTimeError::NoLiveTable(table))?;
        if found.as_ref().is_some_and(|f| *f != schema) {
            return Err(
                anyhow::anyhow!("the {} tables are in several schemas", kind.name()).into(),
            );
        }
        found = Some(schema);
    }
    found.ok_or_else(|| anyhow::anyhow!("{} has no tables", kind.name()).into())
}

/// `schema.table` as a copy of `live.table`'s definition (columns, defaults, generated
/// columns, checks, indexes), with its constraints under the live names: `LIKE` names the
/// copied unique and primary keys afresh, and the projection's SQL names one
/// (`ON CONFLICT ON CONSTRAINT usage_rollups_key`). Both names are quoted identifiers.
async fn copy_table(
    conn: &mut PgConnection,
    schema: &str,
    live: &str,
    table: &str,
) -> Result<(), sqlx::Error> {
    // `table` comes from a fixed list in code, never from input.
    let (copy, original) = (format!("{schema}.{table}"), format!("{live}.{table}"));
    sqlx::query(&format!("DROP TABLE IF EXISTS {copy}"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE {copy} (LIKE {original} INCLUDING ALL)"
    ))
    .execute(&mut *conn)
    .await?;
    let renames: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conname::text, l.conname::text
           FROM pg_constraint c
           JOIN pg_constraint l
             ON l.contype = c.contype
            AND pg_get_constraintdef(l.oid) = pg_get_constraintdef(c.oid)
          WHERE c.conrelid = to_regclass($1) AND l.conrelid = to_regclass($2)
            AND c.conname <> l.conname",
    )
    .bind(&copy)
    .bind(&original)
    .fetch_all(&mut *conn)
    .await?;
    for (from, to) in renames {
        sqlx::query(&format!(
            "ALTER TABLE {copy} RENAME CONSTRAINT {} TO {}",
            quote_ident(&from),
            quote_ident(&to)
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_name_is_lowercase_letters_digits_and_underscores() {
        for good in ["asof_2026_12_01", "_scratch", "a", &"a".repeat(63)] {
            assert!(SchemaName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Asof",
            "a-b",
            "a b",
            "a\"b",
            "a;drop",
            &"a".repeat(64),
            "é",
        ] {
            assert!(
                matches!(
                    SchemaName::parse(bad),
                    Err(PointInTimeError::InvalidSchema(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_live_and_system_schemas_are_refused() {
        for reserved in ["public", "information_schema", "pg_catalog", "pg_temp"] {
            assert!(
                matches!(
                    SchemaName::parse(reserved),
                    Err(PointInTimeError::ReservedSchema(_))
                ),
                "{reserved}"
            );
        }
    }
}
