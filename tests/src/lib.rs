//! Helpers for the black-box tests: each test gets the real app on port 0 with a fresh
//! Postgres database and its own NATS stream and subject names, and leaves nothing behind.

pub mod fake_anthropic;
pub mod fake_openai;
pub mod fake_stripe;
pub mod oidc_provider;
pub mod smtp;
use hub_app::Hub;
use hub_commands::ShiftedClock;
use hub_domain::Role;
use hub_sandbox::{Prefixes, Sandbox};
use hub_server::{Application, Roles, Settings};
use sqlx::PgPool;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The server tests create their databases on (the `postgres` maintenance database).
pub fn admin_database_url() -> String {
    std::env::var("AIHUB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn nats_url() -> String {
    std::env::var("AIHUB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Where a test app's folder mail transport writes (removed with the app).
fn mail_folder(database: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{database}_mail"))
}

/// A running app and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    /// The `metrics.listen` listener's address, when the settings asked for one.
    pub metrics_address: Option<String>,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub state: Arc<Hub>,
    pub settings: Settings,
    /// The app's clock: the system's, moved ahead by [`ShiftedClock::advance`] when a test
    /// needs a lifetime to pass.
    pub clock: Arc<ShiftedClock>,
    /// The database and streams of this app alone, removed when it drops.
    sandbox: Sandbox,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The app with every role (HTTP, relay, projections, sweeper).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Roles::ALL, |_| {}).await
}

/// The app with chosen roles and settings.
pub async fn spawn_app_with(roles: Roles, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut base = Settings::default();
    base.server.port = 0;
    base.database.max_connections = 16;
    base.nats.url = nats_url();
    base.credits.sweep_interval_ms = 200;
    // A test that stops its app with streams open does not wait long for them.
    base.server.shutdown_grace_ms = 1_000;
    let sandbox = Sandbox::create(&base, &admin_database_url(), Prefixes::TEST)
        .await
        .expect("a fresh, migrated test database (is Postgres up? AIHUB_TEST_DATABASE_URL)");
    let mut settings = sandbox.settings.clone();
    settings.mail.folder = mail_folder(sandbox.database());
    tweak(&mut settings);
    settings.validate().expect("test settings are valid");

    let pool = hub_commands::db::connect_lazy(&settings.pool_settings()).expect("pool");
    let clock = ShiftedClock::new();
    let app = Application::build_with_clock(settings.clone(), roles, clock.clone())
        .await
        .expect("the app builds (is NATS up? AIHUB_TEST_NATS_URL)");
    let port = app.port().unwrap_or(0);
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let state = app.state();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = stopped.await;
            })
            .await;
    });
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        metrics_address,
        client: reqwest::Client::new(),
        pool,
        state,
        settings,
        clock,
        sandbox,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn token(&self, user: Uuid, role: Role) -> String {
        self.state
            .jwt
            .mint(user, &[role], 600)
            .expect("mint a token")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request.send().await.expect("request sent")
    }

    /// `POST /api/admin/credits/grant` as `admin_token`.
    pub async fn grant(
        &self,
        admin_token: &str,
        user: Uuid,
        amount_micros: i64,
        key: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/admin/credits/grant"))
            .bearer_auth(admin_token)
            .header("Idempotency-Key", key)
            .json(&serde_json::json!({
                "user_id": user, "amount_micros": amount_micros, "reason": "test grant"
            }))
            .send()
            .await
            .expect("request sent")
    }

    /// The caller's balance (`GET /api/credits/balance`) once the balances read model has
    /// caught up with every event the account has in the store and holds no reservation.
    /// (Waiting for `reserved = 0` alone could return the row from before a request's
    /// reservation.)
    pub async fn settled_balance(&self, token: &str) -> serde_json::Value {
        let account = self.state.jwt.verify(token).expect("token").sub.to_string();
        eventually(
            Duration::from_secs(15),
            "the reservations to settle",
            || async {
                let stored: Option<i64> = sqlx::query_scalar(
                    "SELECT max(sequence) FROM events
                  WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1",
                )
                .bind(&account)
                .fetch_one(&self.pool)
                .await
                .expect("events");
                let balance: serde_json::Value = self
                    .get("/api/credits/balance", Some(token))
                    .await
                    .json()
                    .await
                    .expect("json");
                (stored.is_some()
                    && balance["version"].as_i64() == stored
                    && balance["reserved_micros"] == 0)
                    .then_some(balance)
            },
        )
        .await
    }

    /// A second hub process on this app's database and streams (its own pool, caches and
    /// port), running `roles`: what a deployment with several API replicas has.
    pub async fn peer(&self, roles: Roles) -> Peer {
        let app = Application::build_with_clock(self.settings.clone(), roles, self.clock.clone())
            .await
            .expect("a second process builds");
        let port = app.port().unwrap_or(0);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Peer {
            address: format!("http://127.0.0.1:{port}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop every role, then drop the database and the streams.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.pool.close_event();
        let _ = std::fs::remove_dir_all(mail_folder(self.sandbox.database()));
        // Blocking: Drop may run inside a runtime, and the test binary may exit right after.
        if let Err(err) = self.sandbox.destroy_blocking() {
            eprintln!("could not clean up after the test: {err}");
        }
    }
}

/// Another hub process beside a [`TestApp`] ([`TestApp::peer`]), stopped when dropped.
pub struct Peer {
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Peer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Poll `check` until it returns `Some`, or panic after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
