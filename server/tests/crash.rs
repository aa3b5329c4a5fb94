//! Crash tests: no answer goes unpaid when Postgres or a worker dies.
//!
//! The hub's roles run as separate `aihub` processes over a Postgres server of the test's own
//! (initdb into a temporary directory, its own port), so the test may `kill -9` it, and over
//! the shared NATS server with stream and subject prefixes of their own. After the load, every
//! request answered with 200 (and every stream that ended with `[DONE]`) must have exactly one
//! settlement, one usage record and one ledger charge; every balance must equal the sum of its
//! ledger; the events stream must hold every stored event once.
//!
//! The same processes also show that a trace crosses them: a chat sent to `serve` and run
//! by `worker` is one trace at an OTLP receiver.

use hub_adapters::jwt::Jwt;
use hub_app::Settings;
use hub_domain::Role;
use hub_sandbox::{Prefixes, Sandbox};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const JWT_SECRET: &str = "crash-test-secret-crash-test-secret-0123456789";
const USERS: usize = 4;
/// Credits each user starts with: far more than the load can spend.
const FUNDS_MICROS: i64 = 10_000_000_000;
/// The processes' `server.shutdown_grace_ms`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

fn nats_url() -> String {
    std::env::var("AIHUB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Poll `probe` until it gives a value, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match within(limit, probe).await {
        Some(value) => value,
        None => panic!("timed out waiting for {what}"),
    }
}

/// Poll `probe` until it gives a value; `None` once `limit` has passed without one. The one
/// polling loop of these tests: a process or a server is asked again, never waited for
/// blindly.
async fn within<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// A Postgres server of the test's own.

/// A Postgres server in a temporary directory, on a port of its own, that the test may kill.
struct OwnPostgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    server: Option<Child>,
}

impl OwnPostgres {
    /// The newest installed server's binaries (Debian: `/usr/lib/postgresql/<v>/bin`).
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Postgres's server binaries under /usr/lib/postgresql (Debian's postgresql)")
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, bin)| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("an initdb under /usr/lib/postgresql/*/bin")
            .1
    }

    /// Postgres refuses to run as root: run its programs as the `postgres` user then.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        // SAFETY-free check of the effective user: `id -u` is 0 for root.
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if root {
            let mut command = Command::new("setpriv");
            command
                .args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    async fn start_new() -> OwnPostgres {
        let dir = std::env::temp_dir().join(format!("aihub-crash-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut pg = OwnPostgres {
            dir,
            port: Self::free_port(),
            bin: Self::bin_dir(),
            server: None,
        };
        // The `postgres` user must own the directory when we are root.
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&pg.dir)
            .status();
        let data = pg.data();
        let status = pg
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        pg.start().await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Start the server (again) and wait until it takes connections. A server started right
    /// after a kill may find the old one's shared memory still attached by a dying backend
    /// and exit; it is started again until it stays up.
    async fn start(&mut self) {
        let url = self.url("postgres");
        let started = within(Duration::from_secs(60), || {
            let url = url.clone();
            let server = self.spawn();
            async move { Self::await_connections(server, &url).await }
        })
        .await;
        match started {
            Some(server) => self.server = Some(server),
            None => panic!(
                "Postgres did not start or kept exiting; its log ends with:\n{}",
                self.log_tail()
            ),
        }
    }

    /// The server once it takes connections; `None` if it exits first (or does not answer
    /// within 30 s), for [`Self::start`] to start it again.
    async fn await_connections(mut server: Child, url: &str) -> Option<Child> {
        let up = within(Duration::from_secs(30), || {
            let exited = matches!(server.try_wait(), Ok(Some(_)));
            async move {
                if exited {
                    return Some(false);
                }
                let conn = PgConnection::connect(url).await.ok()?;
                let _ = conn.close().await;
                Some(true)
            }
        })
        .await;
        if up == Some(true) {
            return Some(server);
        }
        let _ = server.kill();
        let _ = server.wait();
        None
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("a log file");
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
                "-c",
                "autovacuum=off",
            ])
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group: one signal reaches the postmaster and every backend.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.spawn().expect("postgres starts")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `kill -9` the whole server: the postmaster and every backend at once, and wait until
    /// none of them is left.
    fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let group = format!("-{}", server.id());
            let _ = Command::new("kill").args(["-9", "--", &group]).status();
            let _ = server.wait();
            for _ in 0..100 {
                let alive = Command::new("kill")
                    .args(["-0", "--", &group])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !alive {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------
// The hub as separate processes.

/// The hub's roles as `aihub` processes over one sandbox.
struct Processes {
    settings: Settings,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    running: BTreeMap<&'static str, Child>,
    /// Environment every process gets, besides the settings' own.
    common: Vec<(String, String)>,
}

impl Processes {
    fn new(settings: Settings, dir: &Path) -> Processes {
        // A paced mock, so that answers are in flight when something dies.
        let config = dir.join("aihub.toml");
        std::fs::write(
            &config,
            r#"
[models]
first_token_timeout_ms = 4000
total_timeout_ms = 8000
admission_limit = 1024

[[models.models]]
name = "mock-1"
tokenizer = "o200k"
max_output_tokens = 64
price = { input_per_million_micros = 1000000, output_per_million_micros = 2000000 }
providers = [{ kind = "mock", mock_tokens_per_second = 200 }]

# Streams that outlast a shutdown's grace (SHUTDOWN_GRACE_MS), and streams that do not.
[[models.models]]
name = "mock-slow"
tokenizer = "o200k"
max_output_tokens = 64
price = { input_per_million_micros = 1000000, output_per_million_micros = 2000000 }
providers = [{ kind = "mock", mock_tokens_per_second = 5 }]

[[models.models]]
name = "mock-medium"
tokenizer = "o200k"
max_output_tokens = 64
price = { input_per_million_micros = 1000000, output_per_million_micros = 2000000 }
providers = [{ kind = "mock", mock_tokens_per_second = 25 }]
"#,
        )
        .expect("the config file");
        Processes {
            settings,
            dir: dir.to_path_buf(),
            config,
            port: OwnPostgres::free_port(),
            running: BTreeMap::new(),
            common: Vec::new(),
        }
    }

    fn start(&mut self, name: &'static str, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.log_path(name)).expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_aihub"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("AIHUB__DATABASE__URL", &self.settings.database.url)
            .env("AIHUB__DATABASE__MAX_CONNECTIONS", "16")
            .env("AIHUB__NATS__URL", &self.settings.nats.url)
            .env(
                "AIHUB__NATS__STREAM_PREFIX",
                &self.settings.nats.stream_prefix,
            )
            .env(
                "AIHUB__NATS__SUBJECT_PREFIX",
                &self.settings.nats.subject_prefix,
            )
            .env("AIHUB__SERVER__HOST", "127.0.0.1")
            .env("AIHUB__SERVER__PORT", self.port.to_string())
            .env("AIHUB__AUTH__JWT_SECRET", JWT_SECRET)
            .env("AIHUB__CREDITS__SWEEP_INTERVAL_MS", "500")
            .env(
                "AIHUB__SERVER__SHUTDOWN_GRACE_MS",
                SHUTDOWN_GRACE.as_millis().to_string(),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in &self.common {
            command.env(key, value);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("aihub starts");
        self.running.insert(name, child);
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Send SIGTERM, as an orchestrator or `kill` does.
    fn terminate(&self, name: &str) {
        let pid = self.running.get(name).expect("a running process").id();
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent to {name}");
    }

    /// Wait for a process to exit after SIGTERM; its exit status.
    async fn exit_status(&mut self, name: &str, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.running.remove(name).expect("a running process");
        tokio::time::timeout(limit, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit within {limit:?}"))
            .expect("the wait task")
            .expect("the exit status")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.running.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait for a process to end by itself (a crash point).
    async fn exited(&mut self, name: &str, limit: Duration) {
        let mut child = self.running.remove(name).expect("a running process");
        let waited = tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || child.wait().map(|_| ())),
        )
        .await;
        assert!(
            matches!(waited, Ok(Ok(Ok(())))),
            "{name} did not stop within {limit:?}"
        );
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        let names: Vec<&'static str> = self.running.keys().copied().collect();
        for name in names {
            self.kill(name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The scene: Postgres, a sandbox on it, the processes, funded users.

struct Scene {
    // Dropped in this order: processes, then the server.
    hub: Processes,
    pg: OwnPostgres,
    sandbox: Sandbox,
    client: reqwest::Client,
    tokens: Vec<String>,
    /// An admin's token: `/ready` gives its details to admins only.
    admin: String,
}

impl Scene {
    async fn new(worker_args: &[&str], worker_env: &[(&str, &str)]) -> Scene {
        Scene::with_env(&[], worker_args, worker_env).await
    }

    /// With `common` in every process's environment.
    async fn with_env(
        common: &[(&str, &str)],
        worker_args: &[&str],
        worker_env: &[(&str, &str)],
    ) -> Scene {
        let pg = OwnPostgres::start_new().await;
        let mut base = Settings::default();
        base.nats.url = nats_url();
        let sandbox = Sandbox::create(&base, &pg.url("postgres"), Prefixes::TEST)
            .await
            .expect("a migrated database on the test's own Postgres");
        let mut hub = Processes::new(sandbox.settings.clone(), &pg.dir);
        hub.common = common
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        hub.start("serve", &["serve"], &[]);
        hub.start("relay", &["relay"], &[]);
        hub.start("project", &["project"], &[]);
        hub.start("worker", &[&["worker"], worker_args].concat(), worker_env);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        let ready = hub.url("/ready");
        eventually(Duration::from_secs(60), "the hub to be ready", || {
            let client = client.clone();
            let ready = ready.clone();
            async move {
                let r = client.get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        let jwt = Jwt::new(JWT_SECRET);
        let admin = jwt
            .mint(Uuid::new_v4(), &[Role::Admin], 3_600)
            .expect("an admin token");
        let mut tokens = Vec::new();
        for _ in 0..USERS {
            let user = Uuid::new_v4();
            let granted = client
                .post(hub.url("/api/admin/credits/grant"))
                .bearer_auth(&admin)
                .header("idempotency-key", Uuid::new_v4().to_string())
                .json(&json!({"user_id": user, "amount_micros": FUNDS_MICROS, "reason": "crash test"}))
                .send()
                .await
                .expect("the grant is sent");
            assert!(
                granted.status().is_success(),
                "granted: {}",
                granted.status()
            );
            tokens.push(jwt.mint(user, &[Role::User], 3_600).expect("a token"));
        }
        Scene {
            hub,
            pg,
            sandbox,
            client,
            tokens,
            admin,
        }
    }

    async fn db(&self) -> PgConnection {
        PgConnection::connect(&self.sandbox.settings.database.url)
            .await
            .expect("the test's database")
    }

    /// Wait until the hub is quiet: no settlement waiting, nothing left to relay, every
    /// projection at the end of the stream.
    async fn quiesce(&self) {
        let ready = self.hub.url("/ready");
        let last = std::sync::Mutex::new(Value::Null);
        let quiet = within(Duration::from_secs(90), || async {
            let response = self
                .client
                .get(&ready)
                .bearer_auth(&self.admin)
                .send()
                .await
                .ok()?;
            let now: Value = response.json().await.unwrap_or(Value::Null);
            // The credit projections read every event; the others only their own types, so
            // their checkpoints stay behind the stream's end.
            let behind = ["balances", "ledger", "usage"]
                .iter()
                .map(|p| now["projections"][p]["stream_messages_behind"].as_u64())
                .max()
                .flatten();
            let done = now["status"] == "ready"
                && now["settlements_waiting"].as_u64() == Some(0)
                && now["relay"]["pending_events"].as_u64() == Some(0)
                && behind == Some(0);
            *last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = now;
            done.then_some(())
        })
        .await;
        assert!(
            quiet.is_some(),
            "the hub did not settle everything; /ready says {}",
            last.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        );
    }
}

impl Scene {
    /// How often the worker processes' logs say `what`.
    fn logged(&self, what: &str) -> usize {
        ["worker", "worker2"]
            .iter()
            .map(|name| self.hub.log(name).matches(what).count())
            .sum()
    }

    /// Wait until Postgres's absence has reached an answered request: a worker handed its
    /// settlement to JetStream, and a settler failed to apply it and will try again.
    async fn an_outage_felt(&self) {
        let deferred = self.logged("deferred to JetStream");
        let retried = self.logged("settlement waiting");
        eventually(
            Duration::from_secs(60),
            "a deferred, retried settlement",
            || async {
                (self.logged("deferred to JetStream") > deferred
                    && self.logged("settlement waiting") > retried)
                    .then_some(())
            },
        )
        .await;
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let names: Vec<&'static str> = self.hub.running.keys().copied().collect();
        for name in names {
            self.hub.kill(name);
        }
        // The database goes with the server's directory; the streams are on the shared NATS.
        let _ = self.sandbox.destroy_blocking();
    }
}

// ---------------------------------------------------------------------------------------
// Load.

/// What the load saw of one request.
#[derive(Debug, Clone)]
struct Answered {
    request_id: String,
    at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Default)]
struct Seen {
    answered: Vec<Answered>,
    failed: usize,
}

/// One chat, streamed or not; the request id when it was answered in full.
async fn chat(client: &reqwest::Client, url: &str, token: &str, stream: bool) -> Option<String> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&json!({
            "model": "mock-1",
            "stream": stream,
            "max_tokens": 40,
            "messages": [{"role": "user", "content": "Tell me about durable settlement."}],
        }))
        .send()
        .await
        .ok()?;
    if response.status() != reqwest::StatusCode::OK {
        return None;
    }
    let body = response.text().await.ok()?;
    if !stream {
        let body: Value = serde_json::from_str(&body).ok()?;
        return body["x_aihub"]["request_id"].as_str().map(str::to_string);
    }
    // Answered in full only when the stream ended with [DONE]; every chunk's id is
    // `chatcmpl-<request id>`.
    let mut request_id = None;
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
        } else if let Ok(chunk) = serde_json::from_str::<Value>(data) {
            if let Some(id) = chunk["id"]
                .as_str()
                .and_then(|id| id.strip_prefix("chatcmpl-"))
            {
                request_id = Some(id.to_string());
            }
        }
    }
    if done {
        request_id
    } else {
        None
    }
}

/// `clients` loops of chats, alternately streamed and not, until stopped.
struct Load {
    tasks: tokio::task::JoinSet<Seen>,
    stop: Arc<AtomicBool>,
    /// Requests answered in full so far, by every client.
    answered: Arc<AtomicUsize>,
}

impl Load {
    fn start(scene: &Scene, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let url = scene.hub.url("/v1/chat/completions");
        for i in 0..clients {
            let client = scene.client.clone();
            let token = scene.tokens[i % scene.tokens.len()].clone();
            let url = url.clone();
            let stop = stop.clone();
            let count = answered.clone();
            tasks.spawn(async move {
                let mut seen = Seen::default();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match chat(&client, &url, &token, n % 2 == 0).await {
                        Some(request_id) => {
                            seen.answered.push(Answered {
                                request_id,
                                at: chrono::Utc::now(),
                            });
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            // A client backing off while the hub refuses, not a wait.
                            seen.failed += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                seen
            });
        }
        Load {
            tasks,
            stop,
            answered,
        }
    }

    /// Wait until `more` further requests have been answered.
    async fn answers(&self, more: usize) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        eventually(Duration::from_secs(60), "more answers", || async {
            (self.answered.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Stop the clients and gather what they saw.
    async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Seen::default();
        while let Some(seen) = self.tasks.join_next().await {
            let seen = seen.expect("a load task");
            all.answered.extend(seen.answered);
            all.failed += seen.failed;
        }
        all
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Figures of one run, printed for the record.
struct Report {
    deferred: usize,
    answered: usize,
    failed: usize,
    settled: i64,
    late: i64,
    longest_wait_ms: i64,
    retried_attempts: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} answered ({} not answered), {} settled ({} after an expiry), \
             {} deferred to JetStream, {} settlement attempts retried, \
             longest wait from answer to settlement {} ms",
            self.answered,
            self.failed,
            self.settled,
            self.late,
            self.deferred,
            self.retried_attempts,
            self.longest_wait_ms
        )
    }
}

async fn check_every_answer_was_charged_once(scene: &Scene, seen: &Seen) -> Report {
    let mut db = scene.db().await;
    let answered: BTreeSet<&str> = seen
        .answered
        .iter()
        .map(|a| a.request_id.as_str())
        .collect();
    assert_eq!(
        answered.len(),
        seen.answered.len(),
        "request ids are unique"
    );
    assert!(!answered.is_empty(), "the load got answers");

    // Settlements per request, from the event store.
    let rows: Vec<(String, i64, bool, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT payload->'ReservationSettled'->>'request_id',
                count(*),
                bool_or(payload->'ReservationSettled'->'after_expiry' IS NOT NULL),
                max(recorded_at)
           FROM events
          WHERE aggregate_type = 'CreditAccount' AND event_type = 'ReservationSettled'
          GROUP BY 1",
    )
    .fetch_all(&mut db)
    .await
    .expect("settlements");
    let settlements: BTreeMap<String, (i64, bool, chrono::DateTime<chrono::Utc>)> = rows
        .into_iter()
        .map(|(id, n, late, at)| (id, (n, late, at)))
        .collect();
    let usage: BTreeMap<String, i64> =
        sqlx::query_as("SELECT request_id, count(*) FROM usage_records GROUP BY 1")
            .fetch_all(&mut db)
            .await
            .expect("usage")
            .into_iter()
            .collect();
    let charges: BTreeMap<String, i64> =
        sqlx::query_as("SELECT cause_id, count(*) FROM ledger WHERE kind = 'charge' GROUP BY 1")
            .fetch_all(&mut db)
            .await
            .expect("ledger")
            .into_iter()
            .collect();
    let mut unpaid = Vec::new();
    let mut longest_wait_ms = 0;
    for a in &seen.answered {
        let id = a.request_id.as_str();
        let settled = settlements.get(id).map_or(0, |s| s.0);
        if settled != 1 || usage.get(id) != Some(&1) || charges.get(id) != Some(&1) {
            unpaid.push((id, settled, usage.get(id), charges.get(id)));
        }
        if let Some((_, _, at)) = settlements.get(id) {
            longest_wait_ms = longest_wait_ms.max((*at - a.at).num_milliseconds());
        }
    }
    assert!(
        unpaid.is_empty(),
        "{} of {} answered requests are not settled, recorded and charged exactly once \
         (request, settlements, usage rows, ledger charges): {:?}",
        unpaid.len(),
        seen.answered.len(),
        &unpaid[..unpaid.len().min(10)]
    );
    // No settlement for anything that was not reserved, and none twice.
    assert!(
        settlements.values().all(|s| s.0 == 1),
        "a request was settled twice"
    );

    // Every reservation ended once, or is still held by a request nobody answered.
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT r.id FROM (
             SELECT payload->'CreditsReserved'->>'request_id' AS id FROM events
              WHERE aggregate_type = 'CreditAccount' AND event_type = 'CreditsReserved') r
          WHERE NOT EXISTS (
             SELECT 1 FROM events e
              WHERE e.aggregate_type = 'CreditAccount'
                AND e.event_type IN ('ReservationSettled', 'ReservationReleased', 'ReservationExpired')
                AND coalesce(e.payload->'ReservationSettled'->>'request_id',
                             e.payload->'ReservationReleased'->>'request_id',
                             e.payload->'ReservationExpired'->>'request_id') = r.id)",
    )
    .fetch_all(&mut db)
    .await
    .expect("open reservations");
    for id in &open {
        assert!(
            !answered.contains(id.as_str()),
            "answered request {id} still holds its reservation"
        );
    }
    let expired_answers: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'ReservationExpired'->>'request_id' FROM events
          WHERE aggregate_type = 'CreditAccount' AND event_type = 'ReservationExpired'",
    )
    .fetch_all(&mut db)
    .await
    .expect("expiries");
    let late = settlements.values().filter(|s| s.1).count();
    for id in &expired_answers {
        if answered.contains(id.as_str()) {
            assert!(
                settlements.get(id).is_some_and(|s| s.1),
                "answered request {id} expired without a late settlement"
            );
        }
    }

    // Every balance equals the sum of its ledger and the last event's balance.
    let mismatched: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
        "SELECT b.account_id, b.balance_micros, coalesce(sum(l.amount_micros), 0)::bigint
           FROM balances b LEFT JOIN ledger l ON l.account_id = b.account_id
          GROUP BY b.account_id, b.balance_micros
         HAVING b.balance_micros <> coalesce(sum(l.amount_micros), 0)",
    )
    .fetch_all(&mut db)
    .await
    .expect("balances");
    assert!(
        mismatched.is_empty(),
        "balances differ from their ledgers: {mismatched:?}"
    );

    // The events stream holds every stored event exactly once.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut db)
        .await
        .expect("events");
    let nats = async_nats::connect(nats_url()).await.expect("NATS");
    let js = async_nats::jetstream::new(nats);
    let mut stream = js
        .get_stream(scene.sandbox.settings.topology().events_stream())
        .await
        .expect("the events stream");
    let messages = stream.info().await.expect("stream info").state.messages;
    assert_eq!(
        i64::try_from(messages).unwrap_or(-1),
        stored,
        "the stream holds every event once"
    );
    let log = |name: &str, what: &str| scene.hub.log(name).matches(what).count();
    let deferred = log("worker", "deferred to JetStream") + log("worker2", "deferred to JetStream");
    let retried_attempts = log("worker", "settlement waiting")
        + log("worker2", "settlement waiting")
        + log("project", "not expiring");
    Report {
        deferred,
        answered: seen.answered.len(),
        failed: seen.failed,
        settled: i64::try_from(settlements.len()).unwrap_or(-1),
        late: i64::try_from(late).unwrap_or(-1),
        longest_wait_ms,
        retried_attempts,
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_goes_unpaid_when_postgres_is_killed_twice_under_load() {
    let mut scene = Scene::new(&[], &[]).await;
    let load = Load::start(&scene, 12);
    // Each outage lasts until it has reached an answered request: the worker could not
    // settle it in Postgres and handed it to JetStream, where a settler failed on it too.
    for _ in 0..2 {
        load.answers(100).await;
        scene.pg.kill();
        scene.an_outage_felt().await;
        scene.pg.start().await;
    }
    load.answers(100).await;
    let seen = load.finish().await;
    scene.quiesce().await;
    let report = check_every_answer_was_charged_once(&scene, &seen).await;
    eprintln!("postgres killed twice: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_goes_unpaid_when_the_worker_dies_after_answering() {
    // The first worker applies no deferred settlement itself, and stops dead right after the
    // first answer whose settlement Postgres did not take: what that answer owes is then
    // only in JetStream.
    let mut scene = Scene::new(
        &["--no-settler"],
        &[("AIHUB_CRASH_AT", "after_deferred_answer")],
    )
    .await;
    let load = Load::start(&scene, 6);
    load.answers(20).await;
    scene.pg.kill();
    scene.hub.exited("worker", Duration::from_secs(60)).await;
    let waiting: Value = scene
        .client
        .get(scene.hub.url("/ready"))
        .bearer_auth(&scene.admin)
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("json");
    assert!(
        waiting["settlements_waiting"].as_u64() >= Some(1),
        "the answered request's settlement waits in JetStream: {waiting}"
    );
    scene.pg.start().await;
    // A new worker (with a settler) takes over and finishes the dead one's settlement.
    scene.hub.start("worker2", &["worker"], &[]);
    load.answers(20).await;
    let seen = load.finish().await;
    scene.quiesce().await;
    let report = check_every_answer_was_charged_once(&scene, &seen).await;
    eprintln!("worker killed after answering: {report}");
}

/// A settlement that fails because Postgres is gone is retried, and applied once when it
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_that_fails_on_a_lost_connection_is_retried_and_applied_once() {
    let mut scene = Scene::new(&[], &[]).await;
    let settings = scene.sandbox.settings.clone();
    let pool = hub_commands::db::connect_lazy(&settings.pool_settings()).expect("a pool");
    let buses = hub_commands::Buses::new(pool, hub_commands::store::SNAPSHOT_EVERY_DEFAULT, 0);
    let credits = Arc::new(hub_commands::CreditAccounts::new(buses.bus()));
    let nats = async_nats::connect(nats_url()).await.expect("NATS");
    let queue = Arc::new(hub_workers::settlement::Settlements::new(
        async_nats::jetstream::new(nats),
        settings.topology(),
        credits.clone(),
    ));
    // A funded account (the first user) reserves for a request of the test's own.
    let mut db = scene.db().await;
    let account: uuid::Uuid = sqlx::query_scalar("SELECT account_id FROM balances LIMIT 1")
        .fetch_one(&mut db)
        .await
        .expect("a funded account");
    drop(db);
    let account = hub_domain::AccountId(account);
    let request_id =
        hub_domain::RequestId::parse("req_0123456789abcdef0123456789abcdef").expect("a request id");
    let now = chrono::Utc::now();
    credits
        .execute(
            account,
            hub_domain::CreditCommand::ReserveCredits {
                request_id: request_id.clone(),
                amount: hub_domain::Credits::from_micros(5_000),
                expires_at: now + chrono::Duration::minutes(5),
                now,
                key: None,
            },
            "test",
        )
        .await
        .expect("reserved");
    let settlement = hub_workers::settlement::Settlement {
        account,
        request_id: request_id.clone(),
        usage: hub_domain::UsageRecord {
            model: "mock-1".into(),
            provider: "mock".into(),
            api_key: None,
            input_tokens: 10,
            output_tokens: 20,
            cached_input_tokens: 0,
            token_source: hub_domain::TokenSource::Provider,
            latency_ms: 30,
            first_token_ms: Some(5),
            cost: hub_domain::Credits::from_micros(1_234),
            price_version: "v1".into(),
            outcome: hub_domain::UsageOutcome::Completed,
        },
        written_at: now,
    };

    scene.pg.kill();
    let applying = tokio::spawn({
        let queue = queue.clone();
        let settlement = settlement.clone();
        async move {
            queue
                .apply_with_retry(settlement, Duration::from_secs(60))
                .await
        }
    });
    // It keeps failing while the server is down...
    eventually(Duration::from_secs(30), "a failed attempt", || {
        let queue = queue.clone();
        async move { (queue.stats().retried.load(Ordering::Relaxed) >= 1).then_some(()) }
    })
    .await;
    scene.pg.start().await;
    // ...and is applied once it is back.
    let applied = applying
        .await
        .expect("joined")
        .expect("applied once Postgres is back");
    assert_eq!(applied.charged_micros, 1_234);
    assert!(!applied.repeat);
    let again = queue.apply(settlement).await.expect("a repeat is no error");
    assert!(again.repeat, "a second application writes nothing");
    assert_eq!(again.charged_micros, 1_234);
    let mut db = scene.db().await;
    let settled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'ReservationSettled'
            AND payload->'ReservationSettled'->>'request_id' = $1",
    )
    .bind(request_id.as_str())
    .fetch_one(&mut db)
    .await
    .expect("count");
    assert_eq!(settled, 1, "applied once");
}

/// One stream of the shutdown test, as its client saw it.
#[derive(Debug, Default)]
struct StreamSeen {
    model: &'static str,
    request_id: Option<String>,
    /// Content chunks received.
    chunks: i64,
    /// Their text.
    text: String,
    done: bool,
}

/// Reads one streamed chat to its end (or its cut), counting content chunks; `started` goes
/// up at the first one.
async fn watch_stream(
    client: reqwest::Client,
    url: String,
    token: String,
    model: &'static str,
    started: Arc<AtomicUsize>,
) -> StreamSeen {
    let mut seen = StreamSeen {
        model,
        ..StreamSeen::default()
    };
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({
            "model": model,
            "stream": true,
            "max_tokens": 40,
            "messages": [{"role": "user", "content": "Tell me about graceful shutdown."}],
        }))
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(response.status(), reqwest::StatusCode::OK, "{model}");
    let mut response = response;
    let mut buffer = String::new();
    while let Ok(Some(bytes)) = response.chunk().await {
        buffer.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                seen.done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(id) = chunk["id"]
                .as_str()
                .and_then(|id| id.strip_prefix("chatcmpl-"))
            {
                seen.request_id.get_or_insert_with(|| id.to_string());
            }
            if let Some(content) = chunk["choices"][0]["delta"]["content"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                if seen.chunks == 0 {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                seen.chunks += 1;
                seen.text.push_str(content);
            }
        }
    }
    seen
}

/// SIGTERM to the API and the worker in the middle of 100 streams: the processes stop
/// taking work, the streams that end within the grace end whole, the ones that do not are
/// cut at its end and charged only for what they delivered, both processes exit cleanly, and
/// nothing is left reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_cuts_every_stream_and_leaves_nothing_reserved() {
    let mut scene = Scene::new(&[], &[]).await;
    let url = scene.hub.url("/v1/chat/completions");
    let started = Arc::new(AtomicUsize::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..100 {
        // 40 tokens: 1.6 s at 25/s, within the grace; 8 s at 5/s, beyond it.
        let model = if i % 2 == 0 {
            "mock-medium"
        } else {
            "mock-slow"
        };
        streams.spawn(watch_stream(
            scene.client.clone(),
            url.clone(),
            scene.tokens[i % scene.tokens.len()].clone(),
            model,
            started.clone(),
        ));
    }
    eventually(Duration::from_secs(30), "every stream to start", || async {
        (started.load(Ordering::Relaxed) == 100).then_some(())
    })
    .await;

    scene.hub.terminate("serve");
    scene.hub.terminate("worker");
    // No new work is taken.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new connection (the shared client's pool may hold one the server is closing).
    let refused = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&scene.tokens[0])
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a stopping API accepts no new request: {:?}",
        refused.map(|r| r.status())
    );
    let limit = SHUTDOWN_GRACE + Duration::from_secs(20);
    let serve = scene.hub.exit_status("serve", limit).await;
    let worker = scene.hub.exit_status("worker", limit).await;
    assert!(serve.success(), "the API exits cleanly: {serve}");
    assert!(worker.success(), "the worker exits cleanly: {worker}");

    let mut seen = Vec::new();
    while let Some(stream) = streams.join_next().await {
        seen.push(stream.expect("a stream task"));
    }
    for stream in &seen {
        assert!(stream.request_id.is_some(), "{stream:?}");
        if stream.model == "mock-medium" {
            assert!(
                stream.done,
                "a stream shorter than the grace ends whole: {stream:?}"
            );
        }
    }
    let cut = seen.iter().filter(|s| !s.done).count();
    assert!(cut > 0, "the slow streams outlast the grace and are cut");

    // An API and a worker (with its settler) again, to read the hub's state through.
    scene.hub.start("serve2", &["serve"], &[]);
    scene.hub.start("worker2", &["worker"], &[]);
    scene.quiesce().await;
    let mut db = scene.db().await;
    let usage: BTreeMap<String, (String, i64)> =
        sqlx::query_as("SELECT request_id, outcome, output_tokens FROM usage_records")
            .fetch_all(&mut db)
            .await
            .expect("usage")
            .into_iter()
            .map(|(id, outcome, tokens): (String, String, i64)| (id, (outcome, tokens)))
            .collect();
    for stream in &seen {
        let id = stream.request_id.as_deref().unwrap_or_default();
        let (outcome, tokens) = usage
            .get(id)
            .unwrap_or_else(|| panic!("request {id} was settled: {stream:?}"));
        if stream.done {
            assert_eq!(outcome, "completed", "{stream:?}");
        } else {
            assert_eq!(outcome, "cancelled", "{stream:?}");
            // Charged for what it delivered: the tokens of the text its client got, and at
            // most the few the worker produced (at 5 a second) while the cut reached it.
            let delivered = i64::try_from(hub_workers::tokens::count_text_tokens(
                "o200k",
                &stream.text,
            ))
            .unwrap_or(i64::MAX);
            assert!(
                *tokens < 40 && *tokens <= delivered + 3,
                "a cut stream is charged for {tokens} tokens; its client got {delivered} \
                 ({} chunks)",
                stream.chunks
            );
        }
    }
    let reserved: Option<i64> =
        sqlx::query_scalar("SELECT sum(reserved_micros)::bigint FROM balances")
            .fetch_one(&mut db)
            .await
            .expect("balances");
    assert_eq!(reserved, Some(0), "nothing is left reserved");
    assert!(
        scene.hub.log("serve").contains("shutting down"),
        "the API logged its shutdown"
    );
    eprintln!(
        "SIGTERM under 100 streams: {} ended whole, {cut} cut at the grace",
        seen.len() - cut
    );
}

/// The next JSON message of a WebSocket (heartbeats skipped), or the code of the close frame
/// that ended it.
async fn next_ws<S>(socket: &mut S) -> Result<Value, Option<u16>>
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("json");
                if value["type"] != "heartbeat" {
                    return Ok(value);
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("the socket failed before its close frame: {err}"),
            None => return Err(None),
        }
    }
}

/// SIGTERM to the API with WebSocket chats running: the socket starts no new chat, a chat
/// shorter than the grace finishes whole, a longer one is cut at its end (`shutting_down`,
/// charged for what it produced), then the hub closes the socket with 1001 (going away);
/// the API exits cleanly and nothing is left reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_websocket_chats_finish_then_closes_the_socket() {
    use futures::SinkExt;
    let mut scene = Scene::new(&[], &[]).await;
    let url = format!(
        "{}?token={}",
        scene.hub.url("/api/ws").replacen("http://", "ws://", 1),
        scene.tokens[0]
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the socket opens");
    assert_eq!(next_ws(&mut socket).await.expect("open")["type"], "welcome");
    let start = |id: &str, model: &str| {
        tokio_tungstenite::tungstenite::Message::Text(
            json!({"type": "chat.start", "id": id, "model": model,
                "messages": [{"role": "user", "content": "Tell me about graceful shutdown."}],
                "options": {"max_tokens": 40}})
            .to_string()
            .into(),
        )
    };
    // 40 tokens: 1.6 s at 25/s, within the grace; 8 s at 5/s, beyond it.
    for (id, model) in [("short", "mock-medium"), ("long", "mock-slow")] {
        socket.send(start(id, model)).await.expect("sent");
    }
    let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut record = |message: Value| {
        let id = message["id"].as_str().unwrap_or_default().to_string();
        seen.entry(id).or_default().push(message);
    };
    let mut started = 0;
    while started < 2 {
        let message = next_ws(&mut socket).await.expect("open");
        started += usize::from(message["type"] == "chat.started");
        record(message);
    }

    scene.hub.terminate("serve");
    // Draining: the API takes no new connection.
    let api = scene.hub.url("/health");
    eventually(
        Duration::from_secs(10),
        "the API to refuse connections",
        || {
            let api = api.clone();
            async move {
                reqwest::Client::new()
                    .get(&api)
                    .send()
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    socket.send(start("late", "mock-1")).await.expect("sent");
    let closed = loop {
        match next_ws(&mut socket).await {
            Ok(message) => record(message),
            Err(code) => break code,
        }
    };
    assert_eq!(
        closed,
        Some(1001),
        "the hub closes the socket as going away"
    );
    let last = |id: &str| {
        seen.get(id)
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default()
    };
    let late = last("late");
    assert_eq!(late["type"], "chat.error", "{late}");
    assert_eq!(late["code"], "shutting_down", "{late}");
    let short = last("short");
    assert_eq!(
        short["type"], "chat.done",
        "a chat shorter than the grace ends whole: {short}"
    );
    let long = last("long");
    assert_eq!(
        long["type"], "chat.error",
        "a chat longer than the grace is cut: {long}"
    );
    assert_eq!(long["code"], "shutting_down", "{long}");
    let serve = scene
        .hub
        .exit_status("serve", SHUTDOWN_GRACE + Duration::from_secs(20))
        .await;
    assert!(serve.success(), "the API exits cleanly: {serve}");

    // An API again, to read the hub's state through.
    scene.hub.start("serve2", &["serve"], &[]);
    scene.quiesce().await;
    let mut db = scene.db().await;
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM usage_records ORDER BY outcome")
            .fetch_all(&mut db)
            .await
            .expect("usage");
    assert_eq!(
        outcomes,
        ["cancelled", "completed"],
        "the short chat completed, the long one was charged for what it produced"
    );
    let reserved: Option<i64> =
        sqlx::query_scalar("SELECT sum(reserved_micros)::bigint FROM balances")
            .fetch_one(&mut db)
            .await
            .expect("balances");
    assert_eq!(reserved, Some(0), "nothing is left reserved");
}

// ---------------------------------------------------------------------------------------
// One trace across the processes.

#[path = "../../tests/tests/otlp/mod.rs"]
mod otlp;

/// With traces on in every process, a chat sent to the API process and run by a worker
/// process is one trace at the OTLP receiver: the API's request, `reserve` and `publish`
/// spans say role `serve`; the worker's `process`, `provider call` and `settle` say role
/// `worker`; and `process` is the child of `publish`, whose context rode in the command's
/// NATS headers (a worker that dropped them would start a trace of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_is_one_trace_across_the_api_and_worker_processes() {
    let receiver = otlp::Receiver::start().await;
    let endpoint = receiver.endpoint();
    let scene = Scene::with_env(
        &[
            ("AIHUB__TRACES__ENABLED", "true"),
            ("AIHUB__TRACES__ENDPOINT", &endpoint),
        ],
        &[],
        &[],
    )
    .await;
    let request_id = format!("cross-process-{}", Uuid::new_v4());
    let response = scene
        .client
        .post(scene.hub.url("/v1/chat/completions"))
        .bearer_auth(&scene.tokens[0])
        .header("x-request-id", &request_id)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("the chat is sent");
    assert_eq!(response.status(), 200);

    // Each process exports on its own schedule: wait for both sides of the trace.
    let spans = eventually(
        Duration::from_secs(30),
        "both processes' spans at the receiver",
        || async {
            let spans = receiver.spans();
            let root = spans.iter().find(|s| {
                s.name == "POST /v1/chat/completions"
                    && s.attribute("request_id") == Some(request_id.as_str())
            })?;
            let in_trace = |name: &str| {
                spans
                    .iter()
                    .any(|s| s.trace_id == root.trace_id && s.name == name)
            };
            (in_trace("publish") && in_trace("process") && in_trace("settle"))
                .then(|| spans.clone())
        },
    )
    .await;
    let root = spans
        .iter()
        .find(|s| {
            s.name == "POST /v1/chat/completions"
                && s.attribute("request_id") == Some(request_id.as_str())
        })
        .expect("the request's span");
    assert!(
        root.parent_span_id.is_empty(),
        "the HTTP request is the root"
    );
    let role = |s: &otlp::Span| s.resource.get("aihub.role").cloned().unwrap_or_default();
    let one = |name: &str| {
        let named: Vec<&otlp::Span> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id && s.name == name)
            .collect();
        assert_eq!(named.len(), 1, "one {name:?} in the request's trace");
        named[0].clone()
    };
    let (reserve, publish, process) = (one("reserve"), one("publish"), one("process"));
    let (call, settle) = (one("provider call"), one("settle"));
    assert_eq!(role(root), "serve");
    for span in [&reserve, &publish] {
        assert_eq!(
            span.parent_span_id, root.span_id,
            "{} under the request",
            span.name
        );
        assert_eq!(role(span), "serve", "{} in the API process", span.name);
    }
    assert_eq!(
        process.parent_span_id, publish.span_id,
        "the worker's process span is the child of the API's publish"
    );
    assert_eq!(process.attribute("request_id"), Some(request_id.as_str()));
    assert_eq!(process.attribute("request"), publish.attribute("request"));
    for span in [&process, &call, &settle] {
        assert_eq!(role(span), "worker", "{} in the worker process", span.name);
    }
    // Under `process`, through whatever spans the worker opens between.
    let under_process = |span: &otlp::Span| {
        let mut parent = span.parent_span_id.clone();
        for _ in 0..16 {
            if parent == process.span_id {
                return true;
            }
            match spans
                .iter()
                .find(|s| s.trace_id == span.trace_id && s.span_id == parent)
            {
                Some(next) => parent = next.parent_span_id.clone(),
                None => return false,
            }
        }
        false
    };
    for span in [&call, &settle] {
        assert!(under_process(span), "{} under process", span.name);
    }
    assert_eq!(settle.attribute("settlement"), Some("direct"));
}
