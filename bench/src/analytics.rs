//! `aihub-bench analytics`: the analysts' read side over a month of synthetic history.
//!
//! Against a database and NATS streams of its own:
//!
//! 1. publishes `--events` settlements with usage (default 1,000,000) to `HUB_EVENTS`, as
//!    the relay would, spread over `--days` days ending now across `--accounts` accounts
//!    (several models, providers, API keys and outcomes; latencies from 0.2 to 30 s);
//! 2. rebuilds the `usage` projection (`usage_records` and `usage_rollups`) from the
//!    stream with the replay the CLI runs, and checks that every event became one record
//!    and one request in the rollups;
//! 3. starts the hub's HTTP role in this process and times `GET /api/usage/summary` in
//!    several shapes (time grains, dimensions, one user, every user), one request at a time;
//! 4. streams `GET /api/usage/export` of the whole range as CSV and as NDJSON, counting rows
//!    and sampling this process's resident memory every 20 ms;
//! 5. streams `GET /api/analytics/events` over everything published.
//!
//! The events exist only in the stream (nothing here needs them in the event store), so
//! `GET /api/usage/requests/{id}` is not measured.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use hdrhistogram::Histogram;
use hub_domain::{
    ApiKeyId, CreditEvent, Credits, RequestId, Role, TokenSource, UsageOutcome, UsageRecord,
};
use hub_nats::envelope::{EventEnvelope, RawJson};
use hub_projections::ProjectionKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{isolate, progress, AbortOnDrop};
use hub_sandbox::Sandbox;
use hub_server::{Application, Roles, Settings};

#[derive(Debug, Clone, clap::Args)]
pub struct AnalyticsArgs {
    /// Settlements published (each one usage record).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Accounts they are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    /// Days of history, ending now.
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Rounds of summary queries: each round asks every shape once.
    #[arg(long, default_value_t = 20)]
    pub summary_rounds: usize,
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

/// The targets (from the project's issue).
const TARGET_PROJECTION_EVENTS_PER_S: f64 = 50_000.0;
const TARGET_SUMMARY_P95_MS: f64 = 50.0;
/// The summary shape the target is set for.
const TARGET_SHAPE: &str = "day × model";
const TARGET_EXPORT_ROWS_PER_S: f64 = 200_000.0;
const TARGET_EXPORT_RSS_GROWTH_MB: f64 = 50.0;
const TARGET_EVENTS_PER_S: f64 = 100_000.0;

/// Acks awaited together while publishing.
const PUBLISH_WAVE: usize = 5_000;

pub async fn run(args: AnalyticsArgs, base: Settings) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(
        (1..=31).contains(&args.days),
        "--days must be between 1 and 31 (the events route reads at most 31 days at once)"
    );
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

async fn measure(args: &AnalyticsArgs, env: &Sandbox) -> anyhow::Result<Report> {
    let settings = env.settings.clone();
    let (pool, _nats, js) = hub_server::connect(&settings).await?;
    let topology = settings.topology();
    let history = History::new(args);

    // 1. History on the stream.
    let published_from = Utc::now() - TimeDelta::seconds(5);
    let started = Instant::now();
    publish(&js, &topology, &history, args).await?;
    let publish_s = started.elapsed().as_secs_f64();
    let publish_per_s = args.events as f64 / publish_s;
    progress(&format!(
        "published {} events in {publish_s:.1} s ({publish_per_s:.0}/s)",
        args.events
    ));

    // 2. The projection, rebuilt from the stream.
    progress("replaying usage (usage_records + usage_rollups) ...");
    let replay = hub_projections::replay(
        &pool,
        &settings.database.url,
        &js,
        &topology,
        ProjectionKind::Usage,
        false,
    )
    .await
    .context("the usage replay failed")?;
    let (records, rolled_up): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM usage_records),
                (SELECT sum(requests)::int8 FROM usage_rollups)",
    )
    .fetch_one(&pool)
    .await?;
    let rollup_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_rollups")
        .fetch_one(&pool)
        .await?;
    let tables_mb: f64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('usage_records')
                 + pg_total_relation_size('usage_rollups'))::float8 / 1048576",
    )
    .fetch_one(&pool)
    .await?;
    let expected = i64::try_from(args.events)?;
    anyhow::ensure!(
        records == expected && rolled_up == Some(expected),
        "the projection lost or doubled events: {records} records and {rolled_up:?} requests in \
         the rollups for {expected} events"
    );
    progress(&format!(
        "projected {} events at {:.0}/s: {records} records, {rollup_rows} rollup rows",
        replay.messages, replay.messages_per_second
    ));
    let projection = Projection {
        events: replay.messages,
        seconds: replay.elapsed_ms as f64 / 1_000.0,
        events_per_s: replay.messages_per_second,
        usage_records: records,
        rollup_rows,
        tables_mb,
    };
    pool.close().await;

    // 3–5. Over HTTP.
    let mut http_settings = settings.clone();
    http_settings.server.host = "127.0.0.1".into();
    http_settings.server.port = 0;
    let roles = Roles {
        http: true,
        ..Roles::NONE
    };
    let app = Application::build(http_settings, roles)
        .await
        .context("could not start the hub's HTTP role")?;
    let port = app.port().context("the hub has no port")?;
    let state = app.state();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let hub = AbortOnDrop(tokio::spawn(async move {
        app.run_until(async {
            let _ = stop_rx.await;
        })
        .await
    }));
    let token = state.jwt.mint(Uuid::new_v4(), &[Role::Analyst], 86_400)?;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        token,
        client: reqwest::Client::new(),
    };

    let summaries = summaries(&api, &history, args).await?;
    let mut exports = Vec::new();
    for format in ["csv", "ndjson"] {
        exports.push(export(&api, &history, format, args.events).await?);
    }
    let events = events(&api, published_from, args.events).await?;

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), hub.join()).await;

    Ok(Report {
        events: args.events,
        accounts: args.accounts,
        days: args.days,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        publish_per_s,
        projection,
        summaries,
        exports,
        events_stream: events,
    })
}

// ---------------------------------------------------------------------------------------
// The synthetic history
// ---------------------------------------------------------------------------------------

/// Models, their providers and prices (micro-credits per million input and output tokens).
const MODELS: [(&str, &str, i64, i64); 6] = [
    ("gpt-4o-mini", "openai", 150_000, 600_000),
    ("gpt-4o", "openai", 2_500_000, 10_000_000),
    ("o3-mini", "openai", 1_100_000, 4_400_000),
    ("claude-sonnet", "anthropic", 3_000_000, 15_000_000),
    ("claude-haiku", "anthropic", 800_000, 4_000_000),
    ("llama-3-70b", "local-vllm", 200_000, 200_000),
];

/// What the generated history covers: accounts with their API keys, and the time range.
struct History {
    accounts: Vec<Uuid>,
    /// Each account's keys (zero to three).
    keys: Vec<Vec<ApiKeyId>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl History {
    fn new(args: &AnalyticsArgs) -> History {
        let mut rng = StdRng::seed_from_u64(7);
        let accounts: Vec<Uuid> = (0..args.accounts)
            .map(|_| Uuid::from_u128(rng.random()))
            .collect();
        let keys = accounts
            .iter()
            .map(|_| {
                (0..rng.random_range(0..=3))
                    .map(|_| ApiKeyId(Uuid::from_u128(rng.random())))
                    .collect()
            })
            .collect();
        let to = Utc::now();
        History {
            accounts,
            keys,
            from: to - TimeDelta::days(args.days),
            to,
        }
    }

    /// The `i`th of `total` settlements: its account and event, recorded in time order.
    fn event(
        &self,
        rng: &mut StdRng,
        i: u64,
        total: u64,
    ) -> anyhow::Result<(usize, DateTime<Utc>, CreditEvent)> {
        let span_ms = (self.to - self.from).num_milliseconds().max(1);
        let offset = i128::from(span_ms) * i128::from(i) / i128::from(total.max(1));
        let at = self.from + TimeDelta::milliseconds(i64::try_from(offset).unwrap_or(0));
        let account = rng.random_range(0..self.accounts.len());
        let (model, provider, input_price, output_price) =
            MODELS[rng.random_range(0..MODELS.len())];
        let keys = &self.keys[account];
        // A fifth of the requests come from the dashboard (no key).
        let api_key = if keys.is_empty() || rng.random_ratio(1, 5) {
            None
        } else {
            Some(keys[rng.random_range(0..keys.len())])
        };
        let outcome = match rng.random_range(0..100) {
            0..=94 => UsageOutcome::Completed,
            95..=97 => UsageOutcome::Cancelled,
            _ => UsageOutcome::Broken,
        };
        // Log-uniform token counts: most requests are small, a few are large.
        let input: u64 = 10u64.pow(rng.random_range(1..4)) * rng.random_range(1..10);
        let output: u64 = 10u64.pow(rng.random_range(0..3)) * rng.random_range(1..10);
        let cached = if rng.random_ratio(1, 4) { input / 2 } else { 0 };
        let first_token_ms: u64 = rng.random_range(80..2_500);
        let latency_ms = first_token_ms + output * rng.random_range(5..40);
        let cost = Credits::from_micros(
            (i64::try_from(input).unwrap_or(0) * input_price
                + i64::try_from(output).unwrap_or(0) * output_price)
                / 1_000_000,
        );
        let reserved = Credits::from_micros(cost.micros() * 2 + 1_000);
        let event = CreditEvent::ReservationSettled {
            request_id: RequestId::parse(format!("bench-{i}"))?,
            reserved,
            charged: cost,
            balance_after: Credits::from_micros(1_000_000_000),
            reserved_after: Credits::from_micros(0),
            usage: Some(Box::new(UsageRecord {
                model: model.to_string(),
                provider: provider.to_string(),
                api_key,
                input_tokens: input,
                output_tokens: output,
                cached_input_tokens: cached,
                token_source: TokenSource::Provider,
                latency_ms,
                first_token_ms: (outcome == UsageOutcome::Completed).then_some(first_token_ms),
                cost,
                price_version: format!("{model}@bench"),
                outcome,
            })),
            after_expiry: None,
        };
        Ok((account, at, event))
    }
}

/// Publish the history to `HUB_EVENTS` as the relay does: one message per event, on its
/// aggregate's subject, with its `Nats-Msg-Id`.
async fn publish(
    js: &async_nats::jetstream::Context,
    topology: &hub_nats::Topology,
    history: &History,
    args: &AnalyticsArgs,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(11);
    let mut sequences = vec![0u64; history.accounts.len()];
    let mut acks = Vec::with_capacity(PUBLISH_WAVE);
    for i in 0..args.events {
        let (account, at, event) = history.event(&mut rng, i, args.events)?;
        sequences[account] += 1;
        let aggregate_id = history.accounts[account].to_string();
        let envelope = EventEnvelope {
            aggregate_type: "CreditAccount".into(),
            aggregate_id: aggregate_id.clone(),
            sequence: sequences[account],
            event_type: "ReservationSettled".into(),
            event_version: "1".into(),
            // As the relay publishes: the text the event store holds.
            payload: RawJson::from_text(serde_json::to_string(&event)?)?,
            metadata: RawJson::from_text(r#"{"actor":"bench"}"#.to_owned())?,
            recorded_at: at,
        };
        let subject = topology.event_subject("CreditAccount", &aggregate_id)?;
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(serde_json::to_vec(&envelope)?.into())
            .message_id(envelope.message_id());
        acks.push(js.send_publish(subject, message).await?.into_future());
        if acks.len() == PUBLISH_WAVE {
            for ack in futures::future::join_all(acks.drain(..)).await {
                ack?;
            }
        }
        if (i + 1) % 100_000 == 0 {
            progress(&format!("published {} events", i + 1));
        }
    }
    for ack in futures::future::join_all(acks.drain(..)).await {
        ack?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Over HTTP
// ---------------------------------------------------------------------------------------

struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    fn get(&self, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(query)
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The summary shapes asked each round: a name, and its query (from and to added).
fn shapes(history: &History, rng: &mut StdRng) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let user = history.accounts[rng.random_range(0..history.accounts.len())].to_string();
    let week_ago = time(history.to - TimeDelta::days(7));
    let whole = |mut extra: Vec<(&'static str, String)>| {
        extra.push(("from", time(history.from)));
        extra.push(("to", time(history.to)));
        extra
    };
    vec![
        ("totals, whole range", whole(vec![])),
        ("day", whole(vec![("group_by", "day".into())])),
        (TARGET_SHAPE, whole(vec![("group_by", "day,model".into())])),
        (
            "hour, last 7 days",
            vec![
                ("group_by", "hour".into()),
                ("from", week_ago),
                ("to", time(history.to)),
            ],
        ),
        (
            "week × provider",
            whole(vec![("group_by", "week,provider".into())]),
        ),
        (
            "model × provider",
            whole(vec![("group_by", "model,provider".into())]),
        ),
        (
            "day, one user",
            whole(vec![("group_by", "day".into()), ("user_id", user.clone())]),
        ),
        (
            "api_key × model, one user",
            whole(vec![
                ("group_by", "api_key,model".into()),
                ("user_id", user),
            ]),
        ),
        (
            "day, one model",
            whole(vec![
                ("group_by", "day".into()),
                ("model", "claude-sonnet".into()),
            ]),
        ),
        (
            "user (every account)",
            whole(vec![("group_by", "user".into())]),
        ),
    ]
}

async fn summaries(
    api: &Api,
    history: &History,
    args: &AnalyticsArgs,
) -> anyhow::Result<Summaries> {
    let mut rng = StdRng::seed_from_u64(13);
    let mut by_shape: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut groups: BTreeMap<&'static str, usize> = BTreeMap::new();
    // One unrecorded round first: connections opened, plans and pages cached.
    for round in 0..=args.summary_rounds {
        for (name, query) in shapes(history, &mut rng) {
            let started = Instant::now();
            let response = api.get("/api/usage/summary", &query).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            anyhow::ensure!(
                status.is_success(),
                "summary {name} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            if round == 0 {
                let value: serde_json::Value = serde_json::from_slice(&body)?;
                groups.insert(
                    name,
                    value["series"].as_array().map_or(0, std::vec::Vec::len),
                );
                continue;
            }
            by_shape
                .entry(name)
                .or_insert(Histogram::new_with_bounds(1, 60_000_000, 3)?)
                .record(micros.max(1))?;
            all.record(micros.max(1))?;
        }
    }
    progress(&format!(
        "summaries: p50 {:.1} ms, p95 {:.1} ms over {} requests",
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.95)),
        all.len()
    ));
    Ok(Summaries {
        requests: all.len(),
        p50_ms: ms(all.value_at_quantile(0.5)),
        p95_ms: ms(all.value_at_quantile(0.95)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        shapes: by_shape
            .iter()
            .map(|(name, h)| Shape {
                name,
                series: groups.get(name).copied().unwrap_or(0),
                p50_ms: ms(h.value_at_quantile(0.5)),
                p95_ms: ms(h.value_at_quantile(0.95)),
                max_ms: ms(h.max()),
            })
            .collect(),
    })
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

/// Resident memory of this process, in MB.
fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1_024.0)
}

/// Samples this process's resident memory until dropped; the peak seen.
struct RssWatch {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start() -> RssWatch {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let peak_kb = Arc::clone(&peak_kb);
            let stop = Arc::clone(&stop);
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if let Some(mb) = rss_mb() {
                        peak_kb.fetch_max((mb * 1_024.0) as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        RssWatch {
            peak_kb,
            stop,
            task,
        }
    }

    async fn peak_mb(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1_024.0
    }
}

/// Stream a response's body, counting its lines, without keeping it.
async fn count_lines(response: reqwest::Response) -> anyhow::Result<(u64, u64)> {
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let mut response = response;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok((lines, bytes))
}

async fn export(
    api: &Api,
    history: &History,
    format: &'static str,
    expected: u64,
) -> anyhow::Result<Export> {
    let rss_before_mb = rss_mb().unwrap_or(0.0);
    let watch = RssWatch::start();
    let started = Instant::now();
    let response = api
        .get(
            "/api/usage/export",
            &[
                ("format", format.to_string()),
                ("from", time(history.from - TimeDelta::minutes(1))),
                ("to", time(history.to + TimeDelta::minutes(1))),
            ],
        )
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "the {format} export answered {}",
        response.status()
    );
    let (lines, bytes) = count_lines(response).await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak = watch.peak_mb().await;
    // CSV has a header row.
    let rows = if format == "csv" {
        lines.saturating_sub(1)
    } else {
        lines
    };
    anyhow::ensure!(
        rows == expected,
        "the {format} export had {rows} rows for {expected} records"
    );
    progress(&format!(
        "export {format}: {rows} rows in {seconds:.1} s ({:.0} rows/s), rss {rss_before_mb:.0} → peak {peak:.0} MB",
        rows as f64 / seconds
    ));
    Ok(Export {
        format,
        rows,
        mb: bytes as f64 / 1_048_576.0,
        seconds,
        rows_per_s: rows as f64 / seconds,
        rss_before_mb,
        rss_peak_mb: peak,
        rss_growth_mb: (peak - rss_before_mb).max(0.0),
    })
}

async fn events(
    api: &Api,
    published_from: DateTime<Utc>,
    expected: u64,
) -> anyhow::Result<EventsStream> {
    let started = Instant::now();
    let response = api
        .get(
            "/api/analytics/events",
            &[
                ("from", time(published_from)),
                ("to", time(Utc::now() + TimeDelta::minutes(1))),
            ],
        )
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "the events stream answered {}",
        response.status()
    );
    let (lines, bytes) = count_lines(response).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        lines == expected,
        "the events stream had {lines} lines for {expected} events"
    );
    progress(&format!(
        "events: {lines} in {seconds:.1} s ({:.0}/s)",
        lines as f64 / seconds
    ));
    Ok(EventsStream {
        events: lines,
        mb: bytes as f64 / 1_048_576.0,
        seconds,
        events_per_s: lines as f64 / seconds,
    })
}

// ---------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
struct Report {
    events: u64,
    accounts: usize,
    days: i64,
    cores: usize,
    publish_per_s: f64,
    projection: Projection,
    summaries: Summaries,
    exports: Vec<Export>,
    events_stream: EventsStream,
}

#[derive(Debug, Serialize)]
struct Projection {
    events: u64,
    seconds: f64,
    events_per_s: f64,
    usage_records: i64,
    rollup_rows: i64,
    tables_mb: f64,
}

#[derive(Debug, Serialize)]
struct Summaries {
    requests: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    shapes: Vec<Shape>,
}

#[derive(Debug, Serialize)]
struct Shape {
    name: &'static str,
    /// Series in the answer (groups × time buckets).
    series: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct Export {
    format: &'static str,
    rows: u64,
    mb: f64,
    seconds: f64,
    rows_per_s: f64,
    rss_before_mb: f64,
    rss_peak_mb: f64,
    rss_growth_mb: f64,
}

#[derive(Debug, Serialize)]
struct EventsStream {
    events: u64,
    mb: f64,
    seconds: f64,
    events_per_s: f64,
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "\n{} settlements over {} days, {} accounts, {} cores; published at {:.0}/s\n\n",
            self.events, self.days, self.accounts, self.cores, self.publish_per_s
        ));
        out.push_str("| measure | result | target | |\n|---|---|---|---|\n");
        let p = &self.projection;
        out.push_str(&format!(
            "| projection (replay of usage) | {:.0} events/s ({:.1} s; {} records, {} rollup rows, {:.0} MB) | ≥ {:.0}/s | {} |\n",
            p.events_per_s,
            p.seconds,
            p.usage_records,
            p.rollup_rows,
            p.tables_mb,
            TARGET_PROJECTION_EVENTS_PER_S,
            verdict(p.events_per_s >= TARGET_PROJECTION_EVENTS_PER_S)
        ));
        let s = &self.summaries;
        // The issue's target names one shape: by day × model over the whole range.
        if let Some(target) = s.shapes.iter().find(|shape| shape.name == TARGET_SHAPE) {
            out.push_str(&format!(
                "| summary by {TARGET_SHAPE}, 30 days | p50 {:.1} / p95 {:.1} ms | p95 ≤ {:.0} ms | {} |\n",
                target.p50_ms,
                target.p95_ms,
                TARGET_SUMMARY_P95_MS,
                verdict(target.p95_ms <= TARGET_SUMMARY_P95_MS)
            ));
        }
        out.push_str(&format!(
            "| summary, every shape below | p50 {:.1} / p95 {:.1} / p99 {:.1} ms ({} requests) | | |\n",
            s.p50_ms, s.p95_ms, s.p99_ms, s.requests,
        ));
        for e in &self.exports {
            out.push_str(&format!(
                "| export {} | {:.0} rows/s ({} rows, {:.0} MB in {:.1} s); RSS +{:.1} MB | ≥ {:.0} rows/s, ≤ {:.0} MB | {} |\n",
                e.format,
                e.rows_per_s,
                e.rows,
                e.mb,
                e.seconds,
                e.rss_growth_mb,
                TARGET_EXPORT_ROWS_PER_S,
                TARGET_EXPORT_RSS_GROWTH_MB,
                verdict(
                    e.rows_per_s >= TARGET_EXPORT_ROWS_PER_S
                        && e.rss_growth_mb <= TARGET_EXPORT_RSS_GROWTH_MB
                )
            ));
        }
        let v = &self.events_stream;
        out.push_str(&format!(
            "| events stream | {:.0} events/s ({} events, {:.0} MB in {:.1} s) | ≥ {:.0}/s | {} |\n",
            v.events_per_s,
            v.events,
            v.mb,
            v.seconds,
            TARGET_EVENTS_PER_S,
            verdict(v.events_per_s >= TARGET_EVENTS_PER_S)
        ));
        out.push_str(
            "\n| summary shape | series | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|\n",
        );
        for shape in &s.shapes {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
                shape.name, shape.series, shape.p50_ms, shape.p95_ms, shape.max_ms
            ));
        }
        out
    }
}
