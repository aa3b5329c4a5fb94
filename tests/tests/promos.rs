//! Promo codes over the real app: admins create, list, disable and enable codes; users
//! redeem them once, each refusal with its own code; racing users get exactly the
//! redemptions left; and every redemption is a ledger entry whose cause is the code.

use chrono::{Duration as ChronoDuration, Utc};
use hub_domain::Role;
use hub_domain::{PromoCodeValue, PromoCommand, UserId};
use hub_tests::{eventually, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);
const CREDIT: i64 = 1_000_000;

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    json_of(request.send().await.expect("sent")).await
}

async fn create(app: &TestApp, admin: &str, body: Value) -> (StatusCode, Value) {
    post(app, "/api/admin/promos", Some(admin), body).await
}

async fn redeem(app: &TestApp, token: &str, code: &str) -> (StatusCode, Value) {
    post(
        app,
        "/api/promos/redeem",
        Some(token),
        json!({ "code": code }),
    )
    .await
}

fn admin(app: &TestApp) -> String {
    app.token(Uuid::new_v4(), Role::Admin)
}

fn user(app: &TestApp) -> (Uuid, String) {
    let id = Uuid::new_v4();
    (id, app.token(id, Role::User))
}

async fn listed(app: &TestApp, admin: &str, code: &str) -> Option<Value> {
    let (_, page) = json_of(app.get("/api/admin/promos?limit=200", Some(admin)).await).await;
    page["promos"]
        .as_array()?
        .iter()
        .find(|p| p["code"] == json!(code))
        .cloned()
}

async fn ledger(app: &TestApp, token: &str) -> Vec<Value> {
    let (_, page) = json_of(app.get("/api/credits/transactions", Some(token)).await).await;
    page["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn admins_create_list_disable_and_enable_codes() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let (status, body) = create(
        &app,
        &admin,
        json!({ "code": " Welcome10 ", "credits_micros": 10 * CREDIT, "max_redemptions": 100 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["promo"]["code"], json!("WELCOME10"));
    assert_eq!(body["promo"]["active"], json!(true));
    assert_eq!(body["visible"], json!(true));
    let row = listed(&app, &admin, "WELCOME10")
        .await
        .expect("listed at once");
    assert_eq!(row["redemptions"], json!(0));
    assert_eq!(row["max_redemptions"], json!(100));
    assert_eq!(row["credits_micros"], json!(10 * CREDIT));

    // The same code in another case is the same code.
    let (status, body) = create(
        &app,
        &admin,
        json!({ "code": "welcome10", "credits_micros": CREDIT, "max_redemptions": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], json!("promo_code_exists"));

    let (status, body) = post(
        &app,
        "/api/admin/promos/welcome10/disable",
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["promo"]["active"], json!(false));
    assert_eq!(
        listed(&app, &admin, "WELCOME10")
            .await
            .map(|p| p["active"].clone()),
        Some(json!(false))
    );
    let (status, body) = post(
        &app,
        "/api/admin/promos/WELCOME10/enable",
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["promo"]["active"], json!(true));
    let (status, body) = post(
        &app,
        "/api/admin/promos/NOPE/disable",
        Some(&admin),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], json!("promo_code_unknown"));

    // Bad input is refused with 400 and creates nothing.
    let now = Utc::now();
    for (bad, code) in [
        (
            json!({ "code": "x", "credits_micros": 1, "max_redemptions": 1 }),
            "invalid_promo_code",
        ),
        (
            json!({ "code": "BAD CODE", "credits_micros": 1, "max_redemptions": 1 }),
            "invalid_promo_code",
        ),
        (
            json!({ "code": "ZERO", "credits_micros": 0, "max_redemptions": 1 }),
            "invalid_credits",
        ),
        (
            json!({ "code": "NONE", "credits_micros": 1, "max_redemptions": 0 }),
            "invalid_max_redemptions",
        ),
        (
            json!({ "code": "PAST", "credits_micros": 1, "max_redemptions": 1,
                    "valid_until": now - ChronoDuration::hours(1) }),
            "invalid_validity",
        ),
        (
            json!({ "code": "BACKWARDS", "credits_micros": 1, "max_redemptions": 1,
                    "valid_from": now + ChronoDuration::hours(2),
                    "valid_until": now + ChronoDuration::hours(1) }),
            "invalid_validity",
        ),
    ] {
        let (status, body) = create(&app, &admin, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{bad}");
    }
    let (_, page) = json_of(app.get("/api/admin/promos", Some(&admin)).await).await;
    assert_eq!(page["promos"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn every_promo_admin_route_refuses_other_roles_and_anonymous_callers() {
    let app = spawn_app().await;
    let routes: [(&str, &str, Value); 4] = [
        ("GET", "/api/admin/promos", Value::Null),
        (
            "POST",
            "/api/admin/promos",
            json!({ "code": "SNEAKY", "credits_micros": 1, "max_redemptions": 1 }),
        ),
        ("POST", "/api/admin/promos/SNEAKY/disable", json!({})),
        ("POST", "/api/admin/promos/SNEAKY/enable", json!({})),
    ];
    for (method, path, payload) in &routes {
        let send = |token: Option<String>| {
            let app = &app;
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = app.client.request(method, app.url(path));
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
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'PromoCode'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(count, 0);
    // Redeeming needs a signed-in caller.
    let (status, _) = post(
        &app,
        "/api/promos/redeem",
        None,
        json!({ "code": "SNEAKY" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a_redemption_credits_once_with_the_code_as_the_ledger_cause() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let (status, _) = create(
        &app,
        &admin,
        json!({ "code": "SPRING-25", "creditsMicros": 25 * CREDIT, "maxRedemptions": 10 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, token) = user(&app);
    let (status, body) = redeem(&app, &token, "  spring-25 ").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], json!("SPRING-25"));
    assert_eq!(body["credits_micros"], json!(25 * CREDIT));
    assert_eq!(body["redemptions_after"], json!(1));
    assert_eq!(body["balance_after_micros"], json!(25 * CREDIT));
    assert_eq!(body["visible"], json!(true));
    assert_eq!(body["balance"]["balance_micros"], json!(25 * CREDIT));

    let (status, body) = redeem(&app, &token, "SPRING-25").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], json!("promo_code_already_redeemed"));

    let rows = eventually(WAIT, "the promo ledger entry", || async {
        let rows = ledger(&app, &token).await;
        (rows.len() == 1).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["kind"], json!("promo"));
    assert_eq!(rows[0]["amount_micros"], json!(25 * CREDIT));
    assert_eq!(
        rows[0]["cause"],
        json!({ "type": "promo", "id": "SPRING-25" })
    );
    app.stop().await;
}

#[tokio::test]
async fn each_refusal_of_a_redemption_has_its_own_code() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let now = Utc::now();
    for body in [
        json!({ "code": "LATER", "credits_micros": CREDIT, "max_redemptions": 5,
                "valid_from": now + ChronoDuration::hours(1) }),
        json!({ "code": "OFF", "credits_micros": CREDIT, "max_redemptions": 5, "active": false }),
        json!({ "code": "ONCE", "credits_micros": CREDIT, "max_redemptions": 1 }),
    ] {
        let (status, answer) = create(&app, &admin, body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    // A code created three hours ago, valid for its first hour: the API refuses to create
    // one whose window has already ended, so it is written as it was then.
    let long_ago = now - ChronoDuration::hours(3);
    app.state
        .promos
        .execute(
            &PromoCodeValue::parse("SOON-GONE").expect("code"),
            PromoCommand::CreatePromoCode {
                code: PromoCodeValue::parse("SOON-GONE").expect("code"),
                credits: hub_domain::Credits::from_micros(CREDIT),
                max_redemptions: 5,
                valid_from: None,
                valid_until: Some(long_ago + ChronoDuration::hours(1)),
                active: true,
                created_by: Uuid::new_v4().to_string(),
                now: long_ago,
            },
            "test",
        )
        .await
        .expect("created");
    let (_, first) = user(&app);
    let (_, second) = user(&app);
    assert_eq!(redeem(&app, &first, "ONCE").await.0, StatusCode::OK);

    let cases = [
        ("NO-SUCH-CODE", StatusCode::NOT_FOUND, "promo_code_unknown"),
        ("!!", StatusCode::NOT_FOUND, "promo_code_unknown"),
        (
            "later",
            StatusCode::UNPROCESSABLE_ENTITY,
            "promo_code_not_yet_valid",
        ),
        (
            "off",
            StatusCode::UNPROCESSABLE_ENTITY,
            "promo_code_disabled",
        ),
        (
            "once",
            StatusCode::UNPROCESSABLE_ENTITY,
            "promo_code_exhausted",
        ),
    ];
    for (code, status, error) in cases {
        let (got, body) = redeem(&app, &second, code).await;
        assert_eq!(
            (got, body["error"]["code"].clone()),
            (status, json!(error)),
            "{code}: {body}"
        );
    }
    let (got, body) = redeem(&app, &first, "once").await;
    assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], json!("promo_code_already_redeemed"));

    let (got, body) = redeem(&app, &second, "soon-gone").await;
    assert_eq!(got, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], json!("promo_code_expired"));

    // Refusals wrote nothing: one redemption, one promo entry in all.
    let redeemed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('PromoCodeRedeemed', 'PromoCreditsApplied')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(redeemed, 2);
    app.stop().await;
}

#[tokio::test]
async fn fifty_users_racing_for_the_last_five_redemptions_exactly_five_succeed() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let (status, _) = create(
        &app,
        &admin,
        json!({ "code": "RACE", "credits_micros": 3 * CREDIT, "max_redemptions": 7 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let early: Vec<(Uuid, String)> = (0..2).map(|_| user(&app)).collect();
    for (_, token) in &early {
        assert_eq!(redeem(&app, token, "race").await.0, StatusCode::OK);
    }
    let racers: Vec<(Uuid, String)> = (0..50).map(|_| user(&app)).collect();
    let answers =
        futures::future::join_all(racers.iter().map(|(_, token)| redeem(&app, token, "RACE")))
            .await;
    let won = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let exhausted = answers
        .iter()
        .filter(|(s, b)| {
            *s == StatusCode::UNPROCESSABLE_ENTITY
                && b["error"]["code"] == json!("promo_code_exhausted")
        })
        .count();
    assert_eq!((won, exhausted), (5, 45), "{answers:?}");
    let mut counts: Vec<u64> = answers
        .iter()
        .filter_map(|(_, b)| b["redemptions_after"].as_u64())
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![3, 4, 5, 6, 7]);

    // The ledger and the code's count agree: seven promo entries caused by RACE, seven
    // redemptions in the admin listing.
    let entries = eventually(WAIT, "seven promo ledger entries", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM ledger WHERE cause_type = 'promo' AND cause_id = 'RACE'",
        )
        .fetch_one(&app.pool)
        .await
        .ok()?;
        (n == 7).then_some(n)
    })
    .await;
    let row = eventually(WAIT, "the listing's count", || async {
        listed(&app, &admin, "RACE")
            .await
            .filter(|p| p["redemptions"] == json!(7))
    })
    .await;
    assert_eq!(row["redemptions"].as_i64(), Some(entries));
    let winners: Vec<&(Uuid, String)> = racers
        .iter()
        .zip(&answers)
        .filter(|(_, (s, _))| *s == StatusCode::OK)
        .map(|(r, _)| r)
        .collect();
    for (_, token) in winners.iter().copied().chain(early.iter()) {
        let rows = eventually(WAIT, "a winner's entry", || async {
            let rows = ledger(&app, token).await;
            (rows.len() == 1).then_some(rows)
        })
        .await;
        assert_eq!(rows[0]["cause"], json!({ "type": "promo", "id": "RACE" }));
        assert_eq!(rows[0]["amount_micros"], json!(3 * CREDIT));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_redemption_whose_credits_never_landed_is_completed_by_the_retry() {
    let app = spawn_app().await;
    let admin = admin(&app);
    let (status, _) = create(
        &app,
        &admin,
        json!({ "code": "CRASH", "credits_micros": 5 * CREDIT, "max_redemptions": 3 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (id, token) = user(&app);
    // Step 1 only, as if the process died before crediting the account.
    let code = PromoCodeValue::parse("CRASH").expect("code");
    app.state
        .promos
        .execute(
            &code,
            PromoCommand::RedeemPromoCode {
                user: UserId(id),
                now: Utc::now(),
            },
            "test",
        )
        .await
        .expect("redeemed");
    let (status, body) = redeem(&app, &token, "crash").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance_after_micros"], json!(5 * CREDIT));
    let (status, body) = redeem(&app, &token, "crash").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], json!("promo_code_already_redeemed"));
    let applied: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'PromoCreditsApplied'",
    )
    .bind(id.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(applied, 1);
    app.stop().await;
}
