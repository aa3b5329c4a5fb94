//! The outbox relay: Postgres event store → JetStream `HUB_EVENTS`.
//!
//! Guarantees, after a crash of the relay, NATS or Postgres at any point:
//! - nothing committed is missing: a row leaves `event_outbox` only after JetStream
//!   acknowledged its event;
//! - nothing is duplicated: each event carries `Nats-Msg-Id`, so a republish inside the
//!   duplicate window is dropped by the server; after a restart (when the window may have
//!   passed) the first batch is reconciled against the last message of each aggregate's
//!   subject;
//! - each aggregate stays in order: events of one aggregate are published one wave at a
//!   time, the next only after the previous one's ack, so a failed publish can never let a
//!   later event of the same aggregate overtake it.
//!
//! One relay leads at a time (an advisory lock); a second one waits. Even two at once are
//! safe: both publish each aggregate in order, and the server keeps the first of each id.
//!
//! The relay learns of commits at once from writers' wake-ups on core NATS
//! ([`crate::wake`]), and polls the outbox every `idle_poll` in case one was lost.

use async_nats::jetstream::{self, message::PublishMessage};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use futures::{FutureExt, StreamExt};
use sqlx::{PgPool, Row};
use std::collections::{HashMap, HashSet};
use std::future::{Future, IntoFuture};
use std::time::Duration;

use crate::envelope::{sequence_of_message_id, EventEnvelope, RawJson};
use crate::leader::Leadership;
use crate::topology::Topology;

/// Tuning, passed explicitly.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Outbox rows read per round.
    pub batch_max: i64,
    /// Poll this often even without a wake-up (one lost, a writer that sends none).
    pub idle_poll: Duration,
    /// After a wake-up, wait this long so that the commits of the same moment go in the
    /// same round: a round costs two queries whatever its size.
    pub linger: Duration,
    /// And wait until this long after the previous round began: under a steady trickle
    /// of commits, rounds come at most this often (each a `SELECT` and a `DELETE` that
    /// commits) instead of one per commit or two, while a relay that is behind, or whose
    /// rounds take longer than this, is not held back at all.
    pub round_interval: Duration,
    /// Wait this long before retrying after an error.
    pub retry_delay: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_max: 1_000,
            idle_poll: Duration::from_millis(250),
            linger: Duration::from_millis(2),
            round_interval: Duration::from_millis(10),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// How far behind the relay is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayLag {
    /// Committed events not yet in JetStream.
    pub pending_events: i64,
    /// Age of the oldest of them, in milliseconds.
    pub oldest_pending_ms: i64,
}

/// Read the relay's lag from the outbox.
pub async fn lag(pool: &PgPool) -> Result<RelayLag, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS pending,
                COALESCE((EXTRACT(EPOCH FROM clock_timestamp() - min(recorded_at)) * 1000)::bigint, 0) AS oldest_ms
           FROM event_outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok(RelayLag {
        pending_events: row.try_get("pending")?,
        oldest_pending_ms: row.try_get("oldest_ms")?,
    })
}

struct Pending {
    outbox_id: i64,
    envelope: EventEnvelope,
}

/// The relay. Build it, then [`Relay::run`] it until shutdown.
pub struct Relay {
    pool: PgPool,
    database_url: String,
    js: jetstream::Context,
    topology: Topology,
    config: RelayConfig,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        database_url: String,
        js: jetstream::Context,
        topology: Topology,
        config: RelayConfig,
    ) -> Self {
        Relay {
            pool,
            database_url,
            js,
            topology,
            config,
        }
    }

    /// Lead when possible and relay until `shutdown` resolves. Errors are logged and
    /// retried; this returns only on shutdown.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        crate::leader::supervise("relay", self.config.retry_delay, shutdown, || self.lead()).await;
    }

    /// Become leader, then drain until an error.
    async fn lead(&self) -> anyhow::Result<()> {
        let mut leadership = loop {
            if let Some(l) = Leadership::try_acquire(&self.database_url, "relay").await? {
                break l;
            }
            tokio::time::sleep(self.config.idle_poll).await;
        };
        tracing::info!("relay is the leader");
        let mut wake_ups = self
            .js
            .client()
            .subscribe(self.topology.outbox_wake_subject())
            .await?;
        // The first round after taking over reconciles with the stream: the previous leader
        // may have published rows it never deleted, longer ago than the duplicate window.
        let mut reconcile = true;
        loop {
            if !leadership.still_held().await {
                anyhow::bail!("lost the leader lock's connection");
            }
            let began = tokio::time::Instant::now();
            let relayed = self.relay_batch(&mut reconcile).await?;
            if relayed < usize::try_from(self.config.batch_max).unwrap_or(usize::MAX) {
                // Caught up: sleep until a writer wakes us (or the idle poll).
                if let Ok(None) = tokio::time::timeout(self.config.idle_poll, wake_ups.next()).await
                {
                    anyhow::bail!("the wake-up subscription ended");
                }
                let resume = (tokio::time::Instant::now() + self.config.linger)
                    .max(began + self.config.round_interval);
                tokio::time::sleep_until(resume).await;
                // Wake-ups that came meanwhile are answered by the next round.
                while let Some(Some(_)) = wake_ups.next().now_or_never() {}
            }
        }
    }

    /// Relay one batch of outbox rows; returns how many rows were read.
    pub async fn relay_batch(&self, reconcile: &mut bool) -> anyhow::Result<usize> {
        let rows = sqlx::query(
            "SELECT id, aggregate_type, aggregate_id, sequence,
                    event_type, event_version, payload::text AS payload,
                    metadata::text AS metadata, recorded_at
               FROM event_outbox
              ORDER BY id
              LIMIT $1",
        )
        .bind(self.config.batch_max)
        .fetch_all(&self.pool)
        .await?;
        let read = rows.len();
        if read == 0 {
            return Ok(0);
        }
        // Waves: the k-th pending event of every aggregate goes in wave k.
        let mut waves: Vec<Vec<Pending>> = Vec::new();
        let mut depth: HashMap<(String, String), usize> = HashMap::new();
        for row in rows {
            let envelope = EventEnvelope {
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: u64::try_from(row.try_get::<i64, _>("sequence")?)?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                // The text as stored (`json` keeps it verbatim): the message then carries
                // exactly what the event's chain digest covers.
                payload: RawJson::from_text(row.try_get("payload")?)?,
                metadata: RawJson::from_text(row.try_get("metadata")?)?,
                recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
            };
            let slot = depth
                .entry((
                    envelope.aggregate_type.clone(),
                    envelope.aggregate_id.clone(),
                ))
                .or_insert(0);
            if waves.len() <= *slot {
                waves.push(Vec::new());
            }
            waves[*slot].push(Pending {
                outbox_id: row.try_get("id")?,
                envelope,
            });
            *slot += 1;
        }

        let mut published_up_to: HashMap<(String, String), u64> = HashMap::new();
        if *reconcile {
            for pending in waves.first().into_iter().flatten() {
                let e = &pending.envelope;
                let last = self.last_published_sequence(e).await?;
                published_up_to.insert((e.aggregate_type.clone(), e.aggregate_id.clone()), last);
            }
        }

        let mut done: Vec<i64> = Vec::with_capacity(read);
        let mut failed: HashSet<(String, String)> = HashSet::new();
        let mut first_error: Option<anyhow::Error> = None;
        for wave in waves {
            let mut in_flight = Vec::with_capacity(wave.len());
            for pending in wave {
                let e = &pending.envelope;
                let key = (e.aggregate_type.clone(), e.aggregate_id.clone());
                if failed.contains(&key) {
                    continue;
                }
                if published_up_to
                    .get(&key)
                    .is_some_and(|&up_to| e.sequence <= up_to)
                {
                    done.push(pending.outbox_id);
                    continue;
                }
                let subject = self
                    .topology
                    .event_subject(&e.aggregate_type, &e.aggregate_id)?;
                let body = serde_json::to_vec(e)?;
                let mut publish = PublishMessage::build()
                    .payload(body.into())
                    .message_id(e.message_id());
                // The request that led to the event, in a header and in the log.
                if let Some(request_id) = e.correlation_id() {
                    tracing::debug!(request_id, event = %e.message_id(), "relaying");
                    publish =
                        publish.header(crate::envelope::REQUEST_ID_HEADER, request_id.as_str());
                }
                match self.js.send_publish(subject, publish).await {
                    Ok(ack) => in_flight.push((pending.outbox_id, key, ack.into_future())),
                    Err(err) => {
                        failed.insert(key);
                        first_error.get_or_insert(err.into());
                    }
                }
            }
            let (ids, rest): (Vec<_>, Vec<_>) = in_flight
                .into_iter()
                .map(|(id, key, ack)| ((id, key), ack))
                .unzip();
            for ((id, key), result) in ids.into_iter().zip(join_all(rest).await) {
                match result {
                    Ok(_) => done.push(id),
                    Err(err) => {
                        failed.insert(key);
                        first_error.get_or_insert(err.into());
                    }
                }
            }
        }

        if !done.is_empty() {
            sqlx::query("DELETE FROM event_outbox WHERE id = ANY($1)")
                .bind(&done)
                .execute(&self.pool)
                .await?;
        }
        *reconcile = false;
        if let Some(err) = first_error {
            // Published-but-unacknowledged events may be in the stream: check next time.
            *reconcile = true;
            return Err(err.context("publishing to JetStream"));
        }
        Ok(read)
    }

    /// The aggregate sequence of the last event of this aggregate in the stream (0: none).
    async fn last_published_sequence(&self, e: &EventEnvelope) -> anyhow::Result<u64> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let stream = self
            .js
            .get_stream_no_info(self.topology.events_stream())
            .await?;
        let subject = self
            .topology
            .event_subject(&e.aggregate_type, &e.aggregate_id)?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .and_then(|id| sequence_of_message_id(id.as_str()))
                .unwrap_or(0)),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(err) => Err(err.into()),
        }
    }
}
