//! Low-balance alerts over the real app: a user whose available balance falls below their
//! threshold gets one email (at the test SMTP server) and one signed webhook (at a receiver
//! of the test's own) per crossing, retried when the receiver fails, never sent twice across
//! restarts and replays; and each user sets and reads only their own threshold.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use hmac::{Hmac, Mac};
use hub_adapters::mail::{MailTransport, SmtpTls};
use hub_domain::Role;
use hub_projections::ProjectionKind;
use hub_server::Roles;
use hub_tests::smtp::SmtpServer;
use hub_tests::{eventually, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
/// The threshold the tests set: 5 credits.
const THRESHOLD: i64 = 5_000_000;
/// The hub's default threshold in these tests: 2 credits.
const DEFAULT_THRESHOLD: i64 = 2_000_000;
const ALERT_SUBJECT: &str = "Your Smart AI Hub balance is low";

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Hook {
    signature: String,
    event_id: String,
    body: Bytes,
    /// What the receiver answered.
    answered: u16,
}

impl Hook {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Hook>>,
    /// The statuses to answer, in order; 200 once they are used up.
    script: Mutex<VecDeque<u16>>,
}

/// A webhook receiver on 127.0.0.1 and a free port.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: Vec<u16>) -> Receiver {
        let state = Arc::new(ReceiverState {
            received: Mutex::default(),
            script: Mutex::new(script.into()),
        });
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            task,
        }
    }

    fn received(&self) -> Vec<Hook> {
        self.state.received.lock().expect("lock").clone()
    }

    /// The webhooks answered 200, in order.
    fn delivered(&self) -> Vec<Hook> {
        self.received()
            .into_iter()
            .filter(|h| h.answered == 200)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let answered = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    state.received.lock().expect("lock").push(Hook {
        signature: header("aihub-signature"),
        event_id: header("aihub-event-id"),
        body,
        answered,
    });
    AxumStatus::from_u16(answered).unwrap_or(AxumStatus::INTERNAL_SERVER_ERROR)
}

/// Check a request's `AIHub-Signature` the way a receiver would: HMAC-SHA256 under the
/// secret over `<t>.<body>`.
fn assert_signed(hook: &Hook, secret: &str) {
    let mut t = None;
    let mut v1 = None;
    for part in hook.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let t = t.expect("a timestamp in the signature header");
    let v1 = v1.expect("a v1 signature");
    assert!(t.parse::<i64>().is_ok(), "t is unix seconds: {t}");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hook.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1, expected,
        "the signature verifies with the user's secret"
    );
    let mut wrong = <Hmac<Sha256> as Mac>::new_from_slice(b"whsec_wrong").expect("key");
    wrong.update(format!("{t}.").as_bytes());
    wrong.update(&hook.body);
    assert_ne!(
        v1,
        wrong
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
}

/// The app mailing to `smtp`, delivering alerts every 20 ms and retrying after 20 ms.
async fn app_with(smtp: &SmtpServer, roles: Roles) -> TestApp {
    let (host, port) = (smtp.host(), smtp.port());
    spawn_app_with(roles, move |s| {
        s.mail.transport = MailTransport::Smtp;
        s.mail.smtp_host = host;
        s.mail.smtp_port = port;
        s.mail.smtp_tls = SmtpTls::None;
        s.alerts.low_balance_default_micros = DEFAULT_THRESHOLD;
        s.alerts.delivery_interval_ms = 20;
        s.alerts.retry_base_ms = 20;
        s.alerts.retry_max_ms = 200;
    })
    .await
}

/// Register `email`: its user id and access token.
async fn register(app: &TestApp, email: &str) -> (Uuid, String) {
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    let id = body["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("user id");
    (id, body["token"].as_str().expect("token").to_string())
}

async fn put_alert(app: &TestApp, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = app
        .client
        .put(app.url("/api/alerts/low-balance"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_alert(app: &TestApp, token: &str) -> Value {
    let response = app.get("/api/alerts/low-balance", Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

/// Grant `micros` to `user`; answers the account's event sequence after the grant.
async fn grant(app: &TestApp, user: Uuid, micros: i64) -> i64 {
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let response = app
        .grant(&admin, user, micros, &Uuid::new_v4().to_string())
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    sqlx::query_scalar(
        "SELECT max(sequence) FROM events
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1",
    )
    .bind(user.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("the grant's event")
}

/// One chat on the mock model, answered whole. Its answer (12 to 48 words) stays under
/// `max_tokens`, so its reservation holds more than it is charged.
async fn chat(app: &TestApp, token: &str) {
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&json!({"model": "mock-1", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 200}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let _ = response.text().await.expect("the answer");
}

/// Top the account up to at least one micro-credit above `threshold` (re-arming its
/// alert); answers the top-up's event sequence.
async fn top_up_above(app: &TestApp, user: Uuid, token: &str, threshold: i64) -> i64 {
    let balance = app.settled_balance(token).await;
    let available = balance["available_micros"].as_i64().expect("available");
    grant(app, user, (threshold + 1 - available).max(1)).await
}

/// Wait for the webhook of a crossing after the account event `after`: every notification
/// before it was delivered earlier (they go out in stream order).
async fn webhook_after(receiver: &Receiver, after: i64) -> Hook {
    eventually(WAIT, "the webhook of the crossing", || async {
        receiver
            .delivered()
            .into_iter()
            .find(|h| h.json()["data"]["account_event"]["sequence"].as_i64() > Some(after))
    })
    .await
}

/// Every low-balance email received so far (other mail, the verification code, skipped).
async fn alert_emails(smtp: &SmtpServer) -> Vec<hub_tests::smtp::ReceivedMail> {
    let mut alerts = Vec::new();
    while let Some(mail) = smtp.try_next_message().await {
        if mail.subject().as_deref() == Some(ALERT_SUBJECT) {
            alerts.push(mail);
        }
    }
    alerts
}

/// A registered user with the test threshold and a webhook to `receiver`, funded one
/// micro-credit above the threshold (armed); answers id, token, signing secret.
async fn armed_user(app: &TestApp, receiver: &Receiver, email: &str) -> (Uuid, String, String) {
    let (user, token) = register(app, email).await;
    let (status, set) = put_alert(
        app,
        Some(&token),
        json!({"threshold_micros": THRESHOLD, "webhook_url": receiver.url}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let secret = set["webhook_secret"]
        .as_str()
        .expect("a new webhook gets its secret")
        .to_string();
    grant(app, user, THRESHOLD + 1).await;
    (user, token, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_spending_below_the_threshold_is_warned_once_per_crossing_by_email_and_signed_webhook(
) {
    let smtp = SmtpServer::start().await;
    let receiver = Receiver::start(Vec::new()).await;
    let app = app_with(&smtp, Roles::ALL).await;
    let (user, token, secret) = armed_user(&app, &receiver, "ada@example.com").await;

    // The first request's reservation takes the available balance below the threshold.
    chat(&app, &token).await;
    let first = webhook_after(&receiver, 0).await;
    // Many more requests below it, then a top-up above and one more request below.
    for _ in 0..10 {
        chat(&app, &token).await;
    }
    let topped_up = top_up_above(&app, user, &token, THRESHOLD).await;
    chat(&app, &token).await;
    let second = webhook_after(&receiver, topped_up).await;

    let delivered = receiver.received();
    assert_eq!(
        delivered.len(),
        2,
        "one webhook per crossing: {delivered:?}"
    );
    assert_ne!(first.event_id, second.event_id);
    for hook in [&first, &second] {
        assert_signed(hook, &secret);
        let body = hook.json();
        assert_eq!(
            body["id"], hook.event_id,
            "the header names the body's event"
        );
        assert_eq!(body["type"], "balance.low");
        assert_eq!(body["data"]["user_id"], user.to_string());
        assert_eq!(body["data"]["threshold_micros"], THRESHOLD);
        let available = body["data"]["available_micros"]
            .as_i64()
            .expect("available");
        assert!((0..THRESHOLD).contains(&available), "{body}");
    }
    let emails = alert_emails(&smtp).await;
    assert_eq!(emails.len(), 2, "one email per crossing");
    for mail in &emails {
        assert_eq!(mail.to, vec!["ada@example.com".to_string()]);
        assert!(
            mail.text_body().contains("5.000000 credits"),
            "{}",
            mail.text_body()
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_answered_500_twice_is_retried_and_delivered_once() {
    let smtp = SmtpServer::start().await;
    let receiver = Receiver::start(vec![500, 500]).await;
    let app = app_with(&smtp, Roles::ALL).await;
    let (user, token, secret) = armed_user(&app, &receiver, "grace@example.com").await;

    chat(&app, &token).await;
    let first = webhook_after(&receiver, 0).await;
    let attempts = receiver.received();
    assert_eq!(
        attempts.iter().map(|h| h.answered).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    for hook in &attempts {
        assert_eq!(hook.event_id, first.event_id, "every retry carries one id");
        assert_eq!(hook.body, first.body, "and the same body");
        assert_signed(hook, &secret);
    }

    // A later crossing's webhook comes after any repeat of the first would have.
    let topped_up = top_up_above(&app, user, &token, THRESHOLD).await;
    chat(&app, &token).await;
    let second = webhook_after(&receiver, topped_up).await;
    let all = receiver.received();
    assert_eq!(
        all.len(),
        4,
        "the delivered webhook was not sent again: {all:?}"
    );
    assert_ne!(second.event_id, first.event_id);
    assert_eq!(
        alert_emails(&smtp).await.len(),
        2,
        "one email per crossing, whatever the webhook's retries"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_projector_and_delivery_or_replaying_alerts_sends_nothing_twice() {
    let smtp = SmtpServer::start().await;
    let receiver = Receiver::start(Vec::new()).await;
    // The projections and the delivery loop run in a process of their own, restarted below.
    let app = app_with(
        &smtp,
        Roles {
            projections: false,
            sweeper: false,
            ..Roles::ALL
        },
    )
    .await;
    let background = Roles {
        projections: true,
        sweeper: true,
        ..Roles::NONE
    };
    let first_process = app.peer(background).await;
    let (user, token, secret) = armed_user(&app, &receiver, "edsger@example.com").await;
    chat(&app, &token).await;
    let first = webhook_after(&receiver, 0).await;
    assert_eq!(alert_emails(&smtp).await.len(), 1);
    // A second request, and a threshold under which the first request's hold stays at it
    // and the second's crosses it: a rebuild with it finds a crossing at another event.
    chat(&app, &token).await;
    // Projected live before the restart (alerts are projected in one transaction with the
    // balances), so every event the rebuild below reads was seen live before.
    app.settled_balance(&token).await;
    let moved = first.json()["data"]["available_micros"]
        .as_i64()
        .expect("available");
    let (status, _) = put_alert(
        &app,
        Some(&token),
        json!({"threshold_micros": moved, "webhook_url": receiver.url}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Killed and started again; then the alerts projection is rebuilt from the stream.
    drop(first_process);
    let _second_process = app.peer(background).await;
    let stats = hub_projections::replay(
        &app.pool,
        &app.settings.database.url,
        &app.state.js,
        &app.state.topology,
        ProjectionKind::Alerts,
        false,
    )
    .await
    .expect("the alerts projection replays");
    assert!(stats.messages > 0);

    let topped_up = top_up_above(&app, user, &token, moved).await;
    chat(&app, &token).await;
    let second = webhook_after(&receiver, topped_up).await;
    let all = receiver.received();
    assert_eq!(all.len(), 2, "nothing was sent twice: {all:?}");
    assert_ne!(first.event_id, second.event_id);
    assert_signed(&second, &secret);
    assert_eq!(
        alert_emails(&smtp).await.len(),
        1,
        "one more email, the new crossing's"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sets_and_reads_their_own_threshold_and_no_one_else_changes_it() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, Roles::ALL).await;
    let alice = app.token(Uuid::new_v4(), Role::User);
    let bob = app.token(Uuid::new_v4(), Role::User);

    let unset = get_alert(&app, &alice).await;
    assert_eq!(unset["threshold_micros"], DEFAULT_THRESHOLD);
    assert_eq!(unset["is_default"], true);
    assert_eq!(unset["webhook_url"], Value::Null);

    let (status, set) = put_alert(
        &app,
        Some(&alice),
        json!({"threshold_micros": 3_000_000, "webhook_url": "https://hooks.example/alice"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let secret = set["webhook_secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    assert!(secret.starts_with("whsec_"));
    let read = get_alert(&app, &alice).await;
    assert_eq!(read["threshold_micros"], 3_000_000);
    assert_eq!(read["is_default"], false);
    assert_eq!(read["webhook_url"], "https://hooks.example/alice");
    assert!(
        read.get("webhook_secret").is_none(),
        "a secret is shown once"
    );

    // Bob sets his own; nothing names another user, and a body that tries is refused.
    let (status, _) = put_alert(&app, Some(&bob), json!({"threshold_micros": 7})).await;
    assert_eq!(status, StatusCode::OK);
    let alice_id = app.state.jwt.verify(&alice).expect("token").sub;
    let (status, refused) = put_alert(
        &app,
        Some(&bob),
        json!({"user_id": alice_id, "threshold_micros": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(get_alert(&app, &bob).await["threshold_micros"], 7);
    assert_eq!(get_alert(&app, &alice).await, read);
    let (status, _) = put_alert(&app, None, json!({"threshold_micros": 1})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The same URL keeps its secret; a rotation issues another.
    let (_, same) = put_alert(
        &app,
        Some(&alice),
        json!({"threshold_micros": 4_000_000, "webhook_url": "https://hooks.example/alice"}),
    )
    .await;
    assert!(same.get("webhook_secret").is_none(), "{same}");
    let (_, rotated) = put_alert(
        &app,
        Some(&alice),
        json!({"threshold_micros": 4_000_000, "webhook_url": "https://hooks.example/alice",
               "rotate_webhook_secret": true}),
    )
    .await;
    let new_secret = rotated["webhook_secret"].as_str().expect("a new secret");
    assert_ne!(new_secret, secret);

    // Back to the default, without a webhook.
    let (status, cleared) = put_alert(&app, Some(&alice), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cleared["threshold_micros"], DEFAULT_THRESHOLD);
    assert_eq!(cleared["is_default"], true);
    assert_eq!(get_alert(&app, &alice).await["webhook_url"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_alert_settings_are_refused_with_400_in_the_house_error_shape() {
    let smtp = SmtpServer::start().await;
    let app = app_with(&smtp, Roles::ALL).await;
    let token = app.token(Uuid::new_v4(), Role::User);
    for (body, code) in [
        (json!({"threshold_micros": -1}), "invalid_threshold"),
        (json!({"threshold_micros": i64::MAX}), "invalid_threshold"),
        (
            json!({"webhook_url": "ftp://hooks.example/x"}),
            "invalid_webhook_url",
        ),
        (
            json!({"webhook_url": "javascript:alert(1)"}),
            "invalid_webhook_url",
        ),
        (json!({"webhook_url": "not a url"}), "invalid_webhook_url"),
        (json!({"threshold_micros": "five"}), "invalid_body"),
    ] {
        let (status, error) = put_alert(&app, Some(&token), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    // Nothing was written.
    let unchanged = get_alert(&app, &token).await;
    assert_eq!(unchanged["is_default"], true);
    assert_eq!(unchanged["webhook_url"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_hold_dips_below_the_threshold_warns_once_though_its_charge_leaves_the_balance_above(
) {
    let smtp = SmtpServer::start().await;
    let receiver = Receiver::start(Vec::new()).await;
    let app = app_with(&smtp, Roles::ALL).await;
    let (user, token) = register(&app, "barbara@example.com").await;
    grant(&app, user, 10_000_000).await;
    // What one request is charged (the mock answers the same every time).
    let before = app.settled_balance(&token).await["available_micros"]
        .as_i64()
        .expect("available");
    chat(&app, &token).await;
    let after = app.settled_balance(&token).await["available_micros"]
        .as_i64()
        .expect("available");
    let charge = before - after;
    assert!(charge > 0);

    // One micro-credit of top-up arms the alert at a threshold the next charge lands on:
    // each request's reservation holds more than its charge, so it dips below while the
    // request runs, and the balance is back at the threshold once it is settled.
    let threshold = after + 1 - charge;
    let (status, set) = put_alert(
        &app,
        Some(&token),
        json!({"threshold_micros": threshold, "webhook_url": receiver.url}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    grant(&app, user, 1).await;
    chat(&app, &token).await;
    let first = webhook_after(&receiver, 0).await;
    assert_eq!(
        app.settled_balance(&token).await["available_micros"],
        threshold,
        "settled back at the threshold"
    );
    // The next requests dip below again, from a balance no top-up brought back: no alert.
    for _ in 0..3 {
        chat(&app, &token).await;
    }
    let available = app.settled_balance(&token).await["available_micros"]
        .as_i64()
        .expect("available");
    let rearmed = grant(&app, user, threshold + 1 - available).await;
    chat(&app, &token).await;
    let second = webhook_after(&receiver, rearmed).await;
    let all = receiver.received();
    assert_eq!(
        all.len(),
        2,
        "one webhook per crossing, not per request: {all:?}"
    );
    assert_ne!(first.event_id, second.event_id);
    assert_eq!(alert_emails(&smtp).await.len(), 2);
    app.stop().await;
}
