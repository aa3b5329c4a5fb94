//! Anthropic's Messages API, translated to and from the OpenAI shape.
//!
//! Out: `system` (and `developer`) messages become the `system` string (joined by blank lines);
//! other roles alternate as `user` and `assistant` (consecutive messages of one role are
//! merged, since the API wants alternation); images become `image` blocks (base64 or URL);
//! an assistant's `tool_calls` become `tool_use` blocks and `tool` messages `tool_result`
//! blocks of a user message; `tools` become Anthropic tools (`parameters` as
//! `input_schema`), `tool_choice` `auto`/`required`/`none`/named becomes `auto`/`any`/`none`/
//! `tool`, and `parallel_tool_calls: false` `disable_parallel_tool_use`. A `response_format`
//! (JSON object or schema) becomes a tool the model must call ([`ANSWER_TOOL`]) whose input is
//! streamed back as the answer's text. `stop` becomes `stop_sequences`, `user` becomes
//! `metadata.user_id`, and `temperature` is clamped to Anthropic's range, 0 to 1. `seed`, the
//! penalties and `reasoning_effort` have no Anthropic equivalent: such requests are refused
//! before they get here ([`crate::capabilities`]).
//!
//! `tool_use` blocks come back as tool calls numbered from 0 (their `input_json_delta`s as
//! the arguments; a call with no input as `{}`).
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

use std::collections::HashMap;

use futures::future::BoxFuture;
use reqwest::header::HeaderValue;
use serde_json::{json, Map, Value};

use crate::chat::{ChatMessage, ContentPart, ToolChoice, ToolMode};

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
        let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for message in &request.messages {
            let (role, blocks) = match message.role.as_str() {
                "system" | "developer" => {
                    if !message.content.is_empty() {
                        system.push(&message.content);
                    }
                    continue;
                }
                "assistant" => ("assistant", assistant_blocks(message)),
                "tool" => match &message.tool_call_id {
                    Some(id) => (
                        "user",
                        vec![json!({"type": "tool_result", "tool_use_id": id,
                            "content": message.content})],
                    ),
                    None => ("user", text_blocks(message)),
                },
                _ => ("user", text_blocks(message)),
            };
            if blocks.is_empty() {
                // The API refuses empty text blocks.
                continue;
            }
            match messages.last_mut() {
                Some((last, earlier)) if *last == role => earlier.extend(blocks),
                _ => messages.push((role, blocks)),
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
                    .map(|(role, blocks)| json!({"role": role, "content": content_of(blocks)}))
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
        let options = &request.options;
        if let Some(schema) = options.answer_schema() {
            // No structured output in the Messages API: a tool whose input is the answer,
            // which the model must call; its input comes back as the answer's text.
            body.insert(
                "tools".into(),
                json!([{"name": ANSWER_TOOL, "description": "Give the answer as this JSON.",
                    "input_schema": schema}]),
            );
            body.insert(
                "tool_choice".into(),
                json!({"type": "tool", "name": ANSWER_TOOL}),
            );
        } else if !options.tools.is_empty() {
            let tools: Vec<Value> = options
                .tools
                .iter()
                .map(|tool| {
                    let mut out = Map::new();
                    out.insert("name".into(), json!(tool.function.name));
                    if let Some(description) = &tool.function.description {
                        out.insert("description".into(), json!(description));
                    }
                    let schema = tool
                        .function
                        .parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                    out.insert("input_schema".into(), schema);
                    Value::Object(out)
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            let mut choice = match &options.tool_choice {
                None | Some(ToolChoice::Mode(ToolMode::Auto)) => json!({"type": "auto"}),
                Some(ToolChoice::Mode(ToolMode::Required)) => json!({"type": "any"}),
                Some(ToolChoice::Mode(ToolMode::None)) => json!({"type": "none"}),
                Some(ToolChoice::Named(named)) => {
                    json!({"type": "tool", "name": named.function.name})
                }
            };
            if options.parallel_tool_calls == Some(false) && choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
            body.insert("tool_choice".into(), choice);
        }
        Value::Object(body)
    }
}

/// The tool a structured answer (`response_format`) is asked through.
pub const ANSWER_TOOL: &str = "json_answer";

/// A user message's content as Anthropic blocks: text and images, in order.
fn text_blocks(message: &ChatMessage) -> Vec<Value> {
    message
        .content_parts()
        .into_iter()
        .filter_map(|part| match part {
            ContentPart::Text(text) if text.is_empty() => None,
            ContentPart::Text(text) => Some(json!({"type": "text", "text": text})),
            ContentPart::Image { ref url, .. } => Some(match part.inline_image() {
                Some(inline) => json!({"type": "image", "source": {"type": "base64",
                    "media_type": inline.media_type, "data": inline.data}}),
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            }),
        })
        .collect()
}

/// An assistant message as Anthropic blocks: its text, then a `tool_use` per call (arguments
/// that are not a JSON object are sent as an empty input).
fn assistant_blocks(message: &ChatMessage) -> Vec<Value> {
    let mut blocks = text_blocks(message);
    for call in &message.tool_calls {
        let input = serde_json::from_str::<Value>(&call.arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
    }
    blocks
}

/// A message's blocks as `content`: one string when they are all text (joined by blank
/// lines, as consecutive messages of one role are merged), else the blocks.
fn content_of(blocks: Vec<Value>) -> Value {
    let all_text = blocks.iter().all(|b| b["type"] == "text");
    if all_text {
        let texts: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
        return json!(texts.join("\n\n"));
    }
    Value::Array(blocks)
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
            let structured = request.options.answer_schema().is_some();
            if is_json(&response) {
                return Ok(json_stream(
                    response,
                    deadlines,
                    self.api_key.clone(),
                    move |message| whole_message(message, structured),
                ));
            }
            Ok(sse_stream(
                response,
                EventDecoder {
                    usage: None,
                    finish: None,
                    secret: self.api_key.clone(),
                    structured,
                    blocks: HashMap::new(),
                    tool_calls: 0,
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
    /// The request asked for a structured answer through [`ANSWER_TOOL`]: its input is the
    /// answer's text, and its `tool_use` stop an ordinary `stop`.
    structured: bool,
    /// The `tool_use` blocks open, by block index.
    blocks: HashMap<u64, ToolBlock>,
    /// Tool calls started so far (the next call's index).
    tool_calls: u32,
}

/// A `tool_use` block being streamed.
struct ToolBlock {
    /// The call's index among the answer's calls; `None` for the structured answer.
    call: Option<u32>,
    /// Whether any of its input JSON came.
    input_seen: bool,
}

impl EventDecoder {
    /// A piece of a tool's input: more of a call's arguments, or of the structured answer.
    fn input(&mut self, block: u64, json: &str, out: &mut Pending) {
        let Some(open) = self.blocks.get_mut(&block) else {
            return;
        };
        if json.is_empty() {
            return;
        }
        open.input_seen = true;
        out.push_back(Ok(match open.call {
            Some(index) => StreamEvent::ToolCall {
                index,
                id: None,
                name: None,
                arguments: json.to_owned(),
            },
            None => StreamEvent::Delta {
                text: json.to_owned(),
            },
        }));
    }
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
                let index = count(data.get("index"));
                let block = data.get("content_block");
                // A thinking block starts empty; should it ever start with text, that is
                // reasoning too.
                if let Some(event) = block.and_then(thinking_of) {
                    out.push_back(Ok(event));
                }
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let field = |name| block.and_then(|b| b.get(name)).and_then(Value::as_str);
                    let call = if self.structured {
                        None
                    } else {
                        let call = self.tool_calls;
                        self.tool_calls += 1;
                        out.push_back(Ok(StreamEvent::ToolCall {
                            index: call,
                            id: field("id").map(str::to_owned),
                            name: field("name").map(str::to_owned),
                            arguments: String::new(),
                        }));
                        Some(call)
                    };
                    self.blocks.insert(
                        index,
                        ToolBlock {
                            call,
                            input_seen: false,
                        },
                    );
                    // An input given whole at the start (not the usual empty object).
                    let input = block.and_then(|b| b.get("input"));
                    if let Some(input) =
                        input.filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    {
                        self.input(index, &input.to_string(), out);
                    }
                }
            }
            "content_block_stop" => {
                // A call whose input never came has no arguments: `{}` is what it meant.
                if let Some(open) = self.blocks.remove(&count(data.get("index"))) {
                    if !open.input_seen {
                        out.push_back(Ok(match open.call {
                            Some(index) => StreamEvent::ToolCall {
                                index,
                                id: None,
                                name: None,
                                arguments: "{}".into(),
                            },
                            None => StreamEvent::Delta { text: "{}".into() },
                        }));
                    }
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
                    Some("input_json_delta") => {
                        let json = field("partial_json").unwrap_or("").to_owned();
                        self.input(count(data.get("index")), &json, out);
                    }
                    // signature_delta, citations, and delta types added later.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish = Some(match reason {
                        // The structured answer was given through its tool.
                        "tool_use" if self.structured => "stop".to_owned(),
                        other => finish_reason(other),
                    });
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
            // ping, and event types added later.
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

/// A non-streamed `message`; `structured`: its [`ANSWER_TOOL`] input is the answer.
fn whole_message(message: &Value, structured: bool) -> Result<Vec<StreamEvent>, ProviderError> {
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("the message has no content".into()))?;
    let mut events: Vec<StreamEvent> = blocks.iter().filter_map(thinking_of).collect();
    let kind = |b: &&Value| {
        b.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut text: String = blocks
        .iter()
        .filter(|b| kind(b) == "text")
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let uses = blocks.iter().filter(|b| kind(b) == "tool_use");
    let mut calls = Vec::new();
    for block in uses {
        let input = block
            .get("input")
            .map_or_else(|| "{}".to_owned(), Value::to_string);
        if structured {
            text.push_str(&input);
            continue;
        }
        let field = |name| block.get(name).and_then(Value::as_str).map(str::to_owned);
        calls.push(StreamEvent::ToolCall {
            index: u32::try_from(calls.len()).unwrap_or(u32::MAX),
            id: field("id"),
            name: field("name"),
            arguments: input,
        });
    }
    if !text.is_empty() {
        events.push(StreamEvent::Delta { text });
    }
    events.extend(calls);
    if let Some(usage) = message.get("usage").filter(|u| u.is_object()) {
        events.push(StreamEvent::Usage(merge_usage(
            TokenUsage::default(),
            usage,
        )));
    }
    let reason = match message.get("stop_reason").and_then(Value::as_str) {
        None => "stop".to_owned(),
        Some("tool_use") if structured => "stop".to_owned(),
        Some(other) => finish_reason(other),
    };
    events.push(StreamEvent::Finish { reason });
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn decode(events: &[(&str, Value)]) -> Vec<Result<StreamEvent, ProviderError>> {
        decode_as(events, false)
    }

    fn decode_as(
        events: &[(&str, Value)],
        structured: bool,
    ) -> Vec<Result<StreamEvent, ProviderError>> {
        let mut decoder = EventDecoder {
            usage: None,
            finish: None,
            secret: Some("sk-ant-secret".into()),
            structured,
            blocks: HashMap::new(),
            tool_calls: 0,
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
                    cached_input_tokens: 20,
                    reasoning_tokens: 0,
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
                    cached_input_tokens: 0,
                    reasoning_tokens: 0,
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
            whole_message(&message, false),
            Ok(vec![
                StreamEvent::Reasoning {
                    text: "Six times seven.".into()
                },
                StreamEvent::Delta { text: "42".into() },
                StreamEvent::Usage(TokenUsage {
                    input_tokens: 3,
                    output_tokens: 40,
                    cached_input_tokens: 0,
                    reasoning_tokens: 0,
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
            ..ChatRequest::default()
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

    fn tool_use_events() -> Vec<(&'static str, Value)> {
        vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 2}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 40}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]
    }

    fn call(
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) -> Result<StreamEvent, ProviderError> {
        Ok(StreamEvent::ToolCall {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.to_owned(),
        })
    }

    #[test]
    fn tool_use_blocks_become_numbered_tool_calls() {
        let events = decode(&tool_use_events());
        assert_eq!(
            events,
            vec![
                Ok(StreamEvent::Delta {
                    text: "Checking.".into()
                }),
                call(0, Some("toolu_1"), Some("get_weather"), ""),
                call(0, None, None, "{\"city\": \"Paris\"}"),
                call(1, Some("toolu_2"), Some("now"), ""),
                // No input came: the call's arguments are an empty object.
                call(1, None, None, "{}"),
                Ok(StreamEvent::Usage(TokenUsage {
                    input_tokens: 30,
                    output_tokens: 40,
                    cached_input_tokens: 0,
                    reasoning_tokens: 0,
                })),
                Ok(StreamEvent::Finish {
                    reason: "tool_calls".into()
                }),
            ]
        );
    }

    #[test]
    fn a_structured_answer_comes_back_as_text_that_stopped() {
        let events = vec![
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": " 1}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        assert_eq!(
            decode_as(&events, true),
            vec![
                Ok(StreamEvent::Delta {
                    text: "{\"a\":".into()
                }),
                Ok(StreamEvent::Delta { text: " 1}".into() }),
                Ok(StreamEvent::Finish {
                    reason: "stop".into()
                }),
            ]
        );
        let whole = json!({"content": [{"type": "tool_use", "id": "t", "name": ANSWER_TOOL, "input": {"a": 1}}],
            "stop_reason": "tool_use"});
        assert_eq!(
            whole_message(&whole, true),
            Ok(vec![
                StreamEvent::Delta {
                    text: "{\"a\":1}".into()
                },
                StreamEvent::Finish {
                    reason: "stop".into()
                },
            ])
        );
        let calls = whole_message(&whole, false).expect("events");
        assert_eq!(
            calls[0],
            call(0, Some("t"), Some(ANSWER_TOOL), "{\"a\":1}").expect("call")
        );
        assert_eq!(
            calls[1],
            StreamEvent::Finish {
                reason: "tool_calls".into()
            }
        );
    }

    #[test]
    fn tools_images_and_tool_results_translate_to_blocks() {
        let provider = AnthropicProvider::new(
            "a",
            reqwest::Client::new(),
            "https://api.anthropic.com",
            None,
            Timeouts::default(),
        );
        let messages: Vec<ChatMessage> = serde_json::from_value(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What about this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}]},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"sky\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"sea\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "blue"},
            {"role": "tool", "tool_call_id": "call_2", "content": "green"}
        ]))
        .expect("messages");
        let options: crate::chat::ChatOptions = serde_json::from_value(json!({
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Looks up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false
        }))
        .expect("options");
        let body = provider.body(&ChatRequest {
            model: "claude".into(),
            messages,
            max_tokens: 100,
            options,
            ..ChatRequest::default()
        });
        assert_eq!(body["system"], json!("Be brief."));
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "What about this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/b.jpg"}}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "sky"}},
                    {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {"q": "sea"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "blue"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "green"}]},
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{"name": "lookup", "description": "Looks up.",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}])
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );

        let structured = provider.body(&ChatRequest {
            model: "claude".into(),
            messages: vec![ChatMessage::new("user", "hi")],
            max_tokens: 10,
            options: serde_json::from_value(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}))
            .expect("options"),
            ..ChatRequest::default()
        });
        assert_eq!(structured["tools"][0]["name"], json!(ANSWER_TOOL));
        assert_eq!(
            structured["tools"][0]["input_schema"]["properties"]["n"],
            json!({"type": "integer"})
        );
        assert_eq!(
            structured["tool_choice"],
            json!({"type": "tool", "name": ANSWER_TOOL})
        );
    }
}
