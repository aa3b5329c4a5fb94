//! The credit API end to end: grant → balance → ledger, over real Postgres and NATS.

use hub_domain::Role;
use hub_tests::spawn_app;
use serde_json::Value;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_shows_in_the_balance_and_the_ledger_of_the_user() {
    let app = spawn_app().await;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let user = Uuid::new_v4();
    let user_token = app.token(user, Role::User);

    let response = app.grant(&admin, user, 5_000_000, "grant-1").await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["balance_after_micros"], 5_000_000);
    assert_eq!(body["replayed"], false);

    // Read-your-writes: the very next read shows the grant.
    let balance: Value = app
        .get("/api/credits/balance", Some(&user_token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(balance["balance_micros"], 5_000_000);
    assert_eq!(balance["available_micros"], 5_000_000);
    assert_eq!(balance["reserved_micros"], 0);

    let second = app.grant(&admin, user, 2_500_000, "grant-2").await;
    assert_eq!(second.status(), 201);
    let ledger = hub_tests::eventually(
        std::time::Duration::from_secs(10),
        "two ledger rows",
        || async {
            let page: Value = app
                .get("/api/credits/transactions", Some(&user_token))
                .await
                .json()
                .await
                .ok()?;
            (page["data"].as_array()?.len() == 2).then_some(page)
        },
    )
    .await;
    let rows = ledger["data"].as_array().expect("rows");
    // Newest first, each with its cause and the balance after it.
    assert_eq!(rows[0]["amount_micros"], 2_500_000);
    assert_eq!(rows[0]["balance_after_micros"], 7_500_000);
    assert_eq!(rows[0]["cause"]["type"], "grant");
    assert_eq!(rows[0]["cause"]["id"], "grant-2");
    assert_eq!(rows[1]["balance_after_micros"], 5_000_000);
    assert_eq!(rows[1]["kind"], "grant");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_grants_once_and_returns_the_first_grant() {
    let app = spawn_app().await;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let user = Uuid::new_v4();

    let first = app.grant(&admin, user, 1_000_000, "same-key").await;
    assert_eq!(first.status(), 201);
    let again = app.grant(&admin, user, 9_000_000, "same-key").await;
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["replayed"], true);
    assert_eq!(
        body["amount_micros"], 1_000_000,
        "the first outcome, not the second request"
    );
    assert_eq!(body["balance"]["balance_micros"], 1_000_000);

    // Five more at once: still one grant.
    let repeats = (0..5).map(|_| app.grant(&admin, user, 1_000_000, "same-key"));
    for response in futures::future::join_all(repeats).await {
        assert_eq!(response.status(), 200);
    }
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'CreditsGranted' AND aggregate_id = $1",
    )
    .bind(user.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(events, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_with_401() {
    let app = spawn_app().await;
    let missing = app.get("/api/credits/balance", None).await;
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");

    let garbage = app.get("/api/credits/balance", Some("not-a-jwt")).await;
    assert_eq!(garbage.status(), 401);

    // Signed with another secret.
    let forged = hub_adapters::jwt::Jwt::new("another-secret-that-is-long-enough-0123456789")
        .mint(Uuid::new_v4(), &[Role::Admin], 600)
        .expect("mint");
    assert_eq!(
        app.get("/api/credits/balance", Some(&forged))
            .await
            .status(),
        401
    );

    // Expired (beyond the 5 s leeway).
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": Uuid::new_v4(), "role": "admin", "iat": now - 120, "exp": now - 60}),
        &jsonwebtoken::EncodingKey::from_secret(app.settings.auth.jwt_secret.as_bytes()),
    )
    .expect("encode");
    assert_eq!(
        app.get("/api/credits/balance", Some(&expired))
            .await
            .status(),
        401
    );

    // No exp at all.
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": Uuid::new_v4(), "role": "admin", "iat": now}),
        &jsonwebtoken::EncodingKey::from_secret(app.settings.auth.jwt_secret.as_bytes()),
    )
    .expect("encode");
    assert_eq!(
        app.get("/api/credits/balance", Some(&no_exp))
            .await
            .status(),
        401
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_may_grant_and_users_may_not_read_other_accounts() {
    let app = spawn_app().await;
    let user = Uuid::new_v4();
    for role in [Role::User, Role::Analyst, Role::Auditor] {
        let token = app.token(Uuid::new_v4(), role);
        let response = app
            .grant(&token, user, 1_000, &format!("k-{}", role.as_str()))
            .await;
        assert_eq!(response.status(), 403, "{role:?} must not grant");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let someone = app.token(Uuid::new_v4(), Role::User);
    let path = format!("/api/credits/balance?user_id={user}");
    assert_eq!(app.get(&path, Some(&someone)).await.status(), 403);
    let path = format!("/api/credits/transactions?user_id={user}");
    assert_eq!(app.get(&path, Some(&someone)).await.status(), 403);
    // An auditor reads any account.
    let auditor = app.token(Uuid::new_v4(), Role::Auditor);
    assert_eq!(app.get(&path, Some(&auditor)).await.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_400_and_writes_nothing() {
    let app = spawn_app().await;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let user = Uuid::new_v4();

    for (amount, key) in [(0, "zero"), (-5, "negative"), (i64::MAX, "huge")] {
        let response = app.grant(&admin, user, amount, key).await;
        assert_eq!(response.status(), 400, "amount {amount}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_amount");
    }
    let bad_key = app.grant(&admin, user, 10, "has spaces").await;
    assert_eq!(bad_key.status(), 400);

    let no_key = app
        .client
        .post(app.url("/api/admin/credits/grant"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"user_id": user, "amount_micros": 10, "reason": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(no_key.status(), 400);
    let body: Value = no_key.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_idempotency_key");

    let malformed = app
        .client
        .post(app.url("/api/admin/credits/grant"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "m1")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.expect("json");
    assert_eq!(body["error"]["code"], "malformed_json");

    let unknown_field = app
        .client
        .post(app.url("/api/admin/credits/grant"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "m2")
        .json(&serde_json::json!({"user_id": user, "amount_micros": 10, "reason": "x", "extra": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown_field.status(), 400);

    let bad_limit = app
        .get("/api/credits/transactions?limit=0", Some(&admin))
        .await;
    assert_eq!(bad_limit.status(), 400);
    let bad_cursor = app
        .get("/api/credits/transactions?cursor=abc", Some(&admin))
        .await;
    assert_eq!(bad_cursor.status(), 400);

    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(events, 0, "nothing partial is written");

    let unknown = app.get("/api/nope", Some(&admin)).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_pages_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let user = Uuid::new_v4();
    let token = app.token(user, Role::User);
    for i in 1..=5 {
        assert_eq!(
            app.grant(&admin, user, i, &format!("g{i}")).await.status(),
            201
        );
    }
    hub_tests::eventually(
        std::time::Duration::from_secs(10),
        "five ledger rows",
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
                .fetch_one(&app.pool)
                .await
                .ok()?;
            (n == 5).then_some(())
        },
    )
    .await;
    let mut amounts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/credits/transactions?limit=2&cursor={c}"),
            None => "/api/credits/transactions?limit=2".to_string(),
        };
        let page: Value = app
            .get(&path, Some(&token))
            .await
            .json()
            .await
            .expect("json");
        for row in page["data"].as_array().expect("rows") {
            amounts.push(row["amount_micros"].as_i64().expect("amount"));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(amounts, vec![5, 4, 3, 2, 1]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_report_dependencies_and_lag() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health", None).await.status(), 200);
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let ready = app.get("/ready", Some(&admin)).await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["postgres"]["ok"], true);
    assert_eq!(body["nats"]["ok"], true);
    assert!(body["relay"]["pending_events"].is_i64());
    assert!(body["projections"]["balances"]["checkpoint"].is_u64());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_when_postgres_is_unreachable() {
    let app = hub_tests::spawn_app_with(
        hub_server::Roles {
            http: true,
            ..hub_server::Roles::NONE
        },
        |s| {
            s.database.acquire_timeout_ms = 500;
        },
    )
    .await;
    // Point a second app at a port where no Postgres listens.
    let broken = {
        let mut settings = app.settings.clone();
        settings.database.url = "postgres://postgres@127.0.0.1:1/none".into();
        settings.database.acquire_timeout_ms = 300;
        settings.server.port = 0;
        hub_server::Application::build(
            settings,
            hub_server::Roles {
                http: true,
                ..hub_server::Roles::NONE
            },
        )
        .await
        .expect("builds without Postgres")
    };
    let port = broken.port().expect("port");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(broken.run_until(async {
        let _ = rx.await;
    }));
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let response = app
        .client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["postgres"]["ok"], false);
    let grant = app
        .client
        .post(format!("http://127.0.0.1:{port}/api/admin/credits/grant"))
        .bearer_auth(&admin)
        .header("Idempotency-Key", "k")
        .json(&serde_json::json!({"user_id": Uuid::new_v4(), "amount_micros": 10, "reason": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(grant.status(), 503);
    let body: Value = grant.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    let _ = tx.send(());
    let _ = task.await;
    app.stop().await;
}
