//! Readiness: whether Postgres and NATS answer, how far the relay and each projection are
//! behind, and how many answered requests' settlements wait to be applied.

use hub_nats::relay::RelayLag;
use hub_projections::{checkpoint, ProjectionKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::Hub;

/// Each dependency check gets at most this long.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness found.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// `ready` when Postgres and NATS answer (and the rate-limit store, when limits are on),
    /// `degraded` when only the rate-limit store is down and limits fail open (requests are
    /// admitted unlimited), else `unavailable`.
    pub status: &'static str,
    pub postgres: Check,
    pub nats: NatsCheck,
    /// Events committed but not yet relayed (when Postgres answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayLag>,
    /// Each projection's position (when Postgres answers), by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projections: Option<BTreeMap<&'static str, ProjectionLag>>,
    /// Answered requests whose settlements are written but not yet applied to the accounts
    /// (when NATS answers). More than a moment's worth means the settlers cannot write to
    /// Postgres, or none runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlements_waiting: Option<u64>,
    /// The rate-limit store (when limits are on): whether it answers, and whether requests
    /// are admitted (`open`) or refused (`closed`) while it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<crate::rate_limits::StoreCheck>,
}

impl Readiness {
    /// Postgres and NATS both answer, and the rate-limit store does unless limits fail open.
    pub fn is_ready(&self) -> bool {
        self.postgres.ok
            && self.nats.ok
            && self
                .rate_limits
                .as_ref()
                .is_none_or(|store| store.ok || store.fails == "open")
    }
}

/// One dependency's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// NATS's answer: the events stream's last sequence, or why not.
#[derive(Debug, Clone, Serialize)]
pub struct NatsCheck {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_last_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a projection is in the events stream.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionLag {
    pub checkpoint: u64,
    /// Stream messages after its checkpoint (`None` when NATS did not answer).
    pub stream_messages_behind: Option<u64>,
}

/// Run `check` for at most [`CHECK_TIMEOUT`]; a failure or a timeout is its message.
async fn bounded<T, E: std::fmt::Display>(
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("timed out".to_string()),
    }
}

/// Check the dependencies and read the lags.
pub async fn check(hub: &Hub) -> Readiness {
    let postgres = bounded(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&hub.pool)).await;
    let stream_last = bounded(async {
        let mut stream = hub.js.get_stream(hub.topology.events_stream()).await?;
        let info = stream.info().await?;
        Ok::<u64, async_nats::Error>(info.state.last_sequence)
    })
    .await;
    let (relay, projections) = if postgres.is_ok() {
        let relay = hub_nats::relay::lag(&hub.pool).await.ok();
        let mut projections = BTreeMap::new();
        for kind in ProjectionKind::ALL {
            if let Ok(at) = checkpoint(&hub.pool, kind).await {
                let behind = stream_last
                    .as_ref()
                    .ok()
                    .map(|last| last.saturating_sub(at));
                projections.insert(
                    kind.name(),
                    ProjectionLag {
                        checkpoint: at,
                        stream_messages_behind: behind,
                    },
                );
            }
        }
        (relay, Some(projections))
    } else {
        (None, None)
    };
    let settlements_waiting = bounded(hub.settlements.waiting()).await.ok();
    let rate_limits = hub.rate_limits.check().await;
    let ok = postgres.is_ok() && stream_last.is_ok();
    let status = match &rate_limits {
        _ if !ok => "unavailable",
        Some(store) if !store.ok && store.fails == "open" => "degraded",
        Some(store) if !store.ok => "unavailable",
        _ => "ready",
    };
    Readiness {
        status,
        rate_limits,
        postgres: Check {
            ok: postgres.is_ok(),
            error: postgres.err(),
        },
        nats: NatsCheck {
            ok: stream_last.is_ok(),
            stream_last_sequence: stream_last.as_ref().ok().copied(),
            error: stream_last.err(),
        },
        relay,
        projections,
        settlements_waiting,
    }
}
