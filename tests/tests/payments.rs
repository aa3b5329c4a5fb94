//! Payments over the real app: checkout against a local Stripe-speaking server, webhooks
//! signed for real, crediting exactly once under repeats and races, refunds, out-of-order
//! deliveries, and the ledger entry of every credit movement.

use chrono::{Duration as ChronoDuration, Utc};
use hub_domain::Role;
use hub_domain::{AccountId, CreditCommand, Credits, RequestId};
use hub_server::Roles;
use hub_tests::fake_stripe::{
    completed_session, dispute, expired_session, failed_intent, foreign_session, hub_metadata,
    refunded_charge, stripe_signature, FakeStripe, WEBHOOK_SECRET,
};
use hub_tests::{eventually, spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
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

async fn checkout(app: &TestApp, token: &str, package: &str) -> (StatusCode, Value) {
    json_of(
        app.client
            .post(app.url("/api/payments/checkout"))
            .bearer_auth(token)
            .json(&json!({ "packageId": package }))
            .send()
            .await
            .expect("sent"),
    )
    .await
}

/// Deliver `event` as Stripe does: the raw body, signed now with the webhook secret.
async fn deliver(app: &TestApp, event: &Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(event).expect("json");
    let signature = stripe_signature(&body, WEBHOOK_SECRET, Utc::now().timestamp());
    deliver_signed(app, body, &signature).await
}

async fn deliver_signed(app: &TestApp, body: Vec<u8>, signature: &str) -> (StatusCode, Value) {
    json_of(
        app.client
            .post(app.url("/api/payments/webhook"))
            .header("content-type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("sent"),
    )
    .await
}

async fn balance(app: &TestApp, token: &str) -> Value {
    json_of(app.get("/api/credits/balance", Some(token)).await)
        .await
        .1
}

/// Wait until the balances read model shows `micros` for the caller.
async fn balance_becomes(app: &TestApp, token: &str, micros: i64) {
    eventually(WAIT, &format!("a balance of {micros}"), || async {
        let b = balance(app, token).await;
        (b["balance_micros"] == json!(micros)).then_some(())
    })
    .await;
}

async fn ledger(app: &TestApp, token: &str) -> Vec<Value> {
    let (_, page) = json_of(
        app.get("/api/credits/transactions?limit=200", Some(token))
            .await,
    )
    .await;
    page["data"].as_array().cloned().unwrap_or_default()
}

async fn ledger_has(app: &TestApp, token: &str, entries: usize) -> Vec<Value> {
    eventually(WAIT, &format!("{entries} ledger entries"), || async {
        let rows = ledger(app, token).await;
        (rows.len() == entries).then_some(rows)
    })
    .await
}

async fn history(app: &TestApp, token: &str) -> Vec<Value> {
    let (_, page) = json_of(app.get("/api/payments/history", Some(token)).await).await;
    page["data"].as_array().cloned().unwrap_or_default()
}

async fn status_becomes(app: &TestApp, token: &str, session: &str, status: &str) -> Value {
    eventually(WAIT, &format!("payment {session} {status}"), || async {
        history(app, token)
            .await
            .into_iter()
            .find(|p| p["session_id"] == json!(session) && p["status"] == json!(status))
    })
    .await
}

/// How many events of `event_type` the event store holds for `aggregate_id`.
async fn events_of(app: &TestApp, aggregate_id: &str, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = $2")
        .bind(aggregate_id)
        .bind(event_type)
        .fetch_one(&app.pool)
        .await
        .expect("count events")
}

fn new_user(app: &TestApp) -> (Uuid, String) {
    let user = Uuid::new_v4();
    (user, app.token(user, Role::User))
}

/// A checkout through the API: the session as the fake created it.
async fn started(app: &TestApp, stripe: &FakeStripe, token: &str, package: &str) -> Value {
    let (status, body) = checkout(app, token, package).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("a session id");
    stripe.session(id).expect("the fake created it")
}

fn id_of(session: &Value) -> String {
    session["id"].as_str().expect("id").to_string()
}

fn completed_event(event_id: &str, session: &Value, paid: bool) -> Value {
    FakeStripe::event(
        event_id,
        "checkout.session.completed",
        completed_session(session, &format!("pi_{}", &id_of(session)[8..30]), paid),
    )
}

fn payment_intent_of(session: &Value) -> String {
    format!("pi_{}", &id_of(session)[8..30])
}

#[tokio::test]
async fn packages_are_listed_and_checkout_creates_a_stripe_session_with_the_user_in_its_metadata() {
    let (app, stripe) = spawn_with_stripe().await;
    let (status, list) = json_of(app.get("/api/payments/packages", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["checkout_enabled"], json!(true));
    let packages = list["packages"].as_array().expect("packages");
    let summary: Vec<(String, i64, i64)> = packages
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                p["credits"].as_i64().unwrap_or_default(),
                p["price_cents"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("starter".to_string(), 100, 1_000),
            ("pro".to_string(), 1_000, 8_000),
            ("business".to_string(), 10_000, 60_000)
        ]
    );

    let (user, token) = new_user(&app);
    let (status, body) = checkout(&app, &token, "pro").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id");
    assert!(id.starts_with("cs_test_"), "{body}");
    assert_eq!(
        body["url"],
        json!(format!("https://checkout.stripe.com/c/pay/{id}"))
    );
    assert_eq!(body["credits_micros"], json!(1_000 * CREDIT));
    assert_eq!(body["amount_cents"], json!(8_000));

    let requests = stripe.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0];
    assert_eq!(
        seen.authorization.as_deref(),
        Some(format!("Bearer {}", stripe.secret_key()).as_str())
    );
    assert!(seen
        .idempotency_key
        .as_deref()
        .is_some_and(|k| !k.is_empty()));
    assert!(
        seen.stripe_version.is_some(),
        "the client pins an API version"
    );
    let form = &seen.form;
    assert_eq!(form.get("mode").map(String::as_str), Some("payment"));
    assert_eq!(
        form.get("line_items[0][price_data][unit_amount]")
            .map(String::as_str),
        Some("8000")
    );
    assert_eq!(
        form.get("line_items[0][price_data][currency]")
            .map(String::as_str),
        Some("usd")
    );
    assert_eq!(
        form.get("line_items[0][quantity]").map(String::as_str),
        Some("1")
    );
    assert_eq!(form.get("metadata[aihub_user_id]"), Some(&user.to_string()));
    assert_eq!(
        form.get("metadata[aihub_package_id]").map(String::as_str),
        Some("pro")
    );
    assert_eq!(
        form.get("payment_intent_data[metadata][aihub_user_id]"),
        Some(&user.to_string())
    );
    assert!(form
        .get("success_url")
        .is_some_and(|u| u.contains("{CHECKOUT_SESSION_ID}")));
    assert!(form.contains_key("cancel_url"));

    // The checkout is in the user's history, started.
    let row = status_becomes(&app, &token, id, "started").await;
    assert_eq!(row["package_id"], json!("pro"));
    assert_eq!(row["amount_cents"], json!(8_000));

    // The same Idempotency-Key from the client gives the same session.
    let again = |key: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            json_of(
                app.client
                    .post(app.url("/api/payments/checkout"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(&json!({ "package_id": "starter" }))
                    .send()
                    .await
                    .expect("sent"),
            )
            .await
        }
    };
    let (s1, first) = again("buy-1").await;
    let (s2, second) = again("buy-1").await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["id"], second["id"]);

    // An unknown package is refused before Stripe is asked.
    let before = stripe.requests().len();
    let (status, body) = checkout(&app, &token, "platinum").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], json!("invalid_package"));
    assert_eq!(stripe.requests().len(), before);
    // Anonymous callers cannot check out.
    let response = app
        .client
        .post(app.url("/api/payments/checkout"))
        .json(&json!({ "packageId": "pro" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn without_stripe_configured_checkout_and_webhooks_answer_503_and_the_rest_runs() {
    let app = spawn_app().await;
    let (_, token) = new_user(&app);
    let (status, body) = checkout(&app, &token, "pro").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], json!("payments_not_configured"));
    let (status, body) = deliver(&app, &FakeStripe::event("evt_1", "ping", json!({}))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, list) = json_of(app.get("/api/payments/packages", None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["checkout_enabled"], json!(false));
    assert_eq!(
        app.get("/api/credits/balance", Some(&token)).await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn stripe_refusals_and_a_wrong_key_become_502_and_record_nothing() {
    let stripe = FakeStripe::start().await;
    let url = stripe.url().to_string();
    let app = spawn_app_with(Roles::ALL, move |s| {
        s.payments.stripe_secret_key = "sk_test_wrong".into();
        s.payments.webhook_secret = WEBHOOK_SECRET.into();
        s.payments.api_base = url;
    })
    .await;
    let (_, token) = new_user(&app);
    let (status, body) = checkout(&app, &token, "pro").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], json!("stripe_refused"));
    assert!(!body.to_string().contains("sk_test"), "no key in {body}");
    app.stop().await;

    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);
    stripe.fail_next(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "parameter_invalid_integer",
    );
    let (status, body) = checkout(&app, &token, "pro").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], json!("stripe_refused"));
    stripe.fail_next(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "internal");
    let (status, _) = checkout(&app, &token, "pro").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let payments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Payment'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(payments, 0, "a failed checkout records nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_signed_completion_credits_once_with_the_payment_as_the_ledger_cause() {
    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let id = id_of(&session);

    let (status, body) = deliver(&app, &completed_event("evt_completed_1", &session, true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "received": true, "handled": true }));
    balance_becomes(&app, &token, 1_000 * CREDIT).await;
    let rows = ledger_has(&app, &token, 1).await;
    assert_eq!(rows[0]["kind"], json!("purchase"));
    assert_eq!(rows[0]["amount_micros"], json!(1_000 * CREDIT));
    assert_eq!(rows[0]["cause"], json!({ "type": "payment", "id": id }));
    let row = status_becomes(&app, &token, &id, "paid").await;
    assert!(row["paid_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_bad_signature_or_a_stale_timestamp_is_refused_with_400_and_changes_nothing() {
    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "starter").await;
    let id = id_of(&session);
    let body = serde_json::to_vec(&completed_event("evt_bad", &session, true)).expect("json");
    let now = Utc::now().timestamp();

    let cases = [
        (
            stripe_signature(&body, "whsec_someone_else", now),
            "invalid_signature",
        ),
        (
            stripe_signature(&body, WEBHOOK_SECRET, now - 600),
            "stale_signature",
        ),
        (
            stripe_signature(&body, WEBHOOK_SECRET, now + 600),
            "stale_signature",
        ),
        (
            stripe_signature(b"{\"id\":\"evt_other\"}", WEBHOOK_SECRET, now),
            "invalid_signature",
        ),
        (format!("t={now}"), "invalid_signature"),
        ("nonsense".to_string(), "invalid_signature"),
    ];
    for (signature, code) in cases {
        let (status, answer) = deliver_signed(&app, body.clone(), &signature).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signature}: {answer}");
        assert_eq!(answer["error"]["code"], json!(code), "{signature}");
    }
    let response = app
        .client
        .post(app.url("/api/payments/webhook"))
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Several v1 signatures (a secret being rolled): one good one is enough.
    let good = stripe_signature(&body, WEBHOOK_SECRET, now);
    let good_v1 = good
        .split_once(",v1=")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let rolled = format!(
        "t={now},v1={},v1={good_v1}",
        stripe_signature(&body, "whsec_old", now)
            .split_once(",v1=")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    );

    // Nothing changed: the payment is only started, and nothing was credited.
    assert_eq!(events_of(&app, &id, "PaymentCompleted").await, 0);
    assert_eq!(events_of(&app, &id, "CheckoutStarted").await, 1);
    assert_eq!(balance(&app, &token).await["balance_micros"], json!(0));

    let (status, answer) = deliver_signed(&app, body, &rolled).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    balance_becomes(&app, &token, 100 * CREDIT).await;
    app.stop().await;
}

#[tokio::test]
async fn the_same_event_five_times_and_five_times_at_once_credits_once() {
    let (app, stripe) = spawn_with_stripe().await;
    let (user, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let event = completed_event("evt_dup", &session, true);
    for _ in 0..5 {
        let (status, body) = deliver(&app, &event).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let second = started(&app, &stripe, &token, "starter").await;
    let event = completed_event("evt_dup_2", &second, true);
    let answers = futures::future::join_all((0..5).map(|_| deliver(&app, &event))).await;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // And the other Stripe event that says "paid" for the first session changes nothing.
    let (status, _) = deliver(
        &app,
        &FakeStripe::event(
            "evt_async_ok",
            "checkout.session.async_payment_succeeded",
            completed_session(&session, &payment_intent_of(&session), true),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    balance_becomes(&app, &token, 1_100 * CREDIT).await;
    assert_eq!(
        events_of(&app, &id_of(&session), "PaymentCompleted").await,
        1
    );
    assert_eq!(
        events_of(&app, &id_of(&second), "PaymentCompleted").await,
        1
    );
    assert_eq!(
        events_of(&app, &user.to_string(), "CreditsPurchased").await,
        2
    );
    let rows = ledger_has(&app, &token, 2).await;
    assert!(rows.iter().all(|r| r["kind"] == json!("purchase")));
    app.stop().await;
}

#[tokio::test]
async fn a_completion_whose_checkout_record_was_lost_credits_the_user_of_its_metadata_once() {
    let (app, _stripe) = spawn_with_stripe().await;
    let (user, token) = new_user(&app);
    let (_, bystander) = new_user(&app);
    // A session the hub has no record of: only Stripe's metadata names the user.
    let session = foreign_session(
        "cs_test_lostrecord0000000000000000000000000000000000000000000000",
        8_000,
        hub_metadata(user, "pro", 1_000),
    );
    let event = FakeStripe::event(
        "evt_lost",
        "checkout.session.completed",
        completed_session(&session, "pi_lost", true),
    );
    for _ in 0..3 {
        let (status, body) = deliver(&app, &event).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    balance_becomes(&app, &token, 1_000 * CREDIT).await;
    status_becomes(&app, &token, &id_of(&session), "paid").await;
    assert_eq!(
        events_of(&app, &user.to_string(), "CreditsPurchased").await,
        1
    );
    assert_eq!(balance(&app, &bystander).await["balance_micros"], json!(0));

    // A session the hub did not create (no user in its metadata) is acknowledged and ignored.
    let other = foreign_session("cs_test_notours", 500, json!({ "order": "42" }));
    let (status, body) = deliver(
        &app,
        &FakeStripe::event(
            "evt_not_ours",
            "checkout.session.completed",
            completed_session(&other, "pi_x", true),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["handled"], json!(false));
    assert_eq!(
        events_of(&app, "cs_test_notours", "PaymentCompleted").await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn refunds_take_credits_back_as_ledger_entries_and_never_below_what_is_available() {
    let (app, stripe) = spawn_with_stripe().await;

    // Full refund: everything bought is taken back.
    let (_, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let (pi, id) = (payment_intent_of(&session), id_of(&session));
    assert_eq!(
        deliver(&app, &completed_event("evt_c1", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    let refund = FakeStripe::event(
        "evt_r1",
        "charge.refunded",
        refunded_charge("ch_1", &pi, 8_000, 8_000, "re_1"),
    );
    for _ in 0..3 {
        let (status, body) = deliver(&app, &refund).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    balance_becomes(&app, &token, 0).await;
    let rows = ledger_has(&app, &token, 2).await;
    assert_eq!(rows[0]["kind"], json!("refund"));
    assert_eq!(rows[0]["amount_micros"], json!(-1_000 * CREDIT));
    assert_eq!(rows[0]["balance_after_micros"], json!(0));
    assert_eq!(rows[0]["cause"], json!({ "type": "payment", "id": id }));
    status_becomes(&app, &token, &id, "refunded").await;

    // Partial refunds, cumulative: $20 of $80, then $40 in all (another $20).
    let (_, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let (pi, id) = (payment_intent_of(&session), id_of(&session));
    assert_eq!(
        deliver(&app, &completed_event("evt_c2", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    for (event, total) in [("evt_p1", 2_000), ("evt_p2", 4_000), ("evt_p1", 2_000)] {
        let (status, body) = deliver(
            &app,
            &FakeStripe::event(
                event,
                "charge.refunded",
                refunded_charge("ch_2", &pi, 8_000, total, "re_2"),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    balance_becomes(&app, &token, 500 * CREDIT).await;
    let rows = ledger_has(&app, &token, 3).await;
    assert_eq!(
        rows.iter()
            .map(|r| r["amount_micros"].clone())
            .collect::<Vec<_>>(),
        vec![
            json!(-250 * CREDIT),
            json!(-250 * CREDIT),
            json!(1_000 * CREDIT)
        ]
    );
    // The payments read model has its own consumer: it may still show the first refund.
    let row = eventually(WAIT, "both refunds in the payment's row", || async {
        history(&app, &token).await.into_iter().find(|p| {
            p["session_id"] == json!(id)
                && p["status"] == json!("partially_refunded")
                && p["refunded_cents"] == json!(4_000)
        })
    })
    .await;
    assert_eq!(row["credits_taken_back_micros"], json!(500 * CREDIT));

    // Refunded after most credits were spent: what is available is taken, the shortfall is
    // recorded, and the available balance never goes negative.
    let (user, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "starter").await;
    let (pi, id) = (payment_intent_of(&session), id_of(&session));
    assert_eq!(
        deliver(&app, &completed_event("evt_c3", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    balance_becomes(&app, &token, 100 * CREDIT).await;
    let account = AccountId::from(hub_domain::UserId(user));
    let spend = |request: &str, amount: i64| {
        let app = &app;
        let request = RequestId::parse(request).expect("request id");
        async move {
            app.state
                .credits
                .execute(
                    account,
                    CreditCommand::ReserveCredits {
                        request_id: request.clone(),
                        amount: Credits::from_micros(amount),
                        expires_at: Utc::now() + ChronoDuration::minutes(5),
                        now: Utc::now(),
                        key: None,
                    },
                    "test",
                )
                .await
                .expect("reserve");
            request
        }
    };
    let spent = spend("req-spent", 70 * CREDIT).await;
    app.state
        .credits
        .execute(
            account,
            CreditCommand::SettleReservation {
                request_id: spent,
                charge: Credits::from_micros(70 * CREDIT),
            },
            "test",
        )
        .await
        .expect("settle");
    // 20 more are held by a request in flight: not available either.
    spend("req-held", 20 * CREDIT).await;
    let (status, body) = deliver(
        &app,
        &FakeStripe::event(
            "evt_r3",
            "charge.refunded",
            refunded_charge("ch_3", &pi, 1_000, 1_000, "re_3"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    balance_becomes(&app, &token, 20 * CREDIT).await;
    let b = balance(&app, &token).await;
    assert_eq!(b["available_micros"], json!(0), "{b}");
    let rows = ledger_has(&app, &token, 3).await;
    let refund = &rows[0];
    assert_eq!(refund["kind"], json!("refund"));
    assert_eq!(refund["amount_micros"], json!(-10 * CREDIT));
    assert_eq!(refund["cause"], json!({ "type": "payment", "id": id }));
    let description = refund["description"].as_str().unwrap_or_default();
    assert!(description.contains("shortfall 90.000000"), "{description}");
    assert_eq!(rows[1]["kind"], json!("charge"));
    // The event records both what was asked and what was taken.
    let revoked: Value = sqlx::query_scalar(
        "SELECT payload::jsonb FROM events WHERE aggregate_id = $1 AND event_type = 'CreditsRevoked'",
    )
    .bind(user.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("the revocation");
    assert_eq!(revoked["CreditsRevoked"]["requested"], json!(100 * CREDIT));
    assert_eq!(revoked["CreditsRevoked"]["taken"], json!(10 * CREDIT));
    app.stop().await;
}

#[tokio::test]
async fn a_refund_that_lands_while_credits_are_held_is_repaid_from_the_next_credits() {
    let (app, stripe) = spawn_with_stripe().await;
    let (user, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "starter").await;
    let (pi, id) = (payment_intent_of(&session), id_of(&session));
    assert_eq!(
        deliver(&app, &completed_event("evt_d1", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    balance_becomes(&app, &token, 100 * CREDIT).await;
    // A request holds 80 of the 100 when the whole payment is refunded.
    let account = AccountId::from(hub_domain::UserId(user));
    let held = RequestId::parse("req-held").expect("request id");
    app.state
        .credits
        .execute(
            account,
            CreditCommand::ReserveCredits {
                request_id: held.clone(),
                amount: Credits::from_micros(80 * CREDIT),
                expires_at: Utc::now() + ChronoDuration::minutes(5),
                now: Utc::now(),
                key: None,
            },
            "test",
        )
        .await
        .expect("reserve");
    let (status, body) = deliver(
        &app,
        &FakeStripe::event(
            "evt_d2",
            "charge.refunded",
            refunded_charge("ch_d", &pi, 1_000, 1_000, "re_d"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 20 were available and taken; the 80 held are owed.
    balance_becomes(&app, &token, 80 * CREDIT).await;
    let b = balance(&app, &token).await;
    assert_eq!(
        (b["available_micros"].clone(), b["debt_micros"].clone()),
        (json!(0), json!(80 * CREDIT)),
        "{b}"
    );

    // The request is charged 30 of its 80: the 50 it gives back repay the debt, not the user.
    app.state
        .credits
        .execute(
            account,
            CreditCommand::SettleReservation {
                request_id: held,
                charge: Credits::from_micros(30 * CREDIT),
            },
            "test",
        )
        .await
        .expect("settle");
    balance_becomes(&app, &token, 0).await;
    let b = balance(&app, &token).await;
    assert_eq!(b["debt_micros"], json!(30 * CREDIT), "{b}");

    // The next credits (an admin's grant of 50) pay the remaining 30 first.
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app.grant(&admin, user, 50 * CREDIT, "after-refund").await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    balance_becomes(&app, &token, 20 * CREDIT).await;
    let b = balance(&app, &token).await;
    assert_eq!(
        (b["available_micros"].clone(), b["debt_micros"].clone()),
        (json!(20 * CREDIT), json!(0)),
        "{b}"
    );

    // The ledger shows each repayment, caused by the refunded payment, and still sums to
    // the balance.
    let rows = ledger_has(&app, &token, 6).await;
    let kinds: Vec<&str> = rows.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "debt_repayment",
            "grant",
            "debt_repayment",
            "charge",
            "refund",
            "purchase"
        ]
    );
    let refund = rows[4]["description"].as_str().unwrap_or_default();
    assert!(refund.contains("owed as a debt"), "{refund}");
    for (row, amount, still_owed) in [
        (&rows[2], 50, "30.000000 still owed"),
        (&rows[0], 30, "nothing owed"),
    ] {
        assert_eq!(row["amount_micros"], json!(-amount * CREDIT));
        assert_eq!(row["cause"], json!({ "type": "payment", "id": id }));
        let description = row["description"].as_str().unwrap_or_default();
        assert!(description.contains(still_owed), "{description}");
    }
    let sum: i64 = rows
        .iter()
        .filter_map(|r| r["amount_micros"].as_i64())
        .sum();
    assert_eq!(sum, 20 * CREDIT);
    app.stop().await;
}

#[tokio::test]
async fn out_of_order_deliveries_change_nothing_twice() {
    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);

    // Expired after paid: stays paid.
    let session = started(&app, &stripe, &token, "starter").await;
    let id = id_of(&session);
    assert_eq!(
        deliver(&app, &completed_event("evt_a1", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = deliver(
        &app,
        &FakeStripe::event(
            "evt_a2",
            "checkout.session.expired",
            expired_session(&session),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    balance_becomes(&app, &token, 100 * CREDIT).await;
    status_becomes(&app, &token, &id, "paid").await;
    assert_eq!(events_of(&app, &id, "CheckoutExpired").await, 0);

    // Paid after the card failed: money wins.
    let session = started(&app, &stripe, &token, "starter").await;
    let id = id_of(&session);
    let pi = payment_intent_of(&session);
    let (status, body) = deliver(
        &app,
        &FakeStripe::event(
            "evt_b1",
            "payment_intent.payment_failed",
            failed_intent(&pi, &session),
        ),
    )
    .await;
    assert_eq!(
        (status, body["handled"].clone()),
        (StatusCode::OK, json!(true))
    );
    let row = status_becomes(&app, &token, &id, "failed").await;
    assert_eq!(
        row["failure_reason"],
        json!("Your card has insufficient funds.")
    );
    assert_eq!(
        deliver(&app, &completed_event("evt_b2", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    balance_becomes(&app, &token, 200 * CREDIT).await;
    status_becomes(&app, &token, &id, "paid").await;

    // An asynchronous payment: completed unpaid, then it succeeds; its failure afterwards
    // and the unpaid completion again change nothing.
    let session = started(&app, &stripe, &token, "starter").await;
    let id = id_of(&session);
    assert_eq!(
        deliver(&app, &completed_event("evt_c1", &session, false))
            .await
            .0,
        StatusCode::OK
    );
    status_becomes(&app, &token, &id, "awaiting_payment").await;
    let paid = completed_session(&session, &payment_intent_of(&session), true);
    assert_eq!(
        deliver(
            &app,
            &FakeStripe::event(
                "evt_c2",
                "checkout.session.async_payment_succeeded",
                paid.clone()
            )
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        deliver(
            &app,
            &FakeStripe::event("evt_c3", "checkout.session.async_payment_failed", paid)
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(
        deliver(&app, &completed_event("evt_c1", &session, false))
            .await
            .0,
        StatusCode::OK
    );
    balance_becomes(&app, &token, 300 * CREDIT).await;
    status_becomes(&app, &token, &id, "paid").await;
    assert_eq!(events_of(&app, &id, "PaymentFailed").await, 0);

    // A refund that overtakes the completion is refused with 409 (Stripe delivers it again)
    // and applied once the payment is known.
    let session = started(&app, &stripe, &token, "starter").await;
    let pi = payment_intent_of(&session);
    let refund = FakeStripe::event(
        "evt_d2",
        "charge.refunded",
        refunded_charge("ch_d", &pi, 1_000, 1_000, "re_d"),
    );
    assert_eq!(deliver(&app, &refund).await.0, StatusCode::CONFLICT);
    assert_eq!(
        deliver(&app, &completed_event("evt_d1", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(deliver(&app, &refund).await.0, StatusCode::OK);
    balance_becomes(&app, &token, 300 * CREDIT).await;
    // 3 purchases that stayed, 1 purchase and its refund.
    let rows = ledger_has(&app, &token, 5).await;
    assert_eq!(rows[0]["kind"], json!("refund"));

    // An expiry of a session whose start was lost is recorded from its metadata.
    let (user2, token2) = new_user(&app);
    let lost = foreign_session(
        "cs_test_lostexpiry",
        1_000,
        hub_metadata(user2, "starter", 100),
    );
    assert_eq!(
        deliver(
            &app,
            &FakeStripe::event("evt_e1", "checkout.session.expired", expired_session(&lost))
        )
        .await
        .0,
        StatusCode::OK
    );
    status_becomes(&app, &token2, "cs_test_lostexpiry", "expired").await;

    // An event type the hub does not handle is acknowledged.
    let (status, body) = deliver(
        &app,
        &FakeStripe::event(
            "evt_x",
            "customer.created",
            json!({ "id": "cus_1", "object": "customer" }),
        ),
    )
    .await;
    assert_eq!(
        (status, body["handled"].clone()),
        (StatusCode::OK, json!(false))
    );
    app.stop().await;
}

#[tokio::test]
async fn history_pages_newest_first_and_shows_only_the_callers_payments() {
    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);
    let (other, other_token) = new_user(&app);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(&started(&app, &stripe, &token, "starter").await));
    }
    started(&app, &stripe, &other_token, "pro").await;
    eventually(WAIT, "three payments", || async {
        (history(&app, &token).await.len() == 3).then_some(())
    })
    .await;
    let (_, first) = json_of(app.get("/api/payments/history?limit=2", Some(&token)).await).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, second) = json_of(
        app.get(
            &format!("/api/payments/history?limit=2&cursor={cursor}"),
            Some(&token),
        )
        .await,
    )
    .await;
    let seen: Vec<String> = first["data"]
        .as_array()
        .into_iter()
        .chain(second["data"].as_array())
        .flatten()
        .map(|p| p["session_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.reverse();
    assert_eq!(seen, ids);
    assert!(second["next_cursor"].is_null());
    // Another user's history is for admins and auditors only.
    let path = format!("/api/payments/history?user_id={other}");
    assert_eq!(
        app.get(&path, Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    // The other user's payment is projected on its own schedule: wait for it to show.
    let (status, page) = eventually(WAIT, "the other user's payment", || async {
        let (status, page) = json_of(app.get(&path, Some(&auditor)).await).await;
        (status != StatusCode::OK || page["data"].as_array().is_some_and(|d| !d.is_empty()))
            .then_some((status, page))
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn a_crash_between_recording_the_payment_and_crediting_it_is_repaired_by_the_next_delivery() {
    let (app, stripe) = spawn_with_stripe().await;
    let (user, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let id = hub_domain::StripeId::parse(id_of(&session)).expect("session id");
    // The payment records the completion, and the process dies before crediting.
    app.state
        .payments
        .execute(
            &id,
            hub_domain::PaymentCommand::CompleteCheckout {
                session_id: id.clone(),
                user_from_metadata: hub_domain::UserId(user),
                package_id: "pro".into(),
                credits: Credits::from_credits(1_000),
                amount_cents: 8_000,
                currency: "usd".into(),
                payment_intent: Some(hub_domain::StripeId::parse("pi_crash").expect("pi")),
                paid: true,
                listed_price: None,
                stripe_event_id: hub_domain::StripeId::parse("evt_crash").expect("evt"),
                now: Utc::now(),
            },
            "test",
        )
        .await
        .expect("recorded");
    assert_eq!(
        events_of(&app, &user.to_string(), "CreditsPurchased").await,
        0
    );
    // Stripe got no 2xx, so it delivers the same event again: the payment changes nothing,
    // and the credits land once.
    for _ in 0..2 {
        let (status, body) = deliver(
            &app,
            &FakeStripe::event(
                "evt_crash",
                "checkout.session.completed",
                completed_session(&session, "pi_crash", true),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    balance_becomes(&app, &token, 1_000 * CREDIT).await;
    assert_eq!(events_of(&app, id.as_str(), "PaymentCompleted").await, 1);
    assert_eq!(
        events_of(&app, &user.to_string(), "CreditsPurchased").await,
        1
    );
    app.stop().await;
}

/// Issue 14, finding 16: Stripe's amount is checked against the package's price. A session
/// paid for less (a discount the hub never offered) or in another currency credits nothing.
#[tokio::test]
async fn a_completion_that_paid_less_than_the_package_price_credits_nothing() {
    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let id = id_of(&session);
    let mut cheap = session.clone();
    cheap["amount_total"] = json!(100);
    let (status, body) = deliver(&app, &completed_event("evt_cheap", &cheap, true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let row = status_becomes(&app, &token, &id, "held").await;
    assert!(
        row["failure_reason"]
            .as_str()
            .is_some_and(|r| r.contains("8000")),
        "{row}"
    );
    // A later "paid" for the same session changes nothing either.
    let (status, _) = deliver(
        &app,
        &FakeStripe::event(
            "evt_async_ok",
            "checkout.session.async_payment_succeeded",
            completed_session(&cheap, &payment_intent_of(&session), true),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events_of(&app, &id, "PaymentCompleted").await, 0);
    assert_eq!(balance(&app, &token).await["balance_micros"], json!(0));

    // The same for a session whose start was never recorded: the configured price decides.
    let (user, token) = new_user(&app);
    let foreign = foreign_session(
        "cs_test_lost_start_paid_in_euros_000000000000000000000000000000000",
        8_000,
        hub_metadata(user, "pro", 1_000),
    );
    let mut euros = completed_session(&foreign, "pi_lost_start_euros", true);
    euros["currency"] = json!("eur");
    let (status, _) = deliver(
        &app,
        &FakeStripe::event("evt_euros", "checkout.session.completed", euros),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    status_becomes(&app, &token, foreign["id"].as_str().expect("id"), "held").await;
    assert_eq!(balance(&app, &token).await["balance_micros"], json!(0));
    app.stop().await;
}

/// Issue 14, finding 16: a dispute takes the disputed share of the credits back, once; a
/// dispute the hub wins gives it back, once.
#[tokio::test]
async fn a_dispute_takes_the_credits_back_and_a_won_dispute_gives_them_back() {
    let (app, stripe) = spawn_with_stripe().await;
    let (_, token) = new_user(&app);
    let session = started(&app, &stripe, &token, "pro").await;
    let (pi, id) = (payment_intent_of(&session), id_of(&session));
    assert_eq!(
        deliver(&app, &completed_event("evt_c", &session, true))
            .await
            .0,
        StatusCode::OK
    );
    balance_becomes(&app, &token, 1_000 * CREDIT).await;
    let opened = FakeStripe::event(
        "evt_dispute_opened",
        "charge.dispute.created",
        dispute("dp_1", "ch_1", &pi, 8_000, "needs_response"),
    );
    for _ in 0..2 {
        let (status, body) = deliver(&app, &opened).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    balance_becomes(&app, &token, 0).await;
    status_becomes(&app, &token, &id, "disputed").await;
    let rows = ledger_has(&app, &token, 2).await;
    assert_eq!(rows[0]["amount_micros"], json!(-1_000 * CREDIT));

    let won = FakeStripe::event(
        "evt_dispute_won",
        "charge.dispute.closed",
        dispute("dp_1", "ch_1", &pi, 8_000, "won"),
    );
    for _ in 0..2 {
        let (status, body) = deliver(&app, &won).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    balance_becomes(&app, &token, 1_000 * CREDIT).await;
    status_becomes(&app, &token, &id, "paid").await;
    ledger_has(&app, &token, 3).await;
    app.stop().await;
}
