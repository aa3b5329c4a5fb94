//! Raw history for analysts over the real app: `aihub events` (the library function the
//! command runs) and `GET /api/analytics/events` return exactly the events JetStream stored
//! in a time range, in stream order, filtered by type and account; and `aihub usage export`
//! writes byte for byte what `GET /api/usage/export` answers.
//!
//! JetStream stamps messages itself, so the tests take the time between batches of real
//! commands, each taken once the relay has put every committed event in the stream (a
//! deadline-bounded wait on the stream's state, no fixed sleep).

use chrono::{DateTime, Duration as Span, Utc};
use hub_app::analytics::events::{RawEventsFilter, StoredEvent};
use hub_app::analytics::export::Format;
use hub_app::queries::usage::RawFilter;
use hub_domain::{AccountId, CreditCommand, Credits, RequestId, Role, TokenSource, UsageOutcome};
use hub_tests::{eventually, spawn_app, TestApp};
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

/// An event as the event store knows it: aggregate type, id and sequence.
type EventKey = (String, String, u64);

/// Every event in the event store.
async fn stored_events(app: &TestApp) -> BTreeSet<EventKey> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT aggregate_type, aggregate_id, sequence FROM events")
            .fetch_all(&app.pool)
            .await
            .expect("the events");
    rows.into_iter()
        .map(|(t, id, seq)| (t, id, u64::try_from(seq).expect("positive")))
        .collect()
}

/// Wait until the stream holds every committed event, then read the clock: every event
/// committed so far was stored by JetStream before the returned time, every later one after.
async fn boundary(app: &TestApp) -> (DateTime<Utc>, BTreeSet<EventKey>) {
    let events = stored_events(app).await;
    let expected = events.len() as u64;
    eventually(Duration::from_secs(30), "the relay to catch up", || async {
        let mut stream = app
            .state
            .js
            .get_stream(app.state.topology.events_stream())
            .await
            .ok()?;
        let info = stream.info().await.ok()?;
        (info.state.messages >= expected).then_some(())
    })
    .await;
    (Utc::now(), events)
}

/// Grant `user` credits, through the API (a `CreditsGranted` event).
async fn grant(app: &TestApp, user: Uuid, key: &str) {
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app.grant(&admin, user, 1_000_000_000, key).await;
    assert_eq!(granted.status(), StatusCode::CREATED);
}

/// Reserve and settle one request on `user`'s account (`CreditsReserved`,
/// `ReservationSettled`), as a worker does.
async fn settle(app: &TestApp, user: Uuid, request: &str) {
    let request_id = RequestId::parse(request).expect("a request id");
    let now = Utc::now();
    let account = AccountId(user);
    let reserve = CreditCommand::ReserveCredits {
        request_id: request_id.clone(),
        amount: Credits::from_micros(10_000),
        expires_at: now + Span::seconds(600),
        now,
        key: None,
    };
    app.state
        .credits
        .execute(account, reserve, "test")
        .await
        .expect("reserved");
    let usage = hub_domain::UsageRecord {
        model: "mock-1".to_string(),
        provider: "mock".to_string(),
        api_key: None,
        input_tokens: 100,
        output_tokens: 50,
        cached_input_tokens: 0,
        token_source: TokenSource::Provider,
        latency_ms: 12,
        first_token_ms: Some(3),
        cost: Credits::from_micros(1_000),
        price_version: "test-v1".to_string(),
        outcome: UsageOutcome::Completed,
    };
    let settle = CreditCommand::SettleUsage {
        request_id,
        usage: Box::new(usage),
    };
    app.state
        .credits
        .execute(account, settle, "test")
        .await
        .expect("settled");
}

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> RawEventsFilter {
    RawEventsFilter {
        from: Some(from.to_rfc3339()),
        to: Some(to.to_rfc3339()),
        ..Default::default()
    }
}

/// What `aihub events` writes for `raw`.
async fn cli_events_bytes(app: &TestApp, raw: RawEventsFilter) -> Vec<u8> {
    let range = hub_server::analytics::events_range(raw).expect("a valid range");
    let mut out = Vec::new();
    hub_server::analytics::write_events(&app.state.js, &app.state.topology, range, &mut out)
        .await
        .expect("the events are written");
    out
}

async fn cli_events(app: &TestApp, raw: RawEventsFilter) -> Vec<StoredEvent> {
    let out = cli_events_bytes(app, raw).await;
    let text = String::from_utf8(out).expect("utf-8");
    let events: Vec<StoredEvent> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one event per line"))
        .collect();
    let sequences: Vec<u64> = events.iter().map(|e| e.stream_sequence).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "stream order: {sequences:?}"
    );
    events
}

fn keys(events: &[StoredEvent]) -> BTreeSet<EventKey> {
    events
        .iter()
        .map(|e| (e.aggregate_type.clone(), e.aggregate_id.clone(), e.sequence))
        .collect()
}

/// Three batches of real commands on two accounts, with the time taken between them:
/// `(times, events committed by each time)`, four of each.
async fn three_batches(
    app: &TestApp,
    alice: Uuid,
    bob: Uuid,
) -> ([DateTime<Utc>; 4], [BTreeSet<EventKey>; 4]) {
    let (t0, e0) = boundary(app).await;
    grant(app, alice, "a-1").await;
    grant(app, bob, "a-2").await;
    settle(app, alice, "req_a_1").await;
    let (t1, e1) = boundary(app).await;
    grant(app, bob, "b-1").await;
    settle(app, bob, "req_b_1").await;
    settle(app, alice, "req_b_2").await;
    let (t2, e2) = boundary(app).await;
    settle(app, alice, "req_c_1").await;
    let (t3, e3) = boundary(app).await;
    ([t0, t1, t2, t3], [e0, e1, e2, e3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_returns_exactly_the_events_stored_in_it_in_stream_order() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (t, e) = three_batches(&app, alice, bob).await;
    let batch = |i: usize| -> BTreeSet<EventKey> { e[i + 1].difference(&e[i]).cloned().collect() };
    for i in 0..3 {
        assert!(!batch(i).is_empty(), "batch {i} wrote events");
    }

    for (i, j) in [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3)] {
        let events = cli_events(&app, range(t[i], t[j])).await;
        let expected: BTreeSet<EventKey> = e[j].difference(&e[i]).cloned().collect();
        assert_eq!(keys(&events), expected, "the events of [t{i}, t{j})");
        assert_eq!(events.len(), expected.len(), "each event once");
        assert!(events.iter().all(|ev| t[i] <= ev.time && ev.time < t[j]));
    }

    // A range that runs past the end of the stream ends at its last event, at once.
    let events = cli_events(&app, range(t[2], Utc::now() + Span::days(1))).await;
    assert_eq!(keys(&events), batch(2));
    // Ranges with nothing stored: before the first event, after the last.
    let before = cli_events(&app, range(t[0] - Span::days(1), t[0])).await;
    assert_eq!(keys(&before), e[0]);
    let after = Utc::now() + Span::hours(1);
    assert!(cli_events(&app, range(after, after + Span::hours(1)))
        .await
        .is_empty());

    // Each line names where the event is and what it was.
    let one = &cli_events(&app, range(t[0], t[1])).await[0];
    let prefix = &app.state.topology.subject_prefix;
    assert_eq!(
        one.subject,
        format!(
            "{prefix}.events.{}.{}",
            one.aggregate_type, one.aggregate_id
        )
    );
    assert!(
        one.payload
            .to_value()
            .expect("json")
            .get(&one.event_type)
            .is_some(),
        "{one:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_and_account_filters_narrow_a_range_to_the_matching_events() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (t, _) = three_batches(&app, alice, bob).await;
    let all = cli_events(&app, range(t[0], t[3])).await;

    let with = |event_type: Option<&str>, account: Option<Uuid>| RawEventsFilter {
        event_type: event_type.map(str::to_string),
        account: account.map(|a| a.to_string()),
        ..range(t[0], t[3])
    };
    let expect = |event_type: Option<&str>, account: Option<Uuid>| -> Vec<u64> {
        all.iter()
            .filter(|e| event_type.is_none_or(|t| e.event_type == t))
            .filter(|e| account.is_none_or(|a| e.aggregate_id == a.to_string()))
            .map(|e| e.stream_sequence)
            .collect()
    };
    let sequences = |events: Vec<StoredEvent>| -> Vec<u64> {
        events.iter().map(|e| e.stream_sequence).collect()
    };

    let settled = cli_events(&app, with(Some("ReservationSettled"), None)).await;
    assert_eq!(settled.len(), 4, "four settlements in the three batches");
    assert_eq!(sequences(settled), expect(Some("ReservationSettled"), None));
    let bobs = cli_events(&app, with(None, Some(bob))).await;
    assert!(bobs.iter().all(|e| e.aggregate_id == bob.to_string()));
    assert_eq!(sequences(bobs), expect(None, Some(bob)));
    let alices_grants = cli_events(&app, with(Some("CreditsGranted"), Some(alice))).await;
    assert_eq!(alices_grants.len(), 1);
    assert_eq!(
        sequences(alices_grants),
        expect(Some("CreditsGranted"), Some(alice))
    );
    let none = cli_events(&app, with(Some("NoSuchEvent"), None)).await;
    assert!(none.is_empty());
    app.stop().await;
}

async fn get_events(app: &TestApp, query: &[(&str, String)], token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/analytics/events"))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
}

async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_route_streams_what_the_command_writes_to_analysts_admins_and_auditors_only() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (t, _) = three_batches(&app, alice, bob).await;
    let query = vec![
        ("from", t[0].to_rfc3339()),
        ("to", t[3].to_rfc3339()),
        ("account", alice.to_string()),
    ];
    let expected = cli_events_bytes(
        &app,
        RawEventsFilter {
            account: Some(alice.to_string()),
            ..range(t[0], t[3])
        },
    )
    .await;
    assert!(!expected.is_empty());

    for role in [Role::Analyst, Role::Admin, Role::Auditor] {
        let response = get_events(&app, &query, &app.token(Uuid::new_v4(), role)).await;
        assert_eq!(response.status(), StatusCode::OK, "{role:?}");
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let body = response.bytes().await.expect("the body");
        assert_eq!(body.as_ref(), expected.as_slice(), "{role:?}");
    }

    // A user, even the account's owner, and an anonymous caller are refused.
    let owner = get_events(&app, &query, &app.token(alice, Role::User)).await;
    assert_eq!(owner.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(owner).await, "forbidden");
    let anonymous = app
        .client
        .get(app.url("/api/analytics/events"))
        .query(&query)
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let analyst = app.token(Uuid::new_v4(), Role::Analyst);
    let day = |d: &str| d.to_string();
    let bad: [(Vec<(&str, String)>, &str); 7] = [
        (vec![("to", day("2026-12-02"))], "invalid_filter"),
        (
            vec![("from", day("yesterday")), ("to", day("2026-12-02"))],
            "invalid_filter",
        ),
        (
            vec![("from", day("2026-12-02")), ("to", day("2026-12-01"))],
            "invalid_filter",
        ),
        (
            vec![("from", day("2026-01-01")), ("to", day("2026-03-01"))],
            "invalid_filter",
        ),
        (
            vec![
                ("from", day("2026-12-01")),
                ("to", day("2026-12-02")),
                ("account", day("a.>")),
            ],
            "invalid_filter",
        ),
        (
            vec![
                ("from", day("2026-12-01")),
                ("to", day("2026-12-02")),
                ("type", day("Credits Granted")),
            ],
            "invalid_filter",
        ),
        (
            vec![
                ("from", day("2026-12-01")),
                ("to", day("2026-12-02")),
                ("user_id", alice.to_string()),
            ],
            "invalid_query",
        ),
    ];
    for (query, code) in bad {
        let response = get_events(&app, &query, &analyst).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(error_code(response).await, code, "{query:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_usage_export_equals_the_http_export_byte_for_byte() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    three_batches(&app, alice, bob).await;
    eventually(Duration::from_secs(30), "the usage projection", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records")
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (n == 4).then_some(())
    })
    .await;
    let from = (Utc::now() - Span::hours(1)).to_rfc3339();
    let to = (Utc::now() + Span::hours(1)).to_rfc3339();
    let analyst = app.token(Uuid::new_v4(), Role::Analyst);

    for (format, name) in [(Format::Csv, "csv"), (Format::Ndjson, "ndjson")] {
        let http = app
            .client
            .get(app.url("/api/usage/export"))
            .query(&[("from", &from), ("to", &to), ("format", &name.to_string())])
            .bearer_auth(&analyst)
            .send()
            .await
            .expect("sent");
        assert_eq!(http.status(), StatusCode::OK);
        let http = http.bytes().await.expect("the body");
        let mut cli = Vec::new();
        let raw = RawFilter {
            from: Some(from.clone()),
            to: Some(to.clone()),
            ..Default::default()
        };
        let rows =
            hub_server::analytics::write_usage_export(&app.pool, raw, format, &mut cli, true)
                .await
                .expect("exported");
        assert_eq!(rows, 4, "{name}");
        assert_eq!(cli, http.as_ref(), "{name}");
        if let Ok(folder) = std::env::var("AIHUB_USAGE_EXAMPLES") {
            let folder = std::path::Path::new(&folder);
            std::fs::create_dir_all(folder).expect("a folder");
            std::fs::write(folder.join(format!("cli-export.{name}")), &cli).expect("written");
        }
    }
    if let Ok(folder) = std::env::var("AIHUB_USAGE_EXAMPLES") {
        let now = Utc::now();
        let events = cli_events_bytes(&app, range(now - Span::hours(1), now)).await;
        let folder = std::path::Path::new(&folder);
        std::fs::write(folder.join("events.ndjson"), events).expect("written");
    }
    app.stop().await;
}
