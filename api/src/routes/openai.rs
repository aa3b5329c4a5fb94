//! The OpenAI-compatible API: `POST /v1/chat/completions` (JSON or SSE) and `GET /v1/models`.
//!
//! Wire format and errors are OpenAI's (`{"error":{"message","type","param","code"}}`), so
//! the official SDKs work by changing only their base URL and key. Extra fields the hub adds
//! (`x_aihub`) are ignored by them.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use hub_workers::providers::ChatMessage;
use hub_workers::wire::{WireChunk, WireUsage};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use hub_app::inference::{self, ChatParams, GatewayError, Submission};

/// An error in OpenAI's shape.
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: String,
    message: String,
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
            retry_after_s: None,
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        let response = err.into_response();
        let status = response.status().as_u16();
        // The hub's own errors keep their message; only the shape changes.
        OpenAiError::new(status, "hub_error", status_text(status))
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        401 => "invalid, revoked or expired credentials",
        403 => "not allowed",
        503 => "a dependency of the hub is unavailable",
        _ => "request failed",
    }
}

impl From<GatewayError> for OpenAiError {
    fn from(err: GatewayError) -> Self {
        let (status, code) = err.status_and_code();
        if let GatewayError::Internal(cause) = &err {
            tracing::error!(error = format!("{cause:#}"), "inference request failed");
        }
        let mut error = OpenAiError::new(status, code, err.to_string());
        if matches!(err, GatewayError::Overloaded) {
            error.retry_after_s = Some(1);
        }
        error
    }
}

fn failure(code: &str, message: &str, status: u16, retry_after_s: Option<u64>) -> OpenAiError {
    let mut err = OpenAiError::new(status, code, message);
    err.retry_after_s = retry_after_s;
    err
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

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// OpenAI's request body; fields the hub does not use are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ChatCompletionRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

/// `POST /v1/chat/completions` — any signed-in caller (JWT or API key).
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    body: axum::body::Bytes,
) -> Result<Response, OpenAiError> {
    let caller = caller?;
    let request: ChatCompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| OpenAiError::new(400, "invalid_json", format!("invalid request body: {e}")))?;
    let model = request
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| OpenAiError::new(400, "missing_model", "model is required"))?;
    let messages = request
        .messages
        .ok_or_else(|| OpenAiError::new(400, "missing_messages", "messages is required"))?;
    if request.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::new(
            400,
            "unsupported_n",
            "only n = 1 is supported",
        ));
    }
    if let Some(t) = request.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(OpenAiError::new(
                400,
                "invalid_temperature",
                "temperature must be 0 to 2",
            ));
        }
    }
    let params = ChatParams {
        model,
        messages,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        stop: match request.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        whole: !request.stream,
    };
    let mut submission = inference::submit(&state, &caller.payer(), params).await?;
    if !request.stream {
        return complete(submission).await;
    }
    // Wait for the worker to start (or fail) before choosing the HTTP status.
    let provider = match submission.next().await {
        Some(WireChunk::Started { provider }) => provider,
        Some(WireChunk::Failed {
            code,
            message,
            status,
            retry_after_s,
            ..
        }) => return Err(failure(&code, &message, status, retry_after_s)),
        Some(_) | None => return Err(lost()),
    };
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    Ok(sse(submission, provider, include_usage).into_response())
}

fn usage_json(usage: &WireUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    })
}

/// The whole answer: one `answered` message from the worker (or, from a worker that sends
/// the answer piece by piece, its pieces).
async fn complete(mut submission: Submission) -> Result<Response, OpenAiError> {
    let mut text = String::new();
    let mut provider = String::new();
    loop {
        let (finish_reason, usage, charged_micros) = match submission.next().await {
            Some(WireChunk::Started { provider: started }) => {
                provider = started;
                continue;
            }
            Some(WireChunk::Delta { text: piece, .. }) => {
                text.push_str(&piece);
                continue;
            }
            Some(WireChunk::Finished {
                finish_reason,
                usage,
                charged_micros,
                ..
            }) => (finish_reason, usage, charged_micros),
            Some(WireChunk::Answered {
                provider: answered_by,
                text: answer,
                finish_reason,
                usage,
                charged_micros,
                ..
            }) => {
                provider = answered_by;
                text = answer;
                (finish_reason, usage, charged_micros)
            }
            Some(WireChunk::Failed {
                code,
                message,
                status,
                retry_after_s,
                ..
            }) => return Err(failure(&code, &message, status, retry_after_s)),
            None => return Err(lost()),
        };
        let body = json!({
            "id": format!("chatcmpl-{}", submission.request_id),
            "object": "chat.completion",
            "created": submission.created,
            "model": submission.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage_json(&usage),
            "x_aihub": {
                "request_id": submission.request_id,
                "provider": provider,
                "charged_micros": charged_micros,
                "token_source": usage.source,
            },
        });
        return Ok(Json(body).into_response());
    }
}

/// What the SSE stream still has to say.
enum SseState {
    Open(Box<Submission>),
    Done,
}

/// Stream the answer as OpenAI's chat.completion.chunk events, then `data: [DONE]`.
fn sse(
    submission: Submission,
    provider: String,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let id = format!("chatcmpl-{}", submission.request_id);
    let created = submission.created;
    let model = submission.model.clone();
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let first =
        Event::default().data(chunk(json!({"role": "assistant", "content": ""}), None).to_string());
    let chunk = Arc::new(chunk);
    let rest = stream::unfold(SseState::Open(Box::new(submission)), move |state| {
        let chunk = chunk.clone();
        let provider = provider.clone();
        async move {
            let SseState::Open(mut submission) = state else {
                return None;
            };
            let events: Vec<Event> = match submission.next().await {
                Some(WireChunk::Delta { text, .. }) => {
                    vec![Event::default().data(chunk(json!({"content": text}), None).to_string())]
                }
                Some(WireChunk::Started { .. }) => Vec::new(),
                Some(WireChunk::Finished {
                    finish_reason,
                    usage,
                    charged_micros,
                    ..
                }) => {
                    let mut events =
                        vec![Event::default()
                            .data(chunk(json!({}), Some(&finish_reason)).to_string())];
                    if include_usage {
                        let mut last = chunk(json!({}), None);
                        last["choices"] = json!([]);
                        last["usage"] = usage_json(&usage);
                        last["x_aihub"] = json!({
                            "request_id": submission.request_id,
                            "provider": provider,
                            "charged_micros": charged_micros,
                            "token_source": usage.source,
                        });
                        events.push(Event::default().data(last.to_string()));
                    }
                    events.push(Event::default().data("[DONE]"));
                    return Some((stream::iter(events.into_iter().map(Ok)), SseState::Done));
                }
                Some(WireChunk::Failed {
                    code,
                    message,
                    status,
                    ..
                }) => {
                    let err = OpenAiError::new(status, &code, message);
                    let events = vec![Event::default().data(err.body().to_string())];
                    return Some((stream::iter(events.into_iter().map(Ok)), SseState::Done));
                }
                // `answered` only answers commands that asked for the whole answer at once.
                None | Some(WireChunk::Answered { .. }) => {
                    let events = vec![Event::default().data(lost().body().to_string())];
                    return Some((stream::iter(events.into_iter().map(Ok)), SseState::Done));
                }
            };
            Some((
                stream::iter(events.into_iter().map(Ok)),
                SseState::Open(submission),
            ))
        }
    });
    let all = futures::StreamExt::chain(
        stream::once(std::future::ready(Ok::<_, Infallible>(first))),
        futures::StreamExt::flatten(rest),
    );
    Sse::new(all).keep_alive(axum::response::sse::KeepAlive::default())
}

/// `GET /v1/models` — any signed-in caller: the configured models and their prices.
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
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /api/providers/status` — any signed-in caller: each provider's health.
pub async fn providers_status(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "providers": state.router.status() })))
}
