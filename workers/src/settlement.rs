//! Durable settlement: once a worker has an answer to deliver, what the request owes is
//! made durable *before* the answer goes out: written to the credit account, or, when
//! Postgres does not take it, to JetStream, and applied from there, retried until Postgres
//! does.
//!
//! The fallback is a `HUB_COMMANDS` subject, `<prefix>.cmd.settle.<request id>` (ADR 04):
//! JetStream keeps it on disk apart from Postgres, so a settlement survives the database
//! going away and the worker dying; the message id `settle:<request id>` makes a second
//! write of it a duplicate the stream drops. Every worker process runs a
//! [`Settler`], one durable consumer shared by all of them, that applies each settlement
//! with `CreditCommand::SettleUsage` and acknowledges it only once it is written (or once
//! the account says it can never be). A settlement applied twice charges once: the
//! command's key is `settle:<request id>`.
//!
//! The sweeper asks [`Settlements::pending`] before it expires a reservation, and applies a
//! waiting settlement instead; one that still arrives after an expiry is charged by the
//! account all the same (capped at what was reserved, see `CreditAccount`).

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, AckKind};
use futures::StreamExt;
use hub_commands::{CommandError, CreditAccounts};
use hub_domain::{AccountId, CreditCommand, CreditError, CreditEvent, RequestId, UsageRecord};
use hub_nats::Topology;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The durable consumer every worker process's [`Settler`] shares.
pub const CONSUMER: &str = "settlements";

/// Settlements one process applies at once.
const APPLY_CONCURRENCY: usize = 256;
/// First wait before a settlement that could not be written is tried again; it doubles
/// with each attempt up to [`RETRY_DELAY_MAX`].
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);
/// A settlement handed to a process that then died is given to another after this long.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// How often a publish of a settlement is tried before the worker settles directly.
const PUBLISH_ATTEMPTS: u32 = 3;

/// What one answered request owes: written before its answer is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settlement {
    pub account: AccountId,
    pub request_id: RequestId,
    pub usage: UsageRecord,
    /// When the worker wrote it (for the logs: how long a delayed one waited).
    pub written_at: chrono::DateTime<chrono::Utc>,
}

impl Settlement {
    fn command(self) -> CreditCommand {
        CreditCommand::SettleUsage {
            request_id: self.request_id,
            usage: Box::new(self.usage),
        }
    }
}

/// Why a settlement could not be written durably or applied.
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    #[error("could not write the settlement to JetStream: {0}")]
    Publish(String),
    #[error("could not read pending settlements from JetStream: {0}")]
    Read(String),
    #[error("the settlement could not be written to the account yet: {0}")]
    Unavailable(String),
    #[error("the account refused the settlement: {0}")]
    Refused(#[source] CreditError),
}

impl SettlementError {
    /// Whether trying again later may succeed (the database or the broker was away).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// What applying a settlement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Micro-credits charged (the first outcome, for a repeat).
    pub charged_micros: i64,
    /// It had been applied before; nothing was written now.
    pub repeat: bool,
}

/// Counts since the process started, for the logs and, once they exist, metrics.
#[derive(Debug, Default)]
pub struct SettlementStats {
    /// Settlements handed to JetStream because Postgres did not take them.
    pub deferred: AtomicU64,
    /// Attempts that failed and were left to a retry.
    pub retried: AtomicU64,
}

/// The settlement queue of one process: writes settlements, finds pending ones, applies them.
pub struct Settlements {
    js: jetstream::Context,
    topology: Topology,
    credits: Arc<CreditAccounts>,
    stats: SettlementStats,
}

impl Settlements {
    pub fn new(js: jetstream::Context, topology: Topology, credits: Arc<CreditAccounts>) -> Self {
        Settlements {
            js,
            topology,
            credits,
            stats: SettlementStats::default(),
        }
    }

    pub fn stats(&self) -> &SettlementStats {
        &self.stats
    }

    /// Hand `settlement` to JetStream (which confirms it is stored) for the settlers, so that
    /// it is applied whatever happens to this process or to Postgres. When JetStream does
    /// not take it either, it is applied directly, retried with backoff for up to `patience`.
    pub async fn defer(
        &self,
        settlement: &Settlement,
        patience: Duration,
    ) -> Result<(), SettlementError> {
        let subject = self
            .topology
            .settlement_subject(settlement.request_id.as_str());
        let body = serde_json::to_vec(settlement)
            .map_err(|err| SettlementError::Publish(err.to_string()))?;
        self.stats.deferred.fetch_add(1, Ordering::Relaxed);
        let mut last = String::new();
        for attempt in 0..PUBLISH_ATTEMPTS {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("settle:{}", settlement.request_id).as_str(),
            );
            // The settler's `settle` span continues the worker's.
            hub_nats::trace_context::inject(&tracing::Span::current(), &mut headers);
            let published = self
                .js
                .publish_with_headers(subject.clone(), headers, body.clone().into())
                .await;
            match published {
                Ok(ack) => match ack.await {
                    Ok(_) => return Ok(()),
                    Err(err) => last = err.to_string(),
                },
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(retry_delay(attempt + 1)).await;
        }
        tracing::warn!(request = %settlement.request_id, error = %last,
            "JetStream did not take a settlement; writing it to the account directly");
        self.apply_with_retry(settlement.clone(), patience).await?;
        Ok(())
    }

    /// Apply one settlement to its account.
    pub async fn apply(&self, settlement: Settlement) -> Result<Applied, SettlementError> {
        let account = settlement.account;
        match self
            .credits
            .execute(account, settlement.command(), "worker")
            .await
        {
            Ok(committed) => {
                let charged_micros = match committed.decisive {
                    Some(CreditEvent::ReservationSettled { charged, .. }) => charged.micros(),
                    _ => 0,
                };
                Ok(Applied {
                    charged_micros,
                    repeat: committed.replayed,
                })
            }
            Err(CommandError::Rejected(refusal)) => Err(SettlementError::Refused(refusal)),
            Err(other) => Err(SettlementError::Unavailable(other.to_string())),
        }
    }

    /// Apply, retrying what may pass later with backoff, for at most `patience`.
    pub async fn apply_with_retry(
        &self,
        settlement: Settlement,
        patience: Duration,
    ) -> Result<Applied, SettlementError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut attempt = 0;
        loop {
            match self.apply(settlement.clone()).await {
                Err(err) if err.is_transient() && tokio::time::Instant::now() < deadline => {
                    attempt += 1;
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(request = %settlement.request_id, attempt, error = %err,
                        "settlement waiting; trying again");
                    tokio::time::sleep(retry_delay(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The settlement of `request_id` written but not yet applied, if there is one.
    pub async fn pending(
        &self,
        request_id: &RequestId,
    ) -> Result<Option<Settlement>, SettlementError> {
        let read = |err: &dyn std::fmt::Display| SettlementError::Read(err.to_string());
        let stream = self
            .js
            .get_stream_no_info(self.topology.commands_stream())
            .await
            .map_err(|e| read(&e))?;
        let subject = self.topology.settlement_subject(request_id.as_str());
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map(Some)
                .map_err(|e| read(&e)),
            Err(err)
                if err.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(err) => Err(read(&err)),
        }
    }

    /// Settlements written and not yet applied (delivered or not), across every process.
    pub async fn waiting(&self) -> Result<u64, SettlementError> {
        let read = |err: &dyn std::fmt::Display| SettlementError::Read(err.to_string());
        let stream = self
            .js
            .get_stream_no_info(self.topology.commands_stream())
            .await
            .map_err(|e| read(&e))?;
        let mut info = stream
            .info_with_subjects(self.topology.settlement_subjects())
            .await
            .map_err(|e| read(&e))?;
        let mut waiting = 0;
        while let Some(subject) = info.next().await {
            let (_, count) = subject.map_err(|e| read(&e))?;
            waiting += u64::try_from(count).unwrap_or(0);
        }
        Ok(waiting)
    }
}

/// Log a settlement applied a second or more after it was written (Postgres was away).
fn log_if_delayed(written_at: chrono::DateTime<chrono::Utc>) {
    let ms = (chrono::Utc::now() - written_at).num_milliseconds();
    if ms >= 1_000 {
        tracing::info!(waited_ms = ms, "a delayed settlement was applied");
    }
}

/// Wait before attempt `attempt` (1-based) of a settlement that failed.
fn retry_delay(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(10);
    (RETRY_DELAY_MIN * factor).min(RETRY_DELAY_MAX)
}

/// Applies written settlements: the consumer loop of one process.
pub struct Settler {
    settlements: Arc<Settlements>,
    retry_delay: Duration,
}

impl Settler {
    pub fn new(settlements: Arc<Settlements>, retry_delay: Duration) -> Self {
        Settler {
            settlements,
            retry_delay,
        }
    }

    /// Apply settlements until `shutdown` resolves; errors are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let this = Arc::new(self);
        let delay = this.retry_delay;
        hub_nats::leader::supervise("settler", delay, shutdown, || this.clone().work()).await;
    }

    async fn work(self: Arc<Self>) -> anyhow::Result<()> {
        let queue = &self.settlements;
        let stream = queue
            .js
            .get_stream(queue.topology.commands_stream())
            .await?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    filter_subject: queue.topology.settlement_subjects(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: i64::try_from(APPLY_CONCURRENCY * 4).unwrap_or(1_024),
                    ..Default::default()
                },
            )
            .await?;
        let permits = Arc::new(Semaphore::new(APPLY_CONCURRENCY));
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(APPLY_CONCURRENCY)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        tracing::info!("settler is applying settlements");
        while let Some(message) = messages.next().await {
            let message = message?;
            let permit = permits.clone().acquire_owned().await?;
            let queue = self.settlements.clone();
            tokio::spawn(async move {
                settle_one(&queue, message).await;
                drop(permit);
            });
        }
        anyhow::bail!("the settlement stream ended")
    }
}

/// Apply one delivered settlement; acknowledge it once it is written or can never be, and
/// ask for it again later otherwise.
async fn settle_one(queue: &Settlements, message: jetstream::Message) {
    let settlement: Settlement = match serde_json::from_slice(&message.payload) {
        Ok(settlement) => settlement,
        Err(err) => {
            tracing::error!(error = %err, "unreadable settlement dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let request = settlement.request_id.clone();
    let written_at = settlement.written_at;
    let span = tracing::info_span!(
        "settle",
        request = %request,
        settlement = "settler",
        otel.status_code = tracing::field::Empty,
    );
    hub_nats::trace_context::follow(&span, message.headers.as_ref());
    let applied = tracing::Instrument::instrument(queue.apply(settlement), span.clone()).await;
    if matches!(applied, Err(SettlementError::Refused(_))) {
        span.record("otel.status_code", "ERROR");
    }
    drop(span);
    match applied {
        Ok(_) => log_if_delayed(written_at),
        Err(SettlementError::Refused(refusal)) => {
            // Released or unknown: nothing to charge will ever be found. Loud, because an
            // answered request should always have its reservation.
            tracing::error!(%request, error = %refusal, "a settlement was refused; dropped");
        }
        Err(err) => {
            let attempt = message.info().map_or(1, |info| info.delivered);
            queue.stats.retried.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%request, attempt, error = %err, "settlement waiting; trying again");
            let delay = retry_delay(u32::try_from(attempt).unwrap_or(u32::MAX));
            if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(error = %err, "could not ask for a settlement again; it comes back after the ack wait");
            }
            return;
        }
    }
    if let Err(err) = message.ack().await {
        tracing::debug!(%request, error = %err, "could not acknowledge a settlement; it comes back and repeats harmlessly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_from_100_ms_and_stops_at_5_s() {
        let delays: Vec<u128> = (1..=9).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]
        );
        assert_eq!(retry_delay(u32::MAX), RETRY_DELAY_MAX);
    }
}
