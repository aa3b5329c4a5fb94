//! Email verification and password reset over the real app, reading every code and link
//! from a real message received by the test SMTP server.

use hub_adapters::mail::{MailTransport, OutgoingMail, SmtpTls};
use hub_domain::{UserCommand, UserId};
use hub_server::Settings;
use hub_tests::smtp::{ReceivedMail, SmtpServer};
use hub_tests::{spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "password123";
const NEW_PASSWORD: &str = "new-password-42";
/// Where [`assert_nothing_mailed_before_marker`] sends its marker.
const MARKER: &str = "marker@example.com";

/// The app, mailing through `smtp`, with more settings from `tweak`.
async fn app_mailing_to(smtp: &SmtpServer, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (host, port) = (smtp.host(), smtp.port());
    spawn_app_with(hub_server::Roles::ALL, move |s| {
        s.mail.transport = MailTransport::Smtp;
        s.mail.smtp_host = host;
        s.mail.smtp_port = port;
        s.mail.smtp_tls = SmtpTls::None;
        tweak(s);
    })
    .await
}

async fn post(app: &TestApp, path: &str, body: Value, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("request sent")
}

/// Status, JSON (or `Null`) and the raw text of a response.
async fn body(response: reqwest::Response) -> (StatusCode, Value, String) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

fn error_code(value: &Value) -> &str {
    value["error"]["code"].as_str().unwrap_or_default()
}

fn error_message(value: &Value) -> &str {
    value["error"]["message"].as_str().unwrap_or_default()
}

/// Register `email`: (user id, access token, refresh token, raw body).
async fn register(app: &TestApp, email: &str) -> (String, String, String, String) {
    let (status, created, raw) = body(
        post(
            app,
            "/api/auth/register",
            json!({"email": email, "password": PASSWORD}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{raw}");
    let id = created["user"]["id"].as_str().expect("user id").to_string();
    let token = created["token"].as_str().expect("token").to_string();
    let refresh = created["refresh_token"]
        .as_str()
        .expect("api clients get the refresh token in the body")
        .to_string();
    (id, token, refresh, raw)
}

async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value, String) {
    body(
        post(
            app,
            "/api/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await,
    )
    .await
}

async fn verify(app: &TestApp, token: Option<&str>, code: &str) -> (StatusCode, Value, String) {
    body(
        post(
            app,
            "/api/auth/verify-email",
            json!({ "code": code }),
            token,
        )
        .await,
    )
    .await
}

async fn resend(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/auth/resend-verification"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("request sent")
}

async fn forgot(app: &TestApp, email: &str) -> (StatusCode, Value, String) {
    body(
        post(
            app,
            "/api/auth/forgot-password",
            json!({ "email": email }),
            None,
        )
        .await,
    )
    .await
}

async fn reset(app: &TestApp, token: &str, password: &str) -> (StatusCode, Value, String) {
    body(
        post(
            app,
            "/api/auth/reset-password",
            json!({"token": token, "password": password}),
            None,
        )
        .await,
    )
    .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> StatusCode {
    post(
        app,
        "/api/auth/refresh",
        json!({ "refresh_token": refresh_token }),
        None,
    )
    .await
    .status()
}

/// The verification message for `email`: checks its envelope and subject, returns its code.
async fn verification_code(smtp: &SmtpServer, email: &str) -> String {
    let mail = smtp.next_message(WAIT).await;
    assert_eq!(mail.to, vec![email.to_string()]);
    let subject = mail.subject().unwrap_or_default();
    assert!(subject.contains("verification code"), "{subject}");
    let code = mail.find_code().expect("a six-digit code in the message");
    assert_eq!(code.len(), 6);
    code
}

/// The reset link's token from a reset message for `email`.
fn reset_token(mail: &ReceivedMail, email: &str) -> String {
    assert_eq!(mail.to, vec![email.to_string()]);
    let subject = mail.subject().unwrap_or_default();
    assert!(subject.contains("Reset"), "{subject}");
    let link = mail
        .find_link("reset-password")
        .expect("a reset-password link in the message");
    assert!(link.contains("reset-password?token="), "{link}");
    let url = url::Url::parse(&link).expect("the link is a URL");
    url.query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("a token query value")
}

/// A six-digit code that is not `code`.
fn other_code(code: &str) -> String {
    let n: u32 = code.parse().expect("digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

/// No answer of these routes may carry the one-time secret it is about.
fn assert_hidden(bodies: &[String], secret: &str) {
    for raw in bodies {
        assert!(
            !raw.contains(secret),
            "a secret leaked in a response: {raw}"
        );
    }
}

/// Asserts that nothing was mailed before now: sends a marker through the app's own mailer
/// and reads the next message. Each route here mails before it answers (the test server
/// queues a message before accepting it), so a message the app had sent would come before
/// the marker.
async fn assert_nothing_mailed_before_marker(app: &TestApp, smtp: &SmtpServer, what: &str) {
    app.state
        .mailer
        .send(OutgoingMail {
            to: MARKER.to_string(),
            subject: "marker".into(),
            text: "marker\n".into(),
        })
        .await
        .expect("the marker is sent");
    let next = smtp.next_message(WAIT).await;
    assert_eq!(next.to, vec![MARKER.to_string()], "{what}");
}

#[tokio::test]
async fn the_mailed_code_verifies_the_email_once() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |_| {}).await;
    let email = "verify@example.com";
    let (_, token, _, registered) = register(&app, email).await;
    let code = verification_code(&smtp, email).await;

    // A code is bound to its user: another user cannot spend it.
    let other = "other@example.com";
    let (_, other_token, _, _) = register(&app, other).await;
    let other_code = verification_code(&smtp, other).await;
    if other_code != code {
        let (status, refused, raw) = verify(&app, Some(&other_token), &code).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
        assert_eq!(error_code(&refused), "wrong_code");
    }

    let (status, me, before) = body(app.get("/api/auth/me", Some(&token)).await).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(me["user"]["email_verified"], false);

    let (status, verified, ok) = verify(&app, Some(&token), &code).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(verified["user"]["email_verified"], true);
    assert_eq!(verified["user"]["email"], email);

    let (status, me, after) = body(app.get("/api/auth/me", Some(&token)).await).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(me["user"]["email_verified"], true);

    // The code is used up, and a verified address needs no other.
    let (status, again, again_raw) = verify(&app, Some(&token), &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{again_raw}");
    assert_eq!(error_code(&again), "email_already_verified");
    let (status, resent, resent_raw) = body(resend(&app, Some(&token)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resent_raw}");
    assert_eq!(error_code(&resent), "email_already_verified");

    assert_nothing_mailed_before_marker(&app, &smtp, "no second code").await;
    assert_hidden(
        &[registered, before, ok, after, again_raw, resent_raw],
        &code,
    );
    app.stop().await;
}

#[tokio::test]
async fn wrong_codes_count_down_until_even_the_right_code_is_refused() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |s| s.auth.verification_attempts = 3).await;
    let email = "guess@example.com";
    let (_, token, _, registered) = register(&app, email).await;
    let code = verification_code(&smtp, email).await;
    let mut bodies = vec![registered];

    // Without a token: 401, before anything else is looked at.
    let (status, _, raw) = verify(&app, None, &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{raw}");
    bodies.push(raw);
    assert_eq!(resend(&app, None).await.status(), StatusCode::UNAUTHORIZED);

    // A malformed code is refused without spending an attempt.
    for malformed in ["12ab", "12345", "1234567", ""] {
        let (status, refused, raw) = verify(&app, Some(&token), malformed).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed:?}: {raw}");
        assert_eq!(error_code(&refused), "invalid_code", "{malformed:?}");
        bodies.push(raw);
    }

    let wrong = other_code(&code);
    for left in [2, 1, 0] {
        let (status, refused, raw) = verify(&app, Some(&token), &wrong).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
        assert_eq!(error_code(&refused), "wrong_code");
        let message = error_message(&refused);
        assert!(
            message.contains(&format!("{left} attempts left")),
            "{message}"
        );
        bodies.push(raw);
    }

    // Three wrong guesses used the code up: the right one no longer works.
    let (status, exhausted, raw) = verify(&app, Some(&token), &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{raw}");
    assert_eq!(error_code(&exhausted), "verification_code_exhausted");
    bodies.push(raw);
    let (_, me, raw) = body(app.get("/api/auth/me", Some(&token)).await).await;
    assert_eq!(me["user"]["email_verified"], false);
    bodies.push(raw);

    // A new code is not sent within a minute of the last one.
    let response = resend(&app, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let (_, waited, raw) = body(response).await;
    assert_eq!(error_code(&waited), "too_many_attempts");
    bodies.push(raw);

    assert_nothing_mailed_before_marker(&app, &smtp, "no new code sent").await;
    assert_hidden(&bodies, &code);
    app.stop().await;
}

/// The 60 s rule cannot be waited out in a test: the pending code is re-issued through the
/// app's own command bus with an `issued_at` two minutes ago, then the real route resends.
#[tokio::test]
async fn a_resent_code_replaces_the_old_one_once_a_minute_has_passed() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |_| {}).await;
    let email = "resend@example.com";
    let (id, token, _, _) = register(&app, email).await;
    let first = verification_code(&smtp, email).await;

    // Right away: refused, and nothing is sent.
    assert_eq!(
        resend(&app, Some(&token)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Backdate the pending code (a code for "000000", which nobody will type).
    let user = UserId(Uuid::parse_str(&id).expect("a uuid"));
    let then = chrono::Utc::now() - chrono::Duration::seconds(120);
    app.state
        .users
        .execute(
            user,
            UserCommand::IssueVerificationCode {
                code_hash: hub_adapters::secrets::code_hash(
                    &app.settings.auth.jwt_secret,
                    user.0,
                    "000000",
                ),
                expires_at: then + chrono::Duration::seconds(600),
                attempts_allowed: 5,
                now: then,
            },
            "test",
        )
        .await
        .expect("a backdated code");
    assert_nothing_mailed_before_marker(&app, &smtp, "the refused resend sent nothing").await;

    let (status, sent, raw) = body(resend(&app, Some(&token)).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{raw}");
    assert_eq!(sent["sent"], true);
    let second = verification_code(&smtp, email).await;
    assert_hidden(&[raw], &second);

    if second != first {
        let (status, refused, raw) = verify(&app, Some(&token), &first).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
        assert_eq!(error_code(&refused), "wrong_code", "the old code is gone");
    }
    let (status, verified, raw) = verify(&app, Some(&token), &second).await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    assert_eq!(verified["user"]["email_verified"], true);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |s| s.auth.verification_code_ttl_s = 1).await;
    let email = "late@example.com";
    let (_, token, _, _) = register(&app, email).await;
    let code = verification_code(&smtp, email).await;

    app.clock.advance(Duration::from_secs(
        app.settings.auth.verification_code_ttl_s + 1,
    ));
    let (status, expired, raw) = verify(&app, Some(&token), &code).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{raw}");
    assert_eq!(error_code(&expired), "verification_code_expired");
    assert_hidden(&[raw], &code);
    let (_, me, _) = body(app.get("/api/auth/me", Some(&token)).await).await;
    assert_eq!(me["user"]["email_verified"], false);
    app.stop().await;
}

#[tokio::test]
async fn a_reset_link_sets_a_new_password_once_and_ends_every_session() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |_| {}).await;
    let email = "reset@example.com";
    let (_, _, registered_refresh, _) = register(&app, email).await;
    let _ = verification_code(&smtp, email).await;
    // Asks for a link after the others: its message marks that their work is done.
    let later = "later@example.com";
    register(&app, later).await;
    let _ = verification_code(&smtp, later).await;
    let (status, logged, raw) = login(&app, email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    let login_refresh = logged["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    let mut bodies = Vec::new();

    // The same answer whether or not the address has a user, or is an address at all.
    let (known_status, _, known) = forgot(&app, email).await;
    let (unknown_status, _, unknown) = forgot(&app, "nobody@example.com").await;
    let (malformed_status, _, malformed) = forgot(&app, "not-an-address").await;
    assert_eq!(known_status, StatusCode::ACCEPTED, "{known}");
    assert_eq!(unknown_status, known_status);
    assert_eq!(unknown, known);
    assert_eq!(malformed_status, known_status);
    assert_eq!(malformed, known);
    bodies.extend([known, unknown, malformed]);
    let (status, missing, raw) =
        body(post(&app, "/api/auth/forgot-password", json!({}), None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
    assert_eq!(error_code(&missing), "missing_field");

    // Exactly one message: the link for the registered address.
    let mail = smtp.next_message(WAIT).await;
    let token = reset_token(&mail, email);
    // A link asked for later comes next: nothing went to the unknown addresses, whose
    // requests were answered (and their lookups started) before it was asked for.
    let (status, _, _) = forgot(&app, later).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let _ = reset_token(&smtp.next_message(WAIT).await, later);

    // A weak password is refused and leaves the link usable.
    for weak in ["short1", "onlyletters", "reset-2024!"] {
        let (status, refused, raw) = reset(&app, &token, weak).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{weak}: {raw}");
        assert_eq!(error_code(&refused), "weak_password", "{weak}");
        bodies.push(raw);
    }
    // Tokens that are not the link's.
    let (user_part, _) = token.split_once('.').expect("<user>.<secret>");
    let forged = format!("{user_part}.{}", "A".repeat(43));
    let stranger = format!("{}.{}", Uuid::new_v4().simple(), "A".repeat(43));
    for bad in ["garbage", "", forged.as_str(), stranger.as_str()] {
        let (status, refused, raw) = reset(&app, bad, NEW_PASSWORD).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {raw}");
        assert_eq!(error_code(&refused), "invalid_reset_token", "{bad:?}");
        bodies.push(raw);
    }
    let (status, _, raw) = login(&app, email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "nothing changed yet: {raw}");

    let (status, done, raw) = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    assert!(done["message"].is_string());
    bodies.push(raw);

    let (status, _, raw) = login(&app, email, PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password: {raw}");
    let (status, _, raw) = login(&app, email, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "the new password: {raw}");

    // Every session from before the reset is over.
    assert_eq!(
        refresh(&app, &login_refresh).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh(&app, &registered_refresh).await,
        StatusCode::UNAUTHORIZED
    );

    // The link works once.
    let (status, reused, raw) = reset(&app, &token, "another-password-7").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
    assert_eq!(error_code(&reused), "invalid_reset_token");
    bodies.push(raw);
    let (status, _, _) = login(&app, email, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::OK);

    let (_, secret) = token.split_once('.').expect("<user>.<secret>");
    assert_hidden(&bodies, secret);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_reset_link_is_refused_and_the_password_stays() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |s| s.auth.reset_token_ttl_s = 1).await;
    let email = "slow@example.com";
    register(&app, email).await;
    let _ = verification_code(&smtp, email).await;

    // Addresses are case-insensitive: the link goes to the registered address.
    let (status, _, _) = forgot(&app, " Slow@Example.COM").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mail = smtp.next_message(WAIT).await;
    let token = reset_token(&mail, email);

    app.clock
        .advance(Duration::from_secs(app.settings.auth.reset_token_ttl_s + 1));
    let (status, expired, raw) = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{raw}");
    assert_eq!(error_code(&expired), "reset_token_expired");
    assert_hidden(&[raw], &token);

    let (status, _, _) = login(&app, email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "the password is unchanged");
    let (status, _, _) = login(&app, email, NEW_PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Issue 14, finding 18: a new code a minute must not buy new guesses for ever. An address
/// takes a lifetime number of wrong codes; after that no code is sent or checked.
#[tokio::test]
async fn resending_codes_does_not_buy_new_guesses_for_ever() {
    let smtp = SmtpServer::start().await;
    let app = app_mailing_to(&smtp, |_| {}).await;
    let email = "guesser@example.com";
    let (_, token, _, _) = register(&app, email).await;
    let mut code = verification_code(&smtp, email).await;
    let mut wrong_guesses = 0;
    loop {
        let (status, refused, raw) = verify(&app, Some(&token), &other_code(&code)).await;
        match error_code(&refused) {
            "wrong_code" => wrong_guesses += 1,
            "verification_code_exhausted" => {
                app.clock.advance(Duration::from_secs(61));
                let resent = resend(&app, Some(&token)).await;
                if resent.status() == StatusCode::FORBIDDEN {
                    let refused: Value = resent.json().await.expect("json");
                    assert_eq!(error_code(&refused), "verification_locked");
                    break;
                }
                assert!(resent.status().is_success(), "resend: {}", resent.status());
                code = verification_code(&smtp, email).await;
            }
            "verification_locked" => {
                assert_eq!(status, StatusCode::FORBIDDEN, "{raw}");
                break;
            }
            other => panic!("unexpected answer {status} {other}: {raw}"),
        }
        assert!(wrong_guesses <= 100, "guesses never ran out");
    }
    assert_eq!(wrong_guesses, hub_domain::user::VERIFICATION_FAILURES_MAX);
    // The right code of the last live code is not checked any more either.
    let (status, refused, _) = verify(&app, Some(&token), &code).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&refused), "verification_locked");
    app.stop().await;
}
