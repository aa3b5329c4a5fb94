//! Anthropic's Messages API: `POST /v1/messages` (JSON or SSE) and
//! `POST /v1/messages/count_tokens`, so Anthropic's SDKs work by changing their base URL.
//!
//! A request is translated into the hub's [`Chat`] (the OpenAI shape every provider takes:
//! a `tool_use` block becomes a tool call, a `tool_result` block a `tool` message, an `image`
//! block an `image_url` part, `tool_choice` `any` becomes `required`), so any configured
//! model answers it, whatever its provider speaks; the answer is translated back into
//! Anthropic's message and events. Authentication is the hub's (a key in `x-api-key` or a
//! bearer token), and errors come in Anthropic's shape
//! (`{"type":"error","error":{"type","message"}}`).
//!
//! The stream is Anthropic's: `message_start`, `ping`, then per content block
//! `content_block_start`, its `content_block_delta`s (`text_delta`, `input_json_delta`) and
//! `content_block_stop`, then `message_delta` (stop reason and usage) and `message_stop`, or
//! an `error` event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use hub_workers::chat::{
    ChatMessage, ChatOptions, ContentPart, FunctionName, NamedTool, Tool, ToolCall, ToolChoice,
    ToolKind, ToolMode,
};
use hub_workers::wire::WireUsage;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use hub_app::inference::{
    self, Answer, Chat, ChatFailure, Finished, GatewayError, Progress, Submission, Unanswered,
};

/// An error in Anthropic's shape.
pub struct AnthropicError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl AnthropicError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        AnthropicError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            message: message.into(),
            retry_after_s: None,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        AnthropicError::new(400, message)
    }

    /// Anthropic's error type for the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    fn body(&self) -> Value {
        json!({"type": "error", "error": {"type": self.kind(), "message": self.message}})
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        crate::error::set_retry_after(&mut response, self.retry_after_s);
        response
    }
}

impl From<ApiError> for AnthropicError {
    fn from(err: ApiError) -> Self {
        let mut error = AnthropicError::new(err.status().as_u16(), err.message());
        error.retry_after_s = err.retry_after_s();
        drop(err.into_response());
        error
    }
}

impl From<GatewayError> for AnthropicError {
    fn from(err: GatewayError) -> Self {
        let (status, _) = err.status_and_code();
        if let GatewayError::Internal(cause) = &err {
            tracing::error!(error = format!("{cause:#}"), "inference request failed");
        }
        let message = match err.param() {
            Some(param) => format!("{param}: {err}"),
            None => err.to_string(),
        };
        let mut error = AnthropicError::new(status, message);
        if matches!(err, GatewayError::Overloaded) {
            error.retry_after_s = Some(1);
        }
        error
    }
}

impl From<ChatFailure> for AnthropicError {
    fn from(failure: ChatFailure) -> Self {
        let mut error = AnthropicError::new(failure.status, failure.message);
        error.retry_after_s = failure.retry_after_s;
        error
    }
}

impl From<Unanswered> for AnthropicError {
    fn from(unanswered: Unanswered) -> Self {
        match unanswered {
            Unanswered::Failed(failure) => failure.into(),
            Unanswered::Lost => {
                AnthropicError::new(504, "no answer from the inference worker in time")
            }
        }
    }
}

/// `system`: a string or text blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks(Vec<Value>),
}

/// A message's `content`: a string or blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Debug, Deserialize)]
struct MessageParam {
    role: String,
    content: Content,
}

#[derive(Debug, Deserialize)]
struct ToolParam {
    name: String,
    #[serde(default)]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Deserialize)]
struct ToolChoiceParam {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: Option<bool>,
}

/// The Messages API's request body. Parameters the hub cannot honour (`top_k`, `thinking`,
/// server tools, MCP servers, ...) are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesRequest {
    model: String,
    /// Required by `POST /v1/messages`, absent from `count_tokens`.
    #[serde(default)]
    max_tokens: Option<u32>,
    messages: Vec<MessageParam>,
    #[serde(default)]
    system: Option<System>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<ToolParam>>,
    #[serde(default)]
    tool_choice: Option<ToolChoiceParam>,
    /// `{"user_id": ...}`: taken, and not passed upstream.
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<Map<String, Value>>,
    /// `auto` or `standard_only`: taken, and changes nothing here.
    #[serde(default)]
    #[allow(dead_code)]
    service_tier: Option<String>,
}

/// Fields of the Messages API the hub refuses, with why.
const REFUSED_FIELDS: [(&str, &str); 6] = [
    ("top_k", "top_k is not available through the hub"),
    (
        "thinking",
        "extended thinking is not available through the hub",
    ),
    (
        "mcp_servers",
        "MCP servers are not available through the hub",
    ),
    ("container", "containers are not available through the hub"),
    (
        "context_management",
        "context management is not available through the hub",
    ),
    ("citations", "citations are not available through the hub"),
];

impl MessagesRequest {
    fn parse(body: &[u8]) -> Result<Self, AnthropicError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| AnthropicError::invalid(format!("the body is not JSON: {e}")))?;
        if let Some((field, why)) = REFUSED_FIELDS
            .iter()
            .find(|(field, _)| value.get(field).is_some_and(|v| !v.is_null()))
        {
            return Err(AnthropicError::invalid(format!("{field}: {why}")));
        }
        serde_json::from_value(value).map_err(|e| AnthropicError::invalid(e.to_string()))
    }

    /// The hub's request.
    fn into_chat(self, whole: bool) -> Result<Chat, AnthropicError> {
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        match self.system {
            Some(System::Text(text)) if !text.is_empty() => {
                messages.push(ChatMessage::new("system", &text))
            }
            Some(System::Blocks(blocks)) => {
                let mut text = String::new();
                for (i, block) in blocks.iter().enumerate() {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if !text.is_empty() {
                                text.push_str("\n\n");
                            }
                            text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
                        }
                        _ => {
                            return Err(AnthropicError::invalid(format!(
                                "system[{i}]: only text blocks are taken"
                            )))
                        }
                    }
                }
                if !text.is_empty() {
                    messages.push(ChatMessage::new("system", &text));
                }
            }
            _ => {}
        }
        for (m, message) in self.messages.into_iter().enumerate() {
            match message.role.as_str() {
                "user" => user_messages(m, message.content, &mut messages)?,
                "assistant" => messages.push(assistant_message(m, message.content)?),
                other => {
                    return Err(AnthropicError::invalid(format!(
                        "messages[{m}].role: unexpected value {other:?} (user or assistant)"
                    )))
                }
            }
        }
        let tools: Vec<Tool> = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .map(|t| Tool::function(&t.name, t.description.as_deref(), Some(t.input_schema)))
            .collect();
        let mut options = ChatOptions {
            tools,
            ..ChatOptions::default()
        };
        if let Some(choice) = self.tool_choice {
            options.tool_choice = Some(match choice.kind.as_str() {
                "auto" => ToolChoice::Mode(ToolMode::Auto),
                "any" => ToolChoice::Mode(ToolMode::Required),
                "none" => ToolChoice::Mode(ToolMode::None),
                "tool" => ToolChoice::Named(NamedTool {
                    kind: ToolKind::Function,
                    function: FunctionName {
                        name: choice.name.ok_or_else(|| {
                            AnthropicError::invalid("tool_choice.name: required for type tool")
                        })?,
                    },
                }),
                other => {
                    return Err(AnthropicError::invalid(format!(
                        "tool_choice.type: unexpected value {other:?}"
                    )))
                }
            });
            if choice.disable_parallel_tool_use == Some(true) {
                options.parallel_tool_calls = Some(false);
            }
        }
        if let Some(t) = self.temperature {
            if !(0.0..=1.0).contains(&t) {
                return Err(AnthropicError::invalid("temperature: must be 0 to 1"));
            }
        }
        Ok(Chat {
            model: self.model,
            messages,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop_sequences.unwrap_or_default(),
            options,
            whole,
        })
    }
}

/// A user message's blocks: each `tool_result` as a `tool` message (first, as OpenAI wants
/// them right after the call), the rest (text and images, in order) as one user message.
fn user_messages(
    m: usize,
    content: Content,
    out: &mut Vec<ChatMessage>,
) -> Result<(), AnthropicError> {
    let blocks = match content {
        Content::Text(text) => {
            out.push(ChatMessage::new("user", &text));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        let at = || format!("messages[{m}].content[{b}]");
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => parts.push(ContentPart::Text(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            )),
            "image" => parts.push(
                image_part(block).map_err(|e| AnthropicError::invalid(format!("{}: {e}", at())))?,
            ),
            "tool_result" => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        AnthropicError::invalid(format!("{}.tool_use_id: required", at()))
                    })?;
                let mut text = tool_result_text(block.get("content"))
                    .map_err(|e| AnthropicError::invalid(format!("{}.content: {e}", at())))?;
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text = format!("Error: {text}");
                }
                out.push(ChatMessage {
                    role: "tool".into(),
                    content: text,
                    tool_call_id: Some(id.to_owned()),
                    ..ChatMessage::default()
                });
            }
            other => {
                return Err(AnthropicError::invalid(format!(
                    "{}: blocks of type {other:?} are not taken (text, image, tool_result)",
                    at()
                )))
            }
        }
    }
    if !parts.is_empty() {
        let text: String = parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text(t) => Some(t.as_str()),
                ContentPart::Image { .. } => None,
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        let has_image = parts.iter().any(|p| matches!(p, ContentPart::Image { .. }));
        out.push(ChatMessage {
            role: "user".into(),
            content: text,
            parts: if has_image { parts } else { Vec::new() },
            ..ChatMessage::default()
        });
    }
    Ok(())
}

/// An `image` block as an `image_url` part (a base64 source as a data URL), checked as an
/// OpenAI image is.
fn image_part(block: &Value) -> Result<ContentPart, String> {
    let source = block.get("source").ok_or("an image needs a source")?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media_type = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or("a base64 image needs a media_type")?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or("a base64 image needs data")?;
            format!("data:{media_type};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or("a URL image needs a url")?
            .to_owned(),
        _ => return Err("an image source is base64 or url".into()),
    };
    // The same checks as an OpenAI image part (scheme, media type, base64).
    let message: ChatMessage = serde_json::from_value(json!({"role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}]}))
    .map_err(|e| e.to_string())?;
    message
        .parts
        .into_iter()
        .next()
        .ok_or_else(|| "the image could not be read".to_owned())
}

/// A `tool_result`'s content as text: a string, or text blocks joined.
fn tool_result_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for block in blocks {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        texts.push(block.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    _ => return Err("only text blocks are taken in a tool result".into()),
                }
            }
            Ok(texts.join("\n\n"))
        }
        Some(_) => Err("a string or text blocks".into()),
    }
}

/// An assistant message: its text, and a tool call per `tool_use` block. `thinking` blocks
/// (the model's own, from an earlier answer) carry nothing another provider could take and
/// are left out.
fn assistant_message(m: usize, content: Content) -> Result<ChatMessage, AnthropicError> {
    let blocks = match content {
        Content::Text(text) => return Ok(ChatMessage::new("assistant", &text)),
        Content::Blocks(blocks) => blocks,
    };
    let mut message = ChatMessage::new("assistant", "");
    for (b, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str).unwrap_or("") {
            "text" => message
                .content
                .push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" => {
                let field = |name| block.get(name).and_then(Value::as_str).map(str::to_owned);
                let (Some(id), Some(name)) = (field("id"), field("name")) else {
                    return Err(AnthropicError::invalid(format!(
                        "messages[{m}].content[{b}]: a tool_use block needs an id and a name"
                    )));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                message.tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                });
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(AnthropicError::invalid(format!(
                    "messages[{m}].content[{b}]: blocks of type {other:?} are not taken (text, tool_use)"
                )))
            }
        }
    }
    Ok(message)
}

/// OpenAI's finish reason in Anthropic's words.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` without the cached ones, which are
/// `cache_read_input_tokens`.
fn usage_json(usage: &WireUsage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// A tool call's arguments as the `input` object (arguments that are not a JSON object, as
/// an upstream may stream when cut short, become `{}`).
fn input_of(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// A whole answer as Anthropic's `message`.
fn message(submission: &Submission, answer: &Answer) -> Value {
    let mut content = Vec::new();
    if !answer.text.is_empty() {
        content.push(json!({"type": "text", "text": answer.text}));
    }
    for call in &answer.tool_calls {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
            "input": input_of(&call.arguments)}));
    }
    json!({
        "id": format!("msg_{}", submission.request_id),
        "type": "message",
        "role": "assistant",
        "model": submission.model,
        "content": content,
        "stop_reason": stop_reason(&answer.finished.finish_reason),
        "stop_sequence": null,
        "usage": usage_json(&answer.finished.usage),
        "x_aihub": x_aihub(&submission.request_id, &answer.provider, &answer.finished),
    })
}

/// The hub's own fields (ignored by Anthropic's SDKs).
fn x_aihub(request_id: &str, provider: &str, finished: &Finished) -> Value {
    json!({
        "request_id": request_id,
        "provider": provider,
        "charged_micros": finished.charged_micros,
        "token_source": finished.usage.source,
    })
}

/// `POST /v1/messages` — any signed-in caller (an API key in `x-api-key`, or a bearer token).
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "inference",
    request_body = crate::openapi::wire::MessagesRequest,
    responses(
        (status = 200, description = "The answer: a `message`, or with `stream: true` server-sent events (`message_start`, `content_block_start/delta/stop`, `message_delta`, `message_stop`, `ping`, `error`)",
            content((crate::openapi::wire::Message = "application/json"), (String = "text/event-stream"))),
        crate::openapi::AnthropicErrors,
    ),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn messages(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    body: axum::body::Bytes,
) -> Result<Response, AnthropicError> {
    let caller = caller?;
    let request = MessagesRequest::parse(&body)?;
    if request.max_tokens.is_none() {
        return Err(AnthropicError::invalid("max_tokens: Field required"));
    }
    let stream = request.stream.unwrap_or(false);
    let chat = request.into_chat(!stream)?;
    let mut submission = inference::submit(&state, &caller.payer_of_this_request(), chat).await?;
    if !stream {
        let answer = submission.answer().await?;
        return Ok(Json(message(&submission, &answer)).into_response());
    }
    let provider = submission.started().await?;
    Ok(sse(submission, provider).into_response())
}

/// `POST /v1/messages/count_tokens` — any signed-in caller: the prompt's tokens as the hub
/// counts them (what it reserves for the prompt, before the providers' margin).
#[utoipa::path(
    post,
    path = "/v1/messages/count_tokens",
    tag = "inference",
    request_body = crate::openapi::wire::MessagesRequest,
    responses((status = 200, description = "The prompt's tokens as the hub counts them", body = crate::openapi::wire::TokenCount), crate::openapi::AnthropicErrors),
    security(("api_key" = []), ("bearer" = [])),
)]
pub async fn count_tokens(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AnthropicError> {
    caller?;
    let chat = MessagesRequest::parse(&body)?.into_chat(true)?;
    let tokens = inference::count_tokens(&state.router, &chat).await?;
    Ok(Json(json!({"input_tokens": tokens})))
}

/// The content block open in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Nothing,
    Text,
    /// Tool call `index` of the answer.
    Call(u32),
}

/// How one streamed answer is framed as Anthropic's events.
struct Frames {
    request_id: String,
    model: String,
    provider: String,
    prompt_tokens: u64,
    /// The block open, and the index of the next block.
    open: Open,
    next_block: u64,
}

fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl Frames {
    fn start(&self) -> Vec<Event> {
        vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": format!("msg_{}", self.request_id), "type": "message",
                    "role": "assistant", "model": self.model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0,
                        "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
            ),
            event("ping", json!({"type": "ping"})),
        ]
    }

    /// Closes the open block, if one is.
    fn close(&mut self, events: &mut Vec<Event>) {
        if self.open != Open::Nothing {
            let index = self.next_block - 1;
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
            self.open = Open::Nothing;
        }
    }

    /// Opens `block` (closing the open one) with `content_block`.
    fn open(&mut self, block: Open, content_block: Value, events: &mut Vec<Event>) -> u64 {
        self.close(events);
        let index = self.next_block;
        self.next_block += 1;
        self.open = block;
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        ));
        index
    }

    /// The events for one piece of the answer, and whether it was the last.
    fn events(&mut self, progress: Progress) -> (Vec<Event>, bool) {
        let mut events = Vec::new();
        match progress {
            Progress::Started { .. } => {}
            Progress::Delta { text, .. } => {
                let index = if self.open == Open::Text {
                    self.next_block - 1
                } else {
                    self.open(Open::Text, json!({"type": "text", "text": ""}), &mut events)
                };
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            Progress::ToolCall {
                index: call,
                id,
                name,
                arguments,
                ..
            } => {
                let block = if self.open == Open::Call(call) {
                    self.next_block - 1
                } else {
                    self.open(
                        Open::Call(call),
                        json!({"type": "tool_use", "id": id.unwrap_or_default(),
                            "name": name.unwrap_or_default(), "input": {}}),
                        &mut events,
                    )
                };
                if !arguments.is_empty() {
                    events.push(event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": block,
                            "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                    ));
                }
            }
            Progress::Finished(finished) => {
                self.close(&mut events);
                let mut usage = usage_json(&finished.usage);
                usage["x_aihub"] = x_aihub(&self.request_id, &self.provider, &finished);
                events.push(event(
                    "message_delta",
                    json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason(&finished.finish_reason),
                            "stop_sequence": null},
                        "usage": usage}),
                ));
                events.push(event("message_stop", json!({"type": "message_stop"})));
                return (events, true);
            }
            Progress::Failed(failure) => {
                let error = AnthropicError::from(failure);
                events.push(event("error", error.body()));
                return (events, true);
            }
            Progress::Lost => {
                let error = AnthropicError::from(Unanswered::Lost);
                events.push(event("error", error.body()));
                return (events, true);
            }
        }
        (events, false)
    }
}

/// Stream the answer as Anthropic's events.
fn sse(
    submission: Submission,
    provider: String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let frames = Frames {
        request_id: submission.request_id.clone(),
        model: submission.model.clone(),
        provider,
        prompt_tokens: submission.prompt_tokens,
        open: Open::Nothing,
        next_block: 0,
    };
    let first = frames.start();
    // `None` once the last piece was framed.
    let rest = stream::unfold(Some((submission, frames)), |open| async move {
        let (mut submission, mut frames) = open?;
        let (events, last) = frames.events(submission.progress().await);
        let next = if last {
            None
        } else {
            Some((submission, frames))
        };
        Some((stream::iter(events.into_iter().map(Ok)), next))
    });
    let all = futures::StreamExt::chain(
        stream::iter(first.into_iter().map(Ok::<_, Infallible>)),
        futures::StreamExt::flatten(rest),
    );
    Sse::new(all).keep_alive(axum::response::sse::KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Result<Chat, String> {
        MessagesRequest::parse(body.to_string().as_bytes())
            .and_then(|r| r.into_chat(true))
            .map_err(|e| e.message)
    }

    #[test]
    fn a_tool_round_trip_becomes_openai_messages() {
        let chat = chat(json!({
            "model": "m", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "tools": [{"name": "get_weather", "description": "Weather.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "And tomorrow?"}]}
            ]
        }))
        .expect("a chat");
        let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(chat.messages[2].content, "Checking.");
        assert_eq!(
            chat.messages[2].tool_calls[0].arguments,
            r#"{"city":"Paris"}"#
        );
        assert_eq!(chat.messages[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(chat.messages[3].content, "sunny");
        assert_eq!(chat.options.tools[0].function.name, "get_weather");
        assert_eq!(
            chat.options.tool_choice,
            Some(ToolChoice::Mode(ToolMode::Required))
        );
        assert_eq!(chat.options.parallel_tool_calls, Some(false));
    }

    #[test]
    fn images_become_image_parts_and_bad_ones_are_named() {
        let chat = chat(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "What is it?"}]}]}))
        .expect("a chat");
        assert_eq!(chat.messages[0].images().count(), 1);
        assert_eq!(chat.messages[0].content, "What is it?");
        let refused = super::tests::chat(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}]}]}))
        .expect_err("refused");
        assert!(refused.contains("messages[0].content[0]"), "{refused}");
        let top_k =
            super::tests::chat(json!({"model": "m", "max_tokens": 5, "top_k": 3, "messages": []}))
                .expect_err("refused");
        assert!(top_k.starts_with("top_k"), "{top_k}");
        let unknown =
            super::tests::chat(json!({"model": "m", "max_tokens": 5, "bogus": 1, "messages": []}))
                .expect_err("refused");
        assert!(unknown.contains("bogus"), "{unknown}");
    }

    #[test]
    fn a_stream_opens_and_closes_one_block_at_a_time() {
        let mut frames = Frames {
            request_id: "req_1".into(),
            model: "m".into(),
            provider: "p".into(),
            prompt_tokens: 10,
            open: Open::Nothing,
            next_block: 0,
        };
        let names = |events: &[Event]| events.len();
        let (text, _) = frames.events(Progress::Delta {
            seq: 1,
            text: "Hi".into(),
        });
        assert_eq!(names(&text), 2); // start + delta
        let (more, _) = frames.events(Progress::Delta {
            seq: 2,
            text: "!".into(),
        });
        assert_eq!(names(&more), 1);
        let (call, _) = frames.events(Progress::ToolCall {
            seq: 3,
            index: 0,
            id: Some("call_1".into()),
            name: Some("f".into()),
            arguments: String::new(),
        });
        assert_eq!(names(&call), 2); // stop text + start tool_use
        assert_eq!(frames.open, Open::Call(0));
        assert_eq!(frames.next_block, 2);
        let (args, _) = frames.events(Progress::ToolCall {
            seq: 4,
            index: 0,
            id: None,
            name: None,
            arguments: "{}".into(),
        });
        assert_eq!(names(&args), 1);
        assert_eq!(stop_reason("tool_calls"), "tool_use");
        assert_eq!(stop_reason("length"), "max_tokens");
        assert_eq!(input_of("{\"a\""), json!({}));
    }
}
