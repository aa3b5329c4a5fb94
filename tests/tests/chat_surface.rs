//! The whole chat surface over the real app: tools and tool calls (JSON and streamed),
//! structured answers, images, parameters a model cannot take, reasoning and cached usage
//! billed exactly, through the mock and through fake OpenAI and Anthropic upstreams; and
//! Anthropic's Messages API (`/v1/messages`, streaming, tools, `count_tokens`) in front of
//! any model. Every charge is checked against the price table × the usage the answer reports.

use hub_domain::{Credits, Price, Role, TokenUsage};
use hub_server::Roles;
use hub_tests::fake_anthropic::FakeAnthropic;
use hub_tests::fake_openai::{Behavior, FakeOpenAi, Reply};
use hub_tests::{spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::{ModelsSettings, ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// 3 credits per million input tokens, 15 per million output, 0.3 per million cached.
const PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 3_000_000,
    output_per_million_micros: 15_000_000,
    cached_input_per_million_micros: 300_000,
};

fn provider(kind: ProviderKind, base_url: String, key: &str) -> ProviderSettings {
    ProviderSettings {
        kind,
        base_url: Some(base_url),
        api_key: Some(key.into()),
        upstream_model: Some("upstream-model".into()),
        name: Some(kind.as_str().into()),
        mock_tokens_per_second: None,
    }
}

fn model(name: &str, providers: Vec<ProviderSettings>, vision: bool) -> ModelSettings {
    ModelSettings {
        name: name.into(),
        price: PRICE,
        max_output_tokens: Some(512),
        context_tokens: None,
        vision,
        reasoning: true,
        ..ModelSettings::mock(name)
    }
    .with_providers(providers)
}

trait WithProviders {
    fn with_providers(self, providers: Vec<ProviderSettings>) -> Self;
}

impl WithProviders for ModelSettings {
    fn with_providers(mut self, providers: Vec<ProviderSettings>) -> Self {
        self.providers = providers;
        self
    }
}

/// `mock-1` (vision, tools), `text-only` (the mock without vision), and, when given,
/// `gpt-up` on the fake OpenAI and `claude-up` on the fake Anthropic.
async fn app(openai: Option<&FakeOpenAi>, anthropic: Option<&FakeAnthropic>) -> TestApp {
    let mut models = ModelsSettings {
        first_token_timeout_ms: 5_000,
        total_timeout_ms: 20_000,
        retries_max: 0,
        ..ModelsSettings::default()
    };
    models
        .models
        .push(model("text-only", vec![ProviderSettings::mock()], false));
    if let Some(fake) = openai {
        models.models.push(model(
            "gpt-up",
            vec![provider(
                ProviderKind::Openai,
                fake.base_url(),
                fake.api_key(),
            )],
            true,
        ));
    }
    if let Some(fake) = anthropic {
        models.models.push(model(
            "claude-up",
            vec![provider(
                ProviderKind::Anthropic,
                fake.base_url(),
                fake.api_key(),
            )],
            true,
        ));
    }
    spawn_app_with(Roles::ALL, move |s| s.models = models).await
}

/// A user with 10 credits; returns its access token.
async fn funded(app: &TestApp) -> String {
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app
        .grant(&admin, user, 10_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    app.token(user, Role::User)
}

/// A registered user (who may hold API keys) with 10 credits; returns its access token.
async fn registered(app: &TestApp) -> String {
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let (status, created) = post_anonymous(
        app,
        "/api/auth/register",
        json!({"email": email, "password": "password123"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().expect("token").to_owned();
    let user = app.state.jwt.verify(&token).expect("token").sub;
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app
        .grant(&admin, user, 10_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    token
}

async fn post_anonymous(app: &TestApp, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
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
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The SSE `data:` payloads of a streamed answer, as JSON (without `[DONE]`), and the event
/// names in order.
async fn stream(app: &TestApp, path: &str, token: &str, body: Value) -> (Vec<String>, Vec<Value>) {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    let names = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_owned)
        .collect();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("JSON data"))
        .collect();
    (names, data)
}

/// The available balance once every reservation settled ([`TestApp::settled_balance`]).
async fn settled(app: &TestApp, token: &str) -> i64 {
    app.settled_balance(token).await["available_micros"]
        .as_i64()
        .expect("available_micros")
}

/// What the price table charges for an OpenAI-shaped usage.
fn cost(price: PriceSettings, usage: &Value) -> i64 {
    let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let price = Price::from_micros(
        price.input_per_million_micros,
        price.output_per_million_micros,
        price.cached_input_per_million_micros,
    );
    price
        .cost(&TokenUsage {
            input_tokens: count("/prompt_tokens"),
            output_tokens: count("/completion_tokens"),
            cached_input_tokens: count("/prompt_tokens_details/cached_tokens"),
            reasoning_tokens: 0,
        })
        .map(Credits::micros)
        .expect("a cost")
}

/// The mock's price (`ModelSettings::mock`).
const MOCK_PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 1_000_000,
    output_per_million_micros: 2_000_000,
    cached_input_per_million_micros: 500_000,
};

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_round_trip_is_answered_and_billed_at_the_price_table() {
    let app = app(None, None).await;
    let token = funded(&app).await;
    let before = settled(&app, &token).await;
    let question = json!({"role": "user", "content": "What is the weather in Paris?"});
    let (status, first) = post(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-1", "messages": [question], "tools": weather_tool(), "tool_choice": "auto"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("text"))
            .expect("JSON arguments");
    assert!(arguments["city"].is_string(), "{arguments}");

    let (status, second) = post(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-1", "tools": weather_tool(), "messages": [
            question,
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 °C"}
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["choices"][0]["finish_reason"], "stop");
    assert!(second["choices"][0]["message"]["content"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(second["choices"][0]["message"].get("tool_calls").is_none());

    let charged = cost(MOCK_PRICE, &first["usage"]) + cost(MOCK_PRICE, &second["usage"]);
    assert_eq!(
        first["x_aihub"]["charged_micros"].as_i64().unwrap_or(0)
            + second["x_aihub"]["charged_micros"].as_i64().unwrap_or(0),
        charged
    );
    assert_eq!(before - settled(&app, &token).await, charged);

    // A tool message that answers no call is refused before anything is reserved.
    let (status, refused) = post(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-1", "messages": [question, {"role": "tool", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_tool_call_arrives_as_indexed_deltas() {
    let app = app(None, None).await;
    let token = funded(&app).await;
    let (_, chunks) = stream(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-1", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "Weather in Oslo?"}],
            "tools": weather_tool(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    )
    .await;
    let pieces: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    assert!(pieces.len() >= 2, "{chunks:?}");
    assert!(pieces.iter().all(|p| p["index"] == 0));
    assert!(pieces[0]["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("call_")));
    assert_eq!(pieces[0]["type"], "function");
    assert_eq!(pieces[0]["function"]["name"], "get_weather");
    assert!(pieces[1..].iter().all(|p| p.get("id").is_none()));
    let arguments: String = pieces
        .iter()
        .filter_map(|p| p["function"]["arguments"].as_str())
        .collect();
    serde_json::from_str::<Value>(&arguments).expect("the streamed arguments are JSON");
    let finish = chunks.iter().find_map(|c| {
        c.pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
    });
    assert_eq!(finish, Some("tool_calls"));
    let usage = chunks
        .iter()
        .find_map(|c| c.get("usage").filter(|u| u.is_object()));
    assert!(usage.is_some_and(|u| u["completion_tokens"].as_u64() > Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_schema_answer_follows_its_schema() {
    let app = app(None, None).await;
    let token = funded(&app).await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"},
        "age": {"type": "integer"}}, "required": ["name", "age"], "additionalProperties": false});
    let (status, answer) = post(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "mock-1", "messages": [{"role": "user", "content": "Invent a person."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    let person: Value = serde_json::from_str(content).expect("JSON content");
    assert!(
        person["name"].is_string() && person["age"].is_i64(),
        "{person}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_reserved_at_its_most_and_charged_as_the_provider_counted_it() {
    let app = app(None, None).await;
    let token = funded(&app).await;
    let before = settled(&app, &token).await;
    let text = json!({"model": "mock-1", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Describe it."}]});
    let with_image = json!({"model": "mock-1", "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "detail": "high"}}]}]});
    let (_, plain) = post(&app, "/v1/chat/completions", &token, text).await;
    let (status, seen) = post(&app, "/v1/chat/completions", &token, with_image.clone()).await;
    assert_eq!(status, StatusCode::OK, "{seen}");
    // The mock counts a high-detail image as OpenAI does for 512 × 512: 765 tokens.
    assert_eq!(
        seen["usage"]["prompt_tokens"].as_u64(),
        plain["usage"]["prompt_tokens"].as_u64().map(|t| t + 765)
    );
    let charged = cost(MOCK_PRICE, &plain["usage"]) + cost(MOCK_PRICE, &seen["usage"]);
    assert_eq!(before - settled(&app, &token).await, charged);

    // A model without vision refuses the image by name, before reserving anything.
    let mut refused = with_image;
    refused["model"] = json!("text-only");
    let (status, error) = post(&app, "/v1/chat/completions", &token, refused).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "unsupported_parameter");
    assert_eq!(error["error"]["param"], "messages[0].content[1]");
    assert_eq!(settled(&app, &token).await, before - charged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_a_model_cannot_take_are_refused_by_name() {
    let anthropic = FakeAnthropic::start().await;
    let app = app(None, Some(&anthropic)).await;
    let token = funded(&app).await;
    let hello = |model: &str, extra: Value| {
        let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let cases = [
        (hello("claude-up", json!({"seed": 7})), "seed"),
        (
            hello("claude-up", json!({"frequency_penalty": 0.5})),
            "frequency_penalty",
        ),
        (
            hello("claude-up", json!({"reasoning_effort": "low"})),
            "reasoning_effort",
        ),
        (
            hello("text-only", json!({"reasoning_effort": "high", "bogus": 1})),
            "bogus",
        ),
        (hello("mock-1", json!({"logprobs": true})), "logprobs"),
        (
            hello("mock-1", json!({"tool_choice": "required"})),
            "tool_choice",
        ),
        (
            hello(
                "mock-1",
                json!({"tools": weather_tool(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            ),
            "tool_choice",
        ),
        (
            hello("mock-1", json!({"audio": {"voice": "alloy"}})),
            "audio",
        ),
        (hello("mock-1", json!({"temperature": 3})), "temperature"),
    ];
    for (body, param) in cases {
        let (status, error) = post(&app, "/v1/chat/completions", &token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    assert_eq!(anthropic.requests(), 0, "nothing refused went upstream");
    // What the mock can take passes: seed and penalties are ignored by it, not refused.
    let (status, answer) = post(
        &app,
        "/v1/chat/completions",
        &token,
        hello(
            "mock-1",
            json!({"seed": 7, "presence_penalty": 1.0, "user": "u-1",
            "metadata": {"team": "a"}, "store": false, "parallel_tool_calls": true}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_upstream_gets_every_parameter_and_its_cached_and_reasoning_usage_is_billed() {
    let openai = FakeOpenAi::start().await;
    openai.set_default(Behavior::reply(
        Reply::text("Let me check.")
            .tool_call("call_up", "get_weather", &["{\"city\":", " \"Rome\"}"])
            .usage(1_000, 400)
            .cached(600)
            .reasoning_tokens(300),
    ));
    let app = app(Some(&openai), None).await;
    let token = funded(&app).await;
    let before = settled(&app, &token).await;
    let (status, answer) = post(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "gpt-up", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}}]}],
            "tools": weather_tool(), "tool_choice": "required", "parallel_tool_calls": false,
            "seed": 11, "presence_penalty": 0.25, "reasoning_effort": "medium", "top_p": 0.9}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sent = openai.last_body().expect("a request");
    assert_eq!(sent["model"], "upstream-model");
    assert_eq!(sent["tools"], weather_tool());
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(sent["seed"], 11);
    assert_eq!(sent["presence_penalty"], 0.25);
    assert_eq!(sent["reasoning_effort"], "medium");
    assert_eq!(
        sent["messages"][0]["content"][1]["image_url"]["url"],
        "https://example.com/sky.png"
    );

    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "Let me check.");
    assert_eq!(message["tool_calls"][0]["id"], "call_up");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\": \"Rome\"}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let usage = &answer["usage"];
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 600);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 300);
    // 400 uncached at 3, 600 cached at 0.3, 400 out (reasoning included) at 15 per million.
    let expected = (400 * 3_000_000 + 600 * 300_000 + 400 * 15_000_000) / 1_000_000;
    assert_eq!(cost(PRICE, usage), expected);
    assert_eq!(answer["x_aihub"]["charged_micros"], expected, "{answer}");
    assert_eq!(before - settled(&app, &token).await, expected);

    // Streamed, the same call arrives as tool-call deltas.
    let (_, chunks) = stream(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "gpt-up", "stream": true, "messages": [{"role": "user", "content": "Weather?"}],
            "tools": weather_tool()}),
    )
    .await;
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(arguments, "{\"city\": \"Rome\"}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_upstream_is_translated_both_ways() {
    let anthropic = FakeAnthropic::start().await;
    anthropic.set_default(Behavior::reply(
        Reply::text("Checking.")
            .tool_call("toolu_9", "get_weather", &["{\"city\"", ": \"Lima\"}"])
            .usage(120, 30),
    ));
    let app = app(None, Some(&anthropic)).await;
    let token = funded(&app).await;
    let (status, answer) = post(
        &app,
        "/v1/chat/completions",
        &token,
        json!({"model": "claude-up", "tools": weather_tool(), "tool_choice": "required",
            "messages": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "snow"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sent = anthropic.last_body().expect("a request");
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        sent["messages"][0]["content"][1]["source"]["media_type"],
        "image/png"
    );
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        sent["messages"][1]["content"][0]["input"],
        json!({"city": "Oslo"})
    );
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "Checking.");
    assert_eq!(message["tool_calls"][0]["id"], "toolu_9");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\": \"Lima\"}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messages_api_speaks_anthropic_in_front_of_any_model() {
    let app = app(None, None).await;
    let token = registered(&app).await;
    let before = settled(&app, &token).await;
    // An API key in `x-api-key`, as Anthropic's SDKs send it.
    let (status, key) = post(&app, "/api/keys", &token, json!({"name": "sdk"})).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let secret = key["key"].as_str().expect("shown once").to_owned();
    let ask = |body: Value| {
        app.client
            .post(app.url("/v1/messages"))
            .header("x-api-key", &secret)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let request = json!({"model": "mock-1", "max_tokens": 64, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Tell me about the sea."}]});
    let response = ask(request.clone()).await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert!(message["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("msg_")));
    assert_eq!(message["content"][0]["type"], "text");
    assert!(["end_turn", "max_tokens"].contains(&message["stop_reason"].as_str().unwrap_or("")));
    let usage = &message["usage"];
    let as_openai = json!({"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"]});

    // count_tokens counts the prompt as the mock does.
    let counted: Value = app
        .client
        .post(app.url("/v1/messages/count_tokens"))
        .header("x-api-key", &secret)
        .json(&json!({"model": "mock-1", "system": "Be brief.",
            "messages": [{"role": "user", "content": "Tell me about the sea."}]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(counted["input_tokens"], usage["input_tokens"]);

    // Streamed: Anthropic's event sequence, text deltas adding up to a whole answer.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (names, events) = stream(&app, "/v1/messages", &token, streamed).await;
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.get(1).map(String::as_str), Some("ping"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, message["content"][0]["text"].as_str().unwrap_or(""));
    let stream_usage = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .map(|e| e["usage"].clone())
        .expect("usage");
    let streamed_as_openai = json!({"prompt_tokens": stream_usage["input_tokens"], "completion_tokens": stream_usage["output_tokens"]});

    // Tools: a tool_use block, then the tool_result answered.
    let tools = json!([{"name": "get_weather", "description": "Weather.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let called: Value = ask(json!({"model": "mock-1", "max_tokens": 64, "tools": tools,
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": "Weather in Quito?"}]}))
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    assert_eq!(called["stop_reason"], "tool_use", "{called}");
    let tool_use = called["content"]
        .as_array()
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_use"))
        .cloned()
        .expect("a tool_use block");
    assert!(tool_use["input"]["city"].is_string());
    let answered: Value = ask(json!({"model": "mock-1", "max_tokens": 64, "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Quito?"},
            {"role": "assistant", "content": called["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "rain"}]}]}))
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    assert_eq!(answered["content"][0]["type"], "text", "{answered}");
    let tool_usage = |m: &Value| json!({"prompt_tokens": m["usage"]["input_tokens"], "completion_tokens": m["usage"]["output_tokens"]});

    let charged = cost(MOCK_PRICE, &as_openai)
        + cost(MOCK_PRICE, &streamed_as_openai)
        + cost(MOCK_PRICE, &tool_usage(&called))
        + cost(MOCK_PRICE, &tool_usage(&answered));
    assert_eq!(before - settled(&app, &token).await, charged);

    // Errors in Anthropic's shape.
    let unknown = ask(
        json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .expect("sent");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");
    let anonymous = app
        .client
        .post(app.url("/v1/messages"))
        .json(&request)
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body["error"]["type"], "authentication_error");
    let no_max = ask(json!({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}))
        .await
        .expect("sent");
    assert_eq!(no_max.status(), StatusCode::BAD_REQUEST);
}
