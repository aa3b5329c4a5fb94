//! Hardening found in review (issue 14): each test is a path an attacker could take, over
//! the real app, and fails on the code before its fix.

use hub_server::Roles;
use hub_tests::{spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

async fn register(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/api/auth/register",
        json!({"email": email, "password": password}),
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/api/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

/// Finding 2: registering a taken address answers before the password is hashed.
#[tokio::test]
async fn registering_a_taken_email_spends_no_password_hash() {
    let app = spawn_app().await;
    let created = register(&app, "taken@example.com", "correct horse 1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let hashes_before = app.state.passwords.started();
    let again = register(&app, "taken@example.com", "another horse 2").await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.state.passwords.started(),
        hashes_before,
        "no hash for an address that is taken"
    );
}

/// Finding 2: a reset with a wrong token answers before the new password is hashed.
#[tokio::test]
async fn a_reset_with_a_wrong_token_spends_no_password_hash() {
    let app = spawn_app().await;
    let created = register(&app, "reset-me@example.com", "correct horse 1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let user: Value = created.json().await.expect("json");
    let user_id = user["user"]["id"].as_str().expect("an id").to_string();
    let asked = post(
        &app,
        "/api/auth/forgot-password",
        json!({"email": "reset-me@example.com"}),
    )
    .await;
    assert!(asked.status().is_success());
    let hashes_before = app.state.passwords.started();
    let reset = post(
        &app,
        "/api/auth/reset-password",
        json!({"token": format!("{user_id}.not-the-secret"), "password": "new horse 3"}),
    )
    .await;
    assert_eq!(reset.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.state.passwords.started(),
        hashes_before,
        "no hash for a token that is wrong"
    );
}

/// Finding 2: anonymous callers cannot make the hub hash without bound; beyond the cap
/// they are told to come back (503 `busy`, `Retry-After`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_registrations_beyond_the_hashing_cap_are_told_to_retry() {
    let app = spawn_app_with(Roles::ALL, |s| {
        s.auth.password_work_max = 1;
        s.auth.password_queue_wait_ms = 1;
    })
    .await;
    let attempts = (0..12).map(|i| {
        let app = &app;
        async move { register(app, &format!("burst{i}@example.com"), "correct horse 1").await }
    });
    let answers = futures::future::join_all(attempts).await;
    let mut busy = 0;
    for answer in answers {
        match answer.status() {
            StatusCode::CREATED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(
                    answer.headers().get("retry-after").map(|v| v.as_bytes()),
                    Some(&b"1"[..])
                );
                let body: Value = answer.json().await.expect("json");
                assert_eq!(body["error"]["code"], "busy");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        busy > 0,
        "twelve hashes at once with a cap of one: some must wait"
    );
}

/// Finding 3: a burst of parallel guesses cannot all pass the throttle's check before the
/// first failure is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_parallel_guesses_gets_no_more_tries_than_the_throttle_allows() {
    let app = spawn_app().await;
    let created = register(&app, "victim@example.com", "correct horse 1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let free = app.settings.auth.login_free_failures_account;
    let guesses = (0..30).map(|i| {
        let app = &app;
        async move { login(app, "victim@example.com", &format!("guess number {i}")).await }
    });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers
        .iter()
        .filter(|a| a.status() == StatusCode::UNAUTHORIZED)
        .count();
    let locked = answers
        .iter()
        .filter(|a| a.status() == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        checked + locked,
        30,
        "every guess is refused one way or the other"
    );
    assert!(
        checked <= usize::try_from(free).unwrap_or(0),
        "{checked} guesses were checked; the throttle allows {free}"
    );
}

/// Finding 4: an address longer than any email is refused before anything else, not with
/// a server error.
#[tokio::test]
async fn an_oversize_email_at_sign_in_is_refused_cleanly() {
    let app = spawn_app().await;
    let huge = format!("{}@example.com", "a".repeat(20_000));
    let answer = login(&app, &huge, "whatever 1").await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let throttled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_throttle WHERE length(key) > 254")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(throttled, 0, "no throttle row keyed on the oversize input");
}
