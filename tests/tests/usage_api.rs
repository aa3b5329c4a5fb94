//! Usage analytics over the real app: the listing, the summaries from the hourly rollups,
//! the streamed export and the request lookup, with who may read whose usage.
//!
//! Usage is produced by real credit commands (`ReserveCredits` then `SettleUsage` on the
//! hub's credit accounts, as a worker settles) and reaches the read models through the
//! relay, JetStream and the projector; one test goes through real inference (mock provider).

use chrono::{DateTime, Duration as Span, Utc};
use hub_app::analytics::export::CSV_HEADER;
use hub_app::queries::usage::UsageRecord;
use hub_domain::{
    AccountId, ApiKeyId, CreditCommand, Credits, RequestId, TokenSource, UsageOutcome,
};
use hub_projections::rollups::{bucket_of, bucket_range};
use hub_projections::ProjectionKind;
use hub_tests::{eventually, spawn_app, TestApp};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// A model name that needs CSV quoting: a quote, a comma and a line break.
const AWKWARD_MODEL: &str = "acme \"turbo\", v2\nbeta";
const MODELS: [&str; 3] = ["mock-1", "gpt-4o-mini", AWKWARD_MODEL];
const PROVIDERS: [&str; 2] = ["mock", "openai"];

/// One settled request of a generated workload.
struct Settled {
    user: Uuid,
    key: Option<Uuid>,
    request: String,
}

/// Grant `user` plenty of credits, through the API.
async fn fund(app: &TestApp, user: Uuid) {
    let admin = app.token(Uuid::new_v4(), hub_domain::Role::Admin);
    let granted = app
        .grant(&admin, user, 1_000_000_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
}

/// Reserve and settle `count` requests on `user`'s account with varied models, providers,
/// outcomes, tokens and latencies (a seeded generator), some through `key`.
async fn settle_workload(
    app: &TestApp,
    user: Uuid,
    key: Option<Uuid>,
    count: usize,
    seed: u64,
) -> Vec<Settled> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut settled = Vec::with_capacity(count);
    for i in 0..count {
        let request = format!("req_{seed}_{i}");
        let input = rng.random_range(1..4_000u64);
        let output = rng.random_range(0..2_000u64);
        let cost = i64::try_from(input * 3 + output * 15).expect("small");
        // One request in eight reserved too little: its charge is capped below its cost.
        let reserve = if i % 8 == 0 {
            cost / 2 + 1
        } else {
            cost + 1_000
        };
        let latency = 2f64.powf(rng.random_range(0.0..18.0)) as u64;
        let outcome = match rng.random_range(0..10) {
            0 => UsageOutcome::Broken,
            1 => UsageOutcome::Cancelled,
            _ => UsageOutcome::Completed,
        };
        let ttft = (rng.random_range(0..6) > 0).then(|| latency * rng.random_range(1..=10) / 10);
        let with_key = key.filter(|_| rng.random_bool(0.5));
        let usage = hub_domain::UsageRecord {
            model: MODELS[rng.random_range(0..MODELS.len())].to_string(),
            provider: PROVIDERS[rng.random_range(0..PROVIDERS.len())].to_string(),
            api_key: with_key.map(ApiKeyId),
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: input / 4,
            token_source: TokenSource::Provider,
            latency_ms: latency,
            first_token_ms: ttft,
            cost: Credits::from_micros(cost),
            price_version: "test-v1".to_string(),
            outcome,
        };
        let request_id = RequestId::parse(&request).expect("a request id");
        let now = Utc::now();
        let credits = &app.state.credits;
        credits
            .execute(
                AccountId(user),
                CreditCommand::ReserveCredits {
                    request_id: request_id.clone(),
                    amount: Credits::from_micros(reserve),
                    expires_at: now + Span::seconds(600),
                    now,
                    key: None,
                },
                "test",
            )
            .await
            .expect("reserved");
        credits
            .execute(
                AccountId(user),
                CreditCommand::SettleUsage {
                    request_id,
                    usage: Box::new(usage),
                },
                "test",
            )
            .await
            .expect("settled");
        settled.push(Settled {
            user,
            key: with_key,
            request,
        });
    }
    settled
}

async fn wait_for_usage_records(app: &TestApp, count: i64) {
    eventually(Duration::from_secs(30), "the usage projection", || async {
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (seen >= count).then_some(())
    })
    .await;
}

async fn get_json(app: &TestApp, path: &str, query: &[(&str, &str)], token: &str) -> Value {
    let response = get(app, path, query, token).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path} {query:?}");
    response.json().await.expect("json")
}

async fn get(app: &TestApp, path: &str, query: &[(&str, &str)], token: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
}

/// Every record the listing shows, paging with a small limit, newest first.
async fn list_all(app: &TestApp, query: &[(&str, &str)], token: &str) -> Vec<UsageRecord> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", "7"));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let page = get_json(app, "/api/usage", &q, token).await;
        let data: Vec<UsageRecord> =
            serde_json::from_value(page["data"].clone()).expect("usage records");
        all.extend(data);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
}

/// The SQL key of a group over `usage_records`, matching [`series_key`].
fn group_sql(group_by: &str) -> String {
    let parts: Vec<String> = group_by
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            "hour" | "day" | "week" | "month" => {
                format!("extract(epoch FROM date_trunc('{p}', recorded_at, 'UTC'))::int8::text")
            }
            "user" => "account_id::text".to_string(),
            "api_key" => "coalesce(api_key_id::text, 'none')".to_string(),
            other => other.to_string(),
        })
        .collect();
    match parts.is_empty() {
        true => "''".to_string(),
        false => format!("concat_ws('|', {})", parts.join(", ")),
    }
}

/// The key of a summary group, matching [`group_sql`].
fn series_key(group_by: &str, entry: &Value) -> String {
    group_by
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            "hour" | "day" | "week" | "month" => entry["period"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                .expect("a period")
                .timestamp()
                .to_string(),
            "user" => entry["user_id"].as_str().expect("user_id").to_string(),
            "api_key" => entry["api_key_id"].as_str().unwrap_or("none").to_string(),
            other => entry[other].as_str().expect("a dimension").to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

const METRICS: [&str; 7] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_micros",
    "charged_micros",
    "errors",
];

fn metrics_of(entry: &Value) -> Vec<i64> {
    METRICS
        .iter()
        .map(|m| entry[m].as_i64().expect("a metric"))
        .collect()
}

/// The filters a test case applies, in SQL and as query parameters.
#[derive(Default, Clone)]
struct Case {
    model: Option<&'static str>,
    user: Option<Uuid>,
    outcome: Option<&'static str>,
    /// A range from this long ago, off any hour or day boundary, to an hour from now: every
    /// record is inside it, read partly from daily and partly from hourly rollups.
    ragged_range: Option<chrono::TimeDelta>,
}

impl Case {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(m) = self.model {
            q.push(("model", m.to_string()));
        }
        if let Some(u) = self.user {
            q.push(("user_id", u.to_string()));
        }
        if let Some(o) = self.outcome {
            q.push(("outcome", o.to_string()));
        }
        if let Some(ago) = self.ragged_range {
            let now = chrono::Utc::now();
            let at = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            q.push(("from", at(now - ago - chrono::TimeDelta::minutes(17))));
            q.push(("to", at(now + chrono::TimeDelta::hours(1))));
        }
        q
    }
}

const SQL_FILTER: &str =
    "($1::text IS NULL OR model = $1) AND ($2::uuid IS NULL OR account_id = $2)
     AND ($3::text IS NULL OR outcome = $3)";

/// What `usage_records` adds up to per group, straight from the rows.
async fn exact_groups(app: &TestApp, group_by: &str, case: &Case) -> BTreeMap<String, Vec<i64>> {
    let rows = sqlx::query(&format!(
        "SELECT {} AS key, count(*)::int8, sum(input_tokens)::int8, sum(output_tokens)::int8,
                sum(cached_input_tokens)::int8, sum(cost_micros)::int8,
                sum(charged_micros)::int8, count(*) FILTER (WHERE outcome = 'broken')::int8
           FROM usage_records WHERE {SQL_FILTER} GROUP BY 1",
        group_sql(group_by)
    ))
    .bind(case.model)
    .bind(case.user)
    .bind(case.outcome)
    .fetch_all(&app.pool)
    .await
    .expect("exact sums");
    rows.iter()
        .map(|r| {
            let key: String = r.get(0);
            (key, (1..=7).map(|i| r.get::<i64, _>(i)).collect())
        })
        .collect()
}

/// The exact p50/p95/p99 of a column over the rows of `case` (and `model`, if any).
async fn exact_percentiles(app: &TestApp, column: &str, case: &Case) -> Vec<i64> {
    sqlx::query_scalar(&format!(
        "SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {column})
           FROM usage_records WHERE {SQL_FILTER} AND {column} IS NOT NULL"
    ))
    .bind(case.model)
    .bind(case.user)
    .bind(case.outcome)
    .fetch_one(&app.pool)
    .await
    .expect("exact percentiles")
}

/// A reported percentile (a bucket's upper bound) is within one bucket of the exact one.
fn assert_within_a_bucket(reported: &Value, exact: &[i64], what: &str) {
    for (name, exact) in ["p50", "p95", "p99"].iter().zip(exact) {
        let reported = reported[name].as_i64().expect("a percentile");
        // The bucket the report names: the one whose upper bound it is.
        let named = bucket_of(reported - 1);
        let actual = bucket_of(*exact);
        assert!(
            named.abs_diff(actual) <= 1,
            "{what} {name}: reported {reported} (bucket {named}), exact {exact} (bucket {actual}, {:?})",
            bucket_range(actual)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_totals_and_series_equal_the_usage_records_for_every_grouping_and_filter() {
    let app = spawn_app().await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut settled = Vec::new();
    for (i, user) in users.iter().enumerate() {
        fund(&app, *user).await;
        let key = Some(Uuid::new_v4());
        settled.extend(settle_workload(&app, *user, key, 40, i as u64 + 1).await);
    }
    wait_for_usage_records(&app, settled.len() as i64).await;
    let analyst = app.token(Uuid::new_v4(), hub_domain::Role::Analyst);

    let groupings = [
        "",
        "hour",
        "day",
        "week",
        "month",
        "user",
        "api_key",
        "model",
        "provider",
        "day,model",
        "hour,provider",
        "user,api_key,model,provider",
    ];
    let cases = [
        Case::default(),
        Case {
            model: Some(AWKWARD_MODEL),
            ..Case::default()
        },
        Case {
            user: Some(users[1]),
            outcome: Some("completed"),
            ..Case::default()
        },
        Case {
            ragged_range: Some(chrono::TimeDelta::days(3)),
            ..Case::default()
        },
    ];
    for case in &cases {
        for group_by in groupings {
            let mut query = case.query();
            query.push(("group_by", group_by.to_string()));
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let summary = get_json(&app, "/api/usage/summary", &q, &analyst).await;
            let what = format!("group_by={group_by:?} {q:?}");
            let exact = exact_groups(&app, group_by, case).await;
            let shown: BTreeMap<String, Vec<i64>> = summary["series"]
                .as_array()
                .expect("a series")
                .iter()
                .map(|g| (series_key(group_by, g), metrics_of(g)))
                .collect();
            assert_eq!(shown, exact, "{what}: every group");
            let totals: Vec<i64> = (0..METRICS.len())
                .map(|i| exact.values().map(|m| m[i]).sum())
                .collect();
            assert_eq!(metrics_of(&summary["totals"]), totals, "{what}: totals");
        }
        let query = case.query();
        let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let summary_case = get_json(&app, "/api/usage/summary", &q, &analyst).await;
        let latency = exact_percentiles(&app, "latency_ms", case).await;
        assert_within_a_bucket(&summary_case["totals"]["latency_ms"], &latency, "latency");
        let ttft = exact_percentiles(&app, "first_token_ms", case).await;
        assert_within_a_bucket(&summary_case["totals"]["ttft_ms"], &ttft, "ttft");
    }

    // Per model too.
    let by_model = get_json(
        &app,
        "/api/usage/summary",
        &[("group_by", "model")],
        &analyst,
    )
    .await;
    for group in by_model["series"].as_array().expect("a series") {
        let model: &'static str = MODELS
            .iter()
            .find(|m| Some(**m) == group["model"].as_str())
            .expect("a known model");
        let case = Case {
            model: Some(model),
            ..Case::default()
        };
        let latency = exact_percentiles(&app, "latency_ms", &case).await;
        assert_within_a_bucket(&group["latency_ms"], &latency, model);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_replayed_settlement_is_counted_once_in_the_rollups() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    fund(&app, user).await;
    let settled = settle_workload(&app, user, None, 12, 7).await;
    wait_for_usage_records(&app, settled.len() as i64).await;
    let analyst = app.token(Uuid::new_v4(), hub_domain::Role::Analyst);
    let before = get_json(
        &app,
        "/api/usage/summary",
        &[("group_by", "model")],
        &analyst,
    )
    .await;
    assert_eq!(before["totals"]["requests"], 12);

    // The settlement events again, as a redelivery would bring them.
    let rows = sqlx::query(
        "SELECT aggregate_id, sequence, event_type, event_version, payload::jsonb AS payload,
                metadata::jsonb AS metadata, recorded_at
           FROM events WHERE event_type = 'ReservationSettled' ORDER BY recorded_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("events");
    let envelopes: Vec<(hub_nats::EventEnvelope, u64)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let envelope = hub_nats::EventEnvelope {
                aggregate_type: "CreditAccount".into(),
                aggregate_id: r.get("aggregate_id"),
                sequence: u64::try_from(r.get::<i64, _>("sequence")).expect("positive"),
                event_type: r.get("event_type"),
                event_version: r.get("event_version"),
                payload: hub_nats::RawJson::from_value(&r.get("payload")),
                metadata: hub_nats::RawJson::from_value(&r.get("metadata")),
                recorded_at: r.get("recorded_at"),
            };
            (envelope, 1_000_000 + i as u64)
        })
        .collect();
    assert_eq!(envelopes.len(), 12);
    let mut tx = app.pool.begin().await.expect("tx");
    ProjectionKind::Usage
        .apply(&mut tx, envelopes.clone())
        .await
        .expect("applied again");
    tx.commit().await.expect("commit");
    let again = get_json(
        &app,
        "/api/usage/summary",
        &[("group_by", "model")],
        &analyst,
    )
    .await;
    assert_eq!(again, before, "a redelivered settlement adds nothing");

    // A rebuild loads the tables without their secondary indexes and builds them again at
    // the end. One that died on the way left an index dropped and written down: the next
    // rebuild builds it.
    let indexes = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT indexdef FROM pg_indexes
              WHERE schemaname = 'public'
                AND tablename IN ('usage_records', 'usage_rollups',
                                  'usage_rollups_global', 'usage_rollups_global_daily')
              ORDER BY indexdef",
        )
        .fetch_all(&pool)
        .await
        .expect("indexes")
    };
    let live_indexes = indexes(app.pool.clone()).await;
    let by_key = live_indexes
        .iter()
        .find(|d| d.contains("usage_records_by_api_key"))
        .expect("the index by API key")
        .clone();
    sqlx::query(
        "INSERT INTO projection_index_stash (projection, index_name, definition)
         VALUES ('usage', 'public.usage_records_by_api_key', $1)",
    )
    .bind(&by_key)
    .execute(&app.pool)
    .await
    .expect("stashed");
    sqlx::query("DROP INDEX usage_records_by_api_key")
        .execute(&app.pool)
        .await
        .expect("dropped");

    let stats = rebuild_usage(&app).await;
    assert!(stats.messages >= 12);
    let replayed = get_json(
        &app,
        "/api/usage/summary",
        &[("group_by", "model")],
        &analyst,
    )
    .await;
    assert_eq!(replayed, before, "a replay rebuilds the same rollups");
    assert_eq!(
        indexes(app.pool.clone()).await,
        live_indexes,
        "every index is there again after the rebuild"
    );
    let stashed: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_index_stash")
        .fetch_one(&app.pool)
        .await
        .expect("stash");
    assert_eq!(stashed, 0, "nothing is left set aside");
}

/// Parse RFC 4180 CSV: quoted fields may hold commas, doubled quotes and line breaks.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "the CSV ends with CRLF");
    rows
}

fn record_from_csv(header: &[String], fields: &[String]) -> UsageRecord {
    let object: serde_json::Map<String, Value> = header
        .iter()
        .zip(fields)
        .map(|(name, value)| {
            let number = value.parse::<i64>().ok();
            let v = match (name.as_str(), number) {
                (_, _) if value.is_empty() => Value::Null,
                ("request_id" | "model" | "provider" | "price_version", _) => json!(value),
                (_, Some(n)) => json!(n),
                _ => json!(value),
            };
            (name.clone(), v)
        })
        .collect();
    serde_json::from_value(Value::Object(object)).expect("a usage record from CSV")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_parses_back_to_exactly_the_rows_as_csv_and_ndjson() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    fund(&app, user).await;
    let settled = settle_workload(&app, user, Some(Uuid::new_v4()), 30, 11).await;
    wait_for_usage_records(&app, settled.len() as i64).await;
    let analyst = app.token(Uuid::new_v4(), hub_domain::Role::Analyst);
    let from = (Utc::now() - Span::hours(2)).to_rfc3339();
    let to = (Utc::now() + Span::hours(1)).to_rfc3339();
    let range = [("from", from.as_str()), ("to", to.as_str())];

    // The listing, paged, newest first, is the reference.
    let mut listed = list_all(&app, &range, &analyst).await;
    assert_eq!(listed.len(), settled.len());
    listed.reverse();

    let ndjson = get(
        &app,
        "/api/usage/export",
        &[range[0], range[1], ("format", "ndjson")],
        &analyst,
    )
    .await;
    assert_eq!(ndjson.status(), StatusCode::OK);
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let text = ndjson.text().await.expect("body");
    let exported: Vec<UsageRecord> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one record per line"))
        .collect();
    assert_eq!(
        exported, listed,
        "NDJSON: the rows of the range, oldest first"
    );

    let csv = get(
        &app,
        "/api/usage/export",
        &[range[0], range[1], ("format", "csv")],
        &analyst,
    )
    .await;
    assert_eq!(csv.status(), StatusCode::OK);
    let rows = parse_csv(&csv.text().await.expect("body"));
    let (header, body) = rows.split_first().expect("a header row");
    assert_eq!(header, &CSV_HEADER.map(String::from));
    let from_csv: Vec<UsageRecord> = body.iter().map(|r| record_from_csv(header, r)).collect();
    assert_eq!(from_csv, listed, "CSV: the rows of the range, oldest first");
    assert!(
        from_csv.iter().any(|r| r.model == AWKWARD_MODEL),
        "a model with a quote, a comma and a line break comes back whole"
    );

    // An empty range: a header only, an empty body, an empty summary and listing.
    let empty = [("from", "2001-01-01"), ("to", "2001-01-02")];
    let csv = get(
        &app,
        "/api/usage/export",
        &[empty[0], empty[1], ("format", "csv")],
        &analyst,
    )
    .await
    .text()
    .await
    .expect("body");
    assert_eq!(csv, format!("{}\r\n", CSV_HEADER.join(",")));
    let ndjson = get(
        &app,
        "/api/usage/export",
        &[empty[0], empty[1], ("format", "ndjson")],
        &analyst,
    )
    .await
    .text()
    .await
    .expect("body");
    assert_eq!(ndjson, "");
    let summary = get_json(
        &app,
        "/api/usage/summary",
        &[empty[0], empty[1], ("group_by", "day")],
        &analyst,
    )
    .await;
    assert_eq!(summary["totals"]["requests"], 0);
    assert_eq!(summary["totals"]["latency_ms"]["p50"], Value::Null);
    assert_eq!(summary["series"], json!([]));
    assert!(list_all(&app, &empty, &analyst).await.is_empty());
}

async fn register_with_key(app: &TestApp, email: &str) -> (Uuid, String, Uuid) {
    let registered = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": email, "password": "correct horse 1"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let user: Uuid = registered.json::<Value>().await.expect("json")["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id");
    let created = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(app.token(user, hub_domain::Role::User))
        .json(&json!({"name": "ci", "scopes": ["inference", "read"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    let key = created["key"].as_str().expect("the key").to_string();
    let key_id = created["id"]
        .as_str()
        .and_then(|i| i.parse().ok())
        .expect("id");
    (user, key, key_id)
}

fn owners(records: &[UsageRecord]) -> std::collections::BTreeSet<Uuid> {
    records.iter().map(|r| r.user_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_only_their_usage_an_analyst_everyones_and_a_key_its_owners() {
    let app = spawn_app().await;
    let (alice, alice_key, alice_key_id) = register_with_key(&app, "alice@example.com").await;
    let bob = Uuid::new_v4();
    fund(&app, alice).await;
    fund(&app, bob).await;
    let mut settled = settle_workload(&app, alice, Some(alice_key_id), 10, 21).await;
    settled.extend(settle_workload(&app, bob, None, 6, 22).await);
    wait_for_usage_records(&app, settled.len() as i64).await;
    let alice_token = app.token(alice, hub_domain::Role::User);
    let bob_token = app.token(bob, hub_domain::Role::User);

    for (who, token) in [("alice", &alice_token), ("alice's key", &alice_key)] {
        let seen = list_all(&app, &[], token).await;
        assert_eq!(seen.len(), 10, "{who} sees alice's 10 requests");
        assert_eq!(
            owners(&seen),
            [alice].into(),
            "{who} sees only alice's rows"
        );
        let summary = get_json(&app, "/api/usage/summary", &[], token).await;
        assert_eq!(summary["totals"]["requests"], 10, "{who}: summary");
        let export = get(&app, "/api/usage/export", &[("format", "ndjson")], token).await;
        assert_eq!(export.text().await.expect("body").lines().count(), 10);
        let other = get(&app, "/api/usage", &[("user_id", &bob.to_string())], token).await;
        assert_eq!(
            other.status(),
            StatusCode::FORBIDDEN,
            "{who} may not name bob"
        );
    }
    let keyed = settled
        .iter()
        .filter(|s| s.key == Some(alice_key_id))
        .count();
    let by_key = list_all(
        &app,
        &[("api_key_id", &alice_key_id.to_string())],
        &alice_key,
    )
    .await;
    assert_eq!(by_key.len(), keyed, "filtered by the key");
    let bobs = list_all(&app, &[], &bob_token).await;
    assert_eq!(owners(&bobs), [bob].into());

    for role in [
        hub_domain::Role::Analyst,
        hub_domain::Role::Admin,
        hub_domain::Role::Auditor,
    ] {
        let token = app.token(Uuid::new_v4(), role);
        let all = list_all(&app, &[], &token).await;
        assert_eq!(all.len(), 16, "{role:?} sees everyone's");
        let bob_only = list_all(&app, &[("user_id", &bob.to_string())], &token).await;
        assert_eq!(owners(&bob_only), [bob].into(), "{role:?} narrows to bob");
    }

    // One request's story: alice's own, not bob's to read, an analyst's to read.
    let request = &settled
        .iter()
        .find(|s| s.user == alice)
        .expect("one")
        .request;
    let path = format!("/api/usage/requests/{request}");
    let story = get_json(&app, &path, &[], &alice_token).await;
    assert_eq!(story["usage"]["request_id"], json!(request));
    assert_eq!(story["ledger"].as_array().map(Vec::len), Some(1));
    assert_eq!(story["ledger"][0]["kind"], "charge");
    let types: Vec<&str> = story["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert_eq!(types, ["CreditsReserved", "ReservationSettled"]);
    let hidden = get(&app, &path, &[], &bob_token).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND, "bob cannot see it");
    let analyst = app.token(Uuid::new_v4(), hub_domain::Role::Analyst);
    assert_eq!(get_json(&app, &path, &[], &analyst).await, story);
}

/// A path, its query, and the error code expected.
type BadQuery<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_filters_are_refused_with_400_and_say_what_is_wrong() {
    let app = spawn_app().await;
    let user = app.token(Uuid::new_v4(), hub_domain::Role::User);
    let cases: [BadQuery; 9] = [
        ("/api/usage", &[("from", "yesterday")], "invalid_filter"),
        ("/api/usage", &[("to", "2026-13-01")], "invalid_filter"),
        (
            "/api/usage",
            &[("from", "2026-12-02"), ("to", "2026-12-01")],
            "invalid_filter",
        ),
        ("/api/usage", &[("outcome", "failed")], "invalid_filter"),
        ("/api/usage", &[("api_key_id", "k1")], "invalid_filter"),
        ("/api/usage", &[("cursor", "nonsense")], "invalid_cursor"),
        (
            "/api/usage/summary",
            &[("group_by", "day,week")],
            "invalid_group_by",
        ),
        ("/api/usage/export", &[("format", "xml")], "invalid_format"),
        ("/api/usage", &[("colour", "blue")], "invalid_query"),
    ];
    for (path, query, code) in cases {
        let response = get(&app, path, query, &user).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{path} {query:?}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], code, "{path} {query:?}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let unknown = get(&app, "/api/usage/requests/req_nope", &[], &user).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let anonymous = app.get("/api/usage", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

/// Real inference (the mock provider) shows in every usage route. With
/// `AIHUB_USAGE_EXAMPLES=<folder>` the answers are written there (docs/analytics.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_chat_request_is_listed_summarised_exported_and_looked_up() {
    let app = spawn_app().await;
    let (user, key, _) = register_with_key(&app, "ana@example.com").await;
    fund(&app, user).await;
    let token = app.token(user, hub_domain::Role::User);
    for bearer in [&token, &key] {
        let answer = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(bearer)
            .json(&json!({"model": "mock-1", "max_tokens": 16,
                          "messages": [{"role": "user", "content": "Hello, analyst"}]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), StatusCode::OK);
    }
    wait_for_usage_records(&app, 2).await;
    let analyst = app.token(Uuid::new_v4(), hub_domain::Role::Analyst);
    let list = get_json(&app, "/api/usage", &[("limit", "1")], &analyst).await;
    assert_eq!(list["data"][0]["model"], "mock-1");
    assert!(list["next_cursor"].is_string());
    let summary = get_json(
        &app,
        "/api/usage/summary",
        &[("group_by", "day,api_key")],
        &analyst,
    )
    .await;
    assert_eq!(summary["totals"]["requests"], 2);
    assert_eq!(summary["series"].as_array().map(Vec::len), Some(2));
    let csv = get(&app, "/api/usage/export", &[("format", "csv")], &analyst)
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(csv.lines().count(), 3);
    let request = list["data"][0]["request_id"].as_str().expect("an id");
    let story = get_json(&app, &format!("/api/usage/requests/{request}"), &[], &token).await;
    assert_eq!(story["events"].as_array().map(Vec::len), Some(2));

    if let Ok(folder) = std::env::var("AIHUB_USAGE_EXAMPLES") {
        let folder = std::path::PathBuf::from(folder);
        std::fs::create_dir_all(&folder).expect("a folder");
        let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("json");
        std::fs::write(folder.join("list.json"), pretty(&list)).expect("written");
        std::fs::write(folder.join("summary.json"), pretty(&summary)).expect("written");
        std::fs::write(folder.join("export.csv"), &csv).expect("written");
        std::fs::write(folder.join("request.json"), pretty(&story)).expect("written");
        let ndjson = get(&app, "/api/usage/export", &[("format", "ndjson")], &analyst)
            .await
            .text()
            .await
            .expect("body");
        std::fs::write(folder.join("export.ndjson"), ndjson).expect("written");
    }
}

/// Rebuild the `usage` projection from the stream (`aihub replay usage`).
async fn rebuild_usage(app: &TestApp) -> hub_projections::ReplayStats {
    hub_projections::replay(
        &app.pool,
        &app.settings.database.url,
        &app.state.js,
        &app.state.topology,
        ProjectionKind::Usage,
        false,
    )
    .await
    .expect("replay")
}

/// Every row of the three rollup tables, in key order, as JSON text.
async fn rollup_rows(app: &TestApp) -> Vec<String> {
    let mut rows = Vec::new();
    for (table, time) in [
        ("usage_rollups", "hour, account_id, api_key_id"),
        ("usage_rollups_global", "hour"),
        ("usage_rollups_global_daily", "day"),
    ] {
        let sql = format!(
            "SELECT '{table}: ' || row_to_json(r)::text FROM {table} r
              ORDER BY {time}, model, provider, outcome"
        );
        rows.extend(
            sqlx::query_scalar::<_, String>(&sql)
                .fetch_all(&app.pool)
                .await
                .expect("rollups"),
        );
    }
    rows
}

/// Set aside the keys of `usage_records` and `usage_rollups` as a rebuild loading them does
/// (written down, then dropped), and leave them so: a rebuild that died on the way.
async fn drop_usage_keys_as_a_dead_rebuild_would(app: &TestApp) {
    let mut tx = app.pool.begin().await.expect("tx");
    let keys: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT format('public.%I', c.conname), t.relname::text, c.conname::text,
                format('ALTER TABLE public.%I ADD CONSTRAINT %I %s',
                       t.relname, c.conname, pg_get_constraintdef(c.oid))
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
          WHERE t.relname IN ('usage_records', 'usage_rollups') AND c.contype IN ('p', 'u')",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("keys");
    assert_eq!(
        keys.len(),
        2,
        "a primary key and the rollups' key: {keys:?}"
    );
    for (name, table, constraint, definition) in keys {
        sqlx::query(
            "INSERT INTO projection_index_stash (projection, index_name, definition)
             VALUES ('usage', $1, $2)",
        )
        .bind(&name)
        .bind(&definition)
        .execute(&mut *tx)
        .await
        .expect("stashed");
        sqlx::query(&format!("ALTER TABLE {table} DROP CONSTRAINT {constraint}"))
            .execute(&mut *tx)
            .await
            .expect("dropped");
    }
    tx.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_rebuild_loaded_without_keys_are_made_one_before_the_keys_come_back() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    fund(&app, user).await;
    let key = Uuid::new_v4();
    let settled = settle_workload(&app, user, Some(key), 40, 11).await;
    let n = settled.len() as i64;
    wait_for_usage_records(&app, n).await;
    let projected = rollup_rows(&app).await;
    let keys_before: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes
          WHERE tablename IN ('usage_records', 'usage_rollups') ORDER BY indexdef",
    )
    .fetch_all(&app.pool)
    .await
    .expect("indexes");

    // An hour whose requests two batches loaded: its rollup row twice.
    drop_usage_keys_as_a_dead_rebuild_would(&app).await;
    let (hour, account, requests, latency): (DateTime<Utc>, Uuid, i64, Vec<i64>) = sqlx::query_as(
        "SELECT hour, account_id, requests, latency_hist FROM usage_rollups
              ORDER BY hour, api_key_id NULLS FIRST, model, provider, outcome LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .expect("a rollup row");
    sqlx::query(
        "INSERT INTO usage_rollups
         SELECT * FROM usage_rollups
          ORDER BY hour, api_key_id NULLS FIRST, model, provider, outcome LIMIT 1",
    )
    .execute(&app.pool)
    .await
    .expect("the row again");
    hub_projections::finish_rebuild(&app.pool, ProjectionKind::Usage)
        .await
        .expect("finished");
    let merged: Vec<(i64, Vec<i64>)> = sqlx::query_as(
        "SELECT requests, latency_hist FROM usage_rollups
          WHERE hour = $1 AND account_id = $2
          ORDER BY hour, api_key_id NULLS FIRST, model, provider, outcome LIMIT 2",
    )
    .bind(hour)
    .bind(account)
    .fetch_all(&app.pool)
    .await
    .expect("merged");
    let doubled: Vec<i64> = latency
        .chunks(2)
        .flat_map(|pair| [pair[0], pair[1] * 2])
        .collect();
    assert_eq!(
        merged.first(),
        Some(&(requests * 2, doubled)),
        "the two rows became one with both counts"
    );

    // A settlement the stream held twice: its record loaded twice, and counted twice.
    drop_usage_keys_as_a_dead_rebuild_would(&app).await;
    sqlx::query(
        "INSERT INTO usage_records
         SELECT account_id, request_id, api_key_id, model, provider, input_tokens + 1,
                output_tokens, cached_input_tokens, token_source, latency_ms * 3 + 1,
                first_token_ms, cost_micros, charged_micros, price_version, outcome,
                stream_sequence + 1000000, recorded_at
           FROM usage_records ORDER BY stream_sequence LIMIT 3",
    )
    .execute(&app.pool)
    .await
    .expect("repeats");
    hub_projections::finish_rebuild(&app.pool, ProjectionKind::Usage)
        .await
        .expect("finished");
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(records, n, "each request keeps one record");
    assert_eq!(
        rollup_rows(&app).await,
        projected,
        "the rollups derived from the records are those the projector kept, row for row"
    );
    let keys_after: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes
          WHERE tablename IN ('usage_records', 'usage_rollups') ORDER BY indexdef",
    )
    .fetch_all(&app.pool)
    .await
    .expect("indexes");
    assert_eq!(keys_after, keys_before, "the keys are there again");
    let stashed: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_index_stash")
        .fetch_one(&app.pool)
        .await
        .expect("stash");
    assert_eq!(stashed, 0, "nothing is left set aside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_batches_split_an_hour_adds_the_split_rollup_rows_together() {
    // More settlements than one replay batch takes (5,000), all in this hour: the rebuild
    // loads the hour's rollups from two batches, as two rows per key, and must merge them.
    const USERS: usize = 8;
    const EACH: usize = 650;
    let app = spawn_app().await;
    let mut workloads = Vec::new();
    for i in 0..USERS {
        let user = Uuid::new_v4();
        fund(&app, user).await;
        let key = (i % 2 == 0).then(Uuid::new_v4);
        workloads.push(settle_workload(&app, user, key, EACH, 100 + i as u64));
    }
    let settled: usize = futures::future::join_all(workloads)
        .await
        .iter()
        .map(Vec::len)
        .sum();
    assert_eq!(settled, USERS * EACH);
    wait_for_usage_records(&app, settled as i64).await;
    let projected = rollup_rows(&app).await;

    let stats = rebuild_usage(&app).await;
    assert!(stats.messages >= settled as u64);
    assert_eq!(
        rollup_rows(&app).await,
        projected,
        "the rebuilt rollups are those the live projector kept, row for row"
    );
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint
          WHERE conrelid IN ('usage_records'::regclass, 'usage_rollups'::regclass)
            AND contype IN ('p', 'u')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("keys");
    assert_eq!(keys, 2, "both keys are built again");
}

/// `usage_hist_merge` (the SQL the projector's upserts and the bulk load add histograms
/// with) gives what adding the histograms bucket by bucket gives, for histograms empty,
/// missing (NULL), overlapping and disjoint; and `usage_hist_merge_all` over many rows
/// gives their sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_stored_histograms_in_sql_adds_them_bucket_by_bucket() {
    use hub_projections::rollups::{from_sparse, to_sparse, BUCKETS};
    let app = spawn_app().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_4157);
    let random = |rng: &mut rand::rngs::StdRng| {
        let mut dense = [0i64; BUCKETS];
        // From nothing to every bucket filled, counts from 1 to large.
        let filled = rng.random_range(0..=BUCKETS);
        for _ in 0..filled {
            dense[rng.random_range(0..BUCKETS)] += rng.random_range(1..1_000_000);
        }
        dense
    };
    let sparse = |dense: &[i64; BUCKETS]| {
        let mut out = Vec::new();
        to_sparse(dense, &mut out);
        out
    };
    let mut all = [0i64; BUCKETS];
    let mut rows = Vec::new();
    for case in 0..300 {
        let (a, b) = (random(&mut rng), random(&mut rng));
        let mut sum = [0i64; BUCKETS];
        for i in 0..BUCKETS {
            sum[i] = a[i] + b[i];
            all[i] += a[i];
        }
        rows.push(sparse(&a));
        let merged: Vec<i64> = sqlx::query_scalar("SELECT usage_hist_merge($1, $2)")
            .bind(sparse(&a))
            .bind(sparse(&b))
            .fetch_one(&app.pool)
            .await
            .expect("merge");
        assert_eq!(merged, sparse(&sum), "case {case}: {a:?} + {b:?}");
        assert_eq!(from_sparse(&merged).expect("well formed"), sum);
    }
    let (a, none) = (sparse(&random(&mut rng)), None::<Vec<i64>>);
    for (x, y) in [
        (Some(a.clone()), none.clone()),
        (none.clone(), Some(a.clone())),
    ] {
        let merged: Vec<i64> = sqlx::query_scalar("SELECT usage_hist_merge($1, $2)")
            .bind(x)
            .bind(y)
            .fetch_one(&app.pool)
            .await
            .expect("merge with NULL");
        assert_eq!(merged, a, "NULL is an empty histogram");
    }
    let empty: Vec<i64> = sqlx::query_scalar("SELECT usage_hist_merge('{}', '{}')")
        .fetch_one(&app.pool)
        .await
        .expect("merge of empties");
    assert!(empty.is_empty());
    let merged_all: Vec<i64> =
        sqlx::query_scalar("SELECT usage_hist_merge_all(h) FROM UNNEST($1::text[]) AS t(s), LATERAL (SELECT s::bigint[] AS h) AS x")
            .bind(
                rows.iter()
                    .map(|r| format!("{{{}}}", r.iter().map(i64::to_string).collect::<Vec<_>>().join(",")))
                    .collect::<Vec<_>>(),
            )
            .fetch_one(&app.pool)
            .await
            .expect("aggregate");
    assert_eq!(merged_all, sparse(&all));
    app.stop().await;
}
