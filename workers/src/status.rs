//! Provider health as the workers see it, for `GET /api/providers/status`.
//!
//! Only a worker calls providers, so only a worker knows whether they answer: an API process
//! on its own (`aihub serve`) has a router that never sent a request and would always say
//! "healthy". So each worker publishes its router's [`ProviderStatus`] list every
//! [`REPORT_EVERY`] on core NATS (`<prefix>.status.providers.<worker id>`), and each API
//! process keeps the latest report of every worker ([`StatusBoard`]). A report older than
//! [`STALE_AFTER`] (a worker that stopped) is forgotten. The answer merges the reports: per
//! model and provider, the worst state any worker sees (cooling, then probing, then
//! healthy; then the most consecutive failures), since a provider that fails for one worker
//! fails requests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::router::{HealthState, ProviderRouter, ProviderStatus};

/// How often a worker reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// A worker whose last report is older than this has stopped: its report is dropped.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// One worker's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The worker process's id (random per process).
    pub worker: String,
    pub providers: Vec<ProviderStatus>,
}

/// The merged view the API answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MergedStatus {
    /// Workers whose report is fresh; 0 when none reported (then `providers` is empty).
    pub workers_reporting: usize,
    pub providers: Vec<ProviderStatus>,
}

/// Publishes `router`'s status as worker `worker` every [`REPORT_EVERY`] on `subject`, until
/// `shutdown` resolves. A publish that fails is logged and the next one tried.
pub async fn report(
    client: async_nats::Client,
    subject: String,
    router: Arc<ProviderRouter>,
    worker: String,
    shutdown: impl Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let report = StatusReport {
            worker: worker.clone(),
            providers: router.status(),
        };
        match serde_json::to_vec(&report) {
            Ok(body) => {
                if let Err(err) = client.publish(subject.clone(), body.into()).await {
                    tracing::debug!(error = %err, "could not publish the providers' status");
                }
            }
            Err(err) => tracing::error!(error = %err, "could not encode the providers' status"),
        }
    }
}

/// The latest report of every worker, as one API process heard them.
#[derive(Debug, Default)]
pub struct StatusBoard {
    reports: Mutex<HashMap<String, (Instant, Vec<ProviderStatus>)>>,
}

/// How bad a state is: the larger, the worse.
fn severity(status: &ProviderStatus) -> (u8, u32) {
    let state = match status.state {
        HealthState::Healthy => 0,
        HealthState::Probing => 1,
        HealthState::Cooling => 2,
    };
    (state, status.consecutive_failures)
}

impl StatusBoard {
    /// Subscribes to every worker's reports on `subject` (a wildcard) and keeps them in a
    /// new board, on a task of its own for as long as the subscription lives.
    pub async fn start(
        client: &async_nats::Client,
        subject: String,
    ) -> Result<Arc<StatusBoard>, async_nats::SubscribeError> {
        let mut subscription = client.subscribe(subject).await?;
        let board = Arc::new(StatusBoard::default());
        let kept = Arc::downgrade(&board);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(board) = kept.upgrade() else {
                    return;
                };
                match serde_json::from_slice::<StatusReport>(&message.payload) {
                    Ok(report) => board.record(report, Instant::now()),
                    Err(err) => tracing::warn!(error = %err, "an unreadable status report"),
                }
            }
        });
        Ok(board)
    }

    /// Keeps `report` as its worker's latest, heard at `now`.
    pub fn record(&self, report: StatusReport, now: Instant) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.retain(|_, (heard, _)| now.duration_since(*heard) < STALE_AFTER);
        reports.insert(report.worker, (now, report.providers));
    }

    /// The fresh reports merged: per model and provider (in the order the reports list
    /// them), the worst status any worker reports.
    pub fn merged(&self, now: Instant) -> MergedStatus {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let fresh: Vec<&Vec<ProviderStatus>> = reports
            .values()
            .filter(|(heard, _)| now.duration_since(*heard) < STALE_AFTER)
            .map(|(_, providers)| providers)
            .collect();
        let mut merged: Vec<ProviderStatus> = Vec::new();
        for status in fresh.iter().flat_map(|providers| providers.iter()) {
            let same = merged
                .iter_mut()
                .find(|m| m.model == status.model && m.provider == status.provider);
            match same {
                Some(kept) if severity(status) > severity(kept) => *kept = status.clone(),
                Some(_) => {}
                None => merged.push(status.clone()),
            }
        }
        MergedStatus {
            workers_reporting: fresh.len(),
            providers: merged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn status(provider: &str, state: HealthState, failures: u32) -> ProviderStatus {
        ProviderStatus {
            model: "m".into(),
            provider: provider.into(),
            kind: ProviderKind::Openai,
            state,
            consecutive_failures: failures,
            last_error: (failures > 0).then(|| "upstream_error".to_owned()),
            cooling_until: None,
        }
    }

    #[test]
    fn the_worst_report_of_each_provider_wins_and_stopped_workers_are_forgotten() {
        let board = StatusBoard::default();
        let start = Instant::now();
        assert_eq!(board.merged(start).workers_reporting, 0);
        board.record(
            StatusReport {
                worker: "w1".into(),
                providers: vec![
                    status("a", HealthState::Healthy, 0),
                    status("b", HealthState::Healthy, 1),
                ],
            },
            start,
        );
        board.record(
            StatusReport {
                worker: "w2".into(),
                providers: vec![
                    status("a", HealthState::Cooling, 3),
                    status("b", HealthState::Healthy, 0),
                ],
            },
            start,
        );
        let merged = board.merged(start);
        assert_eq!(merged.workers_reporting, 2);
        assert_eq!(merged.providers[0].state, HealthState::Cooling);
        assert_eq!(merged.providers[1].consecutive_failures, 1);
        // w2 stops reporting; w1 goes on.
        let later = start + STALE_AFTER + Duration::from_secs(1);
        board.record(
            StatusReport {
                worker: "w1".into(),
                providers: vec![status("a", HealthState::Healthy, 0)],
            },
            later,
        );
        let merged = board.merged(later);
        assert_eq!(merged.workers_reporting, 1);
        assert_eq!(merged.providers, vec![status("a", HealthState::Healthy, 0)]);
    }
}
