//! Building the hub from settings and running its roles.

use anyhow::Context;
use async_nats::jetstream;
use axum::serve::ListenerExt;
use hub_nats::{CommitSignal, Relay, RelayConfig};
use hub_projections::{ProjectionKind, Projector, ProjectorConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use hub_app::{Hub, Settings};
use hub_commands::SharedClock;

/// Which roles this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub http: bool,
    pub relay: bool,
    pub projections: bool,
    pub sweeper: bool,
    /// Inference workers (pull commands, call providers, write settlements).
    pub worker: bool,
    /// Apply written settlements to the accounts (retried until Postgres takes them).
    pub settler: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        http: true,
        relay: true,
        projections: true,
        sweeper: true,
        worker: true,
        settler: true,
    };
    pub const NONE: Roles = Roles {
        http: false,
        relay: false,
        projections: false,
        sweeper: false,
        worker: false,
        settler: false,
    };
}

/// A built hub, ready to run.
pub struct Application {
    state: Arc<Hub>,
    roles: Roles,
    listener: Option<TcpListener>,
    /// `metrics.listen`: a listener that answers only `GET /metrics`.
    metrics_listener: Option<TcpListener>,
    commit_signal: CommitSignal,
}

/// Connect to Postgres (lazily) and NATS, and make sure the streams exist.
pub async fn connect(
    settings: &Settings,
) -> anyhow::Result<(sqlx::PgPool, async_nats::Client, jetstream::Context)> {
    let pool = hub_commands::db::connect_lazy(&settings.pool_settings())
        .context("invalid database.url")?;
    let nats = hub_nats::connect(&settings.nats.url, "aihub")
        .await
        .with_context(|| {
            format!(
                "could not connect to NATS at {}",
                hub_adapters::secrets::redact_url(&settings.nats.url)
            )
        })?;
    let js = jetstream::new(nats.clone());
    settings
        .topology()
        .ensure_streams(&js)
        .await
        .context("could not set up the JetStream streams")?;
    Ok((pool, nats, js))
}

/// Resolves once `flag` is set (or its sender is gone).
async fn raised(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// How long the front may take, after the grace, to settle what it cut.
const AFTER_GRACE: Duration = Duration::from_secs(15);

impl Application {
    /// Build the roles from settings, on the system clock.
    pub async fn build(settings: Settings, roles: Roles) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, roles, hub_commands::clock::system()).await
    }

    /// Build the roles from settings, reading time from `clock` (tests pass one they can move).
    pub async fn build_with_clock(
        settings: Settings,
        roles: Roles,
        clock: SharedClock,
    ) -> anyhow::Result<Application> {
        if settings.metrics.enabled {
            // Before anything is built, so that nothing records into the void.
            hub_app::metrics::install();
        }
        let (pool, nats, js) = connect(&settings).await?;
        // Writers wake the relay (here or in another process) after each commit.
        let commit_signal = CommitSignal::new();
        let listener = if roles.http {
            let address = (settings.server.host.as_str(), settings.server.port);
            Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("could not listen on {}:{}", address.0, address.1))?,
            )
        } else {
            None
        };
        let metrics_listener = match settings.metrics.listen_address() {
            Some(address) if settings.metrics.enabled => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("could not listen on {address} (metrics.listen)"))?,
            ),
            _ => None,
        };
        let state = Arc::new(Hub::build(settings, pool, nats, js, &commit_signal, clock).await?);
        Ok(Application {
            state,
            roles,
            listener,
            metrics_listener,
            commit_signal,
        })
    }

    /// The port the API listens on, if this process serves HTTP.
    pub fn port(&self) -> Option<u16> {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// The port of the `metrics.listen` listener, if this process has one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> Arc<Hub> {
        self.state.clone()
    }

    /// Run every role until `shutdown` resolves, then stop them, the front first: the HTTP
    /// server stops accepting and the worker stops pulling commands, and both get
    /// `server.shutdown_grace_ms` to finish the requests in flight (WebSocket chats included:
    /// a socket starts no new chat and closes once its chats are done). Streams and chats
    /// still open then are cut, and the worker cancels what it still runs, each request
    /// settled for what it delivered. Only then do the relay, projections, settler and sweeper stop, so that
    /// what the front wrote while draining is relayed.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || raised(stop_rx.clone());
        // The front: HTTP and the worker, stopped first.
        let (drain_tx, drain_rx) = watch::channel(false);
        let (deadline_tx, deadline_rx) = watch::channel(false);
        // WebSocket sessions outlive their HTTP request: drained on their own.
        let sockets = hub_api::shutdown::Sockets::new(drain_rx.clone(), deadline_rx.clone());
        let draining = move || raised(drain_rx.clone());
        let state = self.state;
        let grace = Duration::from_millis(state.settings.server.shutdown_grace_ms);
        let mut front = tokio::task::JoinSet::new();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(self.commit_signal.forward(
            state.nats.clone(),
            state.topology.outbox_wake_subject(),
            stopped(),
        ));
        if self.roles.relay {
            let relay = Relay::new(
                state.pool.clone(),
                state.settings.database.url.clone(),
                state.js.clone(),
                state.topology.clone(),
                RelayConfig::default(),
            );
            tasks.spawn(relay.run(stopped()));
            // Like the relay, one leader at a time: signed ledger checkpoints.
            let checkpointer = hub_app::evidence::checkpoints::Checkpointer {
                pool: state.pool.clone(),
                database_url: state.settings.database.url.clone(),
                js: state.js.clone(),
                topology: state.topology.clone(),
                key: state.checkpoint_key.clone(),
                interval: Duration::from_millis(state.settings.audit.checkpoint_interval_ms),
                clock: state.clock.clone(),
            };
            tasks.spawn(checkpointer.run(stopped()));
        }
        if self.roles.projections {
            // The credit projections read the same events: one consumer and one
            // transaction per batch serve all five.
            let credit = [
                ProjectionKind::Balances,
                ProjectionKind::Ledger,
                ProjectionKind::Usage,
                ProjectionKind::Journal,
                ProjectionKind::Alerts,
            ];
            let groups = ProjectionKind::ALL
                .into_iter()
                .filter(|kind| !credit.contains(kind))
                .map(|kind| vec![kind])
                .chain(std::iter::once(credit.to_vec()));
            for kinds in groups {
                let alerts = kinds.contains(&ProjectionKind::Alerts);
                let projector = Projector::group(
                    state.pool.clone(),
                    state.settings.database.url.clone(),
                    state.js.clone(),
                    state.topology.clone(),
                    kinds,
                    ProjectorConfig::default(),
                )?;
                if alerts {
                    // The alerts projection reads the default threshold from the database:
                    // write this process's before projecting (retried while Postgres is away).
                    let (pool, default) = (
                        state.pool.clone(),
                        state.settings.alerts.low_balance_default_micros,
                    );
                    let stop = stopped();
                    tasks.spawn(async move {
                        tokio::pin!(stop);
                        loop {
                            match hub_app::alerts::publish_default(&pool, default).await {
                                Ok(()) => break,
                                Err(err) => tracing::warn!(error = %err, "could not write the default alert threshold; retrying"),
                            }
                            tokio::select! {
                                _ = &mut stop => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                        projector.run(stop).await;
                    });
                } else {
                    tasks.spawn(projector.run(stopped()));
                }
            }
        }
        if self.roles.worker {
            let worker = hub_workers::worker::Worker::new(
                state.js.clone(),
                state.topology.clone(),
                state.router.clone(),
                state.credits.clone(),
                state.settlements.clone(),
                state.clock.clone(),
                hub_workers::worker::WorkerConfig {
                    drain_timeout: grace,
                    ..hub_workers::worker::WorkerConfig::default()
                },
            );
            front.spawn(worker.run(draining()));
            // The API processes answer GET /api/providers/status from these reports.
            let id = uuid::Uuid::new_v4().simple().to_string();
            tasks.spawn(hub_workers::status::report(
                state.nats.clone(),
                state.topology.provider_status_subject(&id),
                state.router.clone(),
                id,
                stopped(),
            ));
        }
        if self.roles.settler {
            let settler = hub_workers::settlement::Settler::new(
                state.settlements.clone(),
                hub_workers::worker::WorkerConfig::default().retry_delay,
            );
            tasks.spawn(settler.run(stopped()));
        }
        if self.roles.sweeper {
            tasks.spawn(hub_workers::sweeper::run(
                state.pool.clone(),
                state.credits.clone(),
                state.settlements.clone(),
                state.clock.clone(),
                Duration::from_millis(state.settings.credits.sweep_interval_ms),
                stopped(),
            ));
            // Low-balance alerts: one leader sends what the alerts projection wrote.
            tasks.spawn(hub_app::alerts::delivery::run(state.clone(), stopped()));
            tasks.spawn(hub_app::janitor::run(
                state.pool.clone(),
                state.clock.clone(),
                Duration::from_secs(state.settings.auth.login_window_s),
                Duration::from_millis(state.settings.credits.sweep_interval_ms),
                stopped(),
            ));
        }
        let metrics_on = state.settings.metrics.enabled && hub_app::metrics::installed();
        if metrics_on {
            // The gauges; the outbox and projection lags where the relay or projectors run.
            tasks.spawn(hub_app::metrics::sample(
                state.clone(),
                self.roles.relay || self.roles.projections,
                Duration::from_millis(state.settings.metrics.sample_interval_ms),
                stopped(),
            ));
        }
        if let Some(listener) = self.metrics_listener {
            tracing::info!(address = ?listener.local_addr().ok(), "serving GET /metrics");
            let graceful = stopped();
            tasks.spawn(async move {
                if let Err(err) = axum::serve(listener, hub_api::metrics::router())
                    .with_graceful_shutdown(graceful)
                    .await
                {
                    tracing::error!(error = %err, "the metrics listener failed");
                }
            });
        }
        if let Some(listener) = self.listener {
            let mut routes =
                hub_api::routes::router(state.clone()).layer(axum::Extension(sockets.clone()));
            if metrics_on {
                if state.settings.metrics.api_route {
                    routes = routes.merge(hub_api::metrics::router());
                }
                // Every request counted and timed by the route it matched.
                routes = routes.layer(axum::middleware::from_fn(hub_api::metrics::track));
            }
            let request_span: fn(&axum::extract::Request) -> tracing::Span =
                if state.settings.traces.enabled {
                    hub_api::edge::traced_span
                } else {
                    hub_api::edge::span
                };
            let mut app = routes
                .layer(RequestBodyLimitLayer::new(
                    state.settings.server.body_limit_bytes,
                ))
                // Every line logged while serving a request carries its id; with traces on,
                // the span is also the root of the request's trace.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(hub_api::edge::OnResponse),
                );
            if let Some(cors) = hub_api::edge::cors(&state.settings.server.cors) {
                let allowed = Arc::new(state.settings.server.cors.allowed_origins.clone());
                app = app.layer(cors).layer(axum::middleware::from_fn_with_state(
                    allowed,
                    hub_api::edge::strip_cors,
                ));
            }
            // A stream still open when the shutdown grace ends is cut (hub_api::shutdown).
            let app = app.layer(axum::middleware::from_fn_with_state(
                deadline_rx.clone(),
                hub_api::shutdown::cut_at_deadline,
            ));
            // Outermost: every response, a preflight's too, carries the request id.
            let app = app.layer(axum::middleware::from_fn(hub_api::edge::request_id));
            // Shutdown waits for the WebSocket sessions as for the HTTP requests.
            front.spawn(sockets.drained());
            tracing::info!(address = ?listener.local_addr().ok(), "serving HTTP");
            let graceful = draining();
            front.spawn(async move {
                let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
                // Streamed answers are many small writes: without TCP_NODELAY, Nagle holds
                // each one until the client's (delayed, up to 40 ms) ack of the previous.
                let listener = listener.tap_io(|tcp| {
                    if let Err(err) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %err, "could not set TCP_NODELAY");
                    }
                });
                if let Err(err) = axum::serve(listener, app)
                    .with_graceful_shutdown(graceful)
                    .await
                {
                    tracing::error!(error = %err, "HTTP server failed");
                }
            });
        }
        shutdown.await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: no new requests; finishing those in flight"
        );
        let _ = drain_tx.send(true);
        let front_done = async { while front.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, front_done).await.is_err() {
            tracing::warn!("shutdown grace passed: cutting the streams still open");
            let _ = deadline_tx.send(true);
            // The worker cancels its own at the same deadline and waits for their settlements.
            let settled = async { while front.join_next().await.is_some() {} };
            if tokio::time::timeout(AFTER_GRACE, settled).await.is_err() {
                tracing::error!("the front did not stop after the grace; aborting it");
                front.abort_all();
            }
        }
        // What this process took ahead of the rate limits' budgets goes back to the store
        // now, not when it would lapse, so the callers' other processes can use it.
        state.rate_limits.give_back_shares().await;
        // Cancellations and last replies published while draining reach NATS before exit.
        if let Err(err) = state.nats.flush().await {
            tracing::warn!(error = %err, "could not flush NATS at shutdown");
        }
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        tracing::info!("stopped");
        Ok(())
    }
}
