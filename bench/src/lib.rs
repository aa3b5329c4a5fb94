//! `aihub-bench`: load harnesses (see docs/benchmarks.md).
//!
//! `aihub-bench ledger` starts the hub in this process with every role but HTTP (relay,
//! projectors and sweeper run as in `aihub all`) against a database and NATS streams of its
//! own, then:
//!
//! 1. opens and funds `--accounts` accounts;
//! 2. runs `--concurrency` tasks, each looping reserve → settle on a random account, for
//!    `--warmup-s` (not recorded) and then `--duration-s` (recorded): per-command latency,
//!    pairs and events per second, refusals and failures by kind;
//! 3. samples one settle in `--lag-every` and times how long its version takes to show in
//!    the `balances` read model (polled every millisecond on a connection of its own);
//! 4. waits for the relay and projectors to catch up, then times a replay of `balances`;
//! 5. stops the hub and runs `pgbench` (if on PATH) with one INSERT per transaction, the
//!    commit rate Postgres itself sustains here;
//! 6. drops the database and the streams (unless `--keep`) and prints the report.

use anyhow::Context;
use async_nats::jetstream;
use chrono::Utc;
use futures::StreamExt;
use hdrhistogram::Histogram;
use hub_commands::{CommandError, CreditAccounts};
use hub_domain::{AccountId, CreditCommand, CreditError, Credits, IdempotencyKey, RequestId};
use hub_projections::ProjectionKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use uuid::Uuid;

use hub_sandbox::{Prefixes, Sandbox};
use hub_server::{Application, Roles, Settings};

mod analytics;
mod audit;
mod gateway;
mod snapshot;

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Reserve+settle pairs across many accounts, with relay, projections and sweeper running.
    Ledger(LedgerArgs),
    /// Loading an account with a long history (snapshot + tail) against a new one.
    Snapshot(snapshot::SnapshotArgs),
    /// The hub's added latency over a local upstream, its sustained rate with billing on, and
    /// its memory with many open streams; LiteLLM's proxy side by side.
    Gateway(gateway::GatewayArgs),
    /// The analysts' read side over a month of synthetic usage: the usage projection's
    /// rebuild, summaries, exports and the raw events stream.
    Analytics(analytics::AnalyticsArgs),
    /// The auditors' checks over a large history: a checkpoint, `audit verify`, proofs.
    Audit(audit::AuditArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct LedgerArgs {
    /// Accounts the load is spread over.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Concurrent tasks, each running one reserve+settle pair at a time.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Length of the recorded run, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Load before recording starts, in seconds.
    #[arg(long, default_value_t = 5)]
    pub warmup_s: u64,
    /// Whole credits granted to each account first (at most 1,000,000,000); a pair holds
    /// at most one credit, so the default never runs out.
    #[arg(long, default_value_t = 1_000_000)]
    pub credits: i64,
    /// Time the projection lag of one settle in this many (0: not at all).
    #[arg(long, default_value_t = 50)]
    pub lag_every: u64,
    /// Length of the pgbench run, in seconds (0: skip pgbench).
    #[arg(long, default_value_t = 10)]
    pub pgbench_s: u64,
    /// Skip the replay measurement.
    #[arg(long)]
    pub no_replay: bool,
    /// Override database.max_connections (the hub's pool) for this run.
    #[arg(long)]
    pub max_connections: Option<u32>,
    /// The database on the same server used to create and drop the benchmark's own.
    #[arg(long, default_value = "postgres")]
    pub admin_database: String,
    /// Keep the benchmark database and streams afterwards (their names are printed).
    #[arg(long)]
    pub keep: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(which: Which, settings: Settings) -> anyhow::Result<()> {
    match which {
        Which::Ledger(args) => ledger(args, settings).await,
        Which::Snapshot(args) => snapshot::run(args, settings).await,
        Which::Gateway(args) => gateway::run(args, settings).await,
        Which::Analytics(args) => analytics::run(args, settings).await,
        Which::Audit(args) => audit::run(args, settings).await,
    }
}

/// The measured targets of the ledger (from the project's issue).
const TARGET_PAIRS_PER_S: f64 = 1_500.0;
const TARGET_COMMAND_P99_MS: f64 = 30.0;
const TARGET_LAG_P99_MS: f64 = 250.0;
const TARGET_REPLAY_PER_S: f64 = 20_000.0;

/// A sampled settle is given up on after this long without showing in `balances`.
const LAG_DEADLINE: Duration = Duration::from_secs(10);
/// How often the lag watcher polls `balances`.
const LAG_POLL: Duration = Duration::from_millis(1);
/// How long the relay and projectors get to catch up after the load.
const CATCH_UP_MAX: Duration = Duration::from_secs(600);
/// Largest reservation of one pair, in micro-credits (one credit).
const RESERVE_MICROS_MAX: i64 = 1_000_000;
/// Highest value the latency histograms hold, in microseconds (one minute).
const HISTOGRAM_MAX_US: u64 = 60_000_000;

const PGBENCH_SCRIPT: &str = include_str!("../pgbench-insert.sql");

// ---------------------------------------------------------------------------------------
// The whole run
// ---------------------------------------------------------------------------------------

async fn ledger(args: LedgerArgs, base: Settings) -> anyhow::Result<()> {
    validate(&args)?;
    let env = isolate(&base, &args.admin_database, args.max_connections).await?;
    progress(&format!(
        "benchmark database {}, streams {}*, subjects {}.*",
        env.database(),
        env.settings.nats.stream_prefix,
        env.settings.nats.subject_prefix
    ));
    let outcome = measure(&args, &env);
    conclude(&env, args.keep, args.json, outcome, Report::render).await
}

/// The end every harness shares: run `measure` (stopped by Ctrl-C), keep the run's
/// database and streams with `keep` or drop them, then print the report (JSON with `json`).
async fn conclude<R: Serialize>(
    env: &Sandbox,
    keep: bool,
    json: bool,
    measure: impl std::future::Future<Output = anyhow::Result<R>>,
    render: fn(&R) -> String,
) -> anyhow::Result<()> {
    let outcome = tokio::select! {
        outcome = measure => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if keep {
        progress(&format!(
            "kept database {} and streams {}* (--keep)",
            env.database(),
            env.settings.nats.stream_prefix
        ));
    } else if let Err(err) = clean_up(env, true).await {
        progress(&format!("cleanup failed: {err:#}"));
    }
    let report = outcome?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn validate(args: &LedgerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.duration_s > 0, "--duration-s must be at least 1");
    anyhow::ensure!(
        args.credits > 0 && args.credits <= 1_000_000_000,
        "--credits must be between 1 and 1,000,000,000"
    );
    Ok(())
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

/// Everything measured, in the order it is measured.
async fn measure(args: &LedgerArgs, env: &Sandbox) -> anyhow::Result<Report> {
    let settings = env.settings.clone();
    let machine = Machine::read(&settings).await;

    let roles = Roles {
        http: false,
        relay: true,
        projections: true,
        sweeper: true,
        worker: false,
        settler: false,
    };
    let app = Application::build(settings.clone(), roles)
        .await
        .context("could not start the hub")?;
    let state = app.state();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let hub = AbortOnDrop(tokio::spawn(async move {
        app.run_until(async {
            let _ = stop_rx.await;
        })
        .await
    }));

    // 1. Accounts.
    let started = Instant::now();
    let accounts = fund_accounts(&state.credits, args).await?;
    let funding_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "funded {} accounts in {funding_s:.1} s",
        accounts.len()
    ));

    // 2 + 3. Load, with sampled projection lag.
    let load = drive(
        args,
        &state.credits,
        accounts,
        &settings,
        &state.pool,
        &state.js,
    )
    .await?;
    // Before the replay and pgbench add load of their own.
    let machine = Machine {
        load_after: load_average(),
        ..machine
    };

    // 4. Catch-up (waited for in `drive`), then replay.
    let replay = if args.no_replay {
        Measured::Skipped {
            reason: "--no-replay".into(),
        }
    } else {
        progress("replaying balances ...");
        match hub_projections::replay(
            &state.pool,
            &settings.database.url,
            &state.js,
            &state.topology,
            ProjectionKind::Balances,
            false,
        )
        .await
        {
            Ok(stats) => {
                let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM balances")
                    .fetch_one(&state.pool)
                    .await
                    .context("counting balances after the replay")?;
                Measured::Done(ReplayReport {
                    messages: stats.messages,
                    elapsed_ms: stats.elapsed_ms,
                    messages_per_second: stats.messages_per_second,
                    balances_rows: rows,
                })
            }
            Err(err) => Measured::Failed {
                error: format!("{err:#}"),
            },
        }
    };

    // Stop the hub before pgbench, so Postgres serves pgbench alone.
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(15), hub.join()).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => progress(&format!("the hub stopped with an error: {err:#}")),
        Ok(Err(err)) => progress(&format!("the hub task failed: {err}")),
        Err(_) => progress("the hub did not stop within 15 s; aborted"),
    }
    state.pool.close().await;
    drop(state);

    // 5. pgbench.
    let pgbench = if args.pgbench_s == 0 {
        Measured::Skipped {
            reason: "--pgbench-s 0".into(),
        }
    } else {
        pgbench(&settings.database.url, args.concurrency, args.pgbench_s).await
    };

    Ok(Report::new(
        args, &settings, machine, funding_s, load, replay, pgbench,
    ))
}

// ---------------------------------------------------------------------------------------
// Database and streams of the benchmark's own
// ---------------------------------------------------------------------------------------

/// The run's own database (created and migrated, on the server of `database.url`, from
/// `admin_database`) and stream and subject names: a [`Sandbox`] with the benchmarks' names.
async fn isolate(
    base: &Settings,
    admin_database: &str,
    max_connections: Option<u32>,
) -> anyhow::Result<Sandbox> {
    let mut base = base.clone();
    if let Some(max) = max_connections {
        base.database.max_connections = max;
    }
    let admin_url = hub_sandbox::with_database(&base.database.url, admin_database)?;
    Ok(Sandbox::create(&base, &admin_url, Prefixes::BENCH).await?)
}

/// Drops the run's database and, if the run used NATS, its streams.
async fn clean_up(env: &Sandbox, uses_nats: bool) -> anyhow::Result<()> {
    if !uses_nats {
        env.drop_database().await?;
        progress(&format!("dropped database {}", env.database()));
        return Ok(());
    }
    env.destroy().await?;
    progress(&format!(
        "dropped database {} and streams {}*",
        env.database(),
        env.settings.nats.stream_prefix
    ));
    Ok(())
}

/// A spawned task that is aborted if its handle is dropped (an error, Ctrl-C).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Funding
// ---------------------------------------------------------------------------------------

async fn fund_accounts(
    credits: &Arc<CreditAccounts>,
    args: &LedgerArgs,
) -> anyhow::Result<Arc<Vec<AccountId>>> {
    let amount = Credits::positive(
        args.credits
            .saturating_mul(hub_domain::money::MICROS_PER_CREDIT),
    )
    .context("--credits is out of range")?;
    let accounts: Vec<AccountId> = (0..args.accounts)
        .map(|_| AccountId(Uuid::new_v4()))
        .collect();
    let mut grants = futures::stream::iter(accounts.clone().into_iter().enumerate())
        .map(|(i, account)| {
            let credits = credits.clone();
            async move {
                let command = CreditCommand::GrantCredits {
                    key: IdempotencyKey::parse(format!("bench-grant-{i}"))?,
                    amount,
                    reason: "benchmark".into(),
                    granted_by: "bench".into(),
                };
                credits
                    .credit(account, command, "bench")
                    .await
                    .with_context(|| format!("could not fund account {account}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(result) = grants.next().await {
        result?;
    }
    Ok(Arc::new(accounts))
}

// ---------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("could not create a histogram")
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// What one driver task saw in the recorded window.
struct TaskStats {
    reserve: Histogram<u64>,
    settle: Histogram<u64>,
    pairs: u64,
    events: u64,
    commands: u64,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
    lag_samples_dropped: u64,
}

impl TaskStats {
    fn new() -> anyhow::Result<TaskStats> {
        Ok(TaskStats {
            reserve: histogram()?,
            settle: histogram()?,
            pairs: 0,
            events: 0,
            commands: 0,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
            lag_samples_dropped: 0,
        })
    }

    fn failed(&mut self, op: &str, err: &CommandError<CreditError>) {
        let kind = format!("{op}/{}", error_kind(err));
        *self.errors.entry(kind.clone()).or_insert(0) += 1;
        self.examples
            .entry(kind)
            .or_insert_with(|| error_chain(err));
    }

    fn merge(&mut self, other: TaskStats) -> anyhow::Result<()> {
        self.reserve
            .add(&other.reserve)
            .context("merging histograms")?;
        self.settle
            .add(&other.settle)
            .context("merging histograms")?;
        self.pairs += other.pairs;
        self.events += other.events;
        self.commands += other.commands;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_insert(0) += n;
        }
        for (kind, example) in other.examples {
            self.examples.entry(kind).or_insert(example);
        }
        self.lag_samples_dropped += other.lag_samples_dropped;
        Ok(())
    }
}

fn error_kind(err: &CommandError<CreditError>) -> String {
    match err {
        CommandError::Rejected(refusal) => {
            let debug = format!("{refusal:?}");
            let variant = debug
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default();
            format!("rejected:{variant}")
        }
        CommandError::Contention { .. } => "contention".into(),
        CommandError::Unavailable(_) => "unavailable".into(),
        CommandError::Internal(_) => "internal".into(),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The recorded window, shared by every driver.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn holds(&self, at: Instant) -> bool {
        at >= self.start && at <= self.end
    }
}

/// A settle whose version should show in `balances`.
struct LagProbe {
    account: Uuid,
    version: i64,
    /// When the settle returned.
    since: Instant,
}

/// One driver: reserve+settle pairs on random accounts until the window ends.
async fn driver(
    task: usize,
    credits: Arc<CreditAccounts>,
    accounts: Arc<Vec<AccountId>>,
    window: Window,
    lag_every: u64,
    lag_tx: Option<mpsc::Sender<LagProbe>>,
    pairs_done: Arc<AtomicU64>,
) -> anyhow::Result<TaskStats> {
    let mut stats = TaskStats::new()?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    // Spread the sampled settles of different tasks apart.
    let mut settles: u64 = if lag_every > 0 {
        rng.random_range(0..lag_every)
    } else {
        0
    };
    let expiry = chrono::TimeDelta::seconds(60);
    let mut n: u64 = 0;
    while Instant::now() < window.end {
        let account = accounts[rng.random_range(0..accounts.len())];
        let request_id = RequestId::parse(format!("b{task}-{n}"))?;
        n += 1;
        let amount = rng.random_range(1_000..=RESERVE_MICROS_MAX);
        let charge = rng.random_range(0..=amount);
        let now = Utc::now();
        let reserve = CreditCommand::ReserveCredits {
            request_id: request_id.clone(),
            amount: Credits::positive(amount)?,
            expires_at: now + expiry,
            now,
            key: None,
        };
        let began = Instant::now();
        let reserved = credits.execute(account, reserve, "bench").await;
        let ended = Instant::now();
        let recorded = window.holds(ended);
        match reserved {
            Ok(committed) => {
                if recorded {
                    stats.reserve.saturating_record(micros(ended - began));
                    stats.events += committed.events.len() as u64;
                    stats.commands += 1;
                }
            }
            Err(err) => {
                if recorded {
                    stats.commands += 1;
                    stats.failed("reserve", &err);
                }
                continue;
            }
        }

        let settle = CreditCommand::SettleReservation {
            request_id,
            charge: Credits::non_negative(charge)?,
        };
        let began = Instant::now();
        let settled = credits.execute(account, settle, "bench").await;
        let ended = Instant::now();
        let recorded = window.holds(ended);
        match settled {
            Ok(committed) => {
                pairs_done.fetch_add(1, Ordering::Relaxed);
                if !recorded {
                    continue;
                }
                stats.settle.saturating_record(micros(ended - began));
                stats.events += committed.events.len() as u64;
                stats.commands += 1;
                stats.pairs += 1;
                settles += 1;
                if let Some(tx) = &lag_tx {
                    if lag_every > 0 && settles.is_multiple_of(lag_every) {
                        let probe = LagProbe {
                            account: account.0,
                            version: i64::try_from(committed.version).unwrap_or(i64::MAX),
                            since: ended,
                        };
                        if tx.try_send(probe).is_err() {
                            stats.lag_samples_dropped += 1;
                        }
                    }
                }
            }
            Err(err) => {
                if recorded {
                    stats.commands += 1;
                    stats.failed("settle", &err);
                }
            }
        }
    }
    Ok(stats)
}

/// What the lag watcher measured.
struct LagStats {
    histogram: Histogram<u64>,
    timed_out: u64,
    polls: u64,
}

/// Poll `balances` every millisecond, on a connection of its own, for every pending probe
/// at once; record how long after its settle returned each one became visible.
async fn lag_watcher(
    database_url: String,
    mut rx: mpsc::Receiver<LagProbe>,
) -> anyhow::Result<LagStats> {
    let mut conn = PgConnection::connect(&database_url)
        .await
        .context("the lag watcher could not connect")?;
    let mut stats = LagStats {
        histogram: histogram()?,
        timed_out: 0,
        polls: 0,
    };
    let mut pending: Vec<LagProbe> = Vec::new();
    let mut open = true;
    let mut tick = tokio::time::interval(LAG_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if pending.is_empty() {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(probe) => pending.push(probe),
                None => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(probe) => pending.push(probe),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let ids: Vec<Uuid> = pending.iter().map(|p| p.account).collect();
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT account_id, version FROM balances WHERE account_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut conn)
                .await
                .context("the lag watcher's poll failed")?;
        stats.polls += 1;
        let seen: HashMap<Uuid, i64> = rows.into_iter().collect();
        pending.retain(|probe| {
            let elapsed = probe.since.elapsed();
            if seen
                .get(&probe.account)
                .is_some_and(|&version| version >= probe.version)
            {
                stats.histogram.saturating_record(micros(elapsed));
                false
            } else if elapsed > LAG_DEADLINE {
                // Counted at the deadline, so percentiles never hide it.
                stats.histogram.saturating_record(micros(LAG_DEADLINE));
                stats.timed_out += 1;
                false
            } else {
                true
            }
        });
        if !pending.is_empty() {
            tick.tick().await;
        }
    }
    let _ = conn.close().await;
    Ok(stats)
}

/// How far behind the relay and projectors are.
#[derive(Debug, Clone, Serialize)]
struct Backlog {
    /// Committed events not yet in JetStream.
    outbox_rows: i64,
    /// Stream messages not yet applied to `balances`.
    balances_behind: u64,
    /// Stream messages not yet applied to `ledger`.
    ledger_behind: u64,
}

async fn backlog(
    pool: &PgPool,
    js: &jetstream::Context,
    settings: &Settings,
) -> anyhow::Result<(Backlog, u64)> {
    let outbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
        .fetch_one(pool)
        .await
        .context("counting the outbox")?;
    let mut stream = js
        .get_stream(settings.topology().events_stream())
        .await
        .context("could not find the events stream")?;
    let last = stream
        .info()
        .await
        .context("could not read the events stream's state")?
        .state
        .last_sequence;
    let balances = hub_projections::checkpoint(pool, ProjectionKind::Balances)
        .await
        .context("reading the balances checkpoint")?;
    let ledger = hub_projections::checkpoint(pool, ProjectionKind::Ledger)
        .await
        .context("reading the ledger checkpoint")?;
    Ok((
        Backlog {
            outbox_rows,
            balances_behind: last.saturating_sub(balances),
            ledger_behind: last.saturating_sub(ledger),
        },
        last,
    ))
}

/// Wait until the outbox is empty and both projections are at the stream's end; returns
/// the number of messages in the stream.
async fn wait_for_catch_up(
    pool: &PgPool,
    js: &jetstream::Context,
    settings: &Settings,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + CATCH_UP_MAX;
    let mut last_report = Instant::now();
    loop {
        let (behind, last) = backlog(pool, js, settings).await?;
        if behind.outbox_rows == 0 && behind.balances_behind == 0 && behind.ledger_behind == 0 {
            return Ok(last);
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the relay and projections did not catch up within {} s: {behind:?}",
                CATCH_UP_MAX.as_secs()
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!("catching up: {behind:?}"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the load phase measured.
struct Load {
    stats: TaskStats,
    lag: Option<LagStats>,
    measured_s: f64,
    backlog_at_end: Backlog,
    /// From the end of the recorded window until the outbox was empty and both
    /// projections were at the stream's end.
    catch_up_ms: u128,
    stream_messages: u64,
}

async fn drive(
    args: &LedgerArgs,
    credits: &Arc<CreditAccounts>,
    accounts: Arc<Vec<AccountId>>,
    settings: &Settings,
    pool: &PgPool,
    js: &jetstream::Context,
) -> anyhow::Result<Load> {
    let (lag_tx, lag_rx) = mpsc::channel::<LagProbe>(4_096);
    let watcher = if args.lag_every > 0 {
        Some(AbortOnDrop(tokio::spawn(lag_watcher(
            settings.database.url.clone(),
            lag_rx,
        ))))
    } else {
        drop(lag_rx);
        None
    };
    let lag_tx = watcher.as_ref().map(|_| lag_tx);

    let begun = Instant::now();
    let start = begun + Duration::from_secs(args.warmup_s);
    let window = Window {
        start,
        end: start + Duration::from_secs(args.duration_s),
    };
    progress(&format!(
        "load: {} tasks, {} s warm-up + {} s recorded",
        args.concurrency, args.warmup_s, args.duration_s
    ));
    let pairs_done = Arc::new(AtomicU64::new(0));
    let mut drivers = JoinSet::new();
    for task in 0..args.concurrency {
        drivers.spawn(driver(
            task,
            credits.clone(),
            accounts.clone(),
            window,
            args.lag_every,
            lag_tx.clone(),
            pairs_done.clone(),
        ));
    }
    drop(lag_tx);

    // Progress every five seconds, and the backlog when recording ends.
    let mut reported_at = Instant::now();
    let mut reported_pairs = 0u64;
    let backlog_at_end = loop {
        let now = Instant::now();
        if now >= window.end {
            break backlog(pool, js, settings).await?.0;
        }
        let next = (reported_at + Duration::from_secs(5)).min(window.end);
        tokio::time::sleep_until(next.into()).await;
        if Instant::now() >= window.end {
            continue;
        }
        let pairs = pairs_done.load(Ordering::Relaxed);
        let rate = (pairs - reported_pairs) as f64 / reported_at.elapsed().as_secs_f64();
        let (behind, _) = backlog(pool, js, settings).await?;
        let phase = if Instant::now() < window.start {
            "warm-up"
        } else {
            "recording"
        };
        progress(&format!(
            "{phase} t={:>3} s: {rate:>7.0} pairs/s; outbox {} rows, balances {} behind, ledger {} behind",
            begun.elapsed().as_secs(),
            behind.outbox_rows,
            behind.balances_behind,
            behind.ledger_behind
        ));
        reported_at = Instant::now();
        reported_pairs = pairs;
    };

    let mut stats = TaskStats::new()?;
    while let Some(joined) = drivers.join_next().await {
        let task_stats = joined.context("a driver task panicked")??;
        stats.merge(task_stats)?;
    }
    // The relay and projectors catch up while the lag watcher finishes its last probes;
    // both are timed from the end of the recorded window.
    let lag = async {
        match watcher {
            Some(watcher) => Ok(Some(
                watcher.join().await.context("the lag watcher panicked")??,
            )),
            None => anyhow::Ok(None),
        }
    };
    let catch_up = async {
        let stream_messages = wait_for_catch_up(pool, js, settings).await?;
        anyhow::Ok((window.end.elapsed().as_millis(), stream_messages))
    };
    let (lag, catch_up) = tokio::join!(lag, catch_up);
    let (catch_up_ms, stream_messages) = catch_up?;
    progress(&format!(
        "relay and projections caught up {catch_up_ms} ms after the load ended ({stream_messages} messages in the stream)"
    ));
    Ok(Load {
        stats,
        lag: lag?,
        measured_s: args.duration_s as f64,
        backlog_at_end,
        catch_up_ms,
        stream_messages,
    })
}

// ---------------------------------------------------------------------------------------
// pgbench
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct PgbenchReport {
    tps: f64,
    latency_average_ms: Option<f64>,
    clients: usize,
    seconds: u64,
    command: String,
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

async fn pgbench(database_url: &str, clients: usize, seconds: u64) -> Measured<PgbenchReport> {
    let Some(program) = find_on_path("pgbench") else {
        progress("pgbench not found on PATH; skipping the Postgres baseline");
        return Measured::Skipped {
            reason: "pgbench not found on PATH (Debian 12: apt-get install postgresql-contrib, whose postgresql-15 ships it)".into(),
        };
    };
    match run_pgbench(&program, database_url, clients, seconds).await {
        Ok(report) => Measured::Done(report),
        Err(err) => {
            progress(&format!("pgbench failed: {err:#}"));
            Measured::Failed {
                error: format!("{err:#}"),
            }
        }
    }
}

async fn run_pgbench(
    program: &Path,
    database_url: &str,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<PgbenchReport> {
    let mut conn = PgConnection::connect(database_url)
        .await
        .context("could not connect to the benchmark database")?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, payload json)")
        .execute(&mut conn)
        .await
        .context("could not create bench_insert")?;
    let _ = conn.close().await;

    let script =
        std::env::temp_dir().join(format!("aihub-pgbench-{}.sql", Uuid::new_v4().simple()));
    std::fs::write(&script, PGBENCH_SCRIPT)
        .with_context(|| format!("could not write {}", script.display()))?;
    let threads = clients.clamp(1, 2);
    let arguments: Vec<String> = vec![
        "-n".into(),
        "-c".into(),
        clients.to_string(),
        "-j".into(),
        threads.to_string(),
        "-T".into(),
        seconds.to_string(),
        "-f".into(),
        script.display().to_string(),
        database_url.into(),
    ];
    let command = format!(
        "pgbench {} <bench db>",
        arguments
            .iter()
            .take(arguments.len() - 1)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    );
    progress(&format!("running {command} ..."));
    let run = {
        let program = program.to_path_buf();
        let arguments = arguments.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(program).args(arguments).output()
        })
        .await
    };
    let _ = std::fs::remove_file(&script);
    let output = run
        .context("the pgbench task panicked")?
        .context("could not run pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let tps = parse_pgbench_tps(&stdout)
        .with_context(|| format!("no tps line in pgbench's output:\n{stdout}"))?;
    Ok(PgbenchReport {
        tps,
        latency_average_ms: parse_pgbench_value(&stdout, "latency average = "),
        clients,
        seconds,
        command,
    })
}

/// `tps = 1234.5 (without initial connection time)`; older versions print two lines
/// (including / excluding connections establishing): the excluding one is preferred.
fn parse_pgbench_tps(output: &str) -> Option<f64> {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tps = "))
        .collect();
    let best = lines
        .iter()
        .find(|l| l.contains("without") || l.contains("excluding"))
        .or_else(|| lines.first())?;
    parse_pgbench_value(best, "tps = ")
}

fn parse_pgbench_value(output: &str, prefix: &str) -> Option<f64> {
    output.lines().map(str::trim).find_map(|line| {
        line.strip_prefix(prefix)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct Machine {
    cores: usize,
    /// 1, 5 and 15-minute load averages when the benchmark started.
    load_before: Option<[f64; 3]>,
    /// The same when the load phase ended (before the replay and pgbench).
    load_after: Option<[f64; 3]>,
    /// Server settings that decide commit throughput.
    postgres: BTreeMap<String, String>,
}

impl Machine {
    async fn read(settings: &Settings) -> Machine {
        let mut postgres = BTreeMap::new();
        if let Ok(mut conn) = PgConnection::connect(&settings.database.url).await {
            for setting in [
                "server_version",
                "synchronous_commit",
                "fsync",
                "shared_buffers",
                "max_connections",
            ] {
                // Names from the fixed list above.
                if let Ok(value) = sqlx::query_scalar::<_, String>(&format!("SHOW {setting}"))
                    .fetch_one(&mut conn)
                    .await
                {
                    postgres.insert(setting.to_string(), value);
                }
            }
            let _ = conn.close().await;
        }
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_before: load_average(),
            load_after: None,
            postgres,
        }
    }
}

fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

/// A measurement that may have been skipped or have failed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Measured<T> {
    Done(T),
    Skipped { reason: String },
    Failed { error: String },
}

impl<T> Measured<T> {
    fn done(&self) -> Option<&T> {
        match self {
            Measured::Done(value) => Some(value),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct ReplayReport {
    messages: u64,
    elapsed_ms: u128,
    messages_per_second: f64,
    /// Rows in `balances` after the rebuild (should equal the accounts).
    balances_rows: i64,
}

#[derive(Debug, Clone, Serialize)]
struct Percentiles {
    count: u64,
    mean: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds, in milliseconds.
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1_000.0;
        if h.is_empty() {
            return Percentiles {
                count: 0,
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1_000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Config {
    accounts: usize,
    concurrency: usize,
    duration_s: u64,
    warmup_s: u64,
    credits_per_account: i64,
    lag_every: u64,
    pool_max_connections: u32,
    database: String,
    stream_prefix: String,
}

#[derive(Debug, Clone, Serialize)]
struct Throughput {
    pairs: u64,
    pairs_per_s: f64,
    commands: u64,
    commands_per_s: f64,
    events: u64,
    events_per_s: f64,
    /// Opening and funding the accounts (not part of the recorded window).
    funding_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Lag {
    /// Samples that never showed within the deadline (counted at the deadline).
    timed_out: u64,
    dropped: u64,
    polls: u64,
    #[serde(flatten)]
    percentiles: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
struct Baseline {
    pgbench: Measured<PgbenchReport>,
    /// Our events/s divided by pgbench's single-insert transactions/s.
    events_per_pgbench_tps: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    name: &'static str,
    target: String,
    actual: Option<f64>,
    met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    config: Config,
    machine: Machine,
    throughput: Throughput,
    command_latency_ms: Percentiles,
    reserve_latency_ms: Percentiles,
    settle_latency_ms: Percentiles,
    projection_lag_ms: Option<Lag>,
    errors: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
    backlog_at_end: Backlog,
    catch_up_ms: u128,
    stream_messages: u64,
    replay: Measured<ReplayReport>,
    postgres_baseline: Baseline,
    targets: Vec<Target>,
}

impl Report {
    fn new(
        args: &LedgerArgs,
        settings: &Settings,
        machine: Machine,
        funding_s: f64,
        load: Load,
        replay: Measured<ReplayReport>,
        pgbench: Measured<PgbenchReport>,
    ) -> Report {
        let s = &load.stats;
        let per_s = |n: u64| n as f64 / load.measured_s;
        let mut all = s.reserve.clone();
        // Same bounds, so this cannot fail; a failure would only lose the combined view.
        let _ = all.add(&s.settle);
        let throughput = Throughput {
            pairs: s.pairs,
            pairs_per_s: per_s(s.pairs),
            commands: s.commands,
            commands_per_s: per_s(s.commands),
            events: s.events,
            events_per_s: per_s(s.events),
            funding_s,
        };
        let command_latency_ms = Percentiles::of(&all);
        let projection_lag_ms = load.lag.as_ref().map(|lag| Lag {
            timed_out: lag.timed_out,
            dropped: s.lag_samples_dropped,
            polls: lag.polls,
            percentiles: Percentiles::of(&lag.histogram),
        });
        let events_per_pgbench_tps = pgbench
            .done()
            .filter(|p| p.tps > 0.0)
            .map(|p| throughput.events_per_s / p.tps);
        let replay_rate = replay.done().map(|r| r.messages_per_second);
        // Timed-out samples are in the histogram at the deadline, so they count.
        let lag_p99 = projection_lag_ms
            .as_ref()
            .filter(|l| l.percentiles.count > 0)
            .map(|l| l.percentiles.p99);
        let targets = vec![
            Target {
                name: "reserve+settle pairs/s",
                target: format!(">= {TARGET_PAIRS_PER_S}"),
                actual: Some(throughput.pairs_per_s),
                met: Some(throughput.pairs_per_s >= TARGET_PAIRS_PER_S),
            },
            Target {
                name: "command latency p99 (ms)",
                target: format!("<= {TARGET_COMMAND_P99_MS}"),
                actual: Some(command_latency_ms.p99),
                met: Some(
                    command_latency_ms.count > 0 && command_latency_ms.p99 <= TARGET_COMMAND_P99_MS,
                ),
            },
            Target {
                name: "projection lag p99 (ms)",
                target: format!("<= {TARGET_LAG_P99_MS}"),
                actual: lag_p99,
                met: lag_p99.map(|p| p <= TARGET_LAG_P99_MS),
            },
            Target {
                name: "replay messages/s",
                target: format!(">= {TARGET_REPLAY_PER_S}"),
                actual: replay_rate,
                met: replay_rate.map(|r| r >= TARGET_REPLAY_PER_S),
            },
        ];
        Report {
            config: Config {
                accounts: args.accounts,
                concurrency: args.concurrency,
                duration_s: args.duration_s,
                warmup_s: args.warmup_s,
                credits_per_account: args.credits,
                lag_every: args.lag_every,
                pool_max_connections: settings.database.max_connections,
                database: settings
                    .database
                    .url
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                stream_prefix: settings.nats.stream_prefix.clone(),
            },
            machine,
            throughput,
            command_latency_ms,
            reserve_latency_ms: Percentiles::of(&s.reserve),
            settle_latency_ms: Percentiles::of(&s.settle),
            projection_lag_ms,
            errors: s.errors.clone(),
            error_examples: s.examples.clone(),
            backlog_at_end: load.backlog_at_end.clone(),
            catch_up_ms: load.catch_up_ms,
            stream_messages: load.stream_messages,
            replay,
            postgres_baseline: Baseline {
                pgbench,
                events_per_pgbench_tps,
            },
            targets,
        }
    }

    fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let c = &self.config;
        let t = &self.throughput;
        let line = |out: &mut String, text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        let pct = |p: &Percentiles| {
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n = {})",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            )
        };
        line(&mut out, String::new());
        line(&mut out, "== aihub-bench ledger ==".into());
        line(
            &mut out,
            format!(
                "accounts {}  concurrency {}  duration {} s (+{} s warm-up)  pool {}  cores {}",
                c.accounts,
                c.concurrency,
                c.duration_s,
                c.warmup_s,
                c.pool_max_connections,
                self.machine.cores
            ),
        );
        if let Some([a, b, l]) = self.machine.load_before {
            let _ = write!(out, "load average before {a:.2} {b:.2} {l:.2}");
            if let Some([a, b, l]) = self.machine.load_after {
                let _ = write!(out, ", after {a:.2} {b:.2} {l:.2}");
            }
            out.push('\n');
        }
        line(
            &mut out,
            format!(
                "throughput       {:.0} pairs/s  {:.0} commands/s  {:.0} events/s  ({} pairs)",
                t.pairs_per_s, t.commands_per_s, t.events_per_s, t.pairs
            ),
        );
        line(
            &mut out,
            format!("command ms       {}", pct(&self.command_latency_ms)),
        );
        line(
            &mut out,
            format!("  reserve ms     {}", pct(&self.reserve_latency_ms)),
        );
        line(
            &mut out,
            format!("  settle ms      {}", pct(&self.settle_latency_ms)),
        );
        match &self.projection_lag_ms {
            Some(lag) => line(
                &mut out,
                format!(
                    "projection lag   {}  timed out {}  dropped {}",
                    pct(&lag.percentiles),
                    lag.timed_out,
                    lag.dropped
                ),
            ),
            None => line(&mut out, "projection lag   not sampled".into()),
        }
        let b = &self.backlog_at_end;
        line(
            &mut out,
            format!(
                "backlog at end   outbox {} rows, balances {} behind, ledger {} behind; caught up after {} ms",
                b.outbox_rows, b.balances_behind, b.ledger_behind, self.catch_up_ms
            ),
        );
        match &self.replay {
            Measured::Done(r) => line(
                &mut out,
                format!(
                    "replay balances  {:.0} messages/s  ({} messages in {} ms, {} rows)",
                    r.messages_per_second, r.messages, r.elapsed_ms, r.balances_rows
                ),
            ),
            Measured::Skipped { reason: why } => {
                line(&mut out, format!("replay balances  skipped: {why}"))
            }
            Measured::Failed { error: why } => {
                line(&mut out, format!("replay balances  FAILED: {why}"))
            }
        }
        match &self.postgres_baseline.pgbench {
            Measured::Done(p) => line(
                &mut out,
                format!(
                    "pgbench insert   {:.0} tps ({} clients, {} s); our events/s = {:.2} x pgbench tps",
                    p.tps,
                    p.clients,
                    p.seconds,
                    self.postgres_baseline
                        .events_per_pgbench_tps
                        .unwrap_or_default()
                ),
            ),
            Measured::Skipped { reason: why } => line(&mut out, format!("pgbench          skipped: {why}")),
            Measured::Failed { error: why } => line(&mut out, format!("pgbench          FAILED: {why}")),
        }
        if self.errors.is_empty() {
            line(&mut out, "errors           none".into());
        } else {
            line(&mut out, "errors:".into());
            for (kind, n) in &self.errors {
                let example = self
                    .error_examples
                    .get(kind)
                    .map(String::as_str)
                    .unwrap_or("");
                line(&mut out, format!("  {kind:<40} {n:>8}  e.g. {example}"));
            }
        }
        line(&mut out, "targets:".into());
        for target in &self.targets {
            let verdict = match target.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            let actual = target
                .actual
                .map_or_else(|| "-".to_string(), |a| format!("{a:.1}"));
            line(
                &mut out,
                format!(
                    "  {:<28} {:>12}  actual {:>10}  {verdict}",
                    target.name, target.target, actual
                ),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_tps_is_parsed_from_new_and_old_output() {
        let new = "latency average = 3.1 ms\ntps = 20512.123 (without initial connection time)\n";
        assert_eq!(parse_pgbench_tps(new), Some(20512.123));
        assert_eq!(parse_pgbench_value(new, "latency average = "), Some(3.1));
        let old = "tps = 900.5 (including connections establishing)\ntps = 910.25 (excluding connections establishing)\n";
        assert_eq!(parse_pgbench_tps(old), Some(910.25));
        assert_eq!(parse_pgbench_tps("nothing"), None);
    }

    #[test]
    fn error_kinds_name_the_refusal() {
        let err: CommandError<CreditError> =
            CommandError::Rejected(CreditError::InsufficientCredits {
                requested: Credits::from_micros(2),
                available: Credits::from_micros(1),
            });
        assert_eq!(error_kind(&err), "rejected:InsufficientCredits");
        let err: CommandError<CreditError> = CommandError::Contention { attempts: 3 };
        assert_eq!(error_kind(&err), "contention");
    }
}
