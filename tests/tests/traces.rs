//! OpenTelemetry traces: a chat is one trace, from the HTTP request (or the WebSocket chat)
//! through its reservation, the publish of its command, the NATS hop, the worker, the
//! provider call and the settlement, as an OTLP/HTTP receiver gets it; and a settlement
//! handed to JetStream keeps its trace through the settler.
//!
//! The subscriber is one per process: this binary installs it once, exporting to its own
//! receiver (`traces_off.rs` holds the same run with traces off).

mod otlp;

use futures::{SinkExt, StreamExt};
use hub_domain::{
    AccountId, CreditCommand, Credits, RequestId, Role, TokenSource, UsageOutcome, UsageRecord,
};
use hub_server::Roles;
use hub_tests::{eventually, spawn_app_with, TestApp};
use hub_workers::settlement::Settlement;
use otlp::{Receiver, Span};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// The span named `name` among `spans` whose attribute `key` is `value`.
fn find<'s>(spans: &'s [Span], name: &str, key: &str, value: &str) -> &'s Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && s.attribute(key) == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one span {name:?} with {key} = {value:?}, among {:#?}",
        names(spans)
    );
    found[0]
}

fn names(spans: &[Span]) -> Vec<(&str, Option<&str>)> {
    spans
        .iter()
        .map(|s| (s.name.as_str(), s.attribute("request_id")))
        .collect()
}

/// `span`'s ancestors, nearest first, as far as the trace's spans go.
fn ancestors<'s>(spans: &'s [Span], span: &Span) -> Vec<&'s Span> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        let Some(next) = spans
            .iter()
            .find(|s| s.trace_id == span.trace_id && s.span_id == parent)
        else {
            break;
        };
        chain.push(next);
        parent = next.parent_span_id.clone();
        assert!(chain.len() < 64, "a cycle of parents");
    }
    chain
}

fn descends_from(spans: &[Span], span: &Span, ancestor: &Span) -> bool {
    ancestors(spans, span)
        .iter()
        .any(|a| a.span_id == ancestor.span_id)
}

/// The trace of the chat the client named `request_id`: its tree as the docs describe it.
fn check_trace(spans: &[Span], request_id: &str, streamed: bool) {
    let root = find(spans, "POST /v1/chat/completions", "request_id", request_id);
    assert!(
        root.parent_span_id.is_empty(),
        "the HTTP request is the root"
    );
    assert_eq!(root.attribute("http.request.method"), Some("POST"));
    assert_eq!(root.attribute("http.route"), Some("/v1/chat/completions"));
    assert_eq!(root.attribute("http.response.status_code"), Some("200"));
    check_tree(spans, root, Some(request_id), streamed);
}

/// Under `root`: `reserve` and `publish`, the worker's `process` under `publish`, and the
/// `provider call` and `settle` under `process`.
fn check_tree(spans: &[Span], root: &Span, request_id: Option<&str>, streamed: bool) {
    assert_eq!(
        root.resource.get("service.name").map(String::as_str),
        Some("aihub")
    );
    assert_eq!(
        root.resource.get("aihub.role").map(String::as_str),
        Some("all")
    );
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let one = |name: &str| {
        let named: Vec<&Span> = trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(named.len(), 1, "one {name:?} in {:#?}", names(&trace));
        named[0].clone()
    };
    let (reserve, publish, process) = (one("reserve"), one("publish"), one("process"));
    let (call, settle) = (one("provider call"), one("settle"));
    for span in [&reserve, &publish] {
        assert_eq!(
            span.parent_span_id, root.span_id,
            "{} under the request",
            span.name
        );
    }
    let request = publish
        .attribute("request")
        .expect("the publish names the request");
    assert!(request.starts_with("req_"), "{request}");
    assert_eq!(reserve.attribute("request"), Some(request));
    // Across the NATS hop: the worker's span is the child of the API's publish.
    assert_eq!(
        process.parent_span_id, publish.span_id,
        "process under publish"
    );
    assert!(descends_from(&trace, &process, root));
    if let Some(request_id) = request_id {
        assert_eq!(process.attribute("request_id"), Some(request_id));
    }
    assert_eq!(process.attribute("request"), Some(request));
    for span in [&call, &settle] {
        assert!(
            descends_from(&trace, span, &process),
            "{} under the worker's process",
            span.name
        );
    }
    assert_eq!(call.attribute("model"), Some("mock-1"));
    assert_eq!(call.attribute("provider"), Some("mock"));
    assert_eq!(call.attribute("attempt"), Some("1"));
    assert!(!call.error);
    assert_eq!(settle.attribute("settlement"), Some("direct"));
    assert_eq!(settle.attribute("request"), Some(request));
    assert!(settle.attribute("charged_micros").is_some_and(|c| c != "0"));
    assert!(
        trace.iter().all(|s| !s.error),
        "no span failed ({})",
        if streamed { "streamed" } else { "JSON" }
    );
}

/// A settlement of `request` on `user`'s account, reserved first, as a worker writes it.
async fn deferred_settlement(app: &TestApp, user: Uuid, request: &str) -> Settlement {
    let account = AccountId(user);
    let request_id = RequestId::parse(request).expect("a request id");
    let now = app.state.clock.now();
    let reserve = CreditCommand::ReserveCredits {
        request_id: request_id.clone(),
        amount: Credits::from_micros(5_000),
        expires_at: now + chrono::Duration::minutes(5),
        now,
        key: None,
    };
    app.state
        .credits
        .execute(account, reserve, "test")
        .await
        .expect("reserved");
    Settlement {
        account,
        request_id,
        usage: UsageRecord {
            model: "mock-1".into(),
            provider: "mock".into(),
            api_key: None,
            input_tokens: 10,
            output_tokens: 20,
            cached_input_tokens: 0,
            token_source: TokenSource::Provider,
            latency_ms: 30,
            first_token_ms: Some(5),
            cost: Credits::from_micros(1_234),
            price_version: "v1".into(),
            outcome: UsageOutcome::Completed,
        },
        written_at: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_chat_from_the_http_request_to_its_settlement() {
    let receiver = Receiver::start().await;
    let (traces, telemetry) = otlp::subscribe(&receiver, true);
    let app = spawn_app_with(Roles::ALL, move |s| s.traces = traces).await;
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let token = app.token(user, Role::User);
    let granted = app
        .grant(&admin, user, 10_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);

    let chat = |request_id: String, stream: bool| {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .header("x-request-id", request_id)
            .json(
                &json!({"model": "mock-1", "stream": stream, "max_tokens": 32,
                "messages": [{"role": "user", "content": "Say hello."}]}),
            )
            .send()
    };
    let json_id = format!("trace-json-{}", Uuid::new_v4().simple());
    let answer = chat(json_id.clone(), false).await.expect("sent");
    assert_eq!(answer.status(), StatusCode::OK);
    let body: Value = answer.json().await.expect("json");
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    let stream_id = format!("trace-stream-{}", Uuid::new_v4().simple());
    let answer = chat(stream_id.clone(), true).await.expect("sent");
    assert_eq!(answer.status(), StatusCode::OK);
    let events = answer.text().await.expect("the whole stream");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");

    // Probes are not traced.
    assert!(app.get("/health", None).await.status().is_success());

    // A WebSocket chat runs on a task of its own: its span `chat` is its trace's root.
    let url = format!(
        "{}/api/ws?token={token}",
        app.address.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the socket opens");
    let start = json!({"type": "chat.start", "id": "w1", "model": "mock-1",
        "messages": [{"role": "user", "content": "Say hello."}], "options": {"max_tokens": 32}});
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            start.to_string().into(),
        ))
        .await
        .expect("sent");
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("ok");
        let tokio_tungstenite::tungstenite::Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(text.as_str()).expect("json");
        assert_ne!(message["type"], "chat.error", "{message}");
        if message["type"] == "chat.done" {
            break;
        }
    }
    drop(socket);

    // A settlement Postgres did not take goes through JetStream to a settler, which
    // continues the trace of the `settle` that handed it on (here a span of the test's own,
    // recorded under the workers' target).
    let request = format!("req_{}", Uuid::new_v4().simple());
    let deferred = deferred_settlement(&app, user, &request).await;
    let handed_on = tracing::info_span!(target: "hub_workers::worker", "handed on by the test");
    let written = app
        .state
        .settlements
        .defer(&deferred, Duration::from_secs(10));
    tracing::Instrument::instrument(written, handed_on.clone())
        .await
        .expect("written to JetStream");
    drop(handed_on);
    let settlements = app.state.settlements.clone();
    eventually(Duration::from_secs(15), "the settler to apply it", || {
        let (settlements, id) = (settlements.clone(), deferred.request_id.clone());
        async move { settlements.pending(&id).await.ok()?.is_none().then_some(()) }
    })
    .await;

    // Every span has ended once the app has stopped; the flush sends them all.
    app.stop().await;
    telemetry.shutdown().await;
    let spans = receiver.spans();
    check_trace(&spans, &json_id, false);
    check_trace(&spans, &stream_id, true);
    assert!(
        !spans
            .iter()
            .any(|s| s.attribute("url.path") == Some("/health")),
        "a probe makes no trace"
    );
    let handed_on = spans
        .iter()
        .find(|s| s.name == "handed on by the test")
        .expect("the test's span");
    let settler = find(&spans, "settle", "request", &request);
    assert_eq!(settler.attribute("settlement"), Some("settler"));
    assert_eq!(
        settler.trace_id, handed_on.trace_id,
        "one trace through JetStream"
    );
    assert_eq!(
        settler.parent_span_id, handed_on.span_id,
        "the settler's settle"
    );
    assert!(!settler.error);
    let chat = find(&spans, "chat", "chat", "w1");
    assert!(chat.parent_span_id.is_empty(), "a WebSocket chat is a root");
    check_tree(&spans, chat, None, true);
    let root = |id: &str| {
        find(&spans, "POST /v1/chat/completions", "request_id", id)
            .trace_id
            .clone()
    };
    assert_ne!(root(&json_id), root(&stream_id), "a trace per request");
}
