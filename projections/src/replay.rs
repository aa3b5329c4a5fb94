//! Rebuild a projection from the start of the stream.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use hub_nats::leader::Leadership;
use hub_nats::Topology;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection, PgPool};
use std::time::{Duration, Instant};

use crate::model::ProjectionKind;
use crate::runner::{apply_batch, consumer_name, ensure_checkpoint_row, next_batch, role};

/// Messages applied per transaction during a replay.
const REPLAY_BATCH_MAX: usize = 5_000;

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
    let mut stream = js.get_stream(topology.events_stream()).await?;
    let last = stream.info().await?.state.last_sequence;

    let mut tx = pool.begin().await?;
    for table in kind.tables() {
        // Table names come from a fixed list in code, never from input.
        sqlx::query(&format!("TRUNCATE {table}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE projection_checkpoints SET stream_sequence = 0 WHERE projection = $1")
        .bind(kind.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // The live consumer's position no longer matches; the projector recreates it.
    let _ = stream.delete_consumer(&consumer_name(kind)).await;

    let progress = if show_progress {
        let bar = ProgressBar::new(last);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(kind.name());
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut messages_read = 0u64;
    if last > 0 {
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: topology.events_of_type(kind.aggregate_type()),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        loop {
            let batch = next_batch(
                &mut messages,
                REPLAY_BATCH_MAX,
                Duration::from_secs(5),
                Duration::ZERO,
                tokio::time::Instant::now(),
            )
            .await?;
            if batch.is_empty() {
                // Nothing more arrives: every matching message up to `last` was read.
                break;
            }
            let tail = batch
                .last()
                .and_then(|m| m.info().ok().map(|i| (i.stream_sequence, i.pending)));
            apply_batch(pool, &[kind], &batch, false).await?;
            messages_read += batch.len() as u64;
            match tail {
                Some((seq, pending)) => {
                    progress.set_position(seq.min(last));
                    if pending == 0 || seq >= last {
                        break;
                    }
                }
                None => break,
            }
        }
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    Ok(ReplayStats {
        projection: kind.name(),
        messages: messages_read,
        elapsed_ms: elapsed.as_millis(),
        messages_per_second: messages_read as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}
