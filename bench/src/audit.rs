//! `aihub-bench audit`: the auditors' checks over a large history.
//!
//! Against a database and NATS streams of its own, with the relay, projectors and sweeper
//! running in this process:
//!
//! 1. opens and funds `--accounts` accounts, then writes reserve+settle pairs on random
//!    accounts through the credit accounts' commands (as the API and workers do) until the
//!    event store holds `--events` events, and waits for the relay and projectors;
//! 2. signs a checkpoint over every aggregate's head (timed);
//! 3. runs `aihub audit verify`'s checks (events per second; the run must find nothing);
//! 4. asks for `--proofs` inclusion proofs of random events, one at a time, and times them
//!    (the first builds the checkpoint's tree; the rest read it).

use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use hdrhistogram::Histogram;
use hub_app::audit::verify::{self, Options};
use hub_app::evidence::checkpoints;
use hub_domain::{AccountId, CreditCommand, Credits, IdempotencyKey, RequestId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{isolate, progress, AbortOnDrop};
use hub_sandbox::Sandbox;
use hub_server::{Application, Roles, Settings};

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Events in the event store before the checks run.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Accounts they are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Proofs asked for.
    #[arg(long, default_value_t = 2_000)]
    pub proofs: usize,
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

const TARGET_VERIFY_EVENTS_PER_S: f64 = 100_000.0;
const TARGET_PROOF_P99_MS: f64 = 10.0;

pub async fn run(args: AuditArgs, base: Settings) -> anyhow::Result<()> {
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let env = isolate(&base, &args.admin_database, None).await?;
    progress(&format!(
        "benchmark database {}, streams {}*",
        env.database(),
        env.settings.nats.stream_prefix
    ));
    crate::conclude(
        &env,
        args.keep,
        args.json,
        measure(&args, &env),
        Report::render,
    )
    .await
}

async fn measure(args: &AuditArgs, env: &Sandbox) -> anyhow::Result<Report> {
    let settings = env.settings.clone();
    let roles = Roles {
        relay: true,
        projections: true,
        sweeper: true,
        ..Roles::NONE
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

    // 1. History.
    let started = Instant::now();
    let accounts: Arc<Vec<AccountId>> = Arc::new(
        (0..args.accounts)
            .map(|_| AccountId(Uuid::new_v4()))
            .collect(),
    );
    let amount = Credits::positive(1_000_000_000_000)?;
    let mut grants = futures::stream::iter(accounts.iter().copied().enumerate())
        .map(|(i, account)| {
            let credits = state.credits.clone();
            async move {
                let command = CreditCommand::GrantCredits {
                    key: IdempotencyKey::parse(format!("bench-grant-{i}"))?,
                    amount,
                    reason: "benchmark".into(),
                    granted_by: "bench".into(),
                };
                credits.credit(account, command, "bench").await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(result) = grants.next().await {
        result?;
    }
    let written = Arc::new(AtomicU64::new(0));
    let current: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&state.pool)
        .await?;
    let pairs = args
        .events
        .saturating_sub(u64::try_from(current).unwrap_or(0))
        .div_ceil(2);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.concurrency {
        let credits = state.credits.clone();
        let accounts = Arc::clone(&accounts);
        let written = Arc::clone(&written);
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(task as u64);
            let mut n = 0u64;
            while written.fetch_add(1, Ordering::Relaxed) < pairs {
                let account = accounts[rng.random_range(0..accounts.len())];
                let request_id = RequestId::parse(format!("a{task}-{n}"))?;
                n += 1;
                let amount: i64 = rng.random_range(1_000..=1_000_000);
                let now = Utc::now();
                credits
                    .execute(
                        account,
                        CreditCommand::ReserveCredits {
                            request_id: request_id.clone(),
                            amount: Credits::positive(amount)?,
                            expires_at: now + chrono::TimeDelta::seconds(600),
                            now,
                            key: None,
                        },
                        "bench",
                    )
                    .await?;
                credits
                    .execute(
                        account,
                        CreditCommand::SettleReservation {
                            request_id,
                            charge: Credits::non_negative(rng.random_range(0..=amount))?,
                        },
                        "bench",
                    )
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    let mut last_report = Instant::now();
    while !tasks.is_empty() {
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(result) = joined {
                    result??;
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            progress(&format!(
                "{} of {pairs} pairs written",
                written.load(Ordering::Relaxed).min(pairs)
            ));
        }
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&state.pool)
        .await?;
    let write_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "{events} events written in {write_s:.0} s; waiting for the relay and projectors"
    ));
    // The journal is applied with balances and ledger, in one transaction per batch.
    crate::wait_for_catch_up(&state.pool, &state.js, &settings).await?;

    // 2. A checkpoint.
    let started = Instant::now();
    // The checkpointer running in this process may have signed everything already.
    let checkpoint =
        match checkpoints::checkpoint_once(&state.pool, &state.checkpoint_key, Utc::now()).await? {
            Some(made) => made,
            None => checkpoints::list(&state.pool, None, 1)
                .await?
                .into_iter()
                .next()
                .context("no checkpoint to prove against")?,
        };
    let checkpoint_ms = started.elapsed().as_secs_f64() * 1_000.0;
    progress(&format!(
        "checkpoint {} over {} aggregates in {checkpoint_ms:.0} ms",
        checkpoint.id, checkpoint.tree_size
    ));

    // 3. Verify.
    let options = Options {
        stream: None,
        public_key: state.checkpoint_key.public_key(),
        now: Utc::now(),
    };
    let started = Instant::now();
    let report = verify::verify(&state.pool, &state.js, &state.topology, &options, &|p| {
        if p.done.is_multiple_of(200_000) && p.done > 0 {
            progress(&format!("verify: {} {} of {}", p.stage, p.done, p.total));
        }
    })
    .await?;
    let verify_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "verify: {} events in {verify_s:.1} s, passed: {}",
        report.events, report.passed
    ));
    for d in report.discrepancies.iter().take(5) {
        progress(&format!("  [{}] {}: {}", d.check, d.subject, d.detail));
    }

    // 4. Proofs.
    let heads: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, sequence FROM ledger_checkpoint_heads WHERE checkpoint_id = $1",
    )
    .bind(checkpoint.id)
    .fetch_all(&state.pool)
    .await?;
    anyhow::ensure!(!heads.is_empty(), "the checkpoint has no heads");
    let mut rng = StdRng::seed_from_u64(5);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut first_ms = 0.0;
    for i in 0..args.proofs {
        let (id, head) = &heads[rng.random_range(0..heads.len())];
        let sequence = rng.random_range(1..=*head);
        let started = Instant::now();
        let proof = checkpoints::proof(
            &state.pool,
            &state.checkpoint_trees,
            "CreditAccount",
            id,
            sequence,
            Duration::from_secs(60),
        )
        .await?;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if i == 0 {
            first_ms = micros as f64 / 1_000.0;
            hub_app::evidence::proof::verify(&proof, &state.checkpoint_key.public_key())
                .map_err(|e| anyhow::anyhow!("a proof does not verify: {e}"))?;
            continue;
        }
        latency.record(micros.max(1))?;
    }
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), hub.join()).await;

    Ok(Report {
        events: u64::try_from(events).unwrap_or(0),
        accounts: args.accounts,
        write_s,
        checkpoint_ms,
        tree_size: checkpoint.tree_size,
        verify_s,
        verify_events_per_s: report.events as f64 / verify_s,
        verify_passed: report.passed,
        discrepancies: report.checks.iter().map(|c| c.discrepancies).sum(),
        stream_messages: report.stream_messages,
        proofs: latency.len(),
        first_proof_ms: first_ms,
        proof_p50_ms: latency.value_at_quantile(0.5) as f64 / 1_000.0,
        proof_p99_ms: latency.value_at_quantile(0.99) as f64 / 1_000.0,
        proof_max_ms: latency.max() as f64 / 1_000.0,
    })
}

#[derive(Debug, Serialize)]
struct Report {
    events: u64,
    accounts: usize,
    write_s: f64,
    checkpoint_ms: f64,
    tree_size: u64,
    verify_s: f64,
    verify_events_per_s: f64,
    verify_passed: bool,
    discrepancies: u64,
    stream_messages: u64,
    proofs: u64,
    first_proof_ms: f64,
    proof_p50_ms: f64,
    proof_p99_ms: f64,
    proof_max_ms: f64,
}

impl Report {
    fn render(&self) -> String {
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        format!(
            "\n{} events over {} accounts (written in {:.0} s); {} cores\n\n\
             | measure | result | target | |\n|---|---|---|---|\n\
             | checkpoint over every head | {:.0} ms ({} aggregates) | | |\n\
             | `audit verify` | {:.0} events/s ({:.1} s; {} stream messages; passed: {}, {} discrepancies) | ≥ {:.0}/s | {} |\n\
             | proof | p50 {:.2} / p99 {:.2} / max {:.2} ms over {} (first, building the tree: {:.1} ms) | p99 ≤ {:.0} ms | {} |\n",
            self.events,
            self.accounts,
            self.write_s,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.checkpoint_ms,
            self.tree_size,
            self.verify_events_per_s,
            self.verify_s,
            self.stream_messages,
            self.verify_passed,
            self.discrepancies,
            TARGET_VERIFY_EVENTS_PER_S,
            verdict(self.verify_events_per_s >= TARGET_VERIFY_EVENTS_PER_S && self.verify_passed),
            self.proof_p50_ms,
            self.proof_p99_ms,
            self.proof_max_ms,
            self.proofs,
            self.first_proof_ms,
            TARGET_PROOF_P99_MS,
            verdict(self.proof_p99_ms <= TARGET_PROOF_P99_MS),
        )
    }
}
