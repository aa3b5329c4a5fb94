//! `POST /v1/embeddings` over the real app: the mock's deterministic vectors, an OpenAI
//! upstream (vectors back in input order, its usage billed), both encodings, token-id
//! inputs, and the refusals (a chat model, too many dimensions, an empty input).

use base64::Engine;
use hub_domain::Role;
use hub_server::Roles;
use hub_tests::fake_openai::{Behavior, FakeOpenAi, Reply};
use hub_tests::{spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::{ModelsSettings, ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// 2 credits per million input tokens.
const PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 2_000_000,
    output_per_million_micros: 0,
    cached_input_per_million_micros: 0,
};

async fn app(openai: Option<&FakeOpenAi>) -> TestApp {
    let mut models = ModelsSettings::default();
    if let Some(fake) = openai {
        models.models.push(ModelSettings {
            price: PRICE,
            embedding_dimensions: Some(1536),
            providers: vec![ProviderSettings {
                kind: ProviderKind::Openai,
                base_url: Some(fake.base_url()),
                api_key: Some(fake.api_key().into()),
                upstream_model: Some("text-embedding-3-small".into()),
                name: Some("openai".into()),
                mock_tokens_per_second: None,
            }],
            ..ModelSettings::mock_embedding("embed-up")
        });
    }
    spawn_app_with(Roles::ALL, move |s| s.models = models).await
}

async fn funded(app: &TestApp) -> String {
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app
        .grant(&admin, user, 10_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    app.token(user, Role::User)
}

async fn embed(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/v1/embeddings"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The available balance once every reservation settled ([`TestApp::settled_balance`]).
async fn settled(app: &TestApp, token: &str) -> i64 {
    app.settled_balance(token).await["available_micros"]
        .as_i64()
        .expect("available_micros")
}

fn vector(item: &Value) -> Vec<f64> {
    item["embedding"]
        .as_array()
        .expect("numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_embeds_each_input_the_same_way_every_time_and_bills_its_tokens() {
    let app = app(None).await;
    let token = funded(&app).await;
    let before = settled(&app, &token).await;
    let (status, first) = embed(
        &app,
        &token,
        json!({"model": "mock-embed-1", "input": ["the sea", "a credit", "the sea"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["object"], "list");
    let data = first["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f64>> = data.iter().map(vector).collect();
    assert_eq!(vectors[0].len(), 256);
    assert_eq!(vectors[0], vectors[2], "the same text, the same vector");
    assert_ne!(vectors[0], vectors[1]);
    let norm: f64 = vectors[1].iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "unit vectors: {norm}");
    let tokens = first["usage"]["prompt_tokens"].as_i64().expect("tokens");
    assert_eq!(first["usage"]["total_tokens"], tokens);
    // 0.1 credit per million tokens, rounded up.
    let charged = (tokens * 100_000 + 999_999) / 1_000_000;
    assert_eq!(first["x_aihub"]["charged_micros"], charged);
    assert_eq!(before - settled(&app, &token).await, charged);

    // Base64 (what OpenAI's SDKs ask for): little-endian f32s of the same vector, and a
    // shorter one when asked.
    let (status, encoded) = embed(
        &app,
        &token,
        json!({"model": "mock-embed-1", "input": "the sea", "encoding_format": "base64", "dimensions": 64}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{encoded}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().expect("base64"))
        .expect("decodes");
    assert_eq!(bytes.len(), 64 * 4);

    // Token ids are read with the model's tokenizer: the same text, the same vector.
    let ids = [3086u32, 9139];
    let text = hub_workers::tokens::decode("o200k", &ids).expect("o200k tokens");
    let (status, by_ids) = embed(
        &app,
        &token,
        json!({"model": "mock-embed-1", "input": [ids]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_ids}");
    let (_, by_text) = embed(
        &app,
        &token,
        json!({"model": "mock-embed-1", "input": text}),
    )
    .await;
    assert_eq!(vector(&by_ids["data"][0]), vector(&by_text["data"][0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_upstream_answers_in_input_order_and_its_usage_is_billed() {
    let fake = FakeOpenAi::start().await;
    // The upstream counts fewer tokens than the hub reserved for: its count is charged.
    fake.set_default(Behavior::reply(Reply::text("").usage(7, 0)));
    let app = app(Some(&fake)).await;
    let token = funded(&app).await;
    let before = settled(&app, &token).await;
    let (status, answer) = embed(
        &app,
        &token,
        json!({"model": "embed-up", "input": ["a b c d e f g h", "bb", "ccc"], "dimensions": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sent = fake.last_body().expect("a request");
    assert_eq!(sent["model"], "text-embedding-3-small");
    assert_eq!(sent["input"], json!(["a b c d e f g h", "bb", "ccc"]));
    assert_eq!(sent["dimensions"], 4);
    assert_eq!(sent["encoding_format"], "float");
    // The fake lists its data last input first; the hub answers in input order.
    let lengths: Vec<f64> = answer["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| vector(item)[0])
        .collect();
    assert_eq!(lengths, [15.0, 2.0, 3.0]);
    assert_eq!(answer["usage"]["prompt_tokens"], 7);
    assert_eq!(answer["x_aihub"]["token_source"], "provider");
    // 7 tokens at 2 credits per million.
    let charged = 14;
    assert_eq!(answer["x_aihub"]["charged_micros"], charged);
    assert_eq!(before - settled(&app, &token).await, charged);

    // An upstream failure releases the reservation: nothing is charged.
    fake.push(Behavior::status(400));
    let (status, _) = embed(&app, &token, json!({"model": "embed-up", "input": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(settled(&app, &token).await, before - charged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_an_embedding_model_cannot_take_are_refused_by_name() {
    let app = app(None).await;
    let token = funded(&app).await;
    let cases = [
        (json!({"model": "mock-1", "input": "x"}), "model"),
        (
            json!({"model": "mock-embed-1", "input": "x", "dimensions": 100000}),
            "dimensions",
        ),
        (
            json!({"model": "mock-embed-1", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "mock-embed-1", "input": "x", "bogus": true}),
            "bogus",
        ),
    ];
    for (body, param) in cases {
        let (status, error) = embed(&app, &token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    let (status, error) = embed(
        &app,
        &token,
        json!({"model": "mock-embed-1", "input": [""]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    let (status, _) = embed(&app, &token, json!({"model": "nope", "input": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // And a chat to an embedding model.
    let response = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "mock-embed-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
