//! The live projector.

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::{FutureExt, StreamExt};
use hub_nats::leader::Leadership;
use hub_nats::{EventEnvelope, Topology};
use sqlx::{PgPool, Row};
use std::future::Future;
use std::time::Duration;

use crate::model::{Decoded, ProjectionKind};

/// Tuning, passed explicitly.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Messages applied per transaction at most.
    pub batch_max: usize,
    /// Once a message has come, wait this long for more to join its batch. A batch costs
    /// about the same whatever its length, so under load a short wait saves most of the
    /// transactions, for this much more projection lag.
    pub linger: Duration,
    /// And a batch closes no sooner than this long after the previous one was taken:
    /// under a steady flow, batches (each a transaction) come at most this often, while
    /// a projector that is behind, or whose batches take longer than this, is not held
    /// back at all.
    pub batch_interval: Duration,
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
            linger: Duration::from_millis(5),
            batch_interval: Duration::from_millis(20),
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

/// Which of `kinds` a replay holds, in one query.
async fn paused(
    pool: &PgPool,
    kinds: &[ProjectionKind],
) -> Result<Vec<ProjectionKind>, sqlx::Error> {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let held: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT projection FROM projection_checkpoints
          WHERE projection = ANY($1) AND {PAUSE_HOLDS}"
    ))
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(kinds
        .iter()
        .copied()
        .filter(|k| held.iter().any(|h| h == k.name()))
        .collect())
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

/// Decode messages into envelopes with their stream sequences.
pub(crate) fn envelopes(batch: &[jetstream::Message]) -> anyhow::Result<Vec<(EventEnvelope, u64)>> {
    let mut envelopes = Vec::with_capacity(batch.len());
    for message in batch {
        let seq = message
            .info()
            .map_err(|e| anyhow::anyhow!("message without JetStream info: {e}"))?
            .stream_sequence;
        let envelope: EventEnvelope = serde_json::from_slice(&message.payload)?;
        if let Some(request_id) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(hub_nats::envelope::REQUEST_ID_HEADER))
        {
            tracing::debug!(request_id = request_id.as_str(), event = %envelope.message_id(), "projecting");
        }
        envelopes.push((envelope, seq));
    }
    Ok(envelopes)
}

/// Apply messages to each of `kinds` and move their checkpoints, in one transaction. A
/// kind skips the messages at or below its own checkpoint (applied before). With
/// `respect_pause`, a kind that a replay holds stops the batch ([`BatchError::Paused`]).
pub(crate) async fn apply_batch(
    pool: &PgPool,
    kinds: &[ProjectionKind],
    batch: &[jetstream::Message],
    respect_pause: bool,
) -> Result<(), BatchError> {
    let mut envelopes = envelopes(batch)?;
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    let rows = sqlx::query(&format!(
        "SELECT projection, stream_sequence, {PAUSE_HOLDS} AS paused
           FROM projection_checkpoints
          WHERE projection = ANY($1)
          ORDER BY projection
            FOR UPDATE"
    ))
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .map_err(anyhow::Error::from)?;
    let mut moved: Vec<(&str, i64)> = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let row = rows
            .iter()
            .find(|r| r.try_get::<&str, _>("projection").ok() == Some(kind.name()))
            .ok_or_else(|| anyhow::anyhow!("no checkpoint row for {}", kind.name()))?;
        if respect_pause
            && row
                .try_get::<bool, _>("paused")
                .map_err(anyhow::Error::from)?
        {
            return Err(BatchError::Paused);
        }
        let at = u64::try_from(
            row.try_get::<i64, _>("stream_sequence")
                .map_err(anyhow::Error::from)?,
        )
        .map_err(anyhow::Error::from)?;
        // The last projection takes the envelopes; the others get copies.
        let fresh: Vec<(EventEnvelope, u64)> = if i + 1 == kinds.len() {
            std::mem::take(&mut envelopes)
                .into_iter()
                .filter(|(_, seq)| *seq > at)
                .collect()
        } else {
            envelopes
                .iter()
                .filter(|(_, seq)| *seq > at)
                .cloned()
                .collect()
        };
        let Some(last) = fresh.last().map(|(_, seq)| *seq) else {
            continue;
        };
        kind.apply(&mut tx, fresh).await?;
        moved.push((
            kind.name(),
            i64::try_from(last).map_err(anyhow::Error::from)?,
        ));
    }
    if !moved.is_empty() {
        let (names, sequences): (Vec<&str>, Vec<i64>) = moved.into_iter().unzip();
        sqlx::query(
            "UPDATE projection_checkpoints c
                SET stream_sequence = m.seq, updated_at = clock_timestamp()
               FROM UNNEST($1::text[], $2::bigint[]) AS m(projection, seq)
              WHERE c.projection = m.projection",
        )
        .bind(&names)
        .bind(&sequences)
        .execute(&mut *tx)
        .await
        .map_err(anyhow::Error::from)?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    Ok(())
}

/// Apply one projection's decoded batch, whose last message has stream sequence `last`, to
/// tables a rebuild is loading ([`ProjectionKind::load_decoded`]), and move its checkpoint
/// there, in one transaction (events at or below the checkpoint are skipped: applied
/// before).
pub(crate) async fn load_decoded_batch(
    pool: &PgPool,
    kind: ProjectionKind,
    batch: Decoded,
    last: u64,
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    if kind != ProjectionKind::Alerts {
        // A commit lost to a database crash takes its checkpoint with it, and the batch is
        // applied again; nothing outside the database acted on it meanwhile. Alerts are the
        // exception: the delivery loop may have sent what a lost commit wrote.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    let at: i64 = sqlx::query_scalar(
        "SELECT stream_sequence FROM projection_checkpoints WHERE projection = $1 FOR UPDATE",
    )
    .bind(kind.name())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| anyhow::anyhow!("no checkpoint row for {}", kind.name()))?;
    let at = u64::try_from(at)?;
    if last <= at {
        return Ok(());
    }
    kind.load_decoded(&mut tx, batch.after(at)).await?;
    sqlx::query(
        "UPDATE projection_checkpoints
            SET stream_sequence = $2, updated_at = clock_timestamp()
          WHERE projection = $1",
    )
    .bind(kind.name())
    .bind(i64::try_from(last)?)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Take up to `max` messages: wait up to `idle` for the first (an empty batch if none
/// came), then whatever comes within `linger` of it or before `not_before`, whichever is
/// later. Only waits for a message are ever cut short, and `next()` on a stream gives up
/// no message when dropped while pending.
pub(crate) async fn next_batch<S, E>(
    messages: &mut S,
    max: usize,
    idle: Duration,
    linger: Duration,
    not_before: tokio::time::Instant,
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
    let until = (tokio::time::Instant::now() + linger).max(not_before);
    while batch.len() < max {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None if until <= tokio::time::Instant::now() => break,
            None => match tokio::time::timeout_at(until, messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            Some(Ok(m)) => batch.push(m),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(batch)
}

/// The live consumer of one projection, or of several that read the same aggregate type
/// (a group): one delivery of each event and one transaction per batch for all of them.
///
/// A group holds the leader lock of each of its projections, and one of its own for the
/// shared consumer. A projection a replay holds is left out until the replay is done (the
/// others go on); it then rejoins, and the consumer restarts from the lowest checkpoint of
/// the group, each projection skipping what it has already applied.
pub struct Projector {
    pool: PgPool,
    database_url: String,
    js: jetstream::Context,
    topology: Topology,
    kinds: Vec<ProjectionKind>,
    config: ProjectorConfig,
}

/// An account, its balance, reserved, debt and version, as `balances` has them.
type BalanceRow = (uuid::Uuid, i64, i64, i64, i64);

/// How often a leading group checks, even under load, whether a projection it left out
/// (held by a replay) may rejoin.
const REJOIN_CHECK: Duration = Duration::from_secs(1);

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
            kinds: vec![kind],
            config,
        }
    }

    /// One consumer for several projections of the same aggregate type.
    pub fn group(
        pool: PgPool,
        database_url: String,
        js: jetstream::Context,
        topology: Topology,
        kinds: Vec<ProjectionKind>,
        config: ProjectorConfig,
    ) -> anyhow::Result<Self> {
        let Some(first) = kinds.first() else {
            anyhow::bail!("a projector group needs at least one projection");
        };
        anyhow::ensure!(
            kinds
                .iter()
                .all(|k| k.aggregate_type() == first.aggregate_type()),
            "the projections of a group must read the same aggregate type"
        );
        Ok(Projector {
            pool,
            database_url,
            js,
            topology,
            kinds,
            config,
        })
    }

    /// `balances+ledger+usage`: the group's name in logs, consumers and locks.
    fn name(&self) -> String {
        self.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// The durable consumer's name: a lone projection's own, or the group's.
    fn consumer(&self) -> String {
        format!("proj_{}", self.name().replace('+', "_"))
    }

    /// Project until `shutdown` resolves; errors are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let role = format!("projection:{}", self.name());
        hub_nats::leader::supervise(&role, self.config.retry_delay, shutdown, || self.lead()).await;
    }

    /// The leader locks of the projections no replay holds, as far as this process can
    /// take them; and the projections left out because a replay holds them.
    async fn acquire(
        &self,
    ) -> anyhow::Result<(Vec<(ProjectionKind, Leadership)>, Vec<ProjectionKind>)> {
        for kind in &self.kinds {
            ensure_checkpoint_row(&self.pool, *kind).await?;
        }
        let replaying = paused(&self.pool, &self.kinds).await?;
        let mut held = Vec::new();
        for kind in self.kinds.iter().filter(|k| !replaying.contains(k)) {
            match Leadership::try_acquire(&self.database_url, &role(*kind)).await? {
                Some(l) => held.push((*kind, l)),
                None => tracing::info!(projection = kind.name(), "another projector leads it"),
            }
        }
        Ok((held, replaying))
    }

    async fn lead(&self) -> anyhow::Result<()> {
        // A group's consumer is shared by its projections: one process at a time uses it.
        let mut group_lock = match self.kinds.len() {
            1 => None,
            _ => {
                let role = format!("projection-group:{}", self.name());
                match Leadership::try_acquire(&self.database_url, &role).await? {
                    Some(l) => Some(l),
                    None => return Ok(()), // Another process leads the group.
                }
            }
        };
        let (mut held, replaying) = self.acquire().await?;
        if held.is_empty() {
            return Ok(()); // Replays or another projector hold them; try again later.
        }
        let active: Vec<ProjectionKind> = held.iter().map(|(k, _)| *k).collect();
        for kind in &active {
            // Indexes a rebuild set aside and did not live to build again.
            let built = crate::indexes::restore(&self.pool, *kind).await?;
            if built > 0 {
                tracing::warn!(
                    projection = kind.name(),
                    built,
                    "rebuilt indexes a replay left out"
                );
            }
        }
        let mut at = u64::MAX;
        for kind in &active {
            at = at.min(checkpoint(&self.pool, *kind).await?);
        }
        let consumer = self.consumer_at(at).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch_max)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        let names: Vec<&str> = active.iter().map(|k| k.name()).collect();
        tracing::info!(projections = ?names, checkpoint = at, "projector is the leader");
        let mut checked_at = tokio::time::Instant::now();
        let mut taken_at = tokio::time::Instant::now();
        loop {
            let batch = next_batch(
                &mut messages,
                self.config.batch_max,
                IDLE_CHECK,
                self.config.linger,
                taken_at + self.config.batch_interval,
            )
            .await?;
            taken_at = tokio::time::Instant::now();
            if batch.is_empty() || checked_at.elapsed() >= REJOIN_CHECK {
                checked_at = tokio::time::Instant::now();
                // A replay may be waiting for this projector to stand aside, or be done
                // with a projection that was left out: either way, lead again.
                let watched: Vec<ProjectionKind> =
                    active.iter().chain(&replaying).copied().collect();
                let now_paused = paused(&self.pool, &watched).await?;
                if let Some(kind) = watched
                    .iter()
                    .find(|k| now_paused.contains(k) == active.contains(k))
                {
                    tracing::info!(
                        projection = kind.name(),
                        replay_started = active.contains(kind),
                        "a replay started or ended; leading again"
                    );
                    return Ok(());
                }
                if batch.is_empty() {
                    continue;
                }
            }
            for leadership in held.iter_mut().map(|(_, l)| l).chain(group_lock.as_mut()) {
                if !leadership.still_held().await {
                    anyhow::bail!("lost a leader lock's connection");
                }
            }
            match apply_batch(&self.pool, &active, &batch, true).await {
                Ok(()) => {}
                Err(BatchError::Paused) => {
                    tracing::info!(projections = ?names, "paused for a replay");
                    return Ok(());
                }
                Err(BatchError::Other(err)) => return Err(err),
            }
            if active.contains(&ProjectionKind::Balances) {
                self.announce_balances(&batch).await;
            }
            // AckPolicy::All: acknowledging the last acknowledges the batch.
            if let Some(last) = batch.last() {
                last.ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack failed: {e}"))?;
            }
        }
        // `held` and `group_lock` drop here: their connections close, the locks go.
    }

    /// Tell whoever listens (a signed-in browser's WebSocket) the new balance of every
    /// account the committed batch moved: core NATS `<prefix>.balances.<account>`, the
    /// `balances` row as JSON. Best effort: a lost announcement costs a dashboard one
    /// refresh, never a credit.
    async fn announce_balances(&self, batch: &[jetstream::Message]) {
        let accounts: std::collections::BTreeSet<uuid::Uuid> = batch
            .iter()
            .filter_map(|m| {
                let mut tokens = m.subject.as_str().rsplit('.');
                let id = tokens.next()?;
                (tokens.next()? == crate::model::CREDIT_ACCOUNT)
                    .then(|| id.parse().ok())
                    .flatten()
            })
            .collect();
        if accounts.is_empty() {
            return;
        }
        let accounts: Vec<uuid::Uuid> = accounts.into_iter().collect();
        let rows: Result<Vec<BalanceRow>, _> = sqlx::query_as(
            "SELECT account_id, balance_micros, reserved_micros, debt_micros, version
               FROM balances WHERE account_id = ANY($1)",
        )
        .bind(&accounts)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(err) => {
                tracing::debug!(error = %err, "could not read balances to announce");
                return;
            }
        };
        let client = self.js.client();
        for (account, balance, reserved, debt, version) in rows {
            let body = serde_json::json!({
                "account_id": account,
                "balance_micros": balance,
                "reserved_micros": reserved,
                "available_micros": balance - reserved,
                "debt_micros": debt,
                "version": version,
            });
            let subject = self.topology.balance_subject(&account.to_string());
            if let Err(err) = client.publish(subject, body.to_string().into()).await {
                tracing::debug!(error = %err, "could not announce a balance");
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
        let name = self.consumer();
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
        let Some(kind) = self.kinds.first() else {
            anyhow::bail!("a projector without projections");
        };
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name),
                filter_subject: self.topology.events_of_type(kind.aggregate_type()),
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
