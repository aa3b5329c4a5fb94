//! Hardening found in review (issue 14): each test is a path an attacker could take, over
//! the real app, and fails on the code before its fix.

use hub_commands::Clock;
use hub_domain::Role;
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

/// Finding 1: the public development secret is refused on any address but loopback, and
/// the error says what to set.
#[test]
fn a_hub_reachable_from_the_network_refuses_the_development_jwt_secret() {
    let mut settings = hub_app::Settings::default();
    assert_eq!(settings.auth.jwt_secret, hub_app::config::DEV_JWT_SECRET);
    for loopback in ["127.0.0.1", "::1", "localhost"] {
        settings.server.host = loopback.into();
        assert!(settings.validate().is_ok(), "{loopback} may use it");
    }
    for public in ["0.0.0.0", "::", "10.1.2.3", "hub.example.com"] {
        settings.server.host = public.into();
        let refused = settings.validate().expect_err("refused");
        assert!(
            refused.to_string().contains("AIHUB__AUTH__JWT_SECRET"),
            "{public}: {refused}"
        );
    }
    settings.auth.jwt_secret = "a-real-secret-of-at-least-thirty-two-bytes".into();
    assert!(settings.validate().is_ok(), "a real secret on any address");
}

/// Finding 20: `/ready` tells an anonymous caller whether the hub is ready, and nothing of
/// its insides; an admin gets the details.
#[tokio::test]
async fn readiness_details_are_for_admins_only() {
    let app = spawn_app().await;
    let anonymous: Value = app.get("/ready", None).await.json().await.expect("json");
    assert_eq!(anonymous, json!({"status": "ready"}));
    let user = app.token(uuid::Uuid::new_v4(), Role::User);
    let as_user: Value = app
        .get("/ready", Some(&user))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(as_user, json!({"status": "ready"}));
    let admin = app.token(uuid::Uuid::new_v4(), Role::Admin);
    let details: Value = app
        .get("/ready", Some(&admin))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(details["status"], "ready");
    assert_eq!(details["postgres"]["ok"], true);
    assert!(details["projections"]["balances"].is_object());
}

/// Finding 22: settings print their secrets as `***` (they end up in logs and errors).
#[test]
fn settings_never_print_their_secrets() {
    let mut settings = hub_app::Settings::default();
    settings.auth.jwt_secret = "jwt-secret-that-must-not-leak-0123456789".into();
    settings.database.url = "postgres://hub:db-password-that-must-not-leak@db/aihub".into();
    settings.nats.url = "nats://nats-token-that-must-not-leak@nats:4222".into();
    settings.payments.stripe_secret_key = "sk_test_stripe-key-that-must-not-leak".into();
    settings.payments.webhook_secret = "whsec_webhook-secret-that-must-not-leak".into();
    settings.google.client_secret = "google-secret-that-must-not-leak".into();
    settings.mail.smtp_password = Some("smtp-password-that-must-not-leak".into());
    let printed = format!("{settings:?}");
    assert!(!printed.contains("must-not-leak"), "{printed}");
    assert!(printed.contains("postgres://hub:***@db/aihub"), "{printed}");
    assert!(printed.contains("nats://***@nats:4222"), "{printed}");
}

/// Finding 5: behind a trusted proxy, the client cannot pick its throttle key by writing its
/// own `X-Forwarded-For` entries: the address the proxy appended is the one counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_entry_does_not_escape_the_address_throttle() {
    let app = spawn_app_with(Roles::ALL, |s| {
        s.auth.trust_forwarded_for = true;
        s.auth.trusted_proxies = 1;
        s.auth.login_free_failures_ip = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let answer = app
            .client
            .post(app.url("/api/auth/login"))
            // The client made up the first entry; the proxy appended 198.51.100.9.
            .header("x-forwarded-for", format!("192.0.2.{i}, 198.51.100.9"))
            .json(&json!({"email": format!("nobody{i}@example.com"), "password": "guess 123"}))
            .send()
            .await
            .expect("sent");
        statuses.push(answer.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "one address guessing for six accounts is throttled: {statuses:?}"
    );
}

/// Finding 12: an API key is an inference key, whoever owns it: a leaked one cannot grant
/// credits or roles, nor make more keys, while `/v1` and reads still work with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_inference_key_cannot_grant_credits() {
    let app = spawn_app().await;
    // A registered user who is made an admin: the key's owner really holds the role.
    let registered = register(&app, "admin@example.com", "correct horse 1").await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let admin_id: uuid::Uuid = registered.json::<Value>().await.expect("json")["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id");
    let bootstrap = app.token(uuid::Uuid::new_v4(), Role::Admin);
    let promoted = app
        .client
        .post(app.url(&format!("/api/admin/users/{admin_id}/roles")))
        .bearer_auth(&bootstrap)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect("sent");
    assert!(promoted.status().is_success(), "{}", promoted.status());
    let admin = app.token(admin_id, Role::Admin);
    let created = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&admin)
        .json(&json!({"name": "ci", "scopes": ["inference", "read"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "an admin makes a key"
    );
    let key = created.json::<Value>().await.expect("json")["key"]
        .as_str()
        .expect("the key")
        .to_string();
    let grant = app
        .client
        .post(app.url("/api/admin/credits/grant"))
        .bearer_auth(&key)
        .header("idempotency-key", "leak-1")
        .json(&json!({"user_id": admin_id, "amount_micros": 1_000_000_000, "reason": "mine"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(grant.status(), StatusCode::FORBIDDEN, "no grant with a key");
    let users = app.get("/api/admin/users", Some(&key)).await;
    assert_eq!(
        users.status(),
        StatusCode::FORBIDDEN,
        "no admin reads with a key"
    );
    let another = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&key)
        .json(&json!({"name": "more"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        another.status(),
        StatusCode::FORBIDDEN,
        "no new keys with a key"
    );
    assert_eq!(
        app.get("/v1/models", Some(&key)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/credits/balance", Some(&key)).await.status(),
        StatusCode::OK
    );
}

/// Finding 13: with `auth.require_verified_email`, an unverified user cannot make an API key
/// (and a key made before the rule was turned on no longer spends: the rule now applies to
/// every caller, `require_verified_email` in `app/src/inference/limits.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_user_cannot_make_an_api_key_to_spend_through() {
    let app = spawn_app_with(Roles::ALL, |s| {
        s.auth.require_verified_email = true;
        s.auth.signup_grant_micros = 10_000_000;
    })
    .await;
    let registered = register(&app, "unverified@example.com", "correct horse 1").await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let body: Value = registered.json().await.expect("json");
    let user_id: uuid::Uuid = body["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id");
    let token = app.token(user_id, Role::User);
    let refused = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "early"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

/// Finding 17: sign-in throttle rows and refresh tokens, which anonymous callers create, do
/// not pile up: once a row neither counts nor locks, and once a token has expired, the
/// janitor deletes it.
#[tokio::test]
async fn spent_throttle_rows_and_expired_refresh_tokens_are_purged() {
    // No sweeper: its janitor, on the same shifted clock, could purge the rows first and
    // leave this test's own purge nothing to report.
    let app = spawn_app_with(
        Roles {
            sweeper: false,
            ..Roles::ALL
        },
        |_| {},
    )
    .await;
    let created = register(&app, "purge@example.com", "correct horse 1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    for _ in 0..2 {
        let wrong = login(&app, "purge@example.com", "wrong horse").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let count = |table: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .expect("count rows")
        }
    };
    assert!(count("login_throttle").await > 0);
    assert!(count("refresh_tokens").await > 0);
    let window = chrono::Duration::seconds(
        i64::try_from(app.settings.auth.login_window_s).expect("a window in range"),
    );
    // Nothing is purged while it still counts.
    let purged = hub_app::janitor::purge_once(&app.pool, window, app.clock.now())
        .await
        .expect("purged");
    assert_eq!(purged, hub_app::janitor::Purged::default());
    let refresh_ttl = std::time::Duration::from_secs(app.settings.auth.refresh_token_ttl_s);
    app.clock.advance(
        refresh_ttl.max(std::time::Duration::from_secs(
            app.settings.auth.login_window_s,
        )) * 2,
    );
    let purged = hub_app::janitor::purge_once(&app.pool, window, app.clock.now())
        .await
        .expect("purged");
    assert!(
        purged.throttle_rows > 0 && purged.refresh_tokens > 0,
        "{purged:?}"
    );
    assert_eq!(count("login_throttle").await, 0);
    assert_eq!(count("refresh_tokens").await, 0);
    app.stop().await;
}

/// Finding 17: a refused key creation gives its claimed prefix back, so refusals leave no
/// `api_key_index` rows behind.
#[tokio::test]
async fn a_refused_key_creation_leaves_no_index_row() {
    let app = spawn_app().await;
    let created = register(&app, "keys@example.com", "correct horse 1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.expect("json");
    let token = body["token"].as_str().expect("a token").to_string();
    for _ in 0..3 {
        let refused = app
            .client
            .post(app.url("/api/keys"))
            .bearer_auth(&token)
            .json(&json!({"name": "ci", "spending_limit_micros": -1}))
            .send()
            .await
            .expect("request sent");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM api_key_index")
        .fetch_one(&app.pool)
        .await
        .expect("count rows");
    assert_eq!(rows, 0, "no prefix is held by a key that does not exist");
    app.stop().await;
}
