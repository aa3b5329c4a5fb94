//! The books over the real app: the double-entry trial balance after every kind of credit
//! movement (grants, a Stripe purchase, promo credits, charges, a release, an expiry, a
//! late settlement, a refund with a shortfall owed and repaid in part), at the head and as
//! of past moments; and the reconciliation of Stripe sessions with the credits they moved
//! (issue 16).

use chrono::{DateTime, Duration as Span, Utc};
use hub_domain::{
    AccountId, CreditCommand, Credits, RequestId, Role, TokenSource, UsageOutcome, UsageRecord,
    UserId,
};
use hub_server::Roles;
use hub_tests::fake_stripe::{
    completed_session, refunded_charge, stripe_signature, FakeStripe, WEBHOOK_SECRET,
};
use hub_tests::{eventually, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);
const CREDIT: i64 = 1_000_000;

async fn spawn_with_stripe() -> (TestApp, FakeStripe) {
    let stripe = FakeStripe::start().await;
    let (key, url) = (stripe.secret_key().to_string(), stripe.url().to_string());
    let app = spawn_app_with(Roles::ALL, move |s| {
        s.payments.stripe_secret_key = key;
        s.payments.webhook_secret = WEBHOOK_SECRET.into();
        s.payments.api_base = url;
        s.payments.http_timeout_ms = 5_000;
    })
    .await;
    (app, stripe)
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    json_of(
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let (status, body) = json_of(app.get(path, Some(token)).await).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// Deliver `event` as Stripe does: the raw body, signed now with the webhook secret.
async fn deliver(app: &TestApp, event: &Value) {
    let body = serde_json::to_vec(event).expect("json");
    let signature = stripe_signature(&body, WEBHOOK_SECRET, Utc::now().timestamp());
    let (status, answer) = json_of(
        app.client
            .post(app.url("/api/payments/webhook"))
            .header("content-type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// A checkout of `package` through the API: the session's id.
async fn checkout(app: &TestApp, token: &str, package: &str) -> String {
    let (status, body) = post_json(
        app,
        "/api/payments/checkout",
        token,
        json!({ "packageId": package }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("a session id").to_string()
}

fn payment_intent_of(session: &str) -> String {
    format!("pi_{}", &session[8..30])
}

fn account(user: Uuid) -> AccountId {
    AccountId::from(UserId(user))
}

async fn credit(app: &TestApp, user: Uuid, command: CreditCommand) {
    app.state
        .credits
        .execute(account(user), command, "test")
        .await
        .expect("the credit command is accepted");
}

fn reserve(request: &str, credits: i64, expires_at: DateTime<Utc>) -> CreditCommand {
    CreditCommand::ReserveCredits {
        request_id: RequestId::parse(request).expect("a request id"),
        amount: Credits::from_micros(credits * CREDIT),
        expires_at,
        now: Utc::now(),
        key: None,
    }
}

fn request(id: &str) -> RequestId {
    RequestId::parse(id).expect("a request id")
}

/// The trial balance at the head once the projections have applied every event of the
/// user's account (the journal is written in the same transaction as `balances`), with
/// users holding `balance` in all.
async fn settled_head(app: &TestApp, auditor: &str, user: Uuid, balance: i64) -> Value {
    eventually(WAIT, &format!("a trial balance with {balance}"), || async {
        let (stored, applied): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT max(sequence) FROM events
                      WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1),
                    (SELECT version FROM balances WHERE account_id = $2)",
        )
        .bind(user.to_string())
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .expect("read the versions");
        if stored.is_none() || stored != applied {
            return None;
        }
        let tb = get_json(app, "/api/audit/trial-balance", auditor).await;
        (tb["read_model"]["agrees"] == json!(true) && tb["users_balance_micros"] == json!(balance))
            .then_some(tb)
    })
    .await
}

/// Each account's `(debit balance, credit balance)`.
fn lines(tb: &Value) -> BTreeMap<String, (i64, i64)> {
    tb["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|l| {
            (
                l["account"].as_str().unwrap_or_default().to_string(),
                (
                    l["debit_balance_micros"].as_i64().unwrap_or(-1),
                    l["credit_balance_micros"].as_i64().unwrap_or(-1),
                ),
            )
        })
        .collect()
}

fn assert_balanced(tb: &Value) {
    assert_eq!(tb["balanced"], json!(true), "{tb}");
    assert_eq!(
        tb["total_debits_micros"], tb["total_credits_micros"],
        "{tb}"
    );
    let (debits, credits) = lines(tb)
        .values()
        .fold((0, 0), |(d, c), (ld, lc)| (d + ld, c + lc));
    assert_eq!(debits, credits, "the balances' columns foot: {tb}");
    assert_eq!(tb["total_debit_balances_micros"], json!(debits), "{tb}");
}

/// What the scenario leaves behind.
struct Books {
    app: TestApp,
    auditor: String,
    user: Uuid,
    paid_session: String,
    unpaid_session: String,
    /// The head's trial balance at moments along the way, and when.
    captured: Vec<(DateTime<Utc>, Value)>,
}

/// Every kind of credit movement on one user's account, capturing the trial balance at
/// the head along the way.
async fn scenario() -> Books {
    let (app, stripe) = spawn_with_stripe().await;
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    let mut captured = Vec::new();

    // 100 granted.
    let granted = app.grant(&admin, user, 100 * CREDIT, "books-grant").await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    captured.push((
        Utc::now(),
        settled_head(&app, &auditor, user, 100 * CREDIT).await,
    ));

    // 100 bought (the starter package, 10.00 USD); another checkout never paid.
    let paid_session = checkout(&app, &token, "starter").await;
    let unpaid_session = checkout(&app, &token, "pro").await;
    let session = stripe.session(&paid_session).expect("the fake created it");
    let pi = payment_intent_of(&paid_session);
    deliver(
        &app,
        &FakeStripe::event(
            "evt_books_1",
            "checkout.session.completed",
            completed_session(&session, &pi, true),
        ),
    )
    .await;

    // 10 from a promo code.
    let (status, body) = post_json(
        &app,
        "/api/admin/promos",
        &admin,
        json!({"code": "BOOKS10", "credits_micros": 10 * CREDIT, "max_redemptions": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post_json(
        &app,
        "/api/promos/redeem",
        &token,
        json!({"code": "BOOKS10"}),
    )
    .await;
    assert!(status.is_success(), "{body}");
    captured.push((
        Utc::now(),
        settled_head(&app, &auditor, user, 210 * CREDIT).await,
    ));

    // A request charged 20 of its 50; another released; one that will expire; one held.
    let later = Utc::now() + Span::hours(1);
    credit(&app, user, reserve("b-r1", 50, later)).await;
    credit(
        &app,
        user,
        CreditCommand::SettleReservation {
            request_id: request("b-r1"),
            charge: Credits::from_micros(20 * CREDIT),
        },
    )
    .await;
    credit(&app, user, reserve("b-r2", 30, later)).await;
    credit(
        &app,
        user,
        CreditCommand::ReleaseReservation {
            request_id: request("b-r2"),
        },
    )
    .await;
    let soon = Utc::now() + Span::minutes(1);
    credit(&app, user, reserve("b-r3", 30, soon)).await;
    credit(&app, user, reserve("b-r4", 150, later)).await;
    // 190 in all, 180 held, 10 available: the whole purchase refunded takes 10, and 90 are
    // owed.
    deliver(
        &app,
        &FakeStripe::event(
            "evt_books_2",
            "charge.refunded",
            refunded_charge("ch_books", &pi, 1_000, 1_000, "re_books"),
        ),
    )
    .await;
    let at_refund = settled_head(&app, &auditor, user, 180 * CREDIT).await;
    captured.push((Utc::now(), at_refund));

    // The third request expires: its 30 repay part of the debt. Its settlement, delayed
    // past the expiry, costs 25 and finds nothing available: uncollected.
    credit(
        &app,
        user,
        CreditCommand::ExpireReservations {
            now: soon + Span::seconds(1),
        },
    )
    .await;
    credit(
        &app,
        user,
        CreditCommand::SettleUsage {
            request_id: request("b-r3"),
            usage: Box::new(UsageRecord {
                model: "mock-small".into(),
                provider: "mock".into(),
                api_key: None,
                input_tokens: 10,
                output_tokens: 20,
                cached_input_tokens: 0,
                token_source: TokenSource::Provider,
                latency_ms: 100,
                first_token_ms: Some(10),
                cost: Credits::from_micros(25 * CREDIT),
                // Input free, output at 1.25 M credits per million tokens: 20 tokens
                // cost 25 credits, as `aihub audit verify` recomputes.
                price_version: "0/1250000000000/0".into(),
                outcome: UsageOutcome::Completed,
            }),
        },
    )
    .await;
    captured.push((
        Utc::now(),
        settled_head(&app, &auditor, user, 150 * CREDIT).await,
    ));

    Books {
        app,
        auditor,
        user,
        paid_session,
        unpaid_session,
        captured,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trial_balance_balances_after_every_kind_of_movement_now_and_as_of_past_moments() {
    let books = scenario().await;
    let (app, auditor) = (&books.app, &books.auditor);
    let head = get_json(app, "/api/audit/trial-balance", auditor).await;
    assert_balanced(&head);
    let expected: BTreeMap<String, (i64, i64)> = [
        ("system:grants", (100, 0)),
        ("system:stripe", (100, 0)),
        ("system:promos", (10, 0)),
        ("system:refunds", (0, 100)),
        // 90 owed, 30 repaid by the expiry.
        ("system:debt", (60, 0)),
        ("system:written-off", (0, 0)),
        // 20 charged, and 25 delivered after the expiry that could not be collected.
        ("system:usage-revenue", (0, 45)),
        ("system:expired", (25, 0)),
        ("users:available", (0, 0)),
        ("users:held", (0, 150)),
    ]
    .into_iter()
    .map(|(k, (d, c))| (k.to_string(), (d * CREDIT, c * CREDIT)))
    .collect();
    assert_eq!(lines(&head), expected, "{head}");
    assert_eq!(head["users_balance_micros"], json!(150 * CREDIT));
    assert_eq!(head["read_model"]["debt_micros"], json!(60 * CREDIT));
    assert_eq!(head["read_model"]["agrees"], json!(true));

    // As of each captured moment, the same lines the head showed then.
    for (at, then) in &books.captured {
        let when = at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let past = get_json(
            app,
            &format!("/api/audit/trial-balance?as_of={when}"),
            auditor,
        )
        .await;
        assert_balanced(&past);
        assert_eq!(lines(&past), lines(then), "as of {when}: {past}");
        assert_eq!(past["read_model"], Value::Null);
    }
    // After the refund: 90 owed, 180 held, nothing available.
    let at_refund = lines(&books.captured[2].1);
    assert_eq!(at_refund["system:debt"], (90 * CREDIT, 0));
    assert_eq!(at_refund["users:held"], (0, 180 * CREDIT));
    assert_eq!(at_refund["users:available"], (0, 0));

    // The account as of now folds to the same: 150 held, 60 owed.
    let account = get_json(app, &format!("/api/audit/accounts/{}", books.user), auditor).await;
    assert_eq!(account["reserved_micros"], json!(150 * CREDIT), "{account}");
    assert_eq!(account["debt_micros"], json!(60 * CREDIT), "{account}");

    // The books are derived from the events: a replay of the journal rebuilds the same.
    let stats = hub_projections::replay(
        &app.pool,
        &app.settings.database.url,
        &app.state.js,
        &app.state.topology,
        hub_projections::ProjectionKind::Journal,
        false,
    )
    .await
    .expect("the journal replays");
    assert!(stats.messages > 0);
    let replayed = get_json(app, "/api/audit/trial-balance", auditor).await;
    assert_eq!(lines(&replayed), expected, "{replayed}");
    assert_eq!(replayed["legs"], head["legs"]);

    // `aihub audit verify` finds nothing wrong with any of these movements: folds,
    // read models, stream, charges, the paid session credited once, the trial balance.
    let report = eventually(Duration::from_secs(20), "the books to verify", || async {
        let options = hub_app::audit::verify::Options {
            stream: None,
            public_key: app.state.checkpoint_key.public_key(),
            now: Utc::now(),
        };
        let report = hub_app::audit::verify::verify(
            &app.pool,
            &app.state.js,
            &app.state.topology,
            &options,
            &|_| {},
        )
        .await
        .expect("verify runs");
        (report.passed && report.read_model_behind == 0).then_some(report)
    })
    .await;
    assert!(report.payments >= 1, "{report:?}");

    // A leg that goes missing unbalances the books, and the trial balance says so.
    sqlx::query(
        "DELETE FROM journal WHERE ctid = (SELECT ctid FROM journal WHERE kind = 'refund'
                                             AND ledger_account = 'system:refunds')",
    )
    .execute(&app.pool)
    .await
    .expect("remove a leg");
    let broken = get_json(app, "/api/audit/trial-balance", auditor).await;
    assert_eq!(broken["balanced"], json!(false), "{broken}");
    books.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_sets_each_stripe_session_beside_the_credits_it_moved() {
    let books = scenario().await;
    let (app, auditor) = (&books.app, &books.auditor);
    let all = eventually(WAIT, "both sessions reconciled", || async {
        let r = get_json(app, "/api/audit/payments/reconciliation", auditor).await;
        let refunded = r["sessions"].as_array().is_some_and(|all| {
            all.iter().any(|s| {
                s["session_id"] == json!(books.paid_session) && s["status"] == json!("refunded")
            })
        });
        (r["sessions"].as_array().map(Vec::len) == Some(2) && refunded).then_some(r)
    })
    .await;
    let sessions = all["sessions"].as_array().expect("sessions");
    let paid = sessions
        .iter()
        .find(|s| s["session_id"] == json!(books.paid_session))
        .expect("the paid session");
    let expected = json!({
        "user_id": books.user,
        "package_id": "starter",
        "status": "refunded",
        "amount_cents": 1_000,
        "currency": "usd",
        "amount_paid_cents": 1_000,
        "refunded_cents": 1_000,
        "package_credits_micros": 100 * CREDIT,
        "credits_granted_micros": 100 * CREDIT,
        "refund_credits_requested_micros": 100 * CREDIT,
        "credits_revoked_micros": 10 * CREDIT,
        "shortfall_micros": 90 * CREDIT,
        "shortfall_owed_micros": 90 * CREDIT,
        "shortfall_written_off_micros": 0,
        "debt_repaid_micros": 30 * CREDIT,
        "debt_outstanding_micros": 60 * CREDIT,
    });
    for (field, value) in expected.as_object().expect("an object") {
        assert_eq!(&paid[field], value, "{field}: {paid}");
    }
    let unpaid = sessions
        .iter()
        .find(|s| s["session_id"] == json!(books.unpaid_session))
        .expect("the unpaid session");
    assert_eq!(unpaid["package_id"], json!("pro"));
    assert_eq!(unpaid["amount_paid_cents"], json!(0));
    assert_eq!(unpaid["credits_granted_micros"], json!(0));

    let totals = &all["totals"];
    assert_eq!(totals["sessions"], json!(2));
    assert_eq!(totals["paid_cents"], json!({"usd": 1_000}));
    assert_eq!(totals["refunded_cents"], json!({"usd": 1_000}));
    assert_eq!(totals["credits_granted_micros"], json!(100 * CREDIT));
    assert_eq!(totals["shortfall_micros"], json!(90 * CREDIT));
    assert_eq!(totals["debt_outstanding_micros"], json!(60 * CREDIT));

    // Paged one session at a time, oldest first, with the totals of the whole range.
    let first = get_json(app, "/api/audit/payments/reconciliation?limit=1", auditor).await;
    assert_eq!(
        first["sessions"][0]["session_id"],
        json!(books.paid_session)
    );
    assert_eq!(first["totals"], all["totals"]);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = get_json(
        app,
        &format!("/api/audit/payments/reconciliation?limit=1&cursor={cursor}"),
        auditor,
    )
    .await;
    assert_eq!(
        second["sessions"][0]["session_id"],
        json!(books.unpaid_session)
    );
    assert_eq!(second["next_cursor"], Value::Null);

    // A range before any session: nothing, and totals of nothing.
    let empty = get_json(
        app,
        "/api/audit/payments/reconciliation?from=2020-01-01&to=2020-02-01",
        auditor,
    )
    .await;
    assert_eq!(empty["sessions"], json!([]));
    assert_eq!(empty["totals"]["sessions"], json!(0));
    books.app.stop().await;
}
