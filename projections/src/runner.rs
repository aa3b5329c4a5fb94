//! The live projector.

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::{FutureExt, StreamExt};
use hub_nats::leader::Leadership;
use hub_nats::{EventEnvelope, Topology};
use sqlx::{PgPool, Row};
use std::future::Future;
use std::time::Duration;

use crate::model::ProjectionKind;

/// Tuning, passed explicitly.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Messages applied per transaction at most.
    pub batch_max: usize,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Messages delivered but not yet acknowledged, at most.
    pub max_ack_pending: i64,
    /// Wait this long before retrying after an error, or for leadership.
    pub retry_delay: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch_max: 500,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// How often an idle projector checks whether a replay asked it to stand aside.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// Whether a replay holds the projection: paused, by a session that still exists. A replay
/// killed without cleaning up leaves `paused` set, but its session is gone with it.
const PAUSE_HOLDS: &str = "(paused AND (paused_by IS NULL
      OR EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = paused_by)))";

async fn paused(pool: &PgPool, kind: ProjectionKind) -> Result<bool, sqlx::Error> {
    let paused: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT {PAUSE_HOLDS} FROM projection_checkpoints WHERE projection = $1"
    ))
    .bind(kind.name())
    .fetch_optional(pool)
    .await?;
    Ok(paused.unwrap_or(false))
}

/// The durable consumer's name for a projection.
pub fn consumer_name(kind: ProjectionKind) -> String {
    format!("proj_{}", kind.name())
}

/// The advisory-lock role of a projection.
pub(crate) fn role(kind: ProjectionKind) -> String {
    format!("projection:{}", kind.name())
}

/// The stream sequence a projection has applied up to (0: nothing yet).
pub async fn checkpoint(pool: &PgPool, kind: ProjectionKind) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT stream_sequence FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(kind.name())
    .fetch_optional(pool)
    .await?;
    Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
}

pub(crate) async fn ensure_checkpoint_row(
    pool: &PgPool,
    kind: ProjectionKind,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_sequence) VALUES ($1, 0)
         ON CONFLICT (projection) DO NOTHING",
    )
    .bind(kind.name())
    .execute(pool)
    .await?;
    Ok(())
}

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    #[error("paused by a replay")]
    Paused,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Apply messages and move the checkpoint in one transaction. Messages at or below the
/// checkpoint were applied before and are skipped. Returns the new checkpoint.
pub(crate) async fn apply_batch(
    pool: &PgPool,
    kind: ProjectionKind,
    batch: &[jetstream::Message],
    respect_pause: bool,
) -> Result<u64, BatchError> {
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    let row = sqlx::query(&format!(
        "SELECT stream_sequence, {PAUSE_HOLDS} AS paused FROM projection_checkpoints
          WHERE projection = $1 FOR UPDATE"
    ))
    .bind(kind.name())
    .fetch_one(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    if respect_pause
        && row
            .try_get::<bool, _>("paused")
            .map_err(anyhow::Error::from)?
    {
        return Err(BatchError::Paused);
    }
    let mut at = u64::try_from(
        row.try_get::<i64, _>("stream_sequence")
            .map_err(anyhow::Error::from)?,
    )
    .map_err(anyhow::Error::from)?;
    let mut events = Vec::with_capacity(batch.len());
    for message in batch {
        let seq = message
            .info()
            .map_err(|e| anyhow::anyhow!("message without JetStream info: {e}"))?
            .stream_sequence;
        if seq <= at {
            continue;
        }
        let envelope: EventEnvelope =
            serde_json::from_slice(&message.payload).map_err(anyhow::Error::from)?;
        events.push((envelope, seq));
        at = seq;
    }
    kind.apply(&mut tx, events).await?;
    sqlx::query(
        "UPDATE projection_checkpoints SET stream_sequence = $2, updated_at = clock_timestamp()
          WHERE projection = $1",
    )
    .bind(kind.name())
    .bind(i64::try_from(at).map_err(anyhow::Error::from)?)
    .execute(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(at)
}

/// Take up to `max` messages: wait up to `idle` for the first (an empty batch if none
/// came), then whatever is already buffered. Only the wait for the first message is ever cut
/// short, and `next()` on a stream gives up no message when dropped while pending.
pub(crate) async fn next_batch<S, E>(
    messages: &mut S,
    max: usize,
    idle: Duration,
) -> anyhow::Result<Vec<jetstream::Message>>
where
    S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let first = match tokio::time::timeout(idle, messages.next()).await {
        Err(_) => return Ok(Vec::new()),
        Ok(None) => anyhow::bail!("the message stream ended"),
        Ok(Some(first)) => first,
    };
    let mut batch = vec![first?];
    while batch.len() < max {
        match messages.next().now_or_never() {
            Some(Some(Ok(m))) => batch.push(m),
            Some(Some(Err(e))) => return Err(e.into()),
            Some(None) | None => break,
        }
    }
    Ok(batch)
}

/// One projection's live consumer.
pub struct Projector {
    pool: PgPool,
    database_url: String,
    js: jetstream::Context,
    topology: Topology,
    kind: ProjectionKind,
    config: ProjectorConfig,
}

impl Projector {
    pub fn new(
        pool: PgPool,
        database_url: String,
        js: jetstream::Context,
        topology: Topology,
        kind: ProjectionKind,
        config: ProjectorConfig,
    ) -> Self {
        Projector {
            pool,
            database_url,
            js,
            topology,
            kind,
            config,
        }
    }

    /// Project until `shutdown` resolves; errors are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let role = role(self.kind);
        hub_nats::leader::supervise(&role, self.config.retry_delay, shutdown, || self.lead()).await;
    }

    async fn lead(&self) -> anyhow::Result<()> {
        ensure_checkpoint_row(&self.pool, self.kind).await?;
        let Some(mut leadership) =
            Leadership::try_acquire(&self.database_url, &role(self.kind)).await?
        else {
            return Ok(()); // Another projector leads; try again after the retry delay.
        };
        let at = checkpoint(&self.pool, self.kind).await?;
        let consumer = self.consumer_at(at).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_max)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        tracing::info!(
            projection = self.kind.name(),
            checkpoint = at,
            "projector is the leader"
        );
        loop {
            let batch = next_batch(&mut messages, self.config.batch_max, IDLE_CHECK).await?;
            if batch.is_empty() {
                // Idle: a replay may be waiting for this projector to stand aside.
                if paused(&self.pool, self.kind).await? {
                    tracing::info!(projection = self.kind.name(), "paused for a replay");
                    leadership.release().await;
                    return Ok(());
                }
                continue;
            }
            if !leadership.still_held().await {
                anyhow::bail!("lost the leader lock's connection");
            }
            match apply_batch(&self.pool, self.kind, &batch, true).await {
                Ok(_) => {}
                Err(BatchError::Paused) => {
                    tracing::info!(projection = self.kind.name(), "paused for a replay");
                    leadership.release().await;
                    return Ok(());
                }
                Err(BatchError::Other(err)) => return Err(err),
            }
            // AckPolicy::All: acknowledging the last acknowledges the batch.
            if let Some(last) = batch.last() {
                last.ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack failed: {e}"))?;
            }
        }
    }

    /// The durable consumer, positioned right after `checkpoint`. The checkpoint in Postgres
    /// is the truth: a consumer that is elsewhere (a replay reset the read model, messages
    /// were in flight when a projector died) is recreated there, so nothing waits out an
    /// ack timeout and nothing is skipped.
    async fn consumer_at(
        &self,
        checkpoint: u64,
    ) -> anyhow::Result<jetstream::consumer::PullConsumer> {
        let stream = self.js.get_stream(self.topology.events_stream()).await?;
        let name = consumer_name(self.kind);
        if let Ok(mut existing) = stream.get_consumer::<pull::Config>(&name).await {
            let info = existing.info().await?;
            if info.ack_floor.stream_sequence == checkpoint && info.num_ack_pending == 0 {
                return Ok(existing);
            }
            stream.delete_consumer(&name).await?;
        }
        let deliver_policy = if checkpoint == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: checkpoint + 1,
            }
        };
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name),
                filter_subject: self.topology.events_of_type(self.kind.aggregate_type()),
                ack_policy: AckPolicy::All,
                ack_wait: self.config.ack_wait,
                max_ack_pending: self.config.max_ack_pending,
                deliver_policy,
                ..Default::default()
            })
            .await?;
        Ok(consumer)
    }
}
