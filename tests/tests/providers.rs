//! The provider layer over real HTTP: the router and the OpenAI, Anthropic and mock providers
//! against the fake upstreams of `hub_tests::{fake_openai, fake_anthropic}`.
//!
//! No database or NATS is needed: each test starts its own fakes on port 0.

use hub_workers::chat::ToolCall;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hub_tests::eventually;
use hub_tests::fake_anthropic::FakeAnthropic;
use hub_tests::fake_openai::{Behavior, FakeOpenAi, Reply};
use hub_workers::config::{ModelSettings, PriceSettings};
use hub_workers::tokens::{count_prompt_tokens, count_text_tokens};
use hub_workers::{
    ChatMessage, ChatRequest, EventStream, HealthState, ModelsSettings, Opened, ProviderError,
    ProviderKind, ProviderRouter, ProviderSettings, RouteError, StreamEvent, TokenUsage,
};

const MODEL: &str = "gpt-test";
const UPSTREAM_MODEL: &str = "gpt-4o-mini";

/// Settings for one model served by `providers`, with fast backoffs and no cooldown.
fn settings(providers: Vec<ProviderSettings>) -> ModelsSettings {
    ModelsSettings {
        backoff_base_ms: 10,
        backoff_max_ms: 2_000,
        first_token_timeout_ms: 2_000,
        total_timeout_ms: 10_000,
        retries_max: 2,
        cooldown_after_failures: 100,
        cooldown_ms: 30_000,
        models: vec![ModelSettings {
            name: MODEL.into(),
            price: PriceSettings {
                input_per_million_micros: 3_000_000,
                output_per_million_micros: 15_000_000,
                cached_input_per_million_micros: 300_000,
            },
            max_output_tokens: None,
            context_tokens: None,
            tokenizer: "o200k".into(),
            providers,
            vision: false,
            image_tokens_max: 1_600,
            tools: true,
            reasoning: false,
            embedding_dimensions: None,
        }],
        ..ModelsSettings::default()
    }
}

fn provider(kind: ProviderKind, name: &str, base_url: String, key: &str) -> ProviderSettings {
    ProviderSettings {
        kind,
        base_url: Some(base_url),
        api_key: Some(key.into()),
        upstream_model: Some(UPSTREAM_MODEL.into()),
        name: Some(name.into()),
        mock_tokens_per_second: None,
    }
}

fn openai(fake: &FakeOpenAi, name: &str) -> ProviderSettings {
    provider(ProviderKind::Openai, name, fake.base_url(), fake.api_key())
}

fn compatible(fake: &FakeOpenAi, name: &str) -> ProviderSettings {
    provider(
        ProviderKind::Compatible,
        name,
        fake.base_url(),
        fake.api_key(),
    )
}

fn anthropic(fake: &FakeAnthropic, name: &str) -> ProviderSettings {
    provider(
        ProviderKind::Anthropic,
        name,
        fake.base_url(),
        fake.api_key(),
    )
}

fn router(settings: &ModelsSettings) -> ProviderRouter {
    ProviderRouter::new(settings).expect("the test settings are valid")
}

fn params(prompt: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::new("user", prompt)],
        max_tokens: 100,
        ..ChatRequest::default()
    }
}

/// `request` for the test model.
fn for_model(request: ChatRequest) -> ChatRequest {
    ChatRequest {
        model: MODEL.to_owned(),
        ..request
    }
}

async fn open(router: &ProviderRouter, params: ChatRequest) -> Opened {
    match router.open(for_model(params)).await {
        Ok(opened) => opened,
        Err(error) => panic!("the stream should open: {error}"),
    }
}

async fn open_err(router: &ProviderRouter, params: ChatRequest) -> RouteError {
    match router.open(for_model(params)).await {
        Ok(opened) => panic!("the stream should not open, but {opened:?} did"),
        Err(error) => error,
    }
}

/// What a stream delivered.
#[derive(Debug, Default)]
struct Collected {
    text: String,
    /// Reasoning text, apart from the answer.
    reasoning: String,
    deltas: usize,
    usage: Option<TokenUsage>,
    finish: Option<String>,
    error: Option<ProviderError>,
    /// Tool calls, pieces merged.
    tool_calls: Vec<ToolCall>,
    /// Events after `Finish` or after an error: there must be none.
    after_end: usize,
}

async fn collect(mut stream: EventStream) -> Collected {
    let mut collected = Collected::default();
    while let Some(item) = stream.next().await {
        if collected.finish.is_some() || collected.error.is_some() {
            collected.after_end += 1;
        }
        match item {
            Ok(StreamEvent::Delta { text }) => {
                collected.deltas += 1;
                collected.text.push_str(&text);
            }
            Ok(StreamEvent::Reasoning { text }) => collected.reasoning.push_str(&text),
            Ok(StreamEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            }) => {
                ToolCall::merge(
                    &mut collected.tool_calls,
                    index,
                    id.as_deref(),
                    name.as_deref(),
                    &arguments,
                );
            }
            Ok(StreamEvent::Usage(usage)) => {
                assert!(collected.usage.is_none(), "usage comes at most once");
                collected.usage = Some(usage);
            }
            Ok(StreamEvent::Finish { reason }) => collected.finish = Some(reason),
            Err(error) => collected.error = Some(error),
        }
    }
    assert_eq!(
        collected.after_end, 0,
        "nothing follows the end: {collected:?}"
    );
    collected
}

fn usage(input: u64, output: u64, cached: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        reasoning_tokens: 0,
    }
}

fn provider_error(error: &RouteError) -> &ProviderError {
    error
        .provider_error()
        .unwrap_or_else(|| panic!("a provider error, got {error:?}"))
}

#[tokio::test]
async fn openai_streams_deltas_then_usage_then_finish_from_a_real_request() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behavior::reply(
        Reply::text("The answer is forty-two.")
            .usage(21, 6)
            .cached(8)
            .finish("length"),
    ));
    let router = router(&settings(vec![openai(&fake, "openai")]));
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "What is the answer?"),
        ],
        max_tokens: 64,
        temperature: Some(0.5),
        stop: vec!["END".into()],
        user: Some("user-1".into()),
        ..ChatRequest::default()
    };

    let opened = open(&router, request).await;
    assert_eq!(opened.provider, "openai");
    assert_eq!(opened.kind, ProviderKind::Openai);
    assert_eq!(opened.attempts, 1);
    let answer = collect(opened.stream).await;

    assert_eq!(answer.text, "The answer is forty-two.");
    assert_eq!(answer.deltas, 4);
    assert_eq!(answer.usage, Some(usage(21, 6, 8)));
    assert_eq!(answer.finish.as_deref(), Some("length"));
    assert_eq!(answer.error, None);
    let body = fake.last_body().expect("the fake saw the request");
    assert_eq!(body["model"], UPSTREAM_MODEL);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_completion_tokens"], 64);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["stop"], serde_json::json!(["END"]));
    assert_eq!(body["user"], "user-1");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["content"], "What is the answer?");
    let headers = fake.last_headers().expect("headers");
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", fake.api_key()).as_str()
    );
    assert_eq!(fake.streams_completed(), 1);
}

#[tokio::test]
async fn a_compatible_server_that_reports_no_usage_yields_none() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(Reply::text("No usage here.")));
    let router = router(&settings(vec![compatible(&fake, "vllm")]));

    let answer = collect(open(&router, params("hi")).await.stream).await;

    assert_eq!(answer.text, "No usage here.");
    assert_eq!(answer.usage, None, "the caller estimates");
    assert_eq!(answer.finish.as_deref(), Some("stop"));
    let body = fake.last_body().expect("body");
    assert_eq!(body["max_tokens"], 100);
    assert!(body.get("max_completion_tokens").is_none());
}

#[tokio::test]
async fn non_streamed_answers_are_read_as_one_delta_with_or_without_usage() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behavior::reply(
        Reply::text("Whole answer.").usage(12, 3).non_streamed(),
    ));
    fake.push(Behavior::reply(Reply::text("No usage.").non_streamed()));
    let router = router(&settings(vec![openai(&fake, "openai")]));

    let with_usage = collect(open(&router, params("a")).await.stream).await;
    let without = collect(open(&router, params("b")).await.stream).await;

    assert_eq!(
        (with_usage.text.as_str(), with_usage.deltas),
        ("Whole answer.", 1)
    );
    assert_eq!(with_usage.usage, Some(usage(12, 3, 0)));
    assert_eq!(with_usage.finish.as_deref(), Some("stop"));
    assert_eq!(without.text, "No usage.");
    assert_eq!(without.usage, None);

    let claude = FakeAnthropic::start().await;
    claude.push(Behavior::reply(
        Reply::text("Whole message.")
            .usage(40, 4)
            .cached(30)
            .non_streamed(),
    ));
    let router = self::router(&settings(vec![anthropic(&claude, "claude")]));
    let message = collect(open(&router, params("c")).await.stream).await;
    assert_eq!(message.text, "Whole message.");
    assert_eq!(message.usage, Some(usage(40, 4, 30)));
}

#[tokio::test]
async fn a_rejected_key_is_unauthorized_and_not_retried() {
    let fake = FakeOpenAi::start().await;
    let mut wrong = openai(&fake, "openai");
    wrong.api_key = Some("sk-wrong-key".into());
    let router = router(&settings(vec![wrong]));

    let error = open_err(&router, params("hi")).await;

    assert_eq!(
        provider_error(&error),
        &ProviderError::Unauthorized { status: 401 }
    );
    assert!(matches!(error, RouteError::Provider { attempts: 1, .. }));
    assert_eq!(fake.requests(), 1);
    assert!(!error.to_string().contains("sk-wrong-key"), "{error}");
    assert!(!format!("{error:?}").contains("sk-wrong-key"));
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_waited_out_then_retried() {
    let fake = FakeOpenAi::start().await;
    fake.push(Behavior::rate_limited(Some("1")));
    let router = router(&settings(vec![openai(&fake, "openai")]));

    let started = Instant::now();
    let opened = open(&router, params("hi")).await;

    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(opened.attempts, 2);
    assert_eq!(fake.requests(), 2);
    assert_eq!(collect(opened.stream).await.text, "Hello from the fake.");

    // OpenAI's `retry-after-ms` is more precise and wins.
    fake.push(Behavior::rate_limited_ms(150));
    let started = Instant::now();
    let opened = open(&router, params("hi")).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(900),
        "{waited:?}"
    );
    assert_eq!(opened.attempts, 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_backoff_cap_gives_up_with_the_rate_limit() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::rate_limited(Some("60")));
    let router = router(&settings(vec![openai(&fake, "openai")]));

    let started = Instant::now();
    let error = open_err(&router, params("hi")).await;

    assert_eq!(
        provider_error(&error),
        &ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(fake.requests(), 1);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn server_errors_are_retried_then_fall_back_to_the_next_provider() {
    let failing = FakeOpenAi::start().await;
    failing.set_default(Behavior::server_error());
    let healthy = FakeOpenAi::start().await;
    let router = router(&settings(vec![
        openai(&failing, "first"),
        openai(&healthy, "second"),
    ]));

    let opened = open(&router, params("hi")).await;

    assert_eq!(opened.provider, "second");
    assert_eq!(
        opened.attempts, 4,
        "three calls to the first, one to the second"
    );
    assert_eq!(failing.requests(), 3);
    assert_eq!(healthy.requests(), 1);
    assert_eq!(collect(opened.stream).await.text, "Hello from the fake.");
}

#[tokio::test]
async fn when_every_provider_fails_the_last_error_is_returned() {
    let first = FakeOpenAi::start().await;
    first.set_default(Behavior::unauthorized());
    let second = FakeOpenAi::start().await;
    second.set_default(Behavior::status(503));
    let mut s = settings(vec![openai(&first, "first"), openai(&second, "second")]);
    s.retries_max = 1;
    let router = router(&s);

    let error = open_err(&router, params("hi")).await;

    match &error {
        RouteError::Provider {
            provider,
            attempts,
            error: ProviderError::Upstream { status: 503, .. },
        } => assert_eq!((provider.as_str(), *attempts), ("second", 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!((first.requests(), second.requests()), (1, 2));
}

#[tokio::test]
async fn a_bad_request_is_returned_at_once_without_retry_or_fallback() {
    let first = FakeOpenAi::start().await;
    first.set_default(Behavior::status(400));
    let second = FakeOpenAi::start().await;
    let router = router(&settings(vec![
        openai(&first, "first"),
        openai(&second, "second"),
    ]));

    let error = open_err(&router, params("hi")).await;

    assert!(matches!(
        provider_error(&error),
        ProviderError::BadRequest { .. }
    ));
    assert_eq!((first.requests(), second.requests()), (1, 0));
}

#[tokio::test]
async fn a_slow_first_token_times_out_and_falls_back() {
    let slow_head = FakeOpenAi::start().await;
    slow_head.set_default(Behavior::reply(
        Reply::text("too late").header_delay(Duration::from_secs(5)),
    ));
    let slow_token = FakeOpenAi::start().await;
    slow_token.set_default(Behavior::reply(
        Reply::text("too late").first_token_delay(Duration::from_secs(5)),
    ));
    let fast = FakeOpenAi::start().await;
    let mut s = settings(vec![
        openai(&slow_head, "slow-head"),
        openai(&slow_token, "slow-token"),
        openai(&fast, "fast"),
    ]);
    s.first_token_timeout_ms = 300;
    s.retries_max = 1;
    let router = router(&s);

    let started = Instant::now();
    let opened = open(&router, params("hi")).await;

    assert_eq!(opened.provider, "fast");
    assert_eq!(opened.attempts, 5);
    assert_eq!((slow_head.requests(), slow_token.requests()), (2, 2));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let status = router.status();
    assert_eq!(status[0].last_error.as_deref(), Some("timeout_first_token"));
    assert_eq!(status[1].last_error.as_deref(), Some("timeout_first_token"));
}

#[tokio::test]
async fn a_slow_first_token_alone_is_a_first_token_timeout() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(
        Reply::text("late").first_token_delay(Duration::from_secs(5)),
    ));
    let mut s = settings(vec![openai(&fake, "openai")]);
    s.first_token_timeout_ms = 200;
    s.retries_max = 0;
    let router = router(&s);

    let error = open_err(&router, params("hi")).await;

    assert_eq!(
        provider_error(&error),
        &ProviderError::Timeout {
            phase: "first_token"
        }
    );
}

#[tokio::test]
async fn a_stream_cut_midway_breaks_after_its_deltas_and_is_not_retried() {
    let cut = FakeOpenAi::start().await;
    cut.set_default(Behavior::reply(
        Reply::text("one two three four five")
            .usage(5, 5)
            .chunk_delay(Duration::from_millis(10))
            .cut_after(3),
    ));
    let spare = FakeOpenAi::start().await;
    let router = router(&settings(vec![
        openai(&cut, "cut"),
        openai(&spare, "spare"),
    ]));

    let opened = open(&router, params("count")).await;
    assert_eq!(opened.provider, "cut");
    let answer = collect(opened.stream).await;

    assert_eq!(answer.text, "one two three");
    assert_eq!(answer.deltas, 3);
    assert!(
        matches!(answer.error, Some(ProviderError::StreamBroken(_))),
        "{answer:?}"
    );
    assert_eq!((answer.usage, answer.finish), (None, None));
    assert_eq!(
        cut.requests(),
        1,
        "nothing is retried after the first token"
    );
    assert_eq!(spare.requests(), 0);
    assert_eq!(cut.streams_cut(), 1);
    assert_eq!(router.status()[0].consecutive_failures, 1);
    assert_eq!(
        router.status()[0].last_error.as_deref(),
        Some("stream_broken")
    );
}

#[tokio::test]
async fn a_stream_cut_before_its_first_token_falls_back() {
    let cut = FakeOpenAi::start().await;
    cut.set_default(Behavior::reply(Reply::text("never").cut_after(0)));
    let spare = FakeOpenAi::start().await;
    let router = router(&settings(vec![
        openai(&cut, "cut"),
        openai(&spare, "spare"),
    ]));

    let opened = open(&router, params("hi")).await;

    assert_eq!(opened.provider, "spare");
    assert_eq!((cut.requests(), spare.requests()), (1, 1));
}

#[tokio::test]
async fn a_total_timeout_ends_a_slow_stream_after_its_deltas() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(
        Reply::text("a b c d e f g h i j").chunk_delay(Duration::from_millis(150)),
    ));
    let mut s = settings(vec![openai(&fake, "openai")]);
    s.first_token_timeout_ms = 400;
    s.total_timeout_ms = 400;
    let router = router(&s);

    let answer = collect(open(&router, params("hi")).await.stream).await;

    assert!(answer.deltas >= 1 && answer.deltas < 10, "{answer:?}");
    assert_eq!(
        answer.error,
        Some(ProviderError::Timeout { phase: "total" })
    );
}

#[tokio::test]
async fn dropping_the_stream_aborts_the_upstream_request() {
    let fake = FakeOpenAi::start().await;
    let words: Vec<String> = (0..100).map(|i| format!("word{i}")).collect();
    fake.set_default(Behavior::reply(
        Reply::text(&words.join(" ")).chunk_delay(Duration::from_millis(30)),
    ));
    let router = router(&settings(vec![openai(&fake, "openai")]));

    let mut stream = open(&router, params("talk")).await.stream;
    for _ in 0..2 {
        let event = stream.next().await;
        assert!(
            matches!(event, Some(Ok(StreamEvent::Delta { .. }))),
            "{event:?}"
        );
    }
    drop(stream);

    eventually(
        Duration::from_secs(5),
        "the fake to see the client leave",
        || async { (fake.streams_cancelled() == 1).then_some(()) },
    )
    .await;
    assert_eq!(fake.streams_completed(), 0);
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn a_provider_that_keeps_failing_cools_down_and_a_probe_brings_it_back() {
    let flaky = FakeOpenAi::start().await;
    flaky.set_default(Behavior::server_error());
    let spare = FakeOpenAi::start().await;
    let mut s = settings(vec![openai(&flaky, "flaky"), openai(&spare, "spare")]);
    s.retries_max = 0;
    s.cooldown_after_failures = 2;
    s.cooldown_ms = 300;
    let router = router(&s);

    // Two failures in a row: the second trips the breaker.
    assert_eq!(open(&router, params("1")).await.provider, "spare");
    assert_eq!(router.status()[0].state, HealthState::Healthy);
    assert_eq!(open(&router, params("2")).await.provider, "spare");
    let status = router.status();
    assert_eq!(status[0].state, HealthState::Cooling);
    assert_eq!(status[0].consecutive_failures, 2);
    assert_eq!(status[0].last_error.as_deref(), Some("upstream_error"));
    assert!(status[0].cooling_until.is_some());
    assert_eq!(status[1].state, HealthState::Healthy);

    // While it cools it is skipped.
    assert_eq!(open(&router, params("3")).await.provider, "spare");
    assert_eq!(flaky.requests(), 2);

    // After the cooldown, a probe that fails cools it down again at once, without retries.
    eventually(Duration::from_secs(5), "the cooldown to end", || async {
        (router.status()[0].state == HealthState::Probing).then_some(())
    })
    .await;
    assert_eq!(open(&router, params("4")).await.provider, "spare");
    assert_eq!(flaky.requests(), 3);
    assert_eq!(router.status()[0].state, HealthState::Cooling);

    // A probe that succeeds makes it healthy.
    flaky.set_default(Behavior::reply(Reply::text("Back again.")));
    eventually(Duration::from_secs(5), "the cooldown to end", || async {
        (router.status()[0].state == HealthState::Probing).then_some(())
    })
    .await;
    let opened = open(&router, params("5")).await;
    assert_eq!(opened.provider, "flaky");
    assert_eq!(collect(opened.stream).await.text, "Back again.");
    assert_eq!(flaky.requests(), 4);
    let status = router.status();
    assert_eq!(status[0].state, HealthState::Healthy);
    assert_eq!(status[0].consecutive_failures, 0);
}

#[tokio::test]
async fn a_model_whose_providers_all_cool_down_is_unavailable() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::server_error());
    let mut s = settings(vec![openai(&fake, "only")]);
    s.retries_max = 0;
    s.cooldown_after_failures = 1;
    s.cooldown_ms = 10_000;
    let router = router(&s);

    let first = open_err(&router, params("hi")).await;
    assert!(matches!(
        provider_error(&first),
        ProviderError::Upstream { status: 500, .. }
    ));
    let second = open_err(&router, params("hi")).await;

    match second {
        RouteError::Unavailable { model, retry_after } => {
            assert_eq!(model, MODEL);
            assert!(retry_after <= Duration::from_secs(10) && retry_after > Duration::from_secs(5));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn the_event_stream_parser_survives_crlf_comments_and_fragments() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(
        Reply::text("héllo wörld ✓ — naïve café")
            .usage(9, 8)
            .crlf()
            .with_comments()
            .fragmented(),
    ));
    let router = router(&settings(vec![openai(&fake, "openai")]));

    let answer = collect(open(&router, params("unicode")).await.stream).await;

    assert_eq!(answer.text, "héllo wörld ✓ — naïve café");
    assert_eq!(answer.usage, Some(usage(9, 8, 0)));
    assert_eq!(answer.finish.as_deref(), Some("stop"));
}

#[tokio::test]
async fn an_upstream_error_event_mid_stream_ends_it_with_an_error() {
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::reply(Reply::text("one two three").error_after(
        2,
        "server_error",
        "The model crashed",
    )));
    let router = router(&settings(vec![openai(&fake, "openai")]));

    let answer = collect(open(&router, params("hi")).await.stream).await;

    assert_eq!(answer.text, "one two");
    assert_eq!(
        answer.error,
        Some(ProviderError::StreamBroken("The model crashed".into()))
    );
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn anthropic_translates_the_request_and_the_streamed_answer() {
    let fake = FakeAnthropic::start().await;
    fake.push(Behavior::reply(
        Reply::text("Bonjour à tous.")
            .usage(34, 7)
            .cached(20)
            .cache_creation(4)
            .finish("length"),
    ));
    let router = router(&settings(vec![anthropic(&fake, "claude")]));
    let request = ChatRequest {
        messages: vec![
            ChatMessage::new("system", "Answer in French."),
            ChatMessage::new("user", "Say hello."),
            ChatMessage::new("assistant", "Bonjour."),
            ChatMessage::new("user", "To everyone."),
        ],
        max_tokens: 50,
        temperature: Some(0.2),
        stop: vec!["\n\nHuman:".into()],
        ..ChatRequest::default()
    };

    let opened = open(&router, request).await;
    assert_eq!(
        (opened.provider.as_str(), opened.kind),
        ("claude", ProviderKind::Anthropic)
    );
    let answer = collect(opened.stream).await;

    assert_eq!(answer.text, "Bonjour à tous.");
    assert_eq!(
        answer.usage,
        Some(usage(34, 7, 20)),
        "cached and cache-written tokens are input"
    );
    assert_eq!(answer.finish.as_deref(), Some("length"));
    let body = fake.last_body().expect("body");
    assert_eq!(body["model"], UPSTREAM_MODEL);
    assert_eq!(body["system"], "Answer in French.");
    assert_eq!(
        body["messages"],
        serde_json::json!([
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "user", "content": "To everyone."},
        ])
    );
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stop_sequences"], serde_json::json!(["\n\nHuman:"]));
    let headers = fake.last_headers().expect("headers");
    assert_eq!(headers["x-api-key"], fake.api_key());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(headers.get("authorization").is_none());
}

#[tokio::test]
async fn anthropic_errors_map_like_openai_ones() {
    let fake = FakeAnthropic::start().await;
    let mut wrong = anthropic(&fake, "claude");
    wrong.api_key = Some("sk-ant-wrong".into());
    let router = router(&settings(vec![wrong]));
    let error = open_err(&router, params("hi")).await;
    assert_eq!(
        provider_error(&error),
        &ProviderError::Unauthorized { status: 401 }
    );
    assert_eq!(fake.requests(), 1);

    // Overloaded (529) is retried, and an `overloaded_error` event before the first token too.
    let fake = FakeAnthropic::start().await;
    fake.push(Behavior::status(529));
    fake.push(Behavior::reply(Reply::text("x").error_after(
        0,
        "overloaded_error",
        "Overloaded",
    )));
    let router = self::router(&settings(vec![anthropic(&fake, "claude")]));
    let opened = open(&router, params("hi")).await;
    assert_eq!(opened.attempts, 3);
    assert_eq!(collect(opened.stream).await.text, "Hello from Claude.");

    // After the first token, an error event ends the stream and is not retried.
    fake.push(Behavior::reply(Reply::text("a b c").error_after(
        1,
        "invalid_request_error",
        "Bad things",
    )));
    let answer = collect(open(&router, params("hi")).await.stream).await;
    assert_eq!(answer.text, "a");
    assert_eq!(
        answer.error,
        Some(ProviderError::StreamBroken("Bad things".into()))
    );

    // A stream cut before message_stop is broken.
    fake.push(Behavior::reply(Reply::text("a b c").cut_after(2)));
    let answer = collect(open(&router, params("hi")).await.stream).await;
    assert_eq!(answer.text, "a b");
    assert!(matches!(answer.error, Some(ProviderError::StreamBroken(_))));
    assert_eq!(fake.requests(), 5);
}

#[tokio::test]
async fn max_tokens_is_capped_at_the_model_limit() {
    let fake = FakeOpenAi::start().await;
    let mut s = settings(vec![openai(&fake, "openai")]);
    s.models[0].max_output_tokens = Some(32);
    let router = router(&s);

    let mut request = params("hi");
    request.max_tokens = 4_000;
    collect(open(&router, request).await.stream).await;

    assert_eq!(fake.last_body().expect("body")["max_completion_tokens"], 32);
    assert_eq!(router.effective_max_tokens(MODEL, Some(4_000)), Some(32));
    assert_eq!(router.effective_max_tokens(MODEL, None), Some(32));
}

#[tokio::test]
async fn the_mock_provider_is_deterministic_and_counts_real_tokens() {
    let router = router(&ModelsSettings::default());
    let messages = vec![
        ChatMessage::new("system", "You are a mock."),
        ChatMessage::new("user", "Write me a poem about credits."),
    ];
    let request = ChatRequest {
        model: "mock-1".to_owned(),
        messages: messages.clone(),
        max_tokens: 500,
        ..ChatRequest::default()
    };

    let first = collect(router.open(request.clone()).await.expect("mock").stream).await;
    let second = collect(router.open(request).await.expect("mock").stream).await;

    assert_eq!(first.text, second.text);
    assert!(first.deltas >= 12, "{first:?}");
    assert_eq!(
        first.usage,
        Some(usage(
            count_prompt_tokens("o200k", &messages),
            count_text_tokens("o200k", &first.text),
            0
        ))
    );
    assert_eq!(first.finish.as_deref(), Some("stop"));

    let short = ChatRequest {
        model: "mock-1".to_owned(),
        messages,
        max_tokens: 5,
        ..ChatRequest::default()
    };
    let cut = collect(router.open(short).await.expect("mock").stream).await;
    assert!(first.text.starts_with(&cut.text));
    assert!(count_text_tokens("o200k", &cut.text) <= 5);
    assert_eq!(cut.finish.as_deref(), Some("length"));
}

#[tokio::test]
async fn models_and_status_describe_the_configuration() {
    let fake = FakeOpenAi::start().await;
    let claude = FakeAnthropic::start().await;
    let router = router(&settings(vec![
        openai(&fake, "openai"),
        anthropic(&claude, "claude"),
    ]));

    let models = router.models();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, MODEL);
    assert_eq!(models[0].providers, vec!["openai", "claude"]);
    assert_eq!(models[0].price.output_per_million.micros(), 15_000_000);
    assert_eq!(router.tokenizer(MODEL), Some("o200k"));
    let status = serde_json::to_value(router.status()).expect("serializable");
    assert_eq!(status[1]["provider"], "claude");
    assert_eq!(status[1]["kind"], "anthropic");
    assert_eq!(status[1]["state"], "healthy");
    assert_eq!(status[1]["consecutive_failures"], 0);
    assert!(status[1]["cooling_until"].is_null());
}

async fn status_of(app: &hub_tests::TestApp, token: &str) -> serde_json::Value {
    app.get("/api/providers/status", Some(token))
        .await
        .json()
        .await
        .expect("json")
}

/// `GET /api/providers/status` answers what the workers see: an API process alone knows
/// nothing (and claims nothing healthy); once a worker on another process fails against an
/// upstream, the API reports that provider cooling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_status_comes_from_the_workers_not_the_api_process() {
    use hub_domain::Role;
    use hub_server::Roles;
    let fake = FakeOpenAi::start().await;
    fake.set_default(Behavior::server_error());
    let mut models = settings(vec![openai(&fake, "openai")]);
    models.retries_max = 0;
    models.cooldown_after_failures = 1;
    let api_only = Roles {
        http: true,
        relay: true,
        projections: true,
        ..Roles::NONE
    };
    let app = hub_tests::spawn_app_with(api_only, move |s| s.models = models).await;
    let token = app.token(uuid::Uuid::new_v4(), Role::User);
    let alone = status_of(&app, &token).await;
    assert_eq!(alone["workers_reporting"], 0, "{alone}");
    assert_eq!(alone["providers"], serde_json::json!([]), "{alone}");

    let _worker = app
        .peer(Roles {
            worker: true,
            settler: true,
            ..Roles::NONE
        })
        .await;
    let healthy = eventually(Duration::from_secs(15), "a worker's report", || async {
        let seen = status_of(&app, &token).await;
        {
            (seen["workers_reporting"] == 1).then_some(seen)
        }
    })
    .await;
    let ours = |seen: &serde_json::Value| {
        seen["providers"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["model"] == MODEL).cloned())
            .unwrap_or_default()
    };
    assert_eq!(ours(&healthy)["state"], "healthy", "{healthy}");

    // A request the worker sends to the failing upstream.
    let user = uuid::Uuid::new_v4();
    let admin = app.token(uuid::Uuid::new_v4(), Role::Admin);
    app.grant(&admin, user, 1_000_000, &format!("fund-{user}"))
        .await;
    let answer = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(app.token(user, Role::User))
        .json(&serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("sent");
    assert!(answer.status().is_server_error(), "{}", answer.status());
    let cooling = eventually(
        Duration::from_secs(15),
        "the failure in the report",
        || async {
            let seen = status_of(&app, &token).await;
            {
                (ours(&seen)["state"] == "cooling").then_some(seen)
            }
        },
    )
    .await;
    assert_eq!(ours(&cooling)["last_error"], "upstream_error", "{cooling}");
}

/// The client's `x-request-id` travels with its inference command (in the command and in
/// the NATS message's header), so the worker's log lines for the request name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_travels_with_the_command_to_the_worker() {
    use hub_domain::Role;
    use hub_server::Roles;
    // No worker: the command stays in the queue for the test to read.
    let api_only = Roles {
        http: true,
        relay: true,
        projections: true,
        ..Roles::NONE
    };
    let app = hub_tests::spawn_app_with(api_only, |_| {}).await;
    let user = uuid::Uuid::new_v4();
    let admin = app.token(uuid::Uuid::new_v4(), Role::Admin);
    app.grant(&admin, user, 1_000_000, &format!("fund-{user}"))
        .await;
    let request = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(app.token(user, Role::User))
        .header("x-request-id", "trace-4242")
        .json(&serde_json::json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    // The answer never comes (no worker); the command is what is looked at.
    let waiting = tokio::spawn(request);
    let state = &app.state;
    let stream = state
        .js
        .get_stream(state.topology.commands_stream())
        .await
        .expect("the commands stream");
    let subject = state.topology.inference_command_subject();
    let message = eventually(Duration::from_secs(15), "the command", || async {
        stream.get_last_raw_message_by_subject(&subject).await.ok()
    })
    .await;
    waiting.abort();
    assert_eq!(
        message
            .headers
            .get("x-request-id")
            .map(|v| v.as_str().to_owned()),
        Some("trace-4242".to_owned())
    );
    let command: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
    assert_eq!(command["correlation_id"], "trace-4242");
}

/// The client's `x-request-id` is the correlation id of every event its chat leads to, in
/// the API (the reservation) and in the worker (the settlement); each event's causation id
/// names what wrote it: the HTTP request, or the inference command.
#[tokio::test]
async fn a_request_id_is_the_correlation_id_of_the_events_it_leads_to() {
    use hub_domain::Role;
    let app = hub_tests::spawn_app().await;
    let user = uuid::Uuid::new_v4();
    let admin = app.token(uuid::Uuid::new_v4(), Role::Admin);
    app.grant(&admin, user, 1_000_000, &format!("fund-{user}"))
        .await;
    let answer: serde_json::Value = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(app.token(user, Role::User))
        .header("x-request-id", "trace-7777")
        .json(&serde_json::json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("the chat")
        .json()
        .await
        .expect("json");
    let request = answer["x_aihub"]["request_id"]
        .as_str()
        .expect("the hub's request id")
        .to_owned();
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_type, metadata->>'correlation_id', metadata->>'causation_id' FROM events
          WHERE aggregate_type = 'CreditAccount' AND aggregate_id = $1
            AND event_type IN ('CreditsReserved', 'ReservationSettled')
          ORDER BY sequence",
    )
    .bind(user.to_string())
    .fetch_all(&app.pool)
    .await
    .expect("the events");
    assert_eq!(
        rows,
        vec![
            (
                "CreditsReserved".to_owned(),
                Some("trace-7777".to_owned()),
                Some("trace-7777".to_owned())
            ),
            (
                "ReservationSettled".to_owned(),
                Some("trace-7777".to_owned()),
                Some(request.clone())
            ),
        ]
    );
    // The relay carries it to HUB_EVENTS, in the header the projector logs it from.
    let state = &app.state;
    let stream = state
        .js
        .get_stream(state.topology.events_stream())
        .await
        .expect("the events stream");
    let subject = state
        .topology
        .event_subject("CreditAccount", &user.to_string())
        .expect("a subject");
    let settled = eventually(
        Duration::from_secs(15),
        "the settlement relayed",
        || async {
            let message = stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .ok()?;
            let event: serde_json::Value = serde_json::from_slice(&message.payload).ok()?;
            (event["event_type"] == "ReservationSettled").then_some(message)
        },
    )
    .await;
    assert_eq!(
        settled
            .headers
            .get("x-request-id")
            .map(|v| v.as_str().to_owned()),
        Some("trace-7777".to_owned())
    );
    app.stop().await;
}
