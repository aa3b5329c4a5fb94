//! The inference gateway over the real app: OpenAI's wire format, reservations and exact
//! charges, fallback and upstream errors, client disconnects, concurrency, redelivery, and
//! the WebSocket chat.

use futures::{SinkExt, StreamExt};
use hub_domain::Role;
use hub_server::Roles;
use hub_tests::fake_openai::{Behavior, FakeOpenAi, Reply};
use hub_tests::{eventually, spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::{ModelsSettings, ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// 3 credits per million input tokens, 15 per million output, 0.3 per million cached.
const PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 3_000_000,
    output_per_million_micros: 15_000_000,
    cached_input_per_million_micros: 300_000,
};

fn upstream(fake: &FakeOpenAi, name: &str) -> ProviderSettings {
    ProviderSettings {
        kind: ProviderKind::Openai,
        base_url: Some(fake.base_url()),
        api_key: Some(fake.api_key().into()),
        upstream_model: Some("gpt-4o-mini".into()),
        name: Some(name.into()),
        mock_tokens_per_second: None,
    }
}

/// The default `mock-1` model plus `gpt-test` served by `providers` in order.
fn models(providers: Vec<ProviderSettings>) -> ModelsSettings {
    let mut settings = ModelsSettings {
        backoff_base_ms: 10,
        backoff_max_ms: 2_000,
        first_token_timeout_ms: 2_000,
        total_timeout_ms: 20_000,
        retries_max: 1,
        ..ModelsSettings::default()
    };
    if !providers.is_empty() {
        settings.models.push(ModelSettings {
            name: "gpt-test".into(),
            price: PRICE,
            max_output_tokens: Some(256),
            context_tokens: None,
            tokenizer: "o200k".into(),
            providers,
            vision: false,
            image_tokens_max: 1_600,
            tools: true,
            reasoning: false,
            embedding_dimensions: None,
        });
    }
    settings
}

async fn app_with(providers: Vec<ProviderSettings>) -> TestApp {
    let models = models(providers);
    spawn_app_with(Roles::ALL, move |s| s.models = models).await
}

/// A user with `micros` granted; returns its id and access token.
async fn funded_user(app: &TestApp, micros: i64) -> (Uuid, String) {
    let user = Uuid::new_v4();
    if micros > 0 {
        let admin = app.token(Uuid::new_v4(), Role::Admin);
        let response = app
            .grant(&admin, user, micros, &format!("fund-{user}"))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    (user, app.token(user, Role::User))
}

async fn chat(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent")
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 64})
}

async fn balance(app: &TestApp, token: &str) -> Value {
    app.get("/api/credits/balance", Some(token))
        .await
        .json()
        .await
        .expect("json")
}

/// micro-credits for `input` and `output` tokens at `PRICE`, rounded up.
fn cost(input: u64, output: u64) -> i64 {
    let micros = u128::from(input) * 3_000_000 + u128::from(output) * 15_000_000;
    i64::try_from(micros.div_ceil(1_000_000)).expect("small")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_is_charged_the_price_table_applied_to_the_reported_usage() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(
        Reply::text("Hello there, friend.").usage(15, 200),
    ));
    let app = app_with(vec![upstream(&fake, "primary")]).await;
    let (_, token) = funded_user(&app, 10_000_000).await;

    let mut request = hello("gpt-test");
    request["max_tokens"] = json!(256);
    let response = chat(&app, &token, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello there, friend."
    );
    assert_eq!(body["usage"]["prompt_tokens"], 15);
    assert_eq!(body["usage"]["completion_tokens"], 200);
    assert_eq!(body["usage"]["total_tokens"], 215);
    let expected = cost(15, 200);
    assert_eq!(body["x_aihub"]["charged_micros"], expected);
    assert_eq!(body["x_aihub"]["token_source"], "provider");

    let after = app.settled_balance(&token).await;
    assert_eq!(after["balance_micros"], 10_000_000 - expected);
    // The ledger shows the charge with its request; the usage read model has the record.
    // The ledger projection runs apart from the balances one: wait for the charge.
    let ledger: Value = eventually(Duration::from_secs(10), "the ledger charge", || async {
        let ledger: Value = app
            .get("/api/credits/transactions", Some(&token))
            .await
            .json()
            .await
            .expect("json");
        (ledger["data"][0]["kind"] == "charge").then_some(ledger)
    })
    .await;
    let charge = &ledger["data"][0];
    assert_eq!(charge["kind"], "charge");
    assert_eq!(charge["amount_micros"], -expected);
    assert_eq!(charge["cause"]["type"], "request");
    let request_id = body["x_aihub"]["request_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(charge["cause"]["id"], request_id.as_str());
    let row = eventually(Duration::from_secs(10), "the usage record", || async {
        sqlx::query_as::<_, (i64, i64, i64, String, String)>(
            "SELECT input_tokens, output_tokens, charged_micros, provider, token_source
               FROM usage_records WHERE request_id = $1",
        )
        .bind(&request_id)
        .fetch_optional(&app.pool)
        .await
        .expect("query")
    })
    .await;
    assert_eq!(
        row,
        (15, 200, expected, "primary".into(), "provider".into())
    );

    // A provider reporting more than the hub reserved for is charged the reservation only.
    fake.set_default(Behavior::reply(Reply::text("Long.").usage(5_000, 5_000)));
    let before = app.settled_balance(&token).await["balance_micros"]
        .as_i64()
        .expect("balance");
    let capped: Value = chat(&app, &token, hello("gpt-test"))
        .await
        .json()
        .await
        .expect("json");
    let charged = capped["x_aihub"]["charged_micros"]
        .as_i64()
        .expect("charged");
    assert!(charged < cost(5_000, 5_000));
    let after = app.settled_balance(&token).await["balance_micros"]
        .as_i64()
        .expect("balance");
    assert_eq!(before - after, charged);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_speaks_openai_sse_with_usage_and_done() {
    let app = app_with(Vec::new()).await;
    let (_, token) = funded_user(&app, 10_000_000).await;
    let mut body = hello("mock-1");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = chat(&app, &token, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    let text = response.text().await.expect("body");
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json chunk"))
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.is_empty());
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .expect("a finish reason");
    assert!(!finish.is_empty());
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert!(usage["completion_tokens"].as_u64().is_some_and(|n| n > 0));

    // Deterministic: the same request gives the same text without streaming.
    let again: Value = chat(&app, &token, hello("mock-1"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["choices"][0]["message"]["content"], content.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_balance_cannot_cover_is_refused_with_402_and_charges_nothing() {
    let app = app_with(Vec::new()).await;
    let (_, broke) = funded_user(&app, 0).await;
    let response = chat(&app, &broke, hello("mock-1")).await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "insufficient_credits");

    let (_, poor) = funded_user(&app, 5).await;
    assert_eq!(
        chat(&app, &poor, hello("mock-1")).await.status(),
        StatusCode::PAYMENT_REQUIRED
    );
    let b = balance(&app, &poor).await;
    assert_eq!(
        (b["balance_micros"].clone(), b["reserved_micros"].clone()),
        (json!(5), json!(0))
    );

    // Unknown model, bad input, no credentials: OpenAI-shaped errors.
    let (_, token) = funded_user(&app, 1_000_000).await;
    let unknown = chat(&app, &token, hello("no-such-model")).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad = chat(&app, &token, json!({"model": "mock-1"})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let anonymous = app
        .client
        .post(app.url("/v1/chat/completions"))
        .json(&hello("mock-1"))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body["error"]["type"], "authentication_error");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_admission_limit_is_refused_with_503_and_charges_nothing() {
    let app = app_with(Vec::new()).await;
    let (_, token) = funded_user(&app, 1_000_000).await;
    let limit = u32::try_from(app.settings.models.admission_limit).expect("small");
    // Every admission slot taken, as by requests still reserving.
    let busy = app
        .state
        .admission
        .clone()
        .acquire_many_owned(limit)
        .await
        .expect("permits");
    let refused = chat(&app, &token, hello("mock-1")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded");
    let b = balance(&app, &token).await;
    assert_eq!(
        (b["balance_micros"].clone(), b["reserved_micros"].clone()),
        (json!(1_000_000), json!(0))
    );

    drop(busy);
    let answered = chat(&app, &token, hello("mock-1")).await;
    assert_eq!(answered.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_fall_back_or_map_to_openai_statuses() {
    let broken = FakeOpenAi::start().await;
    broken.set_default(Behavior::server_error());
    let healthy = FakeOpenAi::start().await;
    healthy.set_default(Behavior::reply(
        Reply::text("From the second.").usage(20, 4),
    ));
    let app = app_with(vec![
        upstream(&broken, "first"),
        upstream(&healthy, "second"),
    ])
    .await;
    let (_, token) = funded_user(&app, 10_000_000).await;

    let body: Value = chat(&app, &token, hello("gpt-test"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], "From the second.");
    assert_eq!(body["x_aihub"]["provider"], "second");
    assert!(broken.requests() >= 1);

    // Both rate-limited: 429 with Retry-After, nothing charged.
    broken.set_default(Behavior::rate_limited(Some("30")));
    healthy.set_default(Behavior::rate_limited(Some("30")));
    let before = app.settled_balance(&token).await["balance_micros"].clone();
    let limited = chat(&app, &token, hello("gpt-test")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().get("retry-after").is_some());
    // The hub's key refused upstream: 502.
    broken.set_default(Behavior::unauthorized());
    healthy.set_default(Behavior::unauthorized());
    assert_eq!(
        chat(&app, &token, hello("gpt-test")).await.status(),
        StatusCode::BAD_GATEWAY
    );
    let after = app.settled_balance(&token).await;
    assert_eq!(
        after["balance_micros"], before,
        "failed requests charge nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_pays_only_for_what_was_produced() {
    let fake = FakeOpenAi::start().await;
    let words: Vec<String> = (0..200).map(|i| format!("word{i} ")).collect();
    let chunks: Vec<&str> = words.iter().map(String::as_str).collect();
    fake.set_default(Behavior::reply(
        Reply::chunks(&chunks)
            .usage(10, 600)
            .chunk_delay(Duration::from_millis(20)),
    ));
    let app = app_with(vec![upstream(&fake, "slow")]).await;
    let (_, token) = funded_user(&app, 100_000_000).await;
    let mut body = hello("gpt-test");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(256);
    let response = chat(&app, &token, body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut response = response;
    let mut seen = 0;
    while let Ok(Some(piece)) = response.chunk().await {
        seen += String::from_utf8_lossy(&piece).matches("word").count();
        if seen >= 3 {
            break;
        }
    }
    drop(response); // The client hangs up.

    eventually(
        Duration::from_secs(10),
        "the upstream call to be cancelled",
        || async { (fake.streams_cancelled() == 1).then_some(()) },
    )
    .await;
    let after = app.settled_balance(&token).await;
    let charged = 100_000_000 - after["balance_micros"].as_i64().expect("balance");
    let full = cost(10, 600);
    assert!(charged > 0, "the prompt and the produced words are paid");
    assert!(
        charged < full / 2,
        "far less than the whole answer: {charged} vs {full}"
    );
    // The usage projection runs apart from the balances one: wait for its row.
    let outcome: String = eventually(Duration::from_secs(10), "the usage record", || async {
        sqlx::query_scalar("SELECT outcome FROM usage_records LIMIT 1")
            .fetch_optional(&app.pool)
            .await
            .expect("usage")
    })
    .await;
    assert_eq!(outcome, "cancelled");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_on_one_account_never_overspend() {
    // A mock slow enough that every request is in flight at once.
    let mut models = models(Vec::new());
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
    let app = spawn_app_with(Roles::ALL, move |s| s.models = models).await;
    // Enough for about twenty requests' worst case (~1.5k micro-credits each), not a hundred.
    let funded = 30_000;
    let (_, token) = funded_user(&app, funded).await;
    let requests = (0..100).map(|_| {
        let app = &app;
        let token = token.clone();
        async move {
            let mut body = hello("mock-slow");
            body["stream"] = json!(true);
            body["max_tokens"] = json!(100);
            let response = chat(app, &token, body).await;
            let status = response.status();
            let _ = response.text().await;
            status
        }
    });
    let statuses = futures::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::PAYMENT_REQUIRED)
        .count();
    assert_eq!(ok + refused, 100, "{statuses:?}");
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    let after = app.settled_balance(&token).await;
    let balance = after["balance_micros"].as_i64().expect("balance");
    assert!(balance >= 0);
    assert!(after["available_micros"].as_i64().expect("available") >= 0);
    // What the ledger charged is what left the balance, and no more than there was.
    let charged: i64 = sqlx::query_scalar(
        "SELECT COALESCE(-sum(amount_micros), 0)::bigint FROM ledger WHERE kind = 'charge'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("sum");
    assert_eq!(charged, funded - balance);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_command_never_calls_the_provider_twice() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let fake = FakeOpenAi::start().await;
    let app = spawn_app_with(
        Roles {
            worker: false,
            ..Roles::ALL
        },
        {
            let models = models(vec![upstream(&fake, "only")]);
            move |s| s.models = models
        },
    )
    .await;
    // The workers' consumer, with a short ack wait, as a dying worker would find it.
    let stream = app
        .state
        .js
        .get_stream(app.state.topology.commands_stream())
        .await
        .expect("stream");
    let consumer = stream
        .get_or_create_consumer(
            hub_workers::worker::CONSUMER,
            pull::Config {
                durable_name: Some(hub_workers::worker::CONSUMER.into()),
                filter_subject: app.state.topology.inference_command_subject(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .await
        .expect("consumer");
    let (_, token) = funded_user(&app, 10_000_000).await;
    let pending = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/v1/chat/completions");
        let token = token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&hello("gpt-test"))
                .send()
                .await
                .expect("sent")
                .status()
        }
    });
    // A worker takes the command and dies before claiming it (no ack).
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("fetch");
    let taken = batch.next().await.expect("a command").expect("message");
    drop(taken);
    // A real worker starts; the command comes back after the ack wait and runs once.
    let worker = hub_workers::worker::Worker::new(
        app.state.js.clone(),
        app.state.topology.clone(),
        app.state.router.clone(),
        app.state.credits.clone(),
        app.state.settlements.clone(),
        app.state.clock.clone(),
        hub_workers::worker::WorkerConfig::default(),
    );
    let running = tokio::spawn(worker.run(std::future::pending()));
    assert_eq!(pending.await.expect("joined"), StatusCode::OK);
    // The work queue drops a command once it is acknowledged: with the stream empty, no
    // later redelivery can reach the provider.
    eventually(
        Duration::from_secs(10),
        "the command to leave the queue",
        || {
            let stream = stream.clone();
            async move {
                let mut stream = stream;
                let info = stream.info().await.expect("stream info");
                (info.state.messages == 0).then_some(())
            }
        },
    )
    .await;
    assert_eq!(fake.requests(), 1, "the provider was called exactly once");
    running.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_runs_several_chats_at_once_and_cancels_one() {
    let app = app_with(Vec::new()).await;
    let (_, token) = funded_user(&app, 10_000_000).await;
    let url = format!(
        "{}/api/ws?token={token}",
        app.address.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");

    let welcome = recv(&mut socket).await;
    assert_eq!(welcome["type"], "welcome");
    for id in ["a", "b"] {
        send(
            &mut socket,
            json!({"type": "chat.start", "id": id, "model": "mock-1",
            "messages": [{"role": "user", "content": format!("Chat {id}")}],
            "options": {"max_tokens": 32}}),
        )
        .await;
    }
    send(&mut socket, json!({"type": "ping"})).await;
    send(
        &mut socket,
        json!({"type": "chat.start", "id": "bad", "model": "nope",
        "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    let mut done = std::collections::HashMap::new();
    let mut pong = false;
    let mut bad = None;
    while done.len() < 2 || !pong || bad.is_none() {
        let message = recv(&mut socket).await;
        match message["type"].as_str() {
            Some("chat.done") => {
                done.insert(
                    message["id"].as_str().expect("id").to_string(),
                    message.clone(),
                );
            }
            Some("pong") => pong = true,
            Some("chat.error") if message["id"] == "bad" => bad = Some(message.clone()),
            _ => {}
        }
    }
    for id in ["a", "b"] {
        assert!(done[id]["credits_charged_micros"]
            .as_i64()
            .is_some_and(|c| c > 0));
        assert!(done[id]["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|c| c > 0));
    }
    assert_eq!(bad.expect("error")["code"], "model_not_found");
    send(&mut socket, json!({"type": "nonsense"})).await;
    let error = recv(&mut socket).await;
    assert_eq!(error["type"], "error");
    app.stop().await;
}

async fn send<S>(socket: &mut S, value: Value)
where
    S: futures::Sink<tokio_tungstenite::tungstenite::Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            value.to_string().into(),
        ))
        .await
        .expect("send");
}

async fn recv<S>(socket: &mut S) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("ok");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(text.as_str()).expect("json");
            if value["type"] != "heartbeat" {
                return value;
            }
        }
    }
}

/// Issue 14, finding 6: a whole answer that takes longer than the generic request timeout
/// is delivered and charged once, instead of a 503 (which SDKs retry by themselves) for an
/// answer the worker completed and charged anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_request_timeout_is_delivered_not_refused() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(
        Reply::text("A considered answer.").first_token_delay(Duration::from_millis(1_500)),
    ));
    let models = models(vec![upstream(&fake, "slow")]);
    let app = spawn_app_with(Roles::ALL, move |s| {
        s.models = models;
        s.server.request_timeout_ms = 500;
    })
    .await;
    let (_, token) = funded_user(&app, 10_000_000).await;
    let answer = chat(&app, &token, hello("gpt-test")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "A considered answer."
    );
    assert_eq!(fake.requests(), 1, "asked once");
}
