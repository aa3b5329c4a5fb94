//! The OpenAI-compatible API: `POST /v1/chat/completions` (JSON or SSE) and `GET /v1/models`.
//!
//! Wire format and errors are OpenAI's (`{"error":{"message","type","param","code"}}`), so
//! the official SDKs work by changing only their base URL and key. Extra fields the hub adds
//! (`x_aihub`) are ignored by them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use hub_workers::chat::{ChatOptions, ResponseFormat};
use hub_workers::providers::ChatMessage;
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

/// An error in OpenAI's shape.
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: String,
    message: String,
    /// The request parameter at fault, if one is.
    param: Option<String>,
    retry_after_s: Option<u64>,
}

impl OpenAiError {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let kind = match status.as_u16() {
            400 | 404 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        OpenAiError {
            status,
            kind,
            code: code.to_string(),
            message: message.into(),
            param: None,
            retry_after_s: None,
        }
    }

    /// A 400 naming the parameter at fault.
    fn invalid(code: &str, param: &str, message: impl Into<String>) -> Self {
        OpenAiError {
            param: Some(param.to_owned()),
            ..OpenAiError::new(400, code, message)
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        crate::error::set_retry_after(&mut response, self.retry_after_s);
        response
    }
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        // The hub's own errors keep their code and message (`session_ended`,
        // `insufficient_scope`, ...): only the shape changes.
        let mut error = OpenAiError::new(err.status().as_u16(), err.code(), err.message());
        error.retry_after_s = err.retry_after_s();
        // Rendering logs a 500's cause the way every other route does.
        drop(err.into_response());
        error
    }
}

impl From<GatewayError> for OpenAiError {
    fn from(err: GatewayError) -> Self {
        let (status, code) = err.status_and_code();
        if let GatewayError::Internal(cause) = &err {
            tracing::error!(error = format!("{cause:#}"), "inference request failed");
        }
        let mut error = OpenAiError::new(status, code, err.to_string());
        error.param = err.param().map(str::to_owned);
        if matches!(err, GatewayError::Overloaded) {
            error.retry_after_s = Some(1);
        }
        error
    }
}

impl From<Unanswered> for OpenAiError {
    fn from(unanswered: Unanswered) -> Self {
        match unanswered {
            Unanswered::Failed(failure) => OpenAiError::from(failure),
            Unanswered::Lost => lost(),
        }
    }
}

impl From<ChatFailure> for OpenAiError {
    fn from(failure: ChatFailure) -> Self {
        let mut err = OpenAiError::new(failure.status, &failure.code, failure.message);
        err.retry_after_s = failure.retry_after_s;
        err
    }
}

fn lost() -> OpenAiError {
    OpenAiError::new(
        504,
        "upstream_timeout",
        "no answer from the inference worker in time",
    )
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Most stop sequences (OpenAI's limit).
const STOP_SEQUENCES_MAX: usize = 4;
/// Most tools one request may define (OpenAI's limit).
const TOOLS_MAX: usize = 128;
/// Most `metadata` pairs (OpenAI's limit), and their longest key and value.
const METADATA_PAIRS_MAX: usize = 16;
const METADATA_KEY_CHARS_MAX: usize = 64;
const METADATA_VALUE_CHARS_MAX: usize = 512;

/// The request fields of OpenAI's chat completions the hub reads itself.
const BASIC_FIELDS: [&str; 11] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
];

/// The fields that travel to the worker as [`ChatOptions`].
const OPTION_FIELDS: [&str; 8] = [
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
];

/// Fields OpenAI knows that change nothing of the answer here, taken when they ask for
/// nothing the hub cannot do: `metadata` and `user` (kept from upstreams), `store: false`,
/// `logprobs: false`, an empty `logit_bias`, `modalities: ["text"]`, the `auto` or `default`
/// `service_tier`, and the caching and safety identifiers (not passed on).
const NEUTRAL_FIELDS: [&str; 8] = [
    "metadata",
    "store",
    "logprobs",
    "logit_bias",
    "modalities",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// OpenAI's request body, checked field by field: a parameter the hub cannot honour is
/// refused by name (400 `unsupported_parameter`), never dropped.
#[derive(Debug)]
struct ChatCompletionRequest {
    model: String,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    options: ChatOptions,
}

/// `field` of `body` as `T`; absent and `null` are `None`. A value of the wrong shape is a 400
/// naming the field.
fn field<T: serde::de::DeserializeOwned>(
    body: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<T>, OpenAiError> {
    match body.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value).map(Some).map_err(|e| {
            OpenAiError::invalid("invalid_value", name, format!("invalid {name}: {e}"))
        }),
    }
}

/// `value` within `range`, or a 400 naming `name`.
fn within(
    name: &str,
    value: Option<f32>,
    range: std::ops::RangeInclusive<f32>,
) -> Result<Option<f32>, OpenAiError> {
    match value {
        Some(v) if !range.contains(&v) => Err(OpenAiError::invalid(
            &format!("invalid_{name}"),
            name,
            format!("{name} must be {} to {}", range.start(), range.end()),
        )),
        other => Ok(other),
    }
}

/// A 400 for a parameter the hub cannot honour.
fn unsupported(param: &str, message: impl Into<String>) -> OpenAiError {
    OpenAiError::invalid("unsupported_parameter", param, message)
}

impl ChatCompletionRequest {
    fn parse(body: &[u8]) -> Result<Self, OpenAiError> {
        let mut body: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
            OpenAiError::new(400, "invalid_json", format!("invalid request body: {e}"))
        })?;
        if let Some(unknown) = body.keys().find(|k| {
            !BASIC_FIELDS.contains(&k.as_str())
                && !OPTION_FIELDS.contains(&k.as_str())
                && !NEUTRAL_FIELDS.contains(&k.as_str())
        }) {
            return Err(unsupported(
                unknown,
                format!("Unrecognized request argument supplied: {unknown}"),
            ));
        }
        check_neutral(&mut body)?;
        let model: String = field(&mut body, "model")?
            .filter(|m: &String| !m.is_empty())
            .ok_or_else(|| OpenAiError::invalid("missing_model", "model", "model is required"))?;
        let messages: Vec<ChatMessage> = field(&mut body, "messages")?.ok_or_else(|| {
            OpenAiError::invalid("missing_messages", "messages", "messages is required")
        })?;
        if field::<u32>(&mut body, "n")?.is_some_and(|n| n != 1) {
            return Err(OpenAiError::invalid(
                "unsupported_n",
                "n",
                "only n = 1 is supported",
            ));
        }
        let max_completion_tokens: Option<u32> = field(&mut body, "max_completion_tokens")?;
        let max_tokens = max_completion_tokens.or(field(&mut body, "max_tokens")?);
        let temperature = within("temperature", field(&mut body, "temperature")?, 0.0..=2.0)?;
        let top_p = within("top_p", field(&mut body, "top_p")?, 0.0..=1.0)?;
        let stop = match field::<Stop>(&mut body, "stop")? {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > STOP_SEQUENCES_MAX {
            return Err(OpenAiError::invalid(
                "invalid_stop",
                "stop",
                format!("at most {STOP_SEQUENCES_MAX} stop sequences"),
            ));
        }
        let stream = field::<bool>(&mut body, "stream")?.unwrap_or(false);
        let include_usage = field::<StreamOptions>(&mut body, "stream_options")?
            .unwrap_or_default()
            .include_usage;
        // Taken and kept: no end-user id goes upstream.
        let _user: Option<String> = field(&mut body, "user")?;
        let options = Self::options(&mut body)?;
        Ok(ChatCompletionRequest {
            model,
            messages,
            max_tokens,
            temperature,
            top_p,
            stop,
            stream,
            include_usage,
            options,
        })
    }

    /// The fields that travel as [`ChatOptions`], each checked.
    fn options(body: &mut Map<String, Value>) -> Result<ChatOptions, OpenAiError> {
        let tools: Vec<hub_workers::chat::Tool> = field(body, "tools")?.unwrap_or_default();
        if tools.len() > TOOLS_MAX {
            return Err(OpenAiError::invalid(
                "invalid_tools",
                "tools",
                format!("at most {TOOLS_MAX} tools"),
            ));
        }
        for (i, tool) in tools.iter().enumerate() {
            let name = &tool.function.name;
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(OpenAiError::invalid(
                    "invalid_tools",
                    &format!("tools[{i}].function.name"),
                    "a function name is 1 to 64 letters, digits, underscores or dashes",
                ));
            }
            if tool
                .function
                .parameters
                .as_ref()
                .is_some_and(|p| !p.is_object())
            {
                return Err(OpenAiError::invalid(
                    "invalid_tools",
                    &format!("tools[{i}].function.parameters"),
                    "parameters must be a JSON Schema object",
                ));
            }
        }
        let reasoning_effort: Option<String> = field(body, "reasoning_effort")?;
        if let Some(effort) = &reasoning_effort {
            if !["none", "minimal", "low", "medium", "high"].contains(&effort.as_str()) {
                return Err(OpenAiError::invalid(
                    "invalid_reasoning_effort",
                    "reasoning_effort",
                    "reasoning_effort must be minimal, low, medium or high",
                ));
            }
        }
        let response_format: Option<ResponseFormat> = field(body, "response_format")?;
        if let Some(ResponseFormat::JsonSchema { json_schema }) = &response_format {
            if json_schema.schema.as_ref().is_some_and(|s| !s.is_object()) {
                return Err(OpenAiError::invalid(
                    "invalid_response_format",
                    "response_format.json_schema.schema",
                    "the schema must be a JSON Schema object",
                ));
            }
        }
        Ok(ChatOptions {
            tools,
            tool_choice: field(body, "tool_choice")?,
            parallel_tool_calls: field(body, "parallel_tool_calls")?,
            response_format,
            seed: field(body, "seed")?,
            presence_penalty: within(
                "presence_penalty",
                field(body, "presence_penalty")?,
                -2.0..=2.0,
            )?,
            frequency_penalty: within(
                "frequency_penalty",
                field(body, "frequency_penalty")?,
                -2.0..=2.0,
            )?,
            reasoning_effort,
        })
    }

    /// The hub's request.
    fn into_chat(self) -> Chat {
        Chat {
            model: self.model,
            messages: self.messages,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop,
            options: self.options,
            whole: !self.stream,
        }
    }
}

/// The [`NEUTRAL_FIELDS`] taken (and removed from `body`) when they ask for nothing the hub
/// cannot do.
fn check_neutral(body: &mut Map<String, Value>) -> Result<(), OpenAiError> {
    if let Some(metadata) = field::<Map<String, Value>>(body, "metadata")? {
        let fits = metadata.len() <= METADATA_PAIRS_MAX
            && metadata.iter().all(|(k, v)| {
                k.chars().count() <= METADATA_KEY_CHARS_MAX
                    && v.as_str()
                        .is_some_and(|v| v.chars().count() <= METADATA_VALUE_CHARS_MAX)
            });
        if !fits {
            return Err(OpenAiError::invalid(
                "invalid_metadata",
                "metadata",
                "metadata holds at most 16 string values, keys up to 64 and values up to 512 characters",
            ));
        }
    }
    if field::<bool>(body, "store")? == Some(true) {
        return Err(unsupported("store", "the hub does not store completions"));
    }
    if field::<bool>(body, "logprobs")? == Some(true) {
        return Err(unsupported(
            "logprobs",
            "log probabilities are not available",
        ));
    }
    if field::<Map<String, Value>>(body, "logit_bias")?.is_some_and(|b| !b.is_empty()) {
        return Err(unsupported("logit_bias", "logit_bias is not available"));
    }
    if let Some(modalities) = field::<Vec<String>>(body, "modalities")? {
        if modalities.iter().any(|m| m != "text") {
            return Err(unsupported("modalities", "only text answers are available"));
        }
    }
    if let Some(tier) = field::<String>(body, "service_tier")? {
        if tier != "auto" && tier != "default" {
            return Err(unsupported(
                "service_tier",
                "only the auto and default service tiers are available",
            ));
        }
    }
    let _: Option<String> = field(body, "prompt_cache_key")?;
    let _: Option<String> = field(body, "safety_identifier")?;
    Ok(())
}

/// `POST /v1/chat/completions` — any signed-in caller (JWT or API key).
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "inference",
    request_body = crate::openapi::wire::ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer: a `chat.completion`, or with `stream: true` server-sent `chat.completion.chunk` events ending with `data: [DONE]`",
            content((crate::openapi::wire::ChatCompletion = "application/json"), (String = "text/event-stream"))),
        crate::openapi::OpenAiErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    body: axum::body::Bytes,
) -> Result<Response, OpenAiError> {
    let caller = caller?;
    let request = ChatCompletionRequest::parse(&body)?;
    let (stream, include_usage) = (request.stream, request.include_usage);
    let chat = request.into_chat();
    let mut submission = inference::submit(&state, &caller.payer_of_this_request(), chat).await?;
    if !stream {
        let answer = submission.answer().await?;
        return Ok(Json(completion(&submission, &answer)).into_response());
    }
    // Wait for the worker to start (or fail) before choosing the HTTP status.
    let provider = submission.started().await?;
    Ok(sse(submission, provider, include_usage).into_response())
}

fn usage_json(usage: &WireUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

/// The hub's own fields in an answer (ignored by OpenAI's SDKs).
fn x_aihub(request_id: &str, provider: &str, finished: &Finished) -> Value {
    json!({
        "request_id": request_id,
        "provider": provider,
        "charged_micros": finished.charged_micros,
        "token_source": finished.usage.source,
    })
}

/// A whole answer as OpenAI's `chat.completion`.
fn completion(submission: &Submission, answer: &Answer) -> Value {
    json!({
        "id": format!("chatcmpl-{}", submission.request_id),
        "object": "chat.completion",
        "created": submission.created,
        "model": submission.model,
        "choices": [{
            "index": 0,
            "message": message(answer),
            "logprobs": null,
            "finish_reason": answer.finished.finish_reason,
        }],
        "usage": usage_json(&answer.finished.usage),
        "x_aihub": x_aihub(&submission.request_id, &answer.provider, &answer.finished),
    })
}

/// The answer's message: its text (`null` when it only called tools) and its tool calls.
fn message(answer: &Answer) -> Value {
    let content = if answer.text.is_empty() && !answer.tool_calls.is_empty() {
        Value::Null
    } else {
        json!(answer.text)
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !answer.tool_calls.is_empty() {
        message["tool_calls"] = json!(answer.tool_calls);
    }
    message
}

/// How one streamed answer is framed as OpenAI's `chat.completion.chunk` events.
struct SseFrames {
    request_id: String,
    created: i64,
    model: String,
    provider: String,
    include_usage: bool,
}

impl SseFrames {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": format!("chatcmpl-{}", self.request_id), "object": "chat.completion.chunk",
            "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    fn first(&self) -> Event {
        Event::default().data(
            self.chunk(json!({"role": "assistant", "content": ""}), None)
                .to_string(),
        )
    }

    /// The events for one piece of the answer, and whether it was the last.
    fn events(&self, progress: Progress) -> (Vec<Event>, bool) {
        let data = |value: Value| Event::default().data(value.to_string());
        match progress {
            Progress::Started { .. } => (Vec::new(), false),
            Progress::Delta { text, .. } => (
                vec![data(self.chunk(json!({"content": text}), None))],
                false,
            ),
            Progress::ToolCall {
                index,
                id,
                name,
                arguments,
                ..
            } => {
                // The first piece of a call names it; later ones carry more arguments.
                let mut call = json!({"index": index, "function": {"arguments": arguments}});
                if let Some(id) = id {
                    call["id"] = json!(id);
                    call["type"] = json!("function");
                }
                if let Some(name) = name {
                    call["function"]["name"] = json!(name);
                }
                (
                    vec![data(self.chunk(json!({"tool_calls": [call]}), None))],
                    false,
                )
            }
            Progress::Finished(finished) => {
                let mut events = vec![data(self.chunk(json!({}), Some(&finished.finish_reason)))];
                if self.include_usage {
                    let mut last = self.chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage_json(&finished.usage);
                    last["x_aihub"] = x_aihub(&self.request_id, &self.provider, &finished);
                    events.push(data(last));
                }
                events.push(Event::default().data("[DONE]"));
                (events, true)
            }
            Progress::Failed(failure) => {
                let err = OpenAiError::from(failure);
                (vec![data(err.body())], true)
            }
            Progress::Lost => (vec![data(lost().body())], true),
        }
    }
}

/// Stream the answer as OpenAI's chat.completion.chunk events, then `data: [DONE]`.
fn sse(
    submission: Submission,
    provider: String,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let frames = Arc::new(SseFrames {
        request_id: submission.request_id.clone(),
        created: submission.created,
        model: submission.model.clone(),
        provider,
        include_usage,
    });
    let first = frames.first();
    // `None` once the last piece was framed.
    let rest = stream::unfold(Some(submission), move |open| {
        let frames = frames.clone();
        async move {
            let mut submission = open?;
            let (events, last) = frames.events(submission.progress().await);
            let next = if last { None } else { Some(submission) };
            Some((stream::iter(events.into_iter().map(Ok)), next))
        }
    });
    let all = futures::StreamExt::chain(
        stream::once(std::future::ready(Ok::<_, Infallible>(first))),
        futures::StreamExt::flatten(rest),
    );
    Sse::new(all).keep_alive(axum::response::sse::KeepAlive::default())
}

/// `input` of an embeddings request: a text, texts, token ids, or lists of token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

/// OpenAI's embeddings request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    model: String,
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    /// Taken, and not passed upstream.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// `POST /v1/embeddings` — any signed-in caller (JWT or API key with the `inference` scope):
/// one vector per input, billed by the inputs' tokens at the model's input price. Vectors are
/// numbers (`encoding_format: float`, the default) or base64 of little-endian `f32`s
/// (`base64`, what OpenAI's SDKs ask for).
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "inference",
    request_body = crate::openapi::wire::EmbeddingsRequest,
    responses((status = 200, description = "One vector per input", body = crate::openapi::wire::EmbeddingList), crate::openapi::OpenAiErrors),
    security(("bearer" = [])),
)]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    body: axum::body::Bytes,
) -> Result<Response, OpenAiError> {
    let caller = caller?;
    let request: EmbeddingsRequest = serde_json::from_slice(&body).map_err(|e| {
        let message = e.to_string();
        match message.strip_prefix("unknown field `") {
            Some(rest) => {
                let field = rest.split('`').next().unwrap_or("");
                unsupported(
                    field,
                    format!("Unrecognized request argument supplied: {field}"),
                )
            }
            None => OpenAiError::new(
                400,
                "invalid_json",
                format!("invalid request body: {message}"),
            ),
        }
    })?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OpenAiError::invalid(
                "invalid_encoding_format",
                "encoding_format",
                format!("encoding_format must be float or base64, got {other:?}"),
            ))
        }
    };
    let tokenizer = state
        .router
        .tokenizer(&request.model)
        .ok_or_else(|| OpenAiError::from(GatewayError::UnknownModel(request.model.clone())))?;
    let decode = |tokens: &[u32]| {
        hub_workers::tokens::decode(tokenizer, tokens).ok_or_else(|| {
            OpenAiError::invalid(
                "invalid_input",
                "input",
                "the token ids are not tokens of the model's tokenizer",
            )
        })
    };
    let inputs = match request.input {
        EmbeddingInput::One(text) => vec![text],
        EmbeddingInput::Many(texts) => texts,
        EmbeddingInput::Tokens(tokens) => vec![decode(&tokens)?],
        EmbeddingInput::ManyTokens(lists) => lists
            .iter()
            .map(|tokens| decode(tokens))
            .collect::<Result<_, _>>()?,
    };
    let count = inputs.len();
    let embed = inference::Embed {
        model: request.model,
        inputs,
        dimensions: request.dimensions,
    };
    let mut submission =
        inference::submit_embeddings(&state, &caller.payer_of_this_request(), embed).await?;
    let answer = submission.embeddings(count).await?;
    let data: Vec<Value> = answer
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    bytes
                ))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": submission.model,
        "usage": {
            "prompt_tokens": answer.usage.prompt_tokens,
            "total_tokens": answer.usage.prompt_tokens,
        },
        "x_aihub": {
            "request_id": submission.request_id,
            "provider": answer.provider,
            "charged_micros": answer.charged_micros,
            "token_source": answer.usage.source,
        },
    }))
    .into_response())
}

/// `GET /v1/models` — any signed-in caller: the configured models and their prices.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "inference",
    responses((status = 200, description = "The configured models, their prices and capabilities", body = crate::openapi::wire::ModelList), crate::openapi::OpenAiErrors),
    security(("bearer" = [])),
)]
pub async fn models(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
) -> Result<Json<Value>, OpenAiError> {
    caller?;
    let data: Vec<Value> = state
        .router
        .models()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "aihub",
                "pricing": {
                    "unit": "micro-credits per million tokens",
                    "input": m.price.input_per_million.micros(),
                    "output": m.price.output_per_million.micros(),
                    "cached_input": m.price.cached_input_per_million.micros(),
                },
                "max_output_tokens": m.max_output_tokens,
                "context_window": m.context_tokens,
                "capabilities": {
                    "embedding_dimensions": m.capabilities.embedding_dimensions,
                    "vision": m.capabilities.vision,
                    "tools": m.capabilities.tools,
                    "reasoning": m.capabilities.reasoning,
                    "image_tokens_max": m.capabilities.image_tokens_max,
                },
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /api/providers/status` — any signed-in caller: each provider's health as the
/// workers see it (only they call providers), merged over the workers that reported in the
/// last seconds (`hub_workers::status`). With no worker reporting, `providers` is empty and
/// `workers_reporting` 0: nothing is known, and nothing is claimed healthy.
#[utoipa::path(
    get,
    path = "/api/providers/status",
    tag = "inference",
    responses((status = 200, description = "Each provider's health as the workers report it", body = hub_workers::status::MergedStatus), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn providers_status(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<hub_workers::status::MergedStatus>, ApiError> {
    Ok(Json(
        state.provider_status.merged(tokio::time::Instant::now()),
    ))
}
