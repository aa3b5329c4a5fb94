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
use hub_workers::wire::WireUsage;
use serde::Deserialize;
use serde_json::{json, Value};
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

impl ChatCompletionRequest {
    /// Whether a streamed answer ends with a usage chunk.
    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// The hub's request, once the body's OpenAI-specific rules hold.
    fn into_chat(self) -> Result<Chat, OpenAiError> {
        let model = self
            .model
            .filter(|m| !m.is_empty())
            .ok_or_else(|| OpenAiError::new(400, "missing_model", "model is required"))?;
        let messages = self
            .messages
            .ok_or_else(|| OpenAiError::new(400, "missing_messages", "messages is required"))?;
        if self.n.is_some_and(|n| n != 1) {
            return Err(OpenAiError::new(
                400,
                "unsupported_n",
                "only n = 1 is supported",
            ));
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(OpenAiError::new(
                    400,
                    "invalid_temperature",
                    "temperature must be 0 to 2",
                ));
            }
        }
        Ok(Chat {
            model,
            messages,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop: match self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
            },
            whole: !self.stream,
        })
    }
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
    let (stream, include_usage) = (request.stream, request.include_usage());
    let chat = request.into_chat()?;
    let mut submission = inference::submit(&state, &caller.payer(), chat).await?;
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
            "message": {"role": "assistant", "content": answer.text},
            "logprobs": null,
            "finish_reason": answer.finished.finish_reason,
        }],
        "usage": usage_json(&answer.finished.usage),
        "x_aihub": x_aihub(&submission.request_id, &answer.provider, &answer.finished),
    })
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
                let err = OpenAiError::new(failure.status, &failure.code, failure.message);
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
