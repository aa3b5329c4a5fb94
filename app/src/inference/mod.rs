//! Inference: a chat request accepted, paid for in advance, run by a worker, and answered.
//!
//! Shared by `POST /v1/chat/completions` (SSE or JSON) and the WebSocket chat. A request has
//! one shape per layer, converted once at each boundary:
//!
//! ```text
//! OpenAI JSON / WebSocket message (api) → Chat (here) → InferenceCommand (NATS wire)
//!     → ChatRequest (the providers, hub_workers)
//! ```
//!
//! # Layout
//!
//! - [`submit`](mod@submit): the pipeline, one step per line — validate → policy → estimate →
//!   reserve (within the key's spending limit) → publish.
//! - [`validate`]: the request's shape and its model.
//! - [`limits`]: who may spend: the verified-email policy, and the API key whose spending
//!   limit the reservation is checked against.
//! - [`estimate`]: the prompt counted, `max_tokens` capped, the most the request can cost.
//! - [`embed`](mod@embed): the same pipeline for `POST /v1/embeddings`.
//! - [`answer`]: [`Submission`], the answer on its way, read as [`Progress`] or whole
//!   ([`Answer`]); dropping it early cancels the request.
//! - [`session`]: [`ChatSession`], several chats at once for one connection (the WebSocket).

pub mod answer;
pub mod embed;
pub mod estimate;
pub mod limits;
pub mod session;
pub mod submit;
pub mod validate;

use hub_domain::{ApiKeyId, Credits};
use hub_workers::chat::ChatOptions;
use hub_workers::providers::ChatMessage;
use uuid::Uuid;

pub use crate::replies::Replies;
pub use answer::{
    Answer, ChatFailure, EmbeddingsAnswer, Finished, Progress, Submission, Unanswered,
};
pub use embed::{submit_embeddings, Embed};
pub use estimate::count_tokens;
pub use session::{ChatSession, ChatUpdate};
pub use submit::submit;

/// Runs `work` (an HTTP request's handling) with `id` as its request id: inference commands
/// submitted meanwhile carry it to the worker, in the command and in a NATS header, so the
/// worker's log lines for the request name it, and every event written meanwhile has it as
/// its correlation and causation id ([`hub_commands::trace`]).
pub async fn with_correlation<F: std::future::Future>(id: Option<String>, work: F) -> F::Output {
    let trace = hub_commands::trace::Trace {
        correlation_id: id.clone(),
        causation_id: id,
    };
    hub_commands::trace::scope(trace, work).await
}

/// The request id of the HTTP request being served, if any.
pub(crate) fn correlation() -> Option<String> {
    hub_commands::trace::current().and_then(|trace| trace.correlation_id)
}

/// Who pays for a chat request: the user, through an access token or one of their API keys.
#[derive(Debug, Clone)]
pub struct Payer {
    pub user: Uuid,
    /// The API key used, if the caller is a program (its spending limit applies).
    pub api_key: Option<ApiKeyId>,
    /// The user as this request's credential check read them from the event store, moments
    /// before: the pipeline uses it instead of reading them again. Only for one request
    /// (never for a long-lived connection's chats, which read the user afresh).
    pub checked: Option<CheckedUser>,
}

/// A user as read for one request's credential check.
#[derive(Clone)]
pub struct CheckedUser(pub std::sync::Arc<hub_domain::User>);

impl std::fmt::Debug for CheckedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the user's fields: their email and secrets stay out of any log.
        f.write_str("CheckedUser")
    }
}

/// A chat request as the hub takes it from any transport: what the client asked.
#[derive(Debug, Clone)]
pub struct Chat {
    /// A configured model name.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate; absent: the model's default. Capped to the model's limit.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    /// Tools, the answer's format and the parameters only some models take.
    pub options: ChatOptions,
    /// Answer in one message at the end instead of piece by piece (a non-streaming client).
    pub whole: bool,
}

/// Why a request was not submitted.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the model {0:?} does not exist")]
    UnknownModel(String),
    /// A parameter the model cannot take, named.
    #[error("{0}")]
    Unsupported(#[from] hub_workers::Unsupported),
    #[error("insufficient credits: this request may cost up to {needed} credits and {available} are available")]
    InsufficientCredits { needed: Credits, available: Credits },
    #[error("this API key's spending limit would be exceeded")]
    KeySpendingLimit,
    #[error("verify your email address before using inference")]
    EmailNotVerified,
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("the hub is taking more requests than it can; retry in a second")]
    Overloaded,
    /// A per-minute budget of the caller has no room (`rate_limits`).
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        /// When to come back, in whole seconds; `None` when waiting will not help.
        retry_after_s: Option<u64>,
    },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl GatewayError {
    /// The request parameter at fault, when one is (OpenAI's `param`).
    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::Unsupported(unsupported) => Some(&unsupported.param),
            _ => None,
        }
    }

    /// `(HTTP status, stable code)`.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            GatewayError::BadRequest(_) => (400, "invalid_request"),
            GatewayError::UnknownModel(_) => (404, "model_not_found"),
            GatewayError::Unsupported(_) => (400, "unsupported_parameter"),
            GatewayError::InsufficientCredits { .. } => (402, "insufficient_credits"),
            GatewayError::KeySpendingLimit => (402, "key_spending_limit"),
            GatewayError::EmailNotVerified => (403, "email_not_verified"),
            GatewayError::Unavailable(_) => (503, "unavailable"),
            GatewayError::Overloaded => (503, "overloaded"),
            GatewayError::RateLimited { .. } => (429, "rate_limit_exceeded"),
            GatewayError::Internal(_) => (500, "internal"),
        }
    }
}

/// What every step says when the event store cannot be read or written.
pub(crate) const EVENT_STORE_UNAVAILABLE: GatewayError =
    GatewayError::Unavailable("the event store is unavailable");
