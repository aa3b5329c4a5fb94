//! The process's metrics: the Prometheus recorder every crate records through (the
//! `metrics` facade), its text for `GET /metrics`, and the gauges sampled on a timer.
//!
//! Counters and histograms are recorded where things happen: HTTP in `hub_api::metrics`,
//! inference in `hub_workers::metrics`, credits in `hub_commands::metrics`. The gauges
//! here are facts that nothing "happens" to (how deep the outbox is, how far each
//! projection is behind, the Postgres pool, the NATS connection); [`sample`] reads them
//! every `metrics.sample_interval_ms`, a handful of cheap queries whatever the traffic.
//! The names and labels are listed in docs/operations.md, and the Grafana dashboard in
//! docs/grafana/ queries exactly these.

use futures::StreamExt;
use hub_projections::ProjectionKind;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use crate::Hub;

/// Events committed to the event store and not yet in JetStream.
pub const OUTBOX_DEPTH: &str = "aihub_outbox_depth";
/// Age of the oldest of them: how far the relay is behind, in seconds.
pub const RELAY_LAG_SECONDS: &str = "aihub_relay_lag_seconds";
/// Events of a projection's aggregate type its projector has not yet had acknowledged
/// (label `projection`), as its JetStream consumer counts them.
pub const PROJECTION_LAG_EVENTS: &str = "aihub_projection_lag_events";
/// A projection's checkpoint, the stream sequence it has applied up to (label `projection`).
pub const PROJECTION_CHECKPOINT: &str = "aihub_projection_checkpoint";
/// The events stream's last sequence.
pub const EVENTS_STREAM_LAST_SEQUENCE: &str = "aihub_events_stream_last_sequence";
/// 1 while the process's NATS connection is up, else 0.
pub const NATS_CONNECTED: &str = "aihub_nats_connected";
/// Connections the process's Postgres pool holds (busy and idle).
pub const POSTGRES_POOL_CONNECTIONS: &str = "aihub_postgres_pool_connections";
/// Of them, idle.
pub const POSTGRES_POOL_IDLE: &str = "aihub_postgres_pool_idle";
/// The most it may hold (`database.max_connections`).
pub const POSTGRES_POOL_MAX: &str = "aihub_postgres_pool_max";

/// Bucket bounds of every `_seconds` histogram: from half a millisecond (an HTTP answer
/// from memory) to a minute (a long generation).
const SECONDS_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// The recorder, once per process (the `metrics` facade has one global recorder).
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the Prometheus recorder, once per process; later calls return the same handle.
/// `None` when another recorder was installed first (then nothing of ours is recorded).
/// Call it before building anything that records, so that handles taken at build time
/// reach it.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS);
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %err, "metrics are not recorded: no recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// Whether this process records metrics.
pub fn installed() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// Everything recorded, in the Prometheus text format; `None` when nothing is.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(Option::as_ref).map(|h| h.render())
}

/// Sample the gauges every `interval` until `shutdown`: the pool and the NATS connection
/// always; with `lags` (a process running the relay or the projections), the outbox and
/// each projection's lag too. Also drains the histograms (the exporter's upkeep), so a
/// process nobody scrapes does not hoard their samples.
pub async fn sample(
    hub: std::sync::Arc<Hub>,
    lags: bool,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return;
    };
    let max = f64::from(hub.settings.database.max_connections);
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => return,
        }
        handle.run_upkeep();
        metrics::gauge!(POSTGRES_POOL_CONNECTIONS).set(f64::from(hub.pool.size()));
        metrics::gauge!(POSTGRES_POOL_IDLE).set(hub.pool.num_idle() as f64);
        metrics::gauge!(POSTGRES_POOL_MAX).set(max);
        let connected = matches!(
            hub.nats.connection_state(),
            async_nats::connection::State::Connected
        );
        metrics::gauge!(NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
        if lags {
            // Bounded like a readiness check: a stalled database delays the next sample,
            // never the roles.
            let _ =
                tokio::time::timeout(interval.max(Duration::from_secs(1)), sample_lags(&hub)).await;
        }
    }
}

/// The projectors' durable consumers are named so (`hub_projections`).
const PROJECTOR_CONSUMER_PREFIX: &str = "proj_";
/// At most this many consumers are read per sample (a stream has a handful).
const CONSUMERS_MAX: usize = 64;

/// The outbox and every projection's position; what cannot be read is left as it was.
async fn sample_lags(hub: &Hub) {
    if let Ok(lag) = hub_nats::relay::lag(&hub.pool).await {
        metrics::gauge!(OUTBOX_DEPTH).set(lag.pending_events as f64);
        metrics::gauge!(RELAY_LAG_SECONDS).set(lag.oldest_pending_ms as f64 / 1_000.0);
    }
    // Each projector's consumer knows how many of its events it has not had acknowledged:
    // the messages of its aggregate type after its position (the stream's last sequence
    // would count other types' events too). Keyed by the subject filter it reads.
    let mut pending: HashMap<String, u64> = HashMap::new();
    if let Ok(stream) = hub.js.get_stream(hub.topology.events_stream()).await {
        metrics::gauge!(EVENTS_STREAM_LAST_SEQUENCE)
            .set(stream.cached_info().state.last_sequence as f64);
        let mut consumers = stream.consumers().take(CONSUMERS_MAX);
        while let Some(Ok(info)) = consumers.next().await {
            if !info.name.starts_with(PROJECTOR_CONSUMER_PREFIX) {
                continue;
            }
            let behind = info
                .num_pending
                .saturating_add(u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX));
            let entry = pending.entry(info.config.filter_subject).or_default();
            *entry = (*entry).max(behind);
        }
    }
    // Every projection's checkpoint in one query.
    let Ok(rows) = sqlx::query_as::<_, (String, i64)>(
        "SELECT projection, stream_sequence FROM projection_checkpoints",
    )
    .fetch_all(&hub.pool)
    .await
    else {
        return;
    };
    for (name, at) in rows {
        let Some(kind) = ProjectionKind::ALL.into_iter().find(|k| k.name() == name) else {
            continue;
        };
        let at = u64::try_from(at).unwrap_or(0);
        metrics::gauge!(PROJECTION_CHECKPOINT, "projection" => kind.name()).set(at as f64);
        let filter = hub.topology.events_of_type(kind.aggregate_type());
        if let Some(behind) = pending.get(&filter) {
            metrics::gauge!(PROJECTION_LAG_EVENTS, "projection" => kind.name()).set(*behind as f64);
        }
    }
}
