//! Point-in-time replay (`aihub replay <projection> --until --into`) and re-pricing
//! (`aihub usage reprice`, `POST /api/usage/reprice`) over the real app.
//!
//! Credit events come from real commands on the hub's credit accounts (a grant through the
//! API; reservations and settlements as a worker makes them) and reach the read models
//! through the relay, JetStream and the live projector, which keeps running throughout.

use chrono::{DateTime, Duration as Span, Utc};
use hub_domain::{AccountId, CreditCommand, Credits, RequestId, TokenSource, TokenUsage};
use hub_projections::{PointInTime, PointInTimeError, ProjectionKind, SchemaName};
use hub_tests::{eventually, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// The tables a point-in-time replay of balances, ledger and usage builds.
const TABLES: [&str; 5] = [
    "balances",
    "active_reservations",
    "ledger",
    "usage_records",
    "usage_rollups",
];

/// Grant `user` plenty of credits, through the API.
async fn fund(app: &TestApp, user: Uuid, key: &str) {
    let admin = app.token(Uuid::new_v4(), hub_domain::Role::Admin);
    let granted = app.grant(&admin, user, 1_000_000_000_000, key).await;
    assert_eq!(granted.status(), StatusCode::CREATED);
}

/// Reserve credits for `request` on `user`'s account, as the API does before a chat.
async fn reserve(app: &TestApp, user: Uuid, request: &str) {
    let now = Utc::now();
    app.state
        .credits
        .execute(
            AccountId(user),
            CreditCommand::ReserveCredits {
                request_id: RequestId::parse(request).expect("a request id"),
                amount: Credits::from_micros(1_000_000),
                expires_at: now + Span::seconds(600),
                now,
                key: None,
            },
            "test",
        )
        .await
        .expect("reserved");
}

/// Settle `request` as a worker does, for `tokens` of `mock-1` priced by the live table.
async fn settle(app: &TestApp, user: Uuid, request: &str, tokens: TokenUsage) {
    let price = app.settings.models.models[0].price.price();
    let usage = hub_domain::UsageRecord {
        model: "mock-1".to_string(),
        provider: "mock".to_string(),
        api_key: None,
        input_tokens: tokens.input_tokens,
        output_tokens: tokens.output_tokens,
        cached_input_tokens: tokens.cached_input_tokens,
        token_source: TokenSource::Provider,
        latency_ms: 40 + tokens.output_tokens,
        first_token_ms: Some(12),
        cost: price.cost(&tokens).expect("a cost"),
        price_version: "1000000/2000000/500000".to_string(),
        outcome: hub_domain::UsageOutcome::Completed,
    };
    app.state
        .credits
        .execute(
            AccountId(user),
            CreditCommand::SettleUsage {
                request_id: RequestId::parse(request).expect("a request id"),
                usage: Box::new(usage),
            },
            "test",
        )
        .await
        .expect("settled");
}

/// Reserve and settle `count` requests `req_<tag>_<i>` with varied token counts.
async fn settle_requests(app: &TestApp, user: Uuid, tag: &str, count: u64) {
    for i in 0..count {
        let request = format!("req_{tag}_{i}");
        reserve(app, user, &request).await;
        let tokens = TokenUsage {
            input_tokens: 100 + 37 * i,
            output_tokens: 20 + 11 * i,
            cached_input_tokens: 9 * i,
            reasoning_tokens: 0,
        };
        settle(app, user, &request, tokens).await;
    }
}

/// Wait until the live projector has applied every credit event `user`'s account has:
/// its balance shows the last one, and the ledger and usage tables hold the expected rows.
async fn wait_projected(app: &TestApp, user: Uuid, ledger_rows: i64, usage_rows: i64) {
    eventually(
        Duration::from_secs(30),
        "the credit projections",
        || async {
            let last: i64 =
                sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_id = $1")
                    .bind(user.to_string())
                    .fetch_one(&app.pool)
                    .await
                    .ok()?;
            let version: i64 =
                sqlx::query_scalar("SELECT version FROM balances WHERE account_id = $1")
                    .bind(user)
                    .fetch_optional(&app.pool)
                    .await
                    .ok()??;
            let ledger: i64 =
                sqlx::query_scalar("SELECT count(*) FROM ledger WHERE account_id = $1")
                    .bind(user)
                    .fetch_one(&app.pool)
                    .await
                    .ok()?;
            let usage: i64 =
                sqlx::query_scalar("SELECT count(*) FROM usage_records WHERE account_id = $1")
                    .bind(user)
                    .fetch_one(&app.pool)
                    .await
                    .ok()?;
            (version == last && ledger == ledger_rows && usage == usage_rows).then_some(())
        },
    )
    .await;
}

/// Every row of `schema.table`, as canonical JSON text, sorted.
async fn rows(app: &TestApp, schema: &str, table: &str) -> Vec<String> {
    // Both names are fixed in this file.
    sqlx::query_scalar(&format!(
        "SELECT to_jsonb(t)::text AS row FROM \"{schema}\".\"{table}\" t ORDER BY row"
    ))
    .fetch_all(&app.pool)
    .await
    .expect("the rows")
}

/// The live read models of [`TABLES`], table by table.
async fn live_tables(app: &TestApp) -> BTreeMap<&'static str, Vec<String>> {
    let mut tables = BTreeMap::new();
    for table in TABLES {
        tables.insert(table, rows(app, "public", table).await);
    }
    tables
}

async fn checkpoints(app: &TestApp) -> Vec<(String, i64, bool)> {
    sqlx::query_as(
        "SELECT projection, stream_sequence, paused FROM projection_checkpoints ORDER BY projection",
    )
    .fetch_all(&app.pool)
    .await
    .expect("the checkpoints")
}

async fn replay_until(
    app: &TestApp,
    kind: ProjectionKind,
    until: DateTime<Utc>,
    into: &str,
    replace: bool,
) -> Result<hub_projections::ReplayStats, PointInTimeError> {
    let request = PointInTime {
        kind,
        until: Some(until),
        into: SchemaName::parse(into).expect("a schema name"),
        replace,
    };
    hub_projections::replay_until(
        &app.pool,
        &app.state.js,
        &app.state.topology,
        &request,
        false,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_replayed_until_a_time_equals_the_live_one_as_it_was_then() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();

    // Batch A: a grant, three settled requests and one reservation still held at T.
    fund(&app, user, "grant-a").await;
    settle_requests(&app, user, "a", 3).await;
    reserve(&app, user, "req_held").await;
    wait_projected(&app, user, 1 + 3, 3).await;
    let at_t = live_tables(&app).await;
    // Batch A's messages were acknowledged by JetStream before they were projected: every
    // one of them is stored at or before T, and batch B's after it.
    let t = Utc::now();
    assert_eq!(at_t["active_reservations"].len(), 1);

    // Batch B: another grant, the held request settled, two more requests.
    fund(&app, user, "grant-b").await;
    settle(
        &app,
        user,
        "req_held",
        TokenUsage {
            input_tokens: 500,
            output_tokens: 70,
            cached_input_tokens: 0,
            reasoning_tokens: 0,
        },
    )
    .await;
    settle_requests(&app, user, "b", 2).await;
    wait_projected(&app, user, 2 + 3 + 1 + 2, 3 + 1 + 2).await;
    let live_after_b = live_tables(&app).await;
    let checkpoints_after_b = checkpoints(&app).await;
    assert_ne!(live_after_b, at_t, "batch B changed every table");

    let usage = replay_until(&app, ProjectionKind::Usage, t, "asof_t", false)
        .await
        .expect("the usage replay");
    assert_eq!(usage.into.as_deref(), Some("asof_t"));
    example("replay_until.json", &usage);
    // A second projection into the same, now non-empty, schema needs --replace.
    let refused = replay_until(&app, ProjectionKind::Balances, t, "asof_t", false).await;
    assert!(
        matches!(refused, Err(PointInTimeError::NotEmpty { .. })),
        "{refused:?}"
    );
    for kind in [ProjectionKind::Balances, ProjectionKind::Ledger] {
        replay_until(&app, kind, t, "asof_t", true)
            .await
            .expect("the replay with --replace");
    }

    for table in TABLES {
        assert_eq!(
            rows(&app, "asof_t", table).await,
            at_t[table],
            "asof_t.{table} equals the live table as it was at T"
        );
    }
    assert_eq!(
        live_tables(&app).await,
        live_after_b,
        "the live read models are untouched"
    );
    assert_eq!(
        checkpoints(&app).await,
        checkpoints_after_b,
        "the live checkpoints are untouched"
    );

    // Replaying again with --replace rebuilds the same rows.
    replay_until(&app, ProjectionKind::Usage, t, "asof_t", true)
        .await
        .expect("the usage replay again");
    assert_eq!(
        rows(&app, "asof_t", "usage_records").await,
        at_t["usage_records"]
    );
    assert_eq!(
        rows(&app, "asof_t", "usage_rollups").await,
        at_t["usage_rollups"]
    );

    // And the live projector still follows the stream.
    fund(&app, user, "grant-c").await;
    wait_projected(&app, user, 3 + 3 + 1 + 2, 3 + 1 + 2).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_into_the_live_schema_or_a_bad_name_is_refused() {
    for bad in ["public", "pg_catalog", "Public", "a;b", "x\"y"] {
        assert!(SchemaName::parse(bad).is_err(), "{bad}");
    }
    let app = spawn_app().await;
    // A schema that holds something else is not written to without --replace.
    sqlx::query("CREATE SCHEMA analyst_scratch")
        .execute(&app.pool)
        .await
        .expect("a schema");
    sqlx::query("CREATE TABLE analyst_scratch.notes (body text)")
        .execute(&app.pool)
        .await
        .expect("a table");
    let refused = replay_until(
        &app,
        ProjectionKind::Ledger,
        Utc::now(),
        "analyst_scratch",
        false,
    )
    .await;
    assert!(
        matches!(refused, Err(PointInTimeError::NotEmpty { ref relations, .. }) if relations == "notes"),
        "{refused:?}"
    );
    app.stop().await;
}

/// With `AIHUB_USAGE_EXAMPLES=<folder>`, write `value` there as `name` (docs/analytics.md).
fn example(name: &str, value: &impl serde::Serialize) {
    if let Ok(folder) = std::env::var("AIHUB_USAGE_EXAMPLES") {
        let folder = std::path::PathBuf::from(folder);
        std::fs::create_dir_all(&folder).expect("a folder");
        let text = serde_json::to_string_pretty(value).expect("json");
        std::fs::write(folder.join(name), text).expect("written");
    }
}

/// `POST /api/usage/reprice` over everything so far, as `token`.
async fn reprice(app: &TestApp, token: &str, prices: Value) -> reqwest::Response {
    let to = (Utc::now() + Span::hours(1)).to_rfc3339();
    app.client
        .post(app.url("/api/usage/reprice"))
        .bearer_auth(token)
        .json(&json!({ "from": "2000-01-01", "to": to, "prices": prices }))
        .send()
        .await
        .expect("request sent")
}

/// The live price table of `mock-1` with its output price multiplied by `factor`.
fn mock_prices(app: &TestApp, factor: i64) -> Value {
    let mut price = app.settings.models.models[0].price;
    price.output_per_million_micros *= factor;
    json!({ "mock-1": price })
}

async fn settled_workload(app: &TestApp) -> [Uuid; 2] {
    let users = [Uuid::new_v4(), Uuid::new_v4()];
    for (i, user) in users.iter().enumerate() {
        fund(app, *user, &format!("grant-{i}")).await;
        let count = 3 + i as u64;
        settle_requests(app, *user, &format!("u{i}"), count).await;
        wait_projected(app, *user, 1 + count as i64, count as i64).await;
    }
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repricing_with_the_live_table_differs_by_nothing_and_a_doubled_output_price_doubles_the_output_share(
) {
    let app = spawn_app().await;
    let users = settled_workload(&app).await;
    let analyst = app.token(Uuid::new_v4(), hub_domain::Role::Analyst);
    let tables_before = live_tables(&app).await;

    let same = reprice(&app, &analyst, mock_prices(&app, 1)).await;
    assert_eq!(same.status(), StatusCode::OK);
    let same: hub_app::analytics::reprice::Repricing = same.json().await.expect("json");
    assert_eq!(same.totals.requests, 3 + 4);
    assert_eq!(same.by_model.len(), 1);
    assert_eq!(same.by_user.len(), 2);
    assert!(same.by_user.iter().all(|u| users.contains(&u.user_id)));
    for amounts in same
        .by_model
        .iter()
        .map(|m| &m.amounts)
        .chain(same.by_user.iter().map(|u| &u.amounts))
        .chain([&same.totals])
    {
        assert_eq!(amounts.difference_micros, 0, "{amounts:?}");
        assert_eq!(amounts.repriced_micros, amounts.charged_micros);
        assert_eq!(amounts.repriced_micros, amounts.cost_micros);
    }

    // mock-1's output costs 2 micro-credits a token: doubling it adds exactly that again.
    let per_output_token = app.settings.models.models[0]
        .price
        .output_per_million_micros
        / 1_000_000;
    let doubled = reprice(&app, &analyst, mock_prices(&app, 2)).await;
    assert_eq!(doubled.status(), StatusCode::OK);
    let doubled: hub_app::analytics::reprice::Repricing = doubled.json().await.expect("json");
    for line in &same.by_user {
        let before = &line.amounts;
        let after = &doubled
            .by_user
            .iter()
            .find(|d| d.user_id == line.user_id)
            .expect("the same users")
            .amounts;
        let output_share = before.output_tokens * per_output_token;
        assert!(output_share > 0);
        assert_eq!(after.difference_micros, output_share, "{after:?}");
        assert_eq!(after.repriced_micros, before.repriced_micros + output_share);
        assert_eq!(after.charged_micros, before.charged_micros);
    }
    assert_eq!(
        doubled.totals.difference_micros,
        same.totals.output_tokens * per_output_token
    );
    assert_eq!(doubled.by_model[0].amounts, doubled.totals);
    example("reprice.json", &doubled);
    assert!(doubled.by_model[0].priced);

    // A model the table does not name keeps its charge.
    let unnamed = reprice(
        &app,
        &analyst,
        json!({ "other-model": { "input_per_million_micros": 9, "output_per_million_micros": 9 } }),
    )
    .await;
    assert_eq!(unnamed.status(), StatusCode::OK);
    let unnamed: hub_app::analytics::reprice::Repricing = unnamed.json().await.expect("json");
    assert!(!unnamed.by_model[0].priced);
    assert_eq!(unnamed.totals.difference_micros, 0);

    assert_eq!(live_tables(&app).await, tables_before, "nothing is written");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_analysts_and_admins_may_reprice_and_bad_tables_are_refused() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    fund(&app, user, "grant").await;
    let prices = mock_prices(&app, 1);
    for (role, status) in [
        (hub_domain::Role::User, StatusCode::FORBIDDEN),
        (hub_domain::Role::Auditor, StatusCode::FORBIDDEN),
        (hub_domain::Role::Analyst, StatusCode::OK),
        (hub_domain::Role::Admin, StatusCode::OK),
    ] {
        let response = reprice(&app, &app.token(user, role), prices.clone()).await;
        assert_eq!(response.status(), status, "{role:?}");
        if status == StatusCode::FORBIDDEN {
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    let anonymous = app
        .client
        .post(app.url("/api/usage/reprice"))
        .json(&json!({ "from": "2026-01-01", "to": "2026-02-01", "prices": prices }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let analyst = app.token(user, hub_domain::Role::Analyst);
    let negative =
        json!({ "mock-1": { "input_per_million_micros": -1, "output_per_million_micros": 1 } });
    let unknown_field = json!({ "mock-1": { "input_per_million_micros": 1, "output_per_million_micros": 1, "per_request": 5 } });
    for (body, code) in [
        (negative, Some("invalid_prices")),
        (json!({}), Some("invalid_prices")),
        (unknown_field, None),
    ] {
        let response = reprice(&app, &analyst, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.expect("json");
        if let Some(code) = code {
            assert_eq!(error["error"]["code"], code, "{error}");
        }
    }
    let backwards = app
        .client
        .post(app.url("/api/usage/reprice"))
        .bearer_auth(&analyst)
        .json(&json!({ "from": "2026-02-01", "to": "2026-01-01", "prices": prices }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(backwards.status(), StatusCode::BAD_REQUEST);
    let error: Value = backwards.json().await.expect("json");
    assert_eq!(error["error"]["code"], "invalid_filter");
    app.stop().await;
}
