//! One trait for every upstream, the types requests and answers share, and the HTTP plumbing
//! (status mapping, timeouts, server-sent events) that the HTTP providers share.
//!
//! # The contract of a provider
//!
//! [`Provider::stream`] returns a future that resolves once the upstream has accepted the
//! request (its HTTP status is known), to an [`EventStream`] of
//!
//! ```text
//! (Delta | Reasoning | ToolCall)* Usage? Finish
//! ```
//!
//! — text deltas and reasoning deltas (a reasoning model's thinking: OpenAI-compatible
//! `reasoning_content`, Anthropic `thinking` blocks), at most one provider-reported
//! [`StreamEvent::Usage`] (absent when the upstream reported none: the caller then estimates
//! with [`crate::tokens`], counting reasoning as output), and one [`StreamEvent::Finish`].
//! Reasoning is generated output: it is the upstream's first token as much as text is, and
//! a reported usage's output count already includes it. Any error ends the stream: an `Err` item is always the last one. A
//! stream that ends without `Finish` does not happen: a body cut short is
//! [`ProviderError::StreamBroken`].
//!
//! Dropping the stream (or the future) drops the HTTP response, which closes the connection:
//! a client that goes away stops the upstream call and its token spending.
//!
//! Every upstream is asked to stream, whatever the client asked for; an upstream that answers
//! with one JSON body instead is read as one delta.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

pub use hub_domain::TokenUsage;

pub mod anthropic;
pub mod mock;
pub mod openai;
pub mod sse;

pub use anthropic::AnthropicProvider;
pub use mock::MockProvider;
pub use openai::OpenAiProvider;

use sse::{SseEvent, SseParser};

/// Largest error body read from an upstream: enough for any JSON error, bounded against a
/// server that streams an endless error page.
pub const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;

/// Largest non-streamed answer read from an upstream that ignored `stream: true`.
pub const WHOLE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Longest upstream error message kept in a [`ProviderError`], in characters.
pub const ERROR_MESSAGE_CHARS_MAX: usize = 500;

/// After the last event, how long the rest of the body (usually just the end of the chunked
/// encoding) is read so that the connection can go back to the pool.
pub const DRAIN_AFTER_END: Duration = Duration::from_millis(250);

/// Timeout phase: connecting (TCP and TLS).
pub const PHASE_CONNECT: &str = "connect";
/// Timeout phase: from sending the request to its first generated token.
pub const PHASE_FIRST_TOKEN: &str = "first_token";
/// Timeout phase: the whole call.
pub const PHASE_TOTAL: &str = "total";

pub use crate::chat::{ChatMessage, ChatRequest};
pub use crate::embed::{EmbedRequest, Embeddings};

/// What a provider streams back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// More generated text.
    Delta { text: String },
    /// More of the model's reasoning, generated before (or between) the answer's text. Not
    /// part of the answer; billed as output tokens.
    Reasoning { text: String },
    /// A piece of a tool call: the first piece of call `index` (counted from 0 within the
    /// answer) carries its `id` and `name`, later pieces more of its `arguments` JSON text.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The token counts the provider reported (at most once, before `Finish`).
    Usage(TokenUsage),
    /// The answer is complete: `stop`, `length`, `content_filter`, `tool_calls`, ... (OpenAI's
    /// `finish_reason` vocabulary; Anthropic's stop reasons are translated).
    Finish { reason: String },
}

/// Why a call to an upstream failed. No message ever contains an API key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The upstream refused our API key (HTTP 401 or 403).
    #[error("the upstream refused the API key (HTTP {status})")]
    Unauthorized { status: u16 },
    /// The upstream is rate limiting us (HTTP 429), and asked for this pause if it said.
    #[error("the upstream is rate limiting{}", RetryAfter(*retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// The upstream failed (5xx, or an unexpected status or error event).
    #[error("the upstream failed with HTTP {status}: {message}")]
    Upstream { status: u16, message: String },
    /// The upstream refused the request itself (HTTP 400, 413, 422): another try or another
    /// provider would not help.
    #[error("the upstream refused the request: {message}")]
    BadRequest { message: String },
    /// A timeout: `connect`, `first_token` or `total` (see the `PHASE_*` constants).
    #[error("the upstream timed out ({phase})")]
    Timeout { phase: &'static str },
    /// The upstream could not be reached or the connection failed before an answer.
    #[error("could not reach the upstream: {0}")]
    Connect(String),
    /// The upstream answered something that is not its protocol.
    #[error("the upstream broke its protocol: {0}")]
    Protocol(String),
    /// The stream broke after it started: connection closed early, or an error event.
    #[error("the upstream stream broke: {0}")]
    StreamBroken(String),
}

struct RetryAfter(Option<Duration>);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pause) => write!(f, " (retry after {} ms)", pause.as_millis()),
            None => Ok(()),
        }
    }
}

impl ProviderError {
    /// Whether the same request may succeed if sent again to the same provider: rate limits,
    /// 5xx (and 408), connection failures, and connect or first-token timeouts.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. } | ProviderError::Connect(_) => true,
            ProviderError::Upstream { status, .. } => *status >= 500 || *status == 408,
            ProviderError::Timeout { phase } => {
                *phase == PHASE_CONNECT || *phase == PHASE_FIRST_TOKEN
            }
            ProviderError::Unauthorized { .. }
            | ProviderError::BadRequest { .. }
            | ProviderError::Protocol(_)
            | ProviderError::StreamBroken(_) => false,
        }
    }

    /// A stable, low-cardinality code for metrics, logs and `GET /api/providers/status`.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Unauthorized { .. } => "unauthorized",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Upstream { .. } => "upstream_error",
            ProviderError::BadRequest { .. } => "bad_request",
            ProviderError::Timeout { phase } => match *phase {
                PHASE_CONNECT => "timeout_connect",
                PHASE_FIRST_TOKEN => "timeout_first_token",
                _ => "timeout_total",
            },
            ProviderError::Connect(_) => "connect_error",
            ProviderError::Protocol(_) => "protocol_error",
            ProviderError::StreamBroken(_) => "stream_broken",
        }
    }
}

/// A stream of events from one upstream call. See the module documentation for its grammar.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// An upstream that answers chat requests.
pub trait Provider: Send + Sync {
    /// The name in usage records and status (unique within a model).
    fn name(&self) -> &str;

    /// Sends `request`. The future resolves once the upstream accepted it (its HTTP status is
    /// known) to the stream of its answer, or to the error that refused it. Dropping the
    /// future or the stream aborts the upstream request.
    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<EventStream, ProviderError>>;

    /// Embeds `request`'s inputs, one vector each, in order. A provider without embeddings
    /// refuses (settings keep embedding models off such providers, so this is a guard).
    fn embed(&self, request: EmbedRequest) -> BoxFuture<'_, Result<Embeddings, ProviderError>> {
        drop(request);
        Box::pin(std::future::ready(Err(ProviderError::BadRequest {
            message: format!("the provider {} makes no embeddings", self.name()),
        })))
    }
}

/// The time limits of every upstream call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connection (set on the HTTP client).
    pub connect: Duration,
    /// From sending the request to the first generated token (answer or reasoning).
    pub first_token: Duration,
    /// The whole call.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

/// The HTTP client the providers share: rustls, the connect timeout, no redirects (an API
/// that redirects is misconfigured, and the key must not follow), keep-alive pooling.
pub fn http_client(timeouts: &Timeouts) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("aihub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("the HTTP client for providers did not build: {e}"))
}

/// The instants one call must meet, fixed when it is sent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    first_token: Instant,
    total: Instant,
}

impl Deadlines {
    pub(crate) fn start(timeouts: &Timeouts) -> Self {
        let now = Instant::now();
        Deadlines {
            first_token: now + timeouts.first_token,
            total: now + timeouts.total,
        }
    }

    /// The deadline before the first token arrived, and the phase it belongs to.
    fn before_first_token(&self) -> (Instant, &'static str) {
        if self.first_token <= self.total {
            (self.first_token, PHASE_FIRST_TOKEN)
        } else {
            (self.total, PHASE_TOTAL)
        }
    }
}

/// Sends a request built by a provider: maps transport errors, timeouts and non-2xx statuses.
/// `secret` (the API key) is scrubbed from any upstream message.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    deadlines: &Deadlines,
    secret: Option<&str>,
) -> Result<reqwest::Response, ProviderError> {
    let (deadline, phase) = deadlines.before_first_token();
    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => return Err(ProviderError::Timeout { phase }),
        Ok(Err(error)) => return Err(transport_error(error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = hub_adapters::http::read_limited(response, ERROR_BODY_BYTES_MAX, Some(deadline))
        .await
        .unwrap_or_default();
    Err(status_error(status, retry_after, &body, secret))
}

/// The error for a non-2xx status.
fn status_error(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    secret: Option<&str>,
) -> ProviderError {
    match status {
        401 | 403 => ProviderError::Unauthorized { status },
        429 => ProviderError::RateLimited { retry_after },
        400 | 413 | 422 => ProviderError::BadRequest {
            message: error_message(body, secret),
        },
        _ => ProviderError::Upstream {
            status,
            message: error_message(body, secret),
        },
    }
}

/// `retry-after-ms` (milliseconds, OpenAI) or `Retry-After` (seconds; an HTTP date is not
/// honoured).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    // Bounded to a day so that a silly header cannot overflow a Duration.
    const DAY_MS: f64 = 86_400_000.0;
    if let Some(ms) = number("retry-after-ms") {
        return Some(Duration::from_millis(ms.min(DAY_MS) as u64));
    }
    number("retry-after").map(|s| Duration::from_millis((s * 1000.0).min(DAY_MS) as u64))
}

/// The message of an upstream error body (`error.message`, `message` or `detail`), or the start
/// of the body; at most [`ERROR_MESSAGE_CHARS_MAX`] characters, the key scrubbed.
pub(crate) fn error_message(body: &[u8], secret: Option<&str>) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(json) => json_error_message(&json).unwrap_or_else(|| json.to_string()),
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let text = if text.is_empty() {
        "no message".to_owned()
    } else {
        text
    };
    scrub(&text, secret)
}

/// `error.message`, `error` (a string), `message` or `detail` of a JSON error.
pub(crate) fn json_error_message(json: &Value) -> Option<String> {
    let error = json.get("error");
    error
        .and_then(|e| e.get("message"))
        .or(error.filter(|e| e.is_string()))
        .or_else(|| json.get("message"))
        .or_else(|| json.get("detail"))
        .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
}

/// `text` without `secret`, cut to [`ERROR_MESSAGE_CHARS_MAX`] characters.
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    let mut text = match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "[redacted]"),
        _ => text.to_owned(),
    };
    if let Some((cut, _)) = text.char_indices().nth(ERROR_MESSAGE_CHARS_MAX) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// A reqwest error as ours: its message and causes, without the URL.
fn transport_error(error: reqwest::Error) -> ProviderError {
    if error.is_connect() && error.is_timeout() {
        return ProviderError::Timeout {
            phase: PHASE_CONNECT,
        };
    }
    if error.is_timeout() {
        return ProviderError::Timeout { phase: PHASE_TOTAL };
    }
    ProviderError::Connect(describe(error))
}

/// An error and its causes on one line, without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A body that was not read whole (see `hub_adapters::http::read_limited`), as ours.
fn body_error(error: hub_adapters::http::ReadLimitedError) -> ProviderError {
    use hub_adapters::http::ReadLimitedError;
    match error {
        ReadLimitedError::DeadlineElapsed => ProviderError::Timeout {
            phase: PHASE_FIRST_TOKEN,
        },
        ReadLimitedError::Read(error) => ProviderError::StreamBroken(describe(error)),
        ReadLimitedError::TooLarge { max_bytes } => ProviderError::Protocol(format!(
            "the upstream's answer is larger than {max_bytes} bytes"
        )),
    }
}

/// Whether a successful response is one JSON body rather than an event stream.
pub(crate) fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// Events queued by a [`Decoder`] for the stream to yield.
pub(crate) type Pending = VecDeque<Result<StreamEvent, ProviderError>>;

/// Turns one upstream's server-sent events into [`StreamEvent`]s.
pub(crate) trait Decoder: Send + 'static {
    /// Handles one event, queueing what it means; returns `true` when the upstream said the
    /// answer is complete (the rest of the body is then ignored).
    fn event(&mut self, event: SseEvent, out: &mut Pending) -> bool;
    /// The body ended before the upstream said the answer was complete: queue what is still
    /// owed, or the error.
    fn end(&mut self, out: &mut Pending);
}

/// The stream of a response whose body is server-sent events.
pub(crate) fn sse_stream<D: Decoder>(
    response: reqwest::Response,
    decoder: D,
    deadlines: Deadlines,
) -> EventStream {
    let driver = SseDriver {
        body: Some(response),
        parser: SseParser::new(),
        decoder,
        pending: VecDeque::new(),
        deadlines,
        first_token_seen: false,
        complete: false,
    };
    Box::pin(futures::stream::unfold(driver, SseDriver::next))
}

/// A successful response's body as JSON, read whole (at most [`WHOLE_BODY_BYTES_MAX`]) by the
/// first-token deadline: a whole answer is its own first token.
pub(crate) async fn read_json(
    response: reqwest::Response,
    deadlines: &Deadlines,
) -> Result<Value, ProviderError> {
    let (deadline, _) = deadlines.before_first_token();
    let body = hub_adapters::http::read_limited(response, WHOLE_BODY_BYTES_MAX, Some(deadline))
        .await
        .map_err(body_error)?;
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::Protocol(format!("the answer is not JSON ({e})")))
}

/// The stream of a response whose body is one JSON answer, read whole by `parse`.
pub(crate) fn json_stream(
    response: reqwest::Response,
    deadlines: Deadlines,
    secret: Option<String>,
    parse: impl FnOnce(&Value) -> Result<Vec<StreamEvent>, ProviderError> + Send + 'static,
) -> EventStream {
    let events = async move {
        let json = read_json(response, &deadlines).await?;
        if json.get("error").is_some_and(|e| !e.is_null()) {
            let message = json_error_message(&json).unwrap_or_default();
            return Err(ProviderError::StreamBroken(scrub(
                &message,
                secret.as_deref(),
            )));
        }
        parse(&json)
    };
    Box::pin(futures::stream::once(events).flat_map(|result| {
        let items: Vec<Result<StreamEvent, ProviderError>> = match result {
            Ok(events) => events.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(items)
    }))
}

/// The state of an event stream being read.
struct SseDriver<D> {
    /// The response; dropped (closing the connection) on error or at the end.
    body: Option<reqwest::Response>,
    parser: SseParser,
    decoder: D,
    /// Events decoded and not yet yielded.
    pending: Pending,
    deadlines: Deadlines,
    /// A delta or reasoning was yielded: from now on only the total deadline applies (a
    /// model that thinks for long is generating, not stalled).
    first_token_seen: bool,
    /// The upstream said the answer is complete, or the body ended.
    complete: bool,
}

impl<D: Decoder> SseDriver<D> {
    async fn next(mut self) -> Option<(Result<StreamEvent, ProviderError>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                match &item {
                    Ok(
                        StreamEvent::Delta { .. }
                        | StreamEvent::Reasoning { .. }
                        | StreamEvent::ToolCall { .. },
                    ) => self.first_token_seen = true,
                    Ok(_) => {}
                    Err(_) => {
                        // An error is always the last item.
                        self.pending.clear();
                        self.complete = true;
                        self.body = None;
                    }
                }
                return Some((item, self));
            }
            if self.complete {
                if let Some(body) = self.body.take() {
                    drain(body).await;
                }
                return None;
            }
            let body = self.body.as_mut()?;
            let (deadline, phase) = if self.first_token_seen {
                (self.deadlines.total, PHASE_TOTAL)
            } else {
                self.deadlines.before_first_token()
            };
            match tokio::time::timeout_at(deadline, body.chunk()).await {
                Err(_) => self
                    .pending
                    .push_back(Err(ProviderError::Timeout { phase })),
                Ok(Err(error)) => self
                    .pending
                    .push_back(Err(ProviderError::StreamBroken(describe(error)))),
                Ok(Ok(Some(chunk))) => match self.parser.push(&chunk) {
                    Ok(events) => {
                        for event in events {
                            if self.decoder.event(event, &mut self.pending) {
                                self.complete = true;
                                break;
                            }
                        }
                    }
                    Err(error) => self
                        .pending
                        .push_back(Err(ProviderError::Protocol(error.to_string()))),
                },
                Ok(Ok(None)) => {
                    let completed = self
                        .parser
                        .finish()
                        .is_some_and(|event| self.decoder.event(event, &mut self.pending));
                    if !completed {
                        self.decoder.end(&mut self.pending);
                    }
                    self.complete = true;
                    self.body = None;
                }
            }
        }
    }
}

/// Reads what is left of a finished body for a moment, so that the connection can be reused.
async fn drain(mut body: reqwest::Response) {
    let deadline = Instant::now() + DRAIN_AFTER_END;
    let mut read = 0usize;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, body.chunk()).await {
        read += chunk.len();
        if read > ERROR_BODY_BYTES_MAX {
            break;
        }
    }
}

/// Usage numbers from a JSON value: absent, null or negative counts are 0.
pub(crate) fn count(value: Option<&Value>) -> u64 {
    value.and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_parts_and_null_content_deserialize_as_text() {
        let parts: Result<ChatMessage, _> = serde_json::from_value(serde_json::json!({
            "role": "user",
            "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]
        }));
        assert_eq!(parts.ok(), Some(ChatMessage::new("user", "hello world")));
        let null: Result<ChatMessage, _> =
            serde_json::from_value(serde_json::json!({"role": "assistant", "content": null}));
        assert_eq!(null.ok(), Some(ChatMessage::new("assistant", "")));
        let image: Result<ChatMessage, _> = serde_json::from_value(serde_json::json!({
            "role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]
        }));
        let error = image.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("image URL"), "{error}");
    }

    #[test]
    fn statuses_map_to_errors_and_only_transient_ones_are_retryable() {
        let body = br#"{"error":{"message":"bad key sk-secret","type":"x"}}"#;
        let secret = Some("sk-secret");
        assert_eq!(
            status_error(401, None, body, secret),
            ProviderError::Unauthorized { status: 401 }
        );
        let limited = status_error(429, Some(Duration::from_secs(2)), body, secret);
        assert!(limited.retryable());
        assert!(limited.to_string().contains("2000 ms"));
        let failed = status_error(503, None, body, secret);
        assert!(failed.retryable());
        assert!(!failed.to_string().contains("sk-secret"), "{failed}");
        assert!(failed.to_string().contains("[redacted]"), "{failed}");
        assert!(!status_error(400, None, body, secret).retryable());
        assert!(!status_error(404, None, body, secret).retryable());
        assert!(ProviderError::Timeout {
            phase: PHASE_FIRST_TOKEN
        }
        .retryable());
        assert!(!ProviderError::Timeout { phase: PHASE_TOTAL }.retryable());
        assert!(!ProviderError::StreamBroken("x".into()).retryable());
    }

    #[test]
    fn retry_after_reads_milliseconds_first_then_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("3"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            "retry-after-ms",
            reqwest::header::HeaderValue::from_static("250.5"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut date = reqwest::header::HeaderMap::new();
        date.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn long_messages_are_cut() {
        let long = "é".repeat(2 * ERROR_MESSAGE_CHARS_MAX);
        assert_eq!(
            scrub(&long, None).chars().count(),
            ERROR_MESSAGE_CHARS_MAX + 1
        );
    }
}
