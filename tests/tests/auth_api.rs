//! Identity over the real app: registration, login, sessions, roles and API keys.

use hub_commands::Clock;
use hub_domain::Role;
use hub_tests::{eventually, spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

async fn post(app: &TestApp, path: &str, body: Value, token: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    request.send().await.expect("request sent")
}

async fn register(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/api/auth/register",
        json!({"email": email, "password": password, "firstName": "Test", "lastName": "User"}),
        None,
    )
    .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/api/auth/login",
        json!({"email": email, "password": password}),
        None,
    )
    .await
}

async fn body(response: reqwest::Response) -> (StatusCode, Value, String) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

fn assert_no_secret(raw: &str) {
    for needle in ["argon2", "password_hash", "passwordHash", "key_hash"] {
        assert!(!raw.contains(needle), "{needle} leaked in {raw}");
    }
}

/// The seeds' auth API test (implementation-guide §5), path for path.
#[tokio::test]
async fn the_seed_contract_for_register_login_and_me_holds() {
    let app = spawn_app().await;

    // Register: 201 {user, token}, no password hash.
    let (status, created, raw) =
        body(register(&app, "test@example.com", "password123").await).await;
    assert_eq!(status, StatusCode::CREATED, "{raw}");
    assert_eq!(created["user"]["email"], "test@example.com");
    assert!(created["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_no_secret(&raw);

    // Duplicate email (any case): 400 whose message says "already exists".
    let (status, dup, _) = body(register(&app, "Test@Example.com ", "password123").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = dup["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("already exists"), "{dup}");

    // Missing fields: 400 with an error.
    let (status, missing, _) = body(post(&app, "/api/auth/register", json!({}), None).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(missing["error"]["code"].is_string());
    let (status, _, _) = body(register(&app, "not-an-email", "password123").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, weak, _) = body(register(&app, "weak@example.com", "short").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(weak["error"]["code"], "weak_password");

    // Login: 200 {user, token}; wrong password and unknown user: the same 401.
    let (status, logged, raw) = body(login(&app, "test@example.com", "password123").await).await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    assert_eq!(logged["user"]["email"], "test@example.com");
    assert!(logged["token"].is_string());
    assert_no_secret(&raw);
    let (wrong_status, wrong, _) =
        body(login(&app, "test@example.com", "wrongpassword1").await).await;
    let (unknown_status, unknown, _) =
        body(login(&app, "nonexistent@example.com", "password123").await).await;
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong["error"], unknown["error"], "no user enumeration");

    // Me: the profile with roles, verification flag and balance; 401 without a valid token.
    let token = created["token"].as_str().expect("token");
    let (status, me, raw) = body(app.get("/api/auth/me", Some(token)).await).await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    assert_eq!(me["user"]["email"], "test@example.com");
    assert_eq!(me["user"]["email_verified"], false);
    assert_eq!(me["user"]["roles"], json!(["user"]));
    assert_eq!(me["credits"]["balance_micros"], 0);
    assert_no_secret(&raw);
    assert_eq!(
        app.get("/api/auth/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/auth/me", Some("invalid-token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_email_make_exactly_one_user() {
    let app = spawn_app().await;
    let attempts = (0..20).map(|i| {
        let app = &app;
        async move {
            let email = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            register(app, email, &format!("password{i}")).await.status()
        }
    });
    let statuses = futures::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!((created, refused), (1, 19), "{statuses:?}");
    let registered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'User' AND event_type = 'UserRegistered'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(registered, 1);
    app.stop().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_signs_the_family_out() {
    let app = spawn_app().await;
    let (_, created, _) = body(register(&app, "rot@example.com", "password123").await).await;
    let r1 = created["refresh_token"]
        .as_str()
        .expect("api clients get it in the body")
        .to_string();

    let refresh = |token: String| {
        let app = &app;
        async move {
            body(
                post(
                    app,
                    "/api/auth/refresh",
                    json!({"refresh_token": token}),
                    None,
                )
                .await,
            )
            .await
        }
    };
    let (status, second, _) = refresh(r1.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let r2 = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_ne!(r1, r2);
    assert!(second["token"].is_string());
    let (status, third, _) = refresh(r2.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let r3 = third["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();

    // r1 was rotated long ago: presenting it again is a theft signal.
    let (status, reused, _) = refresh(r1).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reused["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("already used"));
    // ... and the newest token of the family no longer works either.
    let (status, _, _) = refresh(r3).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A new sign-in is a new family, unaffected.
    let (_, logged, _) = body(login(&app, "rot@example.com", "password123").await).await;
    let fresh = logged["refresh_token"].as_str().expect("token").to_string();
    let (status, _, _) = refresh(fresh.clone()).await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn browsers_get_the_refresh_token_as_an_http_only_cookie_and_logout_ends_it() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .header("Origin", "https://app.example.com")
        .json(&json!({"email": "web@example.com", "password": "password123"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/auth"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing in {cookie}"
        );
    }
    let created: Value = response.json().await.expect("json");
    assert!(
        created.get("refresh_token").is_none(),
        "not readable by scripts"
    );
    let pair = cookie.split(';').next().expect("name=value").to_string();

    let with_cookie = |path: &'static str, pair: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url(path))
                .header("Origin", "https://app.example.com")
                .header("Cookie", pair)
                .send()
                .await
                .expect("sent")
        }
    };
    let refreshed = with_cookie("/api/auth/refresh", pair).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let next = refreshed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a rotated cookie")
        .to_string();
    assert_eq!(
        with_cookie("/api/auth/logout", next.clone()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        with_cookie("/api/auth/refresh", next).await.status(),
        StatusCode::UNAUTHORIZED,
        "logout ended the sign-in"
    );
    app.stop().await;
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account_whether_or_not_it_exists() {
    let app = spawn_app().await;
    register(&app, "locked@example.com", "password123").await;
    for email in ["locked@example.com", "ghost@example.com"] {
        for _ in 0..5 {
            assert_eq!(
                login(&app, email, "wrong-password-1").await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
        // Even the right password waits now.
        let response = login(&app, email, "password123").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{email}");
        let retry: u64 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=900).contains(&retry));
    }
    // Once the lock has passed (the first lock is 1 s), the right password works and clears
    // the count.
    app.clock.advance(Duration::from_millis(1_100));
    assert_eq!(
        login(&app, "locked@example.com", "password123")
            .await
            .status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test]
async fn every_admin_route_refuses_other_roles_and_anonymous_callers() {
    let app = spawn_app().await;
    let someone = Uuid::new_v4();
    let routes: [(&str, String, Value); 4] = [
        ("GET", "/api/admin/users".into(), Value::Null),
        (
            "POST",
            format!("/api/admin/users/{someone}/roles"),
            json!({"role": "analyst"}),
        ),
        (
            "DELETE",
            format!("/api/admin/users/{someone}/roles/analyst"),
            Value::Null,
        ),
        (
            "POST",
            "/api/admin/credits/grant".into(),
            json!({"user_id": someone, "amount_micros": 1, "reason": "x"}),
        ),
    ];
    for (method, path, payload) in &routes {
        let send = |token: Option<String>| {
            let app = &app;
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = app
                .client
                .request(method, app.url(path))
                .header("Idempotency-Key", "k1");
            if !payload.is_null() {
                request = request.json(payload);
            }
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            async move { request.send().await.expect("sent").status() }
        };
        assert_eq!(
            send(None).await,
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        for role in [Role::User, Role::Analyst, Role::Auditor] {
            let token = app.token(Uuid::new_v4(), role);
            assert_eq!(
                send(Some(token)).await,
                StatusCode::FORBIDDEN,
                "{method} {path} as {role}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_bootstrapped_admin_lists_users_and_grants_and_revokes_roles() {
    let app = spawn_app().await;
    let done = hub_app::bootstrap::create_user(
        &app.state,
        "root@example.com",
        &[Role::Admin],
        Some("s3cret-admin-pw".into()),
    )
    .await
    .expect("bootstrap");
    assert!(done.created);
    // Idempotent: the second run only confirms the roles.
    let again =
        hub_app::bootstrap::create_user(&app.state, "root@example.com", &[Role::Admin], None)
            .await
            .expect("again");
    assert!(!again.created);
    assert_eq!(again.user_id, done.user_id);

    let (_, admin, _) = body(login(&app, "root@example.com", "s3cret-admin-pw").await).await;
    let admin_token = admin["token"].as_str().expect("token").to_string();
    assert_eq!(admin["user"]["roles"], json!(["user", "admin"]));
    assert_eq!(admin["user"]["email_verified"], true);

    let (_, created, _) = body(register(&app, "ana@example.com", "password123").await).await;
    let ana = created["user"]["id"].as_str().expect("id").to_string();

    let (status, granted, raw) = body(
        post(
            &app,
            &format!("/api/admin/users/{ana}/roles"),
            json!({"role": "analyst"}),
            Some(&admin_token),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{raw}");
    assert_eq!(granted["user"]["roles"], json!(["user", "analyst"]));

    // The listing is a read model: it shows the grant once projected.
    let listed = eventually(Duration::from_secs(10), "the users read model", || async {
        let (_, page, _) = body(app.get("/api/admin/users", Some(&admin_token)).await).await;
        let users = page["users"].as_array().cloned().unwrap_or_default();
        let ana_row = users.iter().find(|u| u["id"] == ana.as_str())?.clone();
        (users.len() == 2 && ana_row["roles"] == json!(["user", "analyst"])).then_some(users)
    })
    .await;
    assert!(listed.iter().all(|u| u.get("password_hash").is_none()));

    // The `user` role stays; revoking a role not held is refused.
    let revoke = |role: &'static str| {
        let app = &app;
        let url = app.url(&format!("/api/admin/users/{ana}/roles/{role}"));
        let token = admin_token.clone();
        async move {
            app.client
                .delete(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("sent")
        }
    };
    assert_eq!(revoke("analyst").await.status(), StatusCode::OK);
    assert_eq!(
        revoke("analyst").await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, kept, _) = body(revoke("user").await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(kept["error"]["code"], "cannot_revoke_user_role");
    let (status, _, _) = body(
        post(
            &app,
            &format!("/api/admin/users/{}/roles", Uuid::new_v4()),
            json!({"role": "admin"}),
            Some(&admin_token),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_acts_as_its_owner_until_revoked_or_expired() {
    let app = spawn_app().await;
    let (_, created, _) = body(register(&app, "dev@example.com", "password123").await).await;
    let token = created["token"].as_str().expect("token").to_string();

    let (status, key, raw) = body(
        post(
            &app,
            "/api/keys",
            json!({"name": "ci", "spending_limit_micros": 5_000_000, "scopes": ["inference", "read"]}),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{raw}");
    let secret = key["key"].as_str().expect("shown once").to_string();
    let prefix = key["prefix"].as_str().expect("prefix").to_string();
    assert!(secret.starts_with(&prefix));
    assert_eq!(key["spending_limit_micros"], 5_000_000);

    // The key authenticates as its owner.
    let (status, me, _) = body(app.get("/api/auth/me", Some(&secret)).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["email"], "dev@example.com");
    // Listing shows the prefix, never the key or its hash.
    let (_, listing, raw) = body(app.get("/api/keys", Some(&token)).await).await;
    assert_eq!(listing["keys"][0]["prefix"], prefix.as_str());
    assert!(!raw.contains(&secret));
    assert_no_secret(&raw);
    // A key cannot mint more keys.
    let status = post(&app, "/api/keys", json!({"name": "more"}), Some(&secret))
        .await
        .status();
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A wrong secret with a real prefix is refused.
    let forged = format!("{prefix}_{}", "A".repeat(43));
    assert_eq!(
        app.get("/api/auth/me", Some(&forged)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Revoked: refused at once.
    let id = key["id"].as_str().expect("id");
    let revoked = app
        .client
        .delete(app.url(&format!("/api/keys/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/auth/me", Some(&secret)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Expired: refused.
    let expires = app.clock.now() + chrono::Duration::minutes(10);
    let (status, short, raw) = body(
        post(
            &app,
            "/api/keys",
            json!({"name": "short", "expires_at": expires, "scopes": ["read"]}),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{raw}");
    let short = short["key"].as_str().expect("key").to_string();
    assert_eq!(
        app.get("/api/auth/me", Some(&short)).await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(11 * 60));
    assert_eq!(
        app.get("/api/auth/me", Some(&short)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn registering_opens_the_credit_account_with_the_configured_grant_in_the_ledger() {
    let app = spawn_app_with(hub_server::Roles::ALL, |s| {
        s.auth.signup_grant_micros = 5_000_000
    })
    .await;
    let (_, created, _) = body(register(&app, "grant@example.com", "password123").await).await;
    let token = created["token"].as_str().expect("token").to_string();
    let ledger = eventually(Duration::from_secs(10), "the sign-up grant", || async {
        let (_, page, _) = body(app.get("/api/credits/transactions", Some(&token)).await).await;
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["kind"], "grant");
    assert_eq!(ledger[0]["amount_micros"], 5_000_000);
    assert_eq!(ledger[0]["cause"], json!({"type": "grant", "id": "signup"}));
    let (_, me, _) = body(app.get("/api/auth/me", Some(&token)).await).await;
    assert_eq!(me["credits"]["balance_micros"], 5_000_000);
    app.stop().await;
}

#[tokio::test]
async fn a_user_cannot_see_or_revoke_another_users_keys_balance_or_ledger() {
    let app = spawn_app().await;
    let (_, alice, _) = body(register(&app, "alice@example.com", "password123").await).await;
    let (_, bob, _) = body(register(&app, "bob@example.com", "password123").await).await;
    let alice_token = alice["token"].as_str().expect("token").to_string();
    let bob_token = bob["token"].as_str().expect("token").to_string();
    let alice_id = alice["user"]["id"].as_str().expect("id").to_string();

    let (_, key, _) = body(
        post(
            &app,
            "/api/keys",
            json!({"name": "alice-ci", "scopes": ["inference", "read"]}),
            Some(&alice_token),
        )
        .await,
    )
    .await;
    let key_id = key["id"].as_str().expect("id").to_string();
    let secret = key["key"].as_str().expect("key").to_string();

    // Bob's listing is his own (empty); he cannot revoke Alice's key.
    let (_, listing, _) = body(app.get("/api/keys", Some(&bob_token)).await).await;
    assert_eq!(listing["keys"], json!([]));
    let response = app
        .client
        .delete(app.url(&format!("/api/keys/{key_id}")))
        .bearer_auth(&bob_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/auth/me", Some(&secret)).await.status(),
        StatusCode::OK,
        "still valid"
    );

    // Nor read her balance or ledger.
    for path in ["/api/credits/balance", "/api/credits/transactions"] {
        let status = app
            .get(&format!("{path}?user_id={alice_id}"), Some(&bob_token))
            .await
            .status();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    app.stop().await;
}
