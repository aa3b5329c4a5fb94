//! Anthropic's Messages API, translated to and from the OpenAI shape.
//!
//! Out: `system` (and `developer`) messages become the `system` string (joined by blank lines);
//! other roles alternate as `user` and `assistant` (consecutive messages of one role are
//! merged, since the API wants alternation; roles it does not know, such as `tool`, are sent as
//! `user`); `stop` becomes `stop_sequences`, `user` becomes `metadata.user_id`, and
//! `temperature` is clamped to Anthropic's range, 0 to 1.
//!
//! In: the streamed events `message_start` (input tokens), `content_block_delta` with a
//! `text_delta` (a delta) or a `thinking_delta` (extended thinking: reasoning; its
//! `signature_delta` is not text and is ignored), `message_delta` (stop reason and output tokens), `message_stop` (the
//! end) and `error`. Anthropic's `input_tokens` excludes cached tokens, so the reported input is
//! `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`, of which
//! `cache_read_input_tokens` are cached. Stop reasons become OpenAI's: `end_turn` and
//! `stop_sequence` → `stop`, `max_tokens` → `length`, `tool_use` → `tool_calls`, `refusal` →
//! `content_filter`. The reported `output_tokens` include the thinking tokens. A
//! `redacted_thinking` block carries no readable text: it is billed when usage is reported,
//! and not estimated when it is not.

use futures::future::BoxFuture;
use reqwest::header::HeaderValue;
use serde_json::{json, Map, Value};

use super::{
    count, is_json, json_stream, scrub, send, sse_stream, ChatRequest, Deadlines, Decoder,
    EventStream, Pending, Provider, ProviderError, StreamEvent, Timeouts, TokenUsage,
};
use crate::providers::sse::SseEvent;

/// The API version sent in `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A provider speaking Anthropic's Messages API.
pub struct AnthropicProvider {
    name: String,
    client: reqwest::Client,
    /// `{base_url}/v1/messages`.
    url: String,
    api_key: Option<String>,
    timeouts: Timeouts,
}

impl AnthropicProvider {
    /// A provider named `name` at `base_url` (`https://api.anthropic.com`; a URL that already
    /// ends in `/v1` is accepted too), sending `api_key` in `x-api-key`.
    pub fn new(
        name: &str,
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<String>,
        timeouts: Timeouts,
    ) -> Self {
        let base = base_url.trim_end_matches('/');
        let url = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        AnthropicProvider {
            name: name.to_owned(),
            client,
            url,
            api_key,
            timeouts,
        }
    }

    /// The JSON body for `request`.
    pub fn body(&self, request: &ChatRequest) -> Value {
        let mut system: Vec<&str> = Vec::new();
        let mut messages: Vec<(&'static str, String)> = Vec::new();
        for message in &request.messages {
            let role = match message.role.as_str() {
                "system" | "developer" => {
                    if !message.content.is_empty() {
                        system.push(&message.content);
                    }
                    continue;
                }
                "assistant" => "assistant",
                _ => "user",
            };
            if message.content.is_empty() {
                // The API refuses empty text blocks.
                continue;
            }
            match messages.last_mut() {
                Some((last, text)) if *last == role => {
                    text.push_str("\n\n");
                    text.push_str(&message.content);
                }
                _ => messages.push((role, message.content.clone())),
            }
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert("max_tokens".into(), json!(request.max_tokens));
        body.insert(
            "messages".into(),
            Value::Array(
                messages
                    .into_iter()
                    .map(|(role, content)| json!({"role": role, "content": content}))
                    .collect(),
            ),
        );
        body.insert("stream".into(), json!(true));
        if !system.is_empty() {
            body.insert("system".into(), json!(system.join("\n\n")));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !request.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(request.stop));
        }
        if let Some(user) = &request.user {
            body.insert("metadata".into(), json!({"user_id": user}));
        }
        Value::Object(body)
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let deadlines = Deadlines::start(&self.timeouts);
            let mut builder = self
                .client
                .post(&self.url)
                .header("anthropic-version", ANTHROPIC_VERSION)
                .json(&self.body(&request));
            if let Some(key) = &self.api_key {
                let mut value = HeaderValue::from_str(key).map_err(|_| {
                    ProviderError::Protocol("the API key is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                builder = builder.header("x-api-key", value);
            }
            let response = send(builder, &deadlines, self.api_key.as_deref()).await?;
            if is_json(&response) {
                return Ok(json_stream(
                    response,
                    deadlines,
                    self.api_key.clone(),
                    whole_message,
                ));
            }
            Ok(sse_stream(
                response,
                EventDecoder {
                    usage: None,
                    finish: None,
                    secret: self.api_key.clone(),
                },
                deadlines,
            ))
        })
    }
}

/// Decodes the Messages API's streamed events.
struct EventDecoder {
    /// From `message_start`, updated by `message_delta`; yielded at `message_stop`.
    usage: Option<TokenUsage>,
    /// From `message_delta`, translated.
    finish: Option<String>,
    /// Scrubbed from error messages.
    secret: Option<String>,
}

impl Decoder for EventDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Pending) -> bool {
        let data: Value = match serde_json::from_str(&event.data) {
            Ok(data) => data,
            Err(error) => {
                out.push_back(Err(ProviderError::Protocol(format!(
                    "an event is not JSON ({error})"
                ))));
                return true;
            }
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                if let Some(usage) = data.pointer("/message/usage").filter(|u| u.is_object()) {
                    self.usage = Some(merge_usage(TokenUsage::default(), usage));
                }
            }
            "content_block_start" => {
                // A thinking block starts empty; should it ever start with text, that is
                // reasoning too.
                if let Some(event) = data.get("content_block").and_then(thinking_of) {
                    out.push_back(Ok(event));
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta");
                let kind = delta.and_then(|d| d.get("type")).and_then(Value::as_str);
                let field = |name| delta.and_then(|d| d.get(name)).and_then(Value::as_str);
                match kind {
                    Some("text_delta") => {
                        if let Some(text) = field("text").filter(|t| !t.is_empty()) {
                            out.push_back(Ok(StreamEvent::Delta {
                                text: text.to_owned(),
                            }));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(text) = field("thinking").filter(|t| !t.is_empty()) {
                            out.push_back(Ok(StreamEvent::Reasoning {
                                text: text.to_owned(),
                            }));
                        }
                    }
                    // signature_delta, input_json_delta (tool use), citations, and delta
                    // types added later.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish = Some(finish_reason(reason));
                }
                if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
                    self.usage = Some(merge_usage(self.usage.unwrap_or_default(), usage));
                }
            }
            "message_stop" => {
                if let Some(usage) = self.usage.take() {
                    out.push_back(Ok(StreamEvent::Usage(usage)));
                }
                let reason = self.finish.take().unwrap_or_else(|| "stop".to_owned());
                out.push_back(Ok(StreamEvent::Finish { reason }));
                return true;
            }
            "error" => {
                out.push_back(Err(error_event(&data, self.secret.as_deref())));
                return true;
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        false
    }

    fn end(&mut self, out: &mut Pending) {
        out.push_back(Err(ProviderError::StreamBroken(
            "the upstream closed the stream before message_stop".into(),
        )));
    }
}

/// An `error` event: overload and API errors are the upstream failing (worth another try before
/// the first token), a rate limit is a rate limit, anything else breaks the stream.
fn error_event(data: &Value, secret: Option<&str>) -> ProviderError {
    let kind = data
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = data
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or(kind);
    let message = scrub(message, secret);
    match kind {
        "overloaded_error" => ProviderError::Upstream {
            status: 529,
            message,
        },
        "api_error" => ProviderError::Upstream {
            status: 500,
            message,
        },
        "rate_limit_error" => ProviderError::RateLimited { retry_after: None },
        _ => ProviderError::StreamBroken(message),
    }
}

/// `usage` with the counts `update` carries replaced (a `message_delta` may carry only
/// `output_tokens`).
fn merge_usage(mut usage: TokenUsage, update: &Value) -> TokenUsage {
    let has = |field: &str| update.get(field).is_some_and(|v| !v.is_null());
    if has("input_tokens") || has("cache_read_input_tokens") || has("cache_creation_input_tokens") {
        let read = count(update.get("cache_read_input_tokens"));
        usage.input_tokens = count(update.get("input_tokens"))
            + count(update.get("cache_creation_input_tokens"))
            + read;
        usage.cached_input_tokens = read;
    }
    if has("output_tokens") {
        usage.output_tokens = count(update.get("output_tokens"));
    }
    usage
}

/// Anthropic's stop reason in OpenAI's vocabulary.
fn finish_reason(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

/// A `thinking` content block's text, as reasoning; `None` for any other block or an empty
/// one.
fn thinking_of(block: &Value) -> Option<StreamEvent> {
    if block.get("type").and_then(Value::as_str) != Some("thinking") {
        return None;
    }
    let text = block.get("thinking").and_then(Value::as_str)?;
    (!text.is_empty()).then(|| StreamEvent::Reasoning {
        text: text.to_owned(),
    })
}

/// A non-streamed `message`.
fn whole_message(message: &Value) -> Result<Vec<StreamEvent>, ProviderError> {
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("the message has no content".into()))?;
    let mut events: Vec<StreamEvent> = blocks.iter().filter_map(thinking_of).collect();
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    if !text.is_empty() {
        events.push(StreamEvent::Delta { text });
    }
    if let Some(usage) = message.get("usage").filter(|u| u.is_object()) {
        events.push(StreamEvent::Usage(merge_usage(
            TokenUsage::default(),
            usage,
        )));
    }
    let reason = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .map_or_else(|| "stop".to_owned(), finish_reason);
    events.push(StreamEvent::Finish { reason });
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;
    use std::collections::VecDeque;

    fn decode(events: &[(&str, Value)]) -> Vec<Result<StreamEvent, ProviderError>> {
        let mut decoder = EventDecoder {
            usage: None,
            finish: None,
            secret: Some("sk-ant-secret".into()),
        };
        let mut out = VecDeque::new();
        for (name, data) in events {
            let event = SseEvent {
                event: Some((*name).to_owned()),
                data: data.to_string(),
            };
            if decoder.event(event, &mut out) {
                return out.into_iter().collect();
            }
        }
        decoder.end(&mut out);
        out.into_iter().collect()
    }

    #[test]
    fn events_translate_to_deltas_usage_with_cache_and_finish() {
        let events = decode(&[
            (
                "message_start",
                json!({"type": "message_start", "message": {"usage": {
                    "input_tokens": 5, "cache_read_input_tokens": 20,
                    "cache_creation_input_tokens": 3, "output_tokens": 1}}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 12}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]);
        assert_eq!(
            events,
            vec![
                Ok(StreamEvent::Delta { text: "Hi".into() }),
                Ok(StreamEvent::Usage(TokenUsage {
                    input_tokens: 28,
                    output_tokens: 12,
                    cached_input_tokens: 20
                })),
                Ok(StreamEvent::Finish {
                    reason: "length".into()
                }),
            ]
        );
    }

    fn thinking_then_text() -> Vec<(&'static str, Value)> {
        vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 7, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see."}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " Yes."}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}}),
            ),
        ]
    }

    #[test]
    fn thinking_deltas_become_reasoning_and_reported_output_already_counts_them() {
        let mut events = thinking_then_text();
        events.push((
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 90}}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        assert_eq!(
            decode(&events),
            vec![
                Ok(StreamEvent::Reasoning {
                    text: "Let me see.".into()
                }),
                Ok(StreamEvent::Reasoning {
                    text: " Yes.".into()
                }),
                Ok(StreamEvent::Delta { text: "42".into() }),
                Ok(StreamEvent::Usage(TokenUsage {
                    input_tokens: 7,
                    output_tokens: 90,
                    cached_input_tokens: 0
                })),
                Ok(StreamEvent::Finish {
                    reason: "stop".into()
                }),
            ]
        );
    }

    #[test]
    fn a_stream_cut_while_thinking_yields_the_thinking_then_breaks() {
        let mut events = thinking_then_text();
        events.truncate(4);
        let decoded = decode(&events);
        assert_eq!(decoded.len(), 3, "{decoded:?}");
        assert_eq!(
            decoded[0],
            Ok(StreamEvent::Reasoning {
                text: "Let me see.".into()
            })
        );
        assert!(matches!(decoded[2], Err(ProviderError::StreamBroken(_))));
    }

    #[test]
    fn a_whole_message_yields_its_thinking_then_its_text() {
        let message = json!({"type": "message", "stop_reason": "end_turn", "content": [
            {"type": "thinking", "thinking": "Six times seven.", "signature": "Eq"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "42"},
        ], "usage": {"input_tokens": 3, "output_tokens": 40}});
        assert_eq!(
            whole_message(&message),
            Ok(vec![
                StreamEvent::Reasoning {
                    text: "Six times seven.".into()
                },
                StreamEvent::Delta { text: "42".into() },
                StreamEvent::Usage(TokenUsage {
                    input_tokens: 3,
                    output_tokens: 40,
                    cached_input_tokens: 0
                }),
                StreamEvent::Finish {
                    reason: "stop".into()
                },
            ])
        );
    }

    #[test]
    fn error_events_map_to_upstream_or_broken() {
        let overloaded = decode(&[(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        )]);
        assert!(matches!(
            overloaded.as_slice(),
            [Err(ProviderError::Upstream { status: 529, .. })]
        ));
        let other = decode(&[(
            "error",
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad sk-ant-secret"}}),
        )]);
        match other.as_slice() {
            [Err(ProviderError::StreamBroken(m))] => assert!(!m.contains("sk-ant-secret")),
            other => panic!("{other:?}"),
        }
        let cut = decode(&[(
            "content_block_delta",
            json!({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "a"}}),
        )]);
        assert!(matches!(
            cut.last(),
            Some(Err(ProviderError::StreamBroken(_)))
        ));
    }

    #[test]
    fn the_body_moves_system_messages_and_merges_roles() {
        let provider = AnthropicProvider::new(
            "a",
            reqwest::Client::new(),
            "https://api.anthropic.com/",
            None,
            Timeouts::default(),
        );
        assert_eq!(provider.url, "https://api.anthropic.com/v1/messages");
        let request = ChatRequest {
            model: "claude".into(),
            messages: vec![
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "one"),
                ChatMessage::new("user", "two"),
                ChatMessage::new("assistant", "ok"),
                ChatMessage::new("developer", "No emojis."),
                ChatMessage::new("tool", "result"),
            ],
            max_tokens: 50,
            temperature: Some(1.7),
            top_p: None,
            stop: vec!["END".into()],
            user: Some("u1".into()),
        };
        let body = provider.body(&request);
        assert_eq!(body["system"], json!("Be brief.\n\nNo emojis."));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "one\n\ntwo"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "result"},
            ])
        );
        assert_eq!(body["max_tokens"], json!(50));
        assert_eq!(body["temperature"], json!(1.0));
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["metadata"]["user_id"], json!("u1"));
        assert_eq!(body["stream"], json!(true));
    }
}
