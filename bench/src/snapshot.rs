//! `aihub-bench snapshot`: what loading an account with a long history costs.
//!
//! In a database of its own, it writes `--events` events to one account (reserve+settle
//! pairs after one grant, appended in chunks through the same `HubEventStore::append` the
//! command bus uses, so snapshots are taken as in production), then leaves a tail of up to
//! `snapshot_every − 1` events after the last snapshot, appended one at a time. It then times
//! `--loads` loads of that account and of a new one (one grant), and a few full folds
//! without the snapshot, and checks that snapshot + tail equals the full fold.

use anyhow::Context;
use chrono::Utc;
use hdrhistogram::Histogram;
use hub_commands::{Buses, Loaded};
use hub_domain::Decider;
use hub_domain::{AccountId, CreditAccount, CreditCommand, Credits, IdempotencyKey, RequestId};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

use super::{clean_up, histogram, isolate, micros, progress, Percentiles};
use hub_app::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotArgs {
    /// Events written to the long-lived account.
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Loads timed for each account.
    #[arg(long, default_value_t = 200)]
    pub loads: usize,
    /// Full folds (without the snapshot) timed.
    #[arg(long, default_value_t = 3)]
    pub folds: usize,
    /// The database on the same server used to create and drop the benchmark's own.
    #[arg(long, default_value = "postgres")]
    pub admin_database: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Events appended per statement while building the history.
const CHUNK: usize = 1_000;

#[derive(Debug, Serialize)]
struct Report {
    events: usize,
    snapshot_every: usize,
    /// Events after the newest snapshot of the long account.
    tail_events: usize,
    build_s: f64,
    load_long_ms: Percentiles,
    load_new_ms: Percentiles,
    full_fold_ms: Percentiles,
    /// Mean load of the long account over mean load of a new one.
    long_over_new: f64,
    snapshot_equals_fold: bool,
}

pub async fn run(args: SnapshotArgs, base: Settings) -> anyhow::Result<()> {
    anyhow::ensure!(args.events >= 2, "--events must be at least 2");
    anyhow::ensure!(args.loads > 0, "--loads must be at least 1");
    let env = isolate(&base, &args.admin_database, None).await?;
    progress(&format!("benchmark database {}", env.database()));
    let outcome = tokio::select! {
        outcome = measure(&args, &env.settings) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if let Err(err) = clean_up(&env, false).await {
        progress(&format!("cleanup failed: {err:#}"));
    }
    let report = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

async fn measure(args: &SnapshotArgs, settings: &Settings) -> anyhow::Result<Report> {
    let pool = hub_commands::db::connect_lazy(&settings.pool_settings())
        .context("invalid database.url")?;
    let snapshot_every = settings.credits.snapshot_every;
    let store = Buses::new(pool.clone(), snapshot_every, 0).store::<CreditAccount>();
    let metadata = HashMap::from([("actor".to_string(), "bench".to_string())]);

    let long = AccountId(Uuid::new_v4()).to_string();
    let fresh = AccountId(Uuid::new_v4()).to_string();
    let started = Instant::now();
    let mut loaded = store.load(&long).await?;
    let mut commands = history();
    let bulk = args
        .events
        .saturating_sub(snapshot_every.saturating_sub(1))
        .max(1);
    while loaded.sequence < bulk {
        let room = CHUNK.min(bulk - loaded.sequence);
        let chunk = decide_events(&mut loaded, &mut commands, room)?;
        store.append(chunk, &mut loaded, &metadata).await?;
        if loaded.sequence % 20_000 < CHUNK {
            progress(&format!("{} events written", loaded.sequence));
        }
    }
    while loaded.sequence < args.events {
        let one = decide_events(&mut loaded, &mut commands, 1)?;
        store.append(one, &mut loaded, &metadata).await?;
    }
    let build_s = started.elapsed().as_secs_f64();
    let tail_events = loaded.sequence - loaded.snapshot_sequence;
    // Snapshots are saved in the background: time loads only once the last one is stored.
    let stored_by = Instant::now() + std::time::Duration::from_secs(30);
    while store.load(&long).await?.snapshot_sequence != loaded.snapshot_sequence {
        anyhow::ensure!(
            Instant::now() < stored_by,
            "the snapshot after event {} was not stored within 30 s",
            loaded.snapshot_sequence
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let mut new_account = store.load(&fresh).await?;
    let mut opened = [CreditCommand::OpenAccount, grant_command("only")].into_iter();
    let events = decide_events(&mut new_account, &mut opened, 2)?;
    store.append(events, &mut new_account, &metadata).await?;

    progress(&format!(
        "{} events in {build_s:.1} s; timing loads ...",
        loaded.sequence
    ));
    let mut load_long = histogram()?;
    let mut load_new = histogram()?;
    for _ in 0..args.loads {
        time(&mut load_long, store.load(&long)).await?;
        time(&mut load_new, store.load(&fresh)).await?;
    }
    let mut full_fold = histogram()?;
    for _ in 0..args.folds {
        time(&mut full_fold, store.load_without_snapshot(&long)).await?;
    }
    let from_snapshot = store.load(&long).await?;
    let folded = store.load_without_snapshot(&long).await?;
    pool.close().await;

    let long_over_new = load_long.mean() / load_new.mean().max(1.0);
    Ok(Report {
        events: loaded.sequence,
        snapshot_every,
        tail_events,
        build_s,
        load_long_ms: Percentiles::of(&load_long),
        load_new_ms: Percentiles::of(&load_new),
        full_fold_ms: Percentiles::of(&full_fold),
        long_over_new,
        snapshot_equals_fold: from_snapshot.aggregate == folded.aggregate
            && from_snapshot.sequence == folded.sequence,
    })
}

async fn time<T>(
    into: &mut Histogram<u64>,
    load: impl std::future::Future<Output = Result<T, hub_commands::StoreError>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    load.await?;
    into.record(micros(started.elapsed()))?;
    Ok(())
}

/// At least `max` events (a command's events are never split) decided from `commands` on
/// `loaded`, and applied to it.
fn decide_events(
    loaded: &mut Loaded<CreditAccount>,
    commands: &mut impl Iterator<Item = CreditCommand>,
    max: usize,
) -> anyhow::Result<Vec<hub_domain::CreditEvent>> {
    let mut out = Vec::with_capacity(max);
    while out.len() < max {
        let Some(command) = commands.next() else {
            anyhow::bail!("the command history ran out");
        };
        let decision = loaded
            .aggregate
            .decide(command)
            .map_err(|e| anyhow::anyhow!("the history was refused: {e}"))?;
        for event in decision.events {
            loaded.aggregate.evolve(event.clone());
            out.push(event);
        }
    }
    Ok(out)
}

fn grant_command(key: &str) -> CreditCommand {
    CreditCommand::GrantCredits {
        key: IdempotencyKey::parse(key).expect("a constant, valid key"),
        amount: Credits::from_micros(1_000_000_000_000),
        reason: "bench".into(),
        granted_by: "bench".into(),
    }
}

/// The account's history: opened, one grant, then reserve+settle pairs for ever.
fn history() -> impl Iterator<Item = CreditCommand> {
    [CreditCommand::OpenAccount, grant_command("start")]
        .into_iter()
        .chain((0u64..).flat_map(|i| {
            let request = RequestId::parse(format!("r{i}")).expect("a valid request id");
            let now = Utc::now();
            [
                CreditCommand::ReserveCredits {
                    request_id: request.clone(),
                    amount: Credits::from_micros(1_000),
                    expires_at: now + chrono::Duration::hours(1),
                    now,
                    key: None,
                },
                CreditCommand::SettleReservation {
                    request_id: request,
                    charge: Credits::from_micros(500),
                },
            ]
        }))
}

fn render(r: &Report) -> String {
    let line = |name: &str, p: &Percentiles| {
        format!(
            "{name:<22} mean {:.2}  p50 {:.2}  p99 {:.2}  max {:.2}  (n = {})\n",
            p.mean, p.p50, p.p99, p.max, p.count
        )
    };
    let mut out = String::from("\n== aihub-bench snapshot ==\n");
    out.push_str(&format!(
        "history                {} events (built in {:.1} s), snapshot every {}, tail {} events\n",
        r.events, r.build_s, r.snapshot_every, r.tail_events
    ));
    out.push_str(&line("load, long (ms)", &r.load_long_ms));
    out.push_str(&line("load, new (ms)", &r.load_new_ms));
    out.push_str(&line("full fold, long (ms)", &r.full_fold_ms));
    out.push_str(&format!(
        "long / new            {:.2}x\nsnapshot + tail == full fold: {}\n",
        r.long_over_new, r.snapshot_equals_fold
    ));
    out
}
