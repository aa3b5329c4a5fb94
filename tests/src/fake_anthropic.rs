//! A fake Anthropic Messages API server for tests, speaking the real wire format.
//!
//! It listens on `127.0.0.1:0`. `POST /v1/messages` checks `x-api-key` (401
//! `authentication_error` otherwise) and `anthropic-version` (400 if missing), records the
//! request, and plays its script like [`crate::fake_openai`] (same [`Behavior`] and [`Reply`]).
//! A streamed reply sends named events — `message_start` (input tokens: uncached in
//! `input_tokens`, the rest in `cache_read_input_tokens` and `cache_creation_input_tokens`),
//! `content_block_start`, `ping`, one `content_block_delta` (`text_delta`) per chunk,
//! `content_block_stop`, `message_delta` (stop reason, output tokens) and `message_stop`; a
//! non-streamed one is a single `message`. A reply with reasoning ([`Reply::reasoning`])
//! opens with a `thinking` block: one `thinking_delta` per reasoning chunk, then a
//! `signature_delta`; its text block comes second.
//!
//! [`FakeAnthropic::count_input_with`] makes it report the input tokens of each request as a
//! function of the request counts them (a stand-in for Anthropic's own tokenizer), instead
//! of the scripted number.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

use crate::fake_openai::{json_response, serve, Steps};
pub use crate::fake_openai::{Behavior, FakeUsage, Reply, Script};

/// The `anthropic-version` the fake expects.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A fake Anthropic server. Derefs to its [`Script`].
pub struct FakeAnthropic {
    address: String,
    api_key: String,
    script: Arc<Script>,
    count_input: Arc<Mutex<Option<CountInput>>>,
    task: JoinHandle<()>,
}

/// Counts the input tokens of a request (its JSON body, as Anthropic receives it).
pub type CountInput = fn(&serde_json::Value) -> u64;

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    api_key: String,
    count_input: Arc<Mutex<Option<CountInput>>>,
}

impl FakeAnthropic {
    /// A server expecting the key `sk-ant-fake`, answering "Hello from Claude." with usage
    /// (10 in, 5 out) by default.
    pub async fn start() -> FakeAnthropic {
        FakeAnthropic::start_with_key("sk-ant-fake").await
    }

    pub async fn start_with_key(api_key: &str) -> FakeAnthropic {
        let script = Script::new(Behavior::reply(
            Reply::text("Hello from Claude.").usage(10, 5),
        ));
        let count_input = Arc::new(Mutex::new(None));
        let shared = Shared {
            script: Arc::clone(&script),
            api_key: api_key.to_owned(),
            count_input: Arc::clone(&count_input),
        };
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(shared);
        let (address, task) = serve(app).await;
        FakeAnthropic {
            address,
            api_key: api_key.to_owned(),
            script,
            count_input,
            task,
        }
    }

    /// Reports every reply's input tokens as `count` says for its request (a reply with no
    /// scripted usage then reports usage too).
    pub fn count_input_with(&self, count: CountInput) {
        *self
            .count_input
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(count);
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.address.clone()
    }

    /// The key it accepts.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }
}

impl std::ops::Deref for FakeAnthropic {
    type Target = Script;
    fn deref(&self) -> &Script {
        &self.script
    }
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn anthropic_error(
    status: u16,
    kind: &str,
    message: &str,
    headers: &[(String, String)],
) -> Response {
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
        headers,
    )
}

fn error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// OpenAI's finish reason in Anthropic's vocabulary.
fn stop_reason(finish: &str) -> &str {
    match finish {
        "stop" => "end_turn",
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        other => other,
    }
}

/// `input_tokens` as Anthropic counts it: without cached and cache-written tokens.
fn uncached(usage: &FakeUsage) -> u64 {
    usage
        .input
        .saturating_sub(usage.cached)
        .saturating_sub(usage.cache_creation)
}

async fn messages(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, behavior) = shared.script.receive(&headers, &body);
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(shared.api_key.as_str()) {
        return anthropic_error(401, "authentication_error", "invalid x-api-key", &[]);
    }
    let version = headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok());
    if version != Some(ANTHROPIC_VERSION) {
        return anthropic_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
            &[],
        );
    }
    let reply = match behavior {
        Behavior::Fail {
            status,
            message,
            headers,
        } => return anthropic_error(status, error_kind(status), &message, &headers),
        Behavior::Reply(reply) => *reply,
    };
    let counted = *shared
        .count_input
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut reply = reply;
    if let Some(count) = counted {
        reply.usage.get_or_insert_with(FakeUsage::default).input = count(&request);
    }
    tokio::time::sleep(reply.header_delay).await;
    let model = request["model"].as_str().unwrap_or("unknown").to_owned();
    let streamed = request["stream"].as_bool().unwrap_or(false) && !reply.non_streamed;
    let stop = stop_reason(&reply.finish_reason).to_owned();
    if !streamed {
        tokio::time::sleep(reply.first_token_delay).await;
        let mut message = json!({
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": reply.full_text()}],
            "stop_reason": stop,
            "stop_sequence": null,
        });
        if !reply.reasoning.is_empty() {
            message["content"] = json!([
                {"type": "thinking", "thinking": reply.full_reasoning(), "signature": "fake-signature"},
                {"type": "text", "text": reply.full_text()},
            ]);
        }
        for call in &reply.tool_calls {
            let input: serde_json::Value =
                serde_json::from_str(&call.arguments.concat()).unwrap_or_else(|_| json!({}));
            if let Some(content) = message["content"].as_array_mut() {
                content.push(
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}),
                );
            }
        }
        if let Some(usage) = &reply.usage {
            message["usage"] = json!({
                "input_tokens": uncached(usage),
                "cache_creation_input_tokens": usage.cache_creation,
                "cache_read_input_tokens": usage.cached,
                "output_tokens": usage.output,
            });
        }
        return json_response(200, &message, &[]);
    }

    let mut steps = Steps::new(&reply);
    let mut start = json!({
        "type": "message_start",
        "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
        },
    });
    if let Some(usage) = &reply.usage {
        start["message"]["usage"] = json!({
            "input_tokens": uncached(usage),
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cached,
            "output_tokens": 1,
        });
    }
    steps.event(Some("message_start"), &start.to_string());
    let mut text_index = 0;
    if !reply.reasoning.is_empty() {
        steps.event(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
                .to_string(),
        );
        for thought in &reply.reasoning {
            steps.pause(reply.reasoning_delay);
            let delta = json!({
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": thought},
            });
            steps.event(Some("content_block_delta"), &delta.to_string());
        }
        let signature = json!({
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "fake-signature"},
        });
        steps.event(Some("content_block_delta"), &signature.to_string());
        steps.event(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 0}).to_string(),
        );
        text_index = 1;
    }
    steps.event(
        Some("content_block_start"),
        &json!({"type": "content_block_start", "index": text_index, "content_block": {"type": "text", "text": ""}})
            .to_string(),
    );
    if reply.comments {
        steps.comment();
    }
    steps.event(Some("ping"), &json!({"type": "ping"}).to_string());
    for (index, text) in reply.chunks.iter().enumerate() {
        if reply.cut_after == Some(index) {
            steps.cut();
            return steps.into_response(Arc::clone(&shared.script));
        }
        if let Some((_, kind, message)) = reply.error_after.as_ref().filter(|e| e.0 == index) {
            let error = json!({"type": "error", "error": {"type": kind, "message": message}});
            steps.event(Some("error"), &error.to_string());
            return steps.into_response(Arc::clone(&shared.script));
        }
        steps.pause(if index == 0 {
            reply.first_token_delay
        } else {
            reply.chunk_delay
        });
        let delta = json!({
            "type": "content_block_delta", "index": text_index,
            "delta": {"type": "text_delta", "text": text},
        });
        steps.event(Some("content_block_delta"), &delta.to_string());
    }
    if reply.cut_after.is_some_and(|n| n >= reply.chunks.len()) {
        steps.cut();
        return steps.into_response(Arc::clone(&shared.script));
    }
    steps.event(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": text_index}).to_string(),
    );
    for (n, call) in reply.tool_calls.iter().enumerate() {
        let index = text_index + 1 + n;
        let start = json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}});
        steps.event(Some("content_block_start"), &start.to_string());
        for piece in &call.arguments {
            let delta = json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}});
            steps.event(Some("content_block_delta"), &delta.to_string());
        }
        steps.event(
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": index}).to_string(),
        );
    }
    let mut delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
    });
    if let Some(usage) = &reply.usage {
        delta["usage"] = json!({"output_tokens": usage.output});
    }
    steps.event(Some("message_delta"), &delta.to_string());
    steps.event(
        Some("message_stop"),
        &json!({"type": "message_stop"}).to_string(),
    );
    steps.into_response(Arc::clone(&shared.script))
}
