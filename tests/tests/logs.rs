//! No secret in any log line at any level: a realistic run (register, verify the email,
//! sign in, refresh, create an API key, chat with it, redeem a promo code, pay through
//! Stripe's webhook, reset the password) logged at TRACE as JSON lines, then searched for
//! every secret it used (docs/security.md: passwords, tokens, API keys, codes and service
//! credentials; promo codes are public and not searched for).

use chrono::Utc;
use hub_adapters::mail::{MailTransport, SmtpTls};
use hub_app::config::{LogFormat, LogSettings, TracesSettings};
use hub_domain::Role;
use hub_server::Roles;
use hub_tests::fake_stripe::{completed_session, stripe_signature, FakeStripe, WEBHOOK_SECRET};
use hub_tests::smtp::SmtpServer;
use hub_tests::{spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

/// Every line the process logs, kept for the test to read.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

struct Line(Arc<Mutex<Vec<u8>>>);

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(self.0.clone())
    }
}

impl Capture {
    fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

async fn post(app: &TestApp, path: &str, body: Value, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {value}"))
        .to_string()
}

/// Where `secret` stands in `logs` as a whole token (a six-digit code inside a longer
/// number is not it): the line, for the failure message.
fn find<'a>(logs: &'a str, secret: &str) -> Option<&'a str> {
    let standalone = |at: usize| {
        let before = logs[..at].chars().next_back();
        let after = logs[at + secret.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    };
    logs.match_indices(secret)
        .map(|(at, _)| at)
        .find(|at| standalone(*at))
        .map(|at| {
            let start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            &logs[start..end]
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_a_whole_run_appears_in_the_trace_logs() {
    let logs = Capture::default();
    let _telemetry = hub_server::telemetry::try_init(
        &LogSettings {
            format: LogFormat::Json,
        },
        &TracesSettings::default(),
        "all",
        tracing_subscriber::EnvFilter::new("trace"),
        logs.clone(),
    )
    .expect("the only subscriber of this test binary");

    let smtp = SmtpServer::start().await;
    let stripe = FakeStripe::start().await;
    let (host, port) = (smtp.host(), smtp.port());
    let (stripe_key, stripe_url) = (stripe.secret_key().to_string(), stripe.url().to_string());
    let app = spawn_app_with(Roles::ALL, move |s| {
        s.mail.transport = MailTransport::Smtp;
        s.mail.smtp_host = host;
        s.mail.smtp_port = port;
        s.mail.smtp_tls = SmtpTls::None;
        s.payments.stripe_secret_key = stripe_key;
        s.payments.webhook_secret = WEBHOOK_SECRET.into();
        s.payments.api_base = stripe_url;
        s.payments.http_timeout_ms = 5_000;
    })
    .await;
    let mut secrets: Vec<(&str, String)> = vec![
        ("the JWT secret", app.settings.auth.jwt_secret.clone()),
        ("the Stripe key", stripe.secret_key().to_string()),
        ("the Stripe webhook secret", WEBHOOK_SECRET.to_string()),
    ];

    // Register, verify the email, sign in, refresh.
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let password = format!("first-{}", Uuid::new_v4().simple());
    let (status, registered) = post(
        &app,
        "/api/auth/register",
        json!({"email": email, "password": password}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let user: Uuid = text(&registered, "/user/id").parse().expect("a user id");
    secrets.push(("the password", password.clone()));
    secrets.push(("an access token", text(&registered, "/token")));
    secrets.push(("a refresh token", text(&registered, "/refresh_token")));
    let code = smtp
        .next_message(WAIT)
        .await
        .find_code()
        .expect("a verification code");
    let token = text(&registered, "/token");
    let (status, verified) = post(
        &app,
        "/api/auth/verify-email",
        json!({ "code": code }),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    secrets.push(("a verification code", code));
    let (status, signed_in) = post(
        &app,
        "/api/auth/login",
        json!({"email": email, "password": password}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signed_in}");
    let (status, refreshed) = post(
        &app,
        "/api/auth/refresh",
        json!({ "refresh_token": text(&signed_in, "/refresh_token") }),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    secrets.push(("an access token", text(&signed_in, "/token")));
    secrets.push(("a refresh token", text(&signed_in, "/refresh_token")));
    secrets.push(("an access token", text(&refreshed, "/token")));
    secrets.push(("a refresh token", text(&refreshed, "/refresh_token")));
    let token = text(&refreshed, "/token");

    // An API key, credits, and chats with the key (one streamed).
    let (status, key) = post(&app, "/api/keys", json!({"name": "ci"}), Some(&token)).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let api_key = text(&key, "/key");
    secrets.push(("an API key", api_key.clone()));
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    secrets.push(("an admin's access token", admin.clone()));
    assert_eq!(
        app.grant(&admin, user, 10_000_000, &format!("fund-{user}"))
            .await
            .status(),
        StatusCode::CREATED
    );
    for stream in [false, true] {
        let answer = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&api_key)
            .header("x-request-id", format!("logs-test-{stream}"))
            .json(
                &json!({"model": "mock-1", "stream": stream, "max_tokens": 16,
                "messages": [{"role": "user", "content": "Say hello."}]}),
            )
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), StatusCode::OK);
        answer.text().await.expect("the whole answer");
    }

    // A promo code, redeemed.
    let (status, created) = post(
        &app,
        "/api/admin/promos",
        json!({"code": "LOGS-25", "creditsMicros": 1_000_000, "maxRedemptions": 5}),
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, redeemed) = post(
        &app,
        "/api/promos/redeem",
        json!({"code": "LOGS-25"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{redeemed}");

    // A purchase: checkout, then Stripe's signed webhook.
    let (status, checkout) = post(
        &app,
        "/api/payments/checkout",
        json!({"packageId": "starter"}),
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    let session = stripe
        .session(&text(&checkout, "/id"))
        .expect("the fake made the session");
    let session_id = text(&session, "/id");
    let event = FakeStripe::event(
        &format!("evt_{}", Uuid::new_v4().simple()),
        "checkout.session.completed",
        completed_session(&session, &format!("pi_{}", &session_id[8..30]), true),
    );
    let body = serde_json::to_vec(&event).expect("json");
    let signature = stripe_signature(&body, WEBHOOK_SECRET, Utc::now().timestamp());
    let delivered = app
        .client
        .post(app.url("/api/payments/webhook"))
        .header("content-type", "application/json")
        .header("Stripe-Signature", &signature)
        .body(body)
        .send()
        .await
        .expect("sent");
    assert!(delivered.status().is_success(), "{}", delivered.status());
    secrets.push(("a Stripe signature", signature));

    // A password reset through the mailed link, then a sign-in with the new password.
    let (status, _) = post(
        &app,
        "/api/auth/forgot-password",
        json!({ "email": email }),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let link = smtp
        .next_message(WAIT)
        .await
        .find_link("reset-password")
        .expect("a reset link");
    let reset_token = url::Url::parse(&link)
        .expect("a URL")
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("a token in the link");
    let new_password = format!("second-{}", Uuid::new_v4().simple());
    let (status, reset) = post(
        &app,
        "/api/auth/reset-password",
        json!({"token": reset_token, "password": new_password}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let (status, again) = post(
        &app,
        "/api/auth/login",
        json!({"email": email, "password": new_password}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    secrets.push(("a reset token", reset_token));
    secrets.push(("the new password", new_password));
    secrets.push(("an access token", text(&again, "/token")));
    secrets.push(("a refresh token", text(&again, "/refresh_token")));

    // Every answer above came after its commands were written; stopping flushes the rest.
    app.stop().await;

    let logs = logs.text();
    // The run was logged, down to TRACE, one JSON object per line, the request ids in the
    // lines of the requests they name.
    assert!(
        logs.lines().count() > 1_000,
        "{} lines",
        logs.lines().count()
    );
    for line in logs.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        assert!(value.is_object(), "{line}");
    }
    assert!(logs.contains(r#""level":"TRACE""#));
    assert!(logs.contains(r#""request_id":"logs-test-true""#));
    // The search sees what the hub logs: the user's id, which is no secret, is there.
    assert!(find(&logs, &user.to_string()).is_some());
    for (what, secret) in &secrets {
        if let Some(line) = find(&logs, secret) {
            panic!("{what} is in the logs: {line}");
        }
    }
}
