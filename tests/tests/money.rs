//! What a request owes at its edges (issue 14, findings 8, 9 and 11): one deadline for every
//! attempt, a prompt owed once it reached a provider, a reasoning model's thinking owed like
//! its answer, and a prompt margin for providers that count more tokens than the hub's
//! tokenizer.

use futures::SinkExt;
use hub_domain::Role;
use hub_server::Roles;
use hub_tests::fake_anthropic::FakeAnthropic;
use hub_tests::fake_openai::{Behavior, FakeOpenAi, Reply};
use hub_tests::{eventually, spawn_app_with, TestApp};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::tokens::{count_prompt_tokens, count_text_tokens};
use hub_workers::{ChatMessage, ModelsSettings, ProviderKind, ProviderSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// 3 credits per million input tokens, 15 per million output.
const PRICE: PriceSettings = PriceSettings {
    input_per_million_micros: 3_000_000,
    output_per_million_micros: 15_000_000,
    cached_input_per_million_micros: 300_000,
};

const MODEL: &str = "gpt-test";

fn provider(kind: ProviderKind, name: &str, base_url: String, key: &str) -> ProviderSettings {
    ProviderSettings {
        kind,
        base_url: Some(base_url),
        api_key: Some(key.into()),
        upstream_model: Some("upstream-model".into()),
        name: Some(name.into()),
        mock_tokens_per_second: None,
    }
}

fn openai(fake: &FakeOpenAi, name: &str) -> ProviderSettings {
    provider(ProviderKind::Openai, name, fake.base_url(), fake.api_key())
}

/// `gpt-test` served by `providers`, with `tweak` applied to the settings.
async fn app_with(
    providers: Vec<ProviderSettings>,
    tweak: impl FnOnce(&mut ModelsSettings) + Send + 'static,
) -> TestApp {
    let mut models = ModelsSettings {
        backoff_base_ms: 10,
        backoff_max_ms: 2_000,
        first_token_timeout_ms: 2_000,
        total_timeout_ms: 20_000,
        retries_max: 1,
        ..ModelsSettings::default()
    };
    models.models.push(ModelSettings {
        name: MODEL.into(),
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
    tweak(&mut models);
    spawn_app_with(Roles::ALL, move |s| s.models = models).await
}

/// A user with `micros` granted; returns its id and access token.
async fn funded_user(app: &TestApp, micros: i64) -> (Uuid, String) {
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let response = app
        .grant(&admin, user, micros, &format!("fund-{user}"))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
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

/// micro-credits for `input` and `output` tokens at `PRICE`, rounded up.
fn cost(input: u64, output: u64) -> i64 {
    let micros = u128::from(input) * 3_000_000 + u128::from(output) * 15_000_000;
    i64::try_from(micros.div_ceil(1_000_000)).expect("small")
}

/// The types of the events that ended reservations on `user`'s account, in order.
async fn reservation_events(app: &TestApp, user: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type
           FROM events
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1
            AND event_type LIKE 'Reservation%'
          ORDER BY sequence",
    )
    .bind(user.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("events")
}

/// Waits for the account's one reservation to end, and says how.
async fn reservation_end(app: &TestApp, user: Uuid) -> String {
    eventually(
        Duration::from_secs(20),
        "the reservation to end",
        || async { reservation_events(app, user).await.first().cloned() },
    )
    .await
}

/// Issue 14, finding 8: each retry and fallback used to get a fresh first-token and total
/// allowance, so a request could run past its reservation's expiry and go unpaid. Now the
/// request has one deadline, fixed at acceptance, and every attempt lives within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_fallbacks_never_outlive_the_request_deadline() {
    // Two providers that each hold the first token past the first-token timeout: three
    // attempts on each (two retries) would take 6 × 1.2 s, three times the total.
    let first = FakeOpenAi::start().await;
    let second = FakeOpenAi::start().await;
    for fake in [&first, &second] {
        fake.set_default(Behavior::reply(
            Reply::text("Too late.").first_token_delay(Duration::from_secs(30)),
        ));
    }
    let total = Duration::from_millis(2_500);
    let app = app_with(
        vec![openai(&first, "first"), openai(&second, "second")],
        move |m| {
            m.first_token_timeout_ms = 1_200;
            m.total_timeout_ms = 2_500;
            m.retries_max = 2;
        },
    )
    .await;
    let (user, token) = funded_user(&app, 10_000_000).await;

    let asked = Instant::now();
    let response = chat(
        &app,
        &token,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hello?"}], "max_tokens": 16}),
    )
    .await;
    let answered = asked.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    // The deadline, plus a moment to release the reservation and pass the answer on.
    assert!(
        answered < total + Duration::from_millis(1_000),
        "answered after {answered:?}, the request's deadline was {total:?}"
    );
    assert!(first.requests() + second.requests() < 6);
    // Released by the worker, never left to expire.
    assert_eq!(reservation_end(&app, user).await, "ReservationReleased");
    app.stop().await;
}

/// Issue 14, finding 8: an answer still streaming at the deadline is ended there, charged
/// what was delivered, and the client is told it timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_still_streaming_at_the_deadline_is_cut_there_and_charged_what_was_delivered() {
    // The first provider holds its first token past the first-token timeout; the fallback
    // streams slowly. A fresh allowance for the fallback would let it run 1.5 s past the
    // request's deadline.
    let holding = FakeOpenAi::start().await;
    holding.set_default(Behavior::reply(
        Reply::text("Too late.").first_token_delay(Duration::from_secs(30)),
    ));
    let fake = FakeOpenAi::start().await;
    let words: Vec<String> = (0..100).map(|i| format!(" word{i}")).collect();
    let chunks: Vec<&str> = words.iter().map(String::as_str).collect();
    fake.set_default(Behavior::reply(
        Reply::chunks(&chunks)
            .usage(10, 200)
            .chunk_delay(Duration::from_millis(100)),
    ));
    let total = Duration::from_millis(3_000);
    let app = app_with(
        vec![openai(&holding, "holding"), openai(&fake, "slow")],
        |m| {
            m.first_token_timeout_ms = 1_500;
            m.total_timeout_ms = 3_000;
            m.retries_max = 0;
        },
    )
    .await;
    let (user, token) = funded_user(&app, 10_000_000).await;
    let asked = Instant::now();
    let response = chat(
        &app,
        &token,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Count."}], "max_tokens": 256, "stream": true}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("the stream");
    let answered = asked.elapsed();
    assert!(
        answered < total + Duration::from_millis(1_000),
        "answered after {answered:?}, the request's deadline was {total:?}"
    );
    assert!(text.contains("word0"), "{text}");
    assert!(!text.contains("word99"), "{text}");
    assert!(text.contains("upstream_timeout"), "{text}");
    assert_eq!(reservation_end(&app, user).await, "ReservationSettled");
    let (charged, outcome): (i64, String) =
        eventually(Duration::from_secs(10), "the usage record", || async {
            sqlx::query_as("SELECT charged_micros, outcome FROM usage_records LIMIT 1")
                .fetch_optional(&app.pool)
                .await
                .expect("usage")
        })
        .await;
    assert_eq!(outcome, "broken");
    assert!(charged > 0 && charged < cost(10, 200), "{charged}");
    app.stop().await;
}

/// Issue 14, finding 9: a cancel after the request went upstream but before its first token
/// used to release the whole reservation, though the provider had the prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_after_the_request_reached_the_provider_still_charges_the_prompt() {
    let fake = FakeOpenAi::start().await;
    // The first token is held until long after the test has cancelled.
    fake.set_default(Behavior::reply(
        Reply::text("Never seen.")
            .usage(10, 5)
            .first_token_delay(Duration::from_secs(30)),
    ));
    let app = app_with(vec![openai(&fake, "holding")], |m| {
        m.first_token_timeout_ms = 20_000;
        m.total_timeout_ms = 30_000;
    })
    .await;
    let (user, token) = funded_user(&app, 10_000_000).await;
    let prompt = "Please think about this for a long while before you answer.";
    let url = format!(
        "{}/api/ws?token={token}",
        app.address.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let start = json!({"type": "chat.start", "id": "c1", "model": MODEL,
        "messages": [{"role": "user", "content": prompt}], "options": {"max_tokens": 64}});
    socket
        .send(Message::Text(start.to_string().into()))
        .await
        .expect("start");
    eventually(
        Duration::from_secs(10),
        "the request to reach the provider",
        || async { (fake.requests() == 1).then_some(()) },
    )
    .await;
    let cancel = json!({"type": "chat.cancel", "id": "c1"});
    socket
        .send(Message::Text(cancel.to_string().into()))
        .await
        .expect("cancel");
    assert_eq!(reservation_end(&app, user).await, "ReservationSettled");
    let (charged, input, output, outcome): (i64, i64, i64, String) =
        eventually(Duration::from_secs(10), "the usage record", || async {
            sqlx::query_as(
                "SELECT charged_micros, input_tokens, output_tokens, outcome FROM usage_records",
            )
            .fetch_optional(&app.pool)
            .await
            .expect("usage")
        })
        .await;
    let prompt_tokens = count_prompt_tokens("o200k", &[ChatMessage::new("user", prompt)]);
    assert_eq!(outcome, "cancelled");
    assert_eq!(
        (input, output),
        (i64::try_from(prompt_tokens).expect("small"), 0)
    );
    assert!(
        charged >= cost(prompt_tokens, 0),
        "charged {charged}, the prompt costs {}",
        cost(prompt_tokens, 0)
    );
    drop(socket);
    app.stop().await;
}

/// Issue 14, finding 11: the hub counts prompts with OpenAI's tokenizers; Anthropic counts
/// more. The charge is capped at the reservation, so the difference used to be lost. The
/// prompt is now reserved with Anthropic's margin (30 % by default), and a report within it
/// is charged in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_prompt_that_counts_more_than_estimated_is_still_fully_charged() {
    let fake = FakeAnthropic::start().await;
    let prompt = "Summarise the history of the printing press in Europe, from Gutenberg's \
                  workshop in Mainz to the spread of presses across Venice, Paris and London, \
                  in three short paragraphs.";
    let estimated = count_prompt_tokens("o200k", &[ChatMessage::new("user", prompt)]);
    // A quarter more prompt tokens than the hub counted, and every output token allowed:
    // the reservation binds.
    let reported = estimated * 5 / 4;
    let max_tokens = 64;
    fake.set_default(Behavior::reply(
        Reply::text("The press changed Europe.")
            .usage(reported, max_tokens)
            .finish("length"),
    ));
    let anthropic = provider(
        ProviderKind::Anthropic,
        "claude",
        fake.base_url(),
        fake.api_key(),
    );
    let app = app_with(vec![anthropic], |_| {}).await;
    let (user, token) = funded_user(&app, 10_000_000).await;
    let response = chat(
        &app,
        &token,
        json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["usage"]["prompt_tokens"], reported);
    let full = cost(reported, max_tokens);
    assert!(
        full > cost(estimated, max_tokens),
        "the report is above the estimate"
    );
    assert_eq!(body["x_aihub"]["charged_micros"], full);
    assert_eq!(reservation_end(&app, user).await, "ReservationSettled");
    let charged: i64 = eventually(Duration::from_secs(10), "the usage record", || async {
        sqlx::query_scalar("SELECT charged_micros FROM usage_records")
            .fetch_optional(&app.pool)
            .await
            .expect("usage")
    })
    .await;
    assert_eq!(charged, full);
    app.stop().await;
}

/// One settled request's usage record.
#[derive(Debug, sqlx::FromRow)]
struct Usage {
    charged_micros: i64,
    input_tokens: i64,
    output_tokens: i64,
    token_source: String,
    outcome: String,
    first_token_ms: Option<i64>,
}

/// Waits for the account's one usage record.
async fn usage_record(app: &TestApp) -> Usage {
    eventually(Duration::from_secs(10), "the usage record", || async {
        sqlx::query_as::<_, Usage>(
            "SELECT charged_micros, input_tokens, output_tokens, token_source, outcome,
                    first_token_ms
               FROM usage_records",
        )
        .fetch_optional(&app.pool)
        .await
        .expect("usage")
    })
    .await
}

/// `count` reasoning chunks of a few tokens each, as a thinking model streams them.
fn thoughts(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!(" Step {i}: weigh the premise against the evidence."))
        .collect()
}

fn compatible(fake: &FakeOpenAi, name: &str) -> ProviderSettings {
    provider(
        ProviderKind::Compatible,
        name,
        fake.base_url(),
        fake.api_key(),
    )
}

/// Asks `prompt` with `max_tokens` 256 as a stream, expects it to break after the upstream
/// thought (in `reasoning`) and said nothing, and checks that the thinking was charged.
async fn assert_broken_thinking_is_charged(app: &TestApp, prompt: &str, reasoning: &str) {
    let (user, token) = funded_user(app, 10_000_000).await;
    let response = chat(
        app,
        &token,
        json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}],
               "max_tokens": 256, "stream": true}),
    )
    .await;
    // The upstream generated (it thought): the request was accepted, and breaks in the
    // stream, not before it.
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("the stream");
    assert!(text.contains("upstream_stream_broken"), "{text}");
    assert!(
        !text.contains("Step 0"),
        "reasoning is not forwarded: {text}"
    );
    assert_eq!(reservation_end(app, user).await, "ReservationSettled");
    let usage = usage_record(app).await;
    let reasoning_tokens = count_text_tokens("o200k", reasoning);
    assert!(
        reasoning_tokens > 100,
        "a long thinking phase: {reasoning_tokens} tokens"
    );
    assert_eq!(
        (usage.outcome.as_str(), usage.token_source.as_str()),
        ("broken", "estimated")
    );
    assert_eq!(
        usage.output_tokens,
        i64::try_from(reasoning_tokens).expect("small")
    );
    assert_eq!(usage.first_token_ms, None, "no visible token came");
    let prompt_tokens = u64::try_from(usage.input_tokens).expect("positive");
    assert!(
        usage.charged_micros >= cost(prompt_tokens, reasoning_tokens),
        "charged {}, the thinking alone costs {}",
        usage.charged_micros,
        cost(0, reasoning_tokens)
    );
}

/// Issue 14, finding 9: an OpenAI-compatible reasoning model (DeepSeek, vLLM) streams its
/// thinking as `reasoning_content`. A stream that broke before the answer's first word used
/// to be a failure before the first token: released, the thinking free (and the request
/// sent again, where there was another provider).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_after_long_reasoning_still_charges_the_reasoning() {
    let fake = FakeOpenAi::start().await;
    let chunks = thoughts(16);
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let reply = Reply::text("Never seen.").reasoning(&chunks).cut_after(0);
    let reasoning = reply.full_reasoning();
    fake.set_default(Behavior::reply(reply));
    let app = app_with(vec![compatible(&fake, "thinker")], |_| {}).await;
    assert_broken_thinking_is_charged(&app, "Is the premise sound?", &reasoning).await;
    assert_eq!(fake.requests(), 1, "never sent twice");
    app.stop().await;
}

/// Issue 14, finding 9: Anthropic's extended thinking streams as a `thinking` block; a
/// stream cut inside it reports no usage, and the thinking used to be free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_thinking_phase_is_charged_when_the_stream_breaks() {
    let fake = FakeAnthropic::start().await;
    let chunks = thoughts(16);
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let reply = Reply::text("Never seen.")
        .reasoning(&chunks)
        .usage(12, 400)
        .cut_after(0);
    let reasoning = reply.full_reasoning();
    fake.set_default(Behavior::reply(reply));
    let anthropic = provider(
        ProviderKind::Anthropic,
        "claude",
        fake.base_url(),
        fake.api_key(),
    );
    let app = app_with(vec![anthropic], |_| {}).await;
    assert_broken_thinking_is_charged(&app, "Is the premise sound?", &reasoning).await;
    assert_eq!(fake.requests(), 1, "never sent twice");
    app.stop().await;
}

/// Issue 14, finding 9: a reasoning model thinks before its first visible word, for longer
/// than the first-token timeout. Thinking is generating: it used to be timed out (and
/// retried, paying for the thinking twice) as an upstream that never answered. The provider's
/// reported output already counts the thinking, and nothing is added to it;
/// `first_token_ms` stays the first token the client sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reasoning_phase_longer_than_the_first_token_timeout_is_not_timed_out() {
    let first_token_timeout = Duration::from_millis(1_000);
    let fake = FakeOpenAi::start().await;
    let chunks = thoughts(12);
    let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
    // 12 × 150 ms of thinking: 1.8 s before the first word.
    fake.set_default(Behavior::reply(
        Reply::text("The answer is 42.")
            .reasoning(&chunks)
            .reasoning_delay(Duration::from_millis(150))
            .usage(10, 120),
    ));
    let app = app_with(vec![compatible(&fake, "thinker")], move |m| {
        m.first_token_timeout_ms = u64::try_from(first_token_timeout.as_millis()).expect("ms");
    })
    .await;
    let (user, token) = funded_user(&app, 10_000_000).await;
    let response = chat(
        &app,
        &token,
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Six times seven?"}],
               "max_tokens": 256}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The answer is 42."
    );
    assert_eq!(body["usage"]["completion_tokens"], 120);
    assert_eq!(body["x_aihub"]["charged_micros"], cost(10, 120));
    assert_eq!(fake.requests(), 1, "not timed out and retried");
    assert_eq!(reservation_end(&app, user).await, "ReservationSettled");
    let usage = usage_record(&app).await;
    assert_eq!(
        (usage.outcome.as_str(), usage.token_source.as_str()),
        ("completed", "provider")
    );
    assert_eq!((usage.input_tokens, usage.output_tokens), (10, 120));
    assert_eq!(usage.charged_micros, cost(10, 120));
    let first_token_ms = usage.first_token_ms.expect("a visible token came");
    assert!(
        u128::from(u64::try_from(first_token_ms).expect("positive"))
            >= first_token_timeout.as_millis(),
        "the first visible token came after the thinking: {first_token_ms} ms"
    );
    app.stop().await;
}
