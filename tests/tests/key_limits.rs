//! An API key's spending limit over the real app: decided by the credit account in the same
//! step as the reservation, so requests racing on one key cannot all slip under it.

use hub_domain::Role;
use hub_server::Roles;
use hub_tests::{eventually, spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::{ModelsSettings, ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// 3 credits per million input tokens, 15 per million output.
const PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 3_000_000,
    output_per_million_micros: 15_000_000,
    cached_input_per_million_micros: 300_000,
};

/// A mock slow enough (about a second per answer) that every request of a burst holds its
/// reservation while the others are decided.
async fn app() -> TestApp {
    let mut models = ModelsSettings::default();
    models.models.push(ModelSettings {
        name: "mock-slow".into(),
        price: PRICE,
        max_output_tokens: Some(100),
        context_tokens: None,
        tokenizer: "o200k".into(),
        providers: vec![ProviderSettings {
            kind: ProviderKind::Mock,
            base_url: None,
            api_key: None,
            upstream_model: None,
            name: Some("mock".into()),
            mock_tokens_per_second: Some(40),
        }],
        vision: false,
        image_tokens_max: 1_600,
        tools: true,
        reasoning: false,
        embedding_dimensions: None,
    });
    spawn_app_with(Roles::ALL, move |s| s.models = models).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn hello() -> Value {
    json!({"model": "mock-slow", "messages": [{"role": "user", "content": "Say hello."}],
           "max_tokens": 100})
}

/// A registered user with `micros` granted: their id and access token.
async fn funded_user(app: &TestApp, micros: i64) -> (Uuid, String) {
    let response = app
        .client
        .post(app.url("/api/auth/register"))
        .json(
            &json!({"email": format!("{}@example.com", Uuid::new_v4().simple()),
                      "password": "password123", "firstName": "Key", "lastName": "Owner"}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    let token = created["token"].as_str().expect("token").to_string();
    let user = app.state.jwt.verify(&token).expect("token").sub;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app
        .grant(&admin, user, micros, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    (user, token)
}

/// What the hub reserves for one [`hello`]: its worst case, read from the reservation a
/// request by the user in person made.
async fn reservation_of_one_request(app: &TestApp, user: Uuid, token: &str) -> i64 {
    let (status, _) = post(app, "/v1/chat/completions", token, hello()).await;
    assert_eq!(status, StatusCode::OK);
    sqlx::query_scalar(
        "SELECT (payload->'CreditsReserved'->>'amount')::bigint FROM events
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1
            AND event_type = 'CreditsReserved'",
    )
    .bind(user.to_string())
    .fetch_one(&app.pool)
    .await
    .expect("the reservation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_a_limited_key_never_spend_past_its_limit() {
    let app = app().await;
    // Credits for far more than the key may spend: only the key's limit stops the burst.
    let (user, token) = funded_user(&app, 10_000_000).await;
    let one = reservation_of_one_request(&app, user, &token).await;
    // Room for two requests' reservations, not three.
    let limit = 2 * one + one / 2;
    let (status, key) = post(
        &app,
        "/api/keys",
        &token,
        json!({"name": "ci", "spending_limit_micros": limit}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let secret = key["key"].as_str().expect("shown once").to_string();
    let key_id = key["id"]
        .as_str()
        .expect("id")
        .parse::<Uuid>()
        .expect("uuid");

    let burst = (0..10).map(|_| post(&app, "/v1/chat/completions", &secret, hello()));
    let answers = futures::future::join_all(burst).await;

    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::PAYMENT_REQUIRED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(ok + refused.len(), 10, "{answers:?}");
    assert!(
        (1..=2).contains(&ok),
        "{ok} requests passed a limit with room for two"
    );
    assert!(
        refused
            .iter()
            .all(|body| body["error"]["code"] == "key_spending_limit"),
        "{refused:?}"
    );
    // What the key was charged, once every answered request is in the usage read model.
    let charged: i64 = eventually(Duration::from_secs(15), "the key's usage", || async {
        let (count, charged): (i64, i64) = sqlx::query_as(
            "SELECT count(*), COALESCE(sum(charged_micros), 0)::bigint
               FROM usage_records WHERE api_key_id = $1",
        )
        .bind(key_id)
        .fetch_one(&app.pool)
        .await
        .expect("usage");
        (usize::try_from(count).ok() == Some(ok)).then_some(charged)
    })
    .await;
    assert!(
        charged <= limit,
        "charged {charged} past the key's limit {limit}"
    );
    app.stop().await;
}
