//! Submitting a chat request: estimate, reserve, publish, and read the answer back.
//!
//! Shared by `POST /v1/chat/completions` (SSE or JSON) and the WebSocket chat. The flow:
//!
//! 1. the prompt is counted with the model's tokenizer and `max_tokens` capped to the model's
//!    limit (or the configured default), so the most the request can cost is known;
//! 2. that much is **reserved** on the caller's account (402 when the available balance is
//!    short; an API key's spending limit is checked too);
//! 3. the request is registered with this process's [`Replies`] (one NATS subscription for
//!    every request, so none is made or dropped per request), then the command, naming the
//!    reply subject, is published to `HUB_COMMANDS` with `Nats-Msg-Id` = request id;
//! 4. a worker streams [`WireChunk`]s back; dropping the [`Submission`] before the last one
//!    asks the worker to stop (the client went away).

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use hub_commands::CommandError;
use hub_domain::{AccountId, ApiKeyId, CreditCommand, CreditError, Credits, RequestId, UserId};
use hub_workers::providers::ChatMessage;
use hub_workers::wire::{InferenceCommand, WireChunk};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::hub::Hub;

/// Who pays for a chat request: the user, through an access token or one of their API keys.
#[derive(Debug, Clone, Copy)]
pub struct Payer {
    pub user: Uuid,
    /// The API key used, if the caller is a program (its spending limit applies).
    pub api_key: Option<ApiKeyId>,
}

/// A chat request as clients send it, transport aside.
#[derive(Debug, Clone)]
pub struct ChatParams {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
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
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl GatewayError {
    /// `(HTTP status, stable code)`.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            GatewayError::BadRequest(_) => (400, "invalid_request"),
            GatewayError::UnknownModel(_) => (404, "model_not_found"),
            GatewayError::InsufficientCredits { .. } => (402, "insufficient_credits"),
            GatewayError::KeySpendingLimit => (402, "key_spending_limit"),
            GatewayError::EmailNotVerified => (403, "email_not_verified"),
            GatewayError::Unavailable(_) => (503, "unavailable"),
            GatewayError::Overloaded => (503, "overloaded"),
            GatewayError::Internal(_) => (500, "internal"),
        }
    }
}

/// Margin between the longest a request may run and its reservation's expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// An accepted request whose answer is on its way.
pub struct Submission {
    pub request_id: String,
    pub model: String,
    /// Unix seconds, for OpenAI's `created`.
    pub created: i64,
    pub prompt_tokens: u64,
    replies: mpsc::UnboundedReceiver<Bytes>,
    _registration: Registration,
    client: async_nats::Client,
    cancel_subject: String,
    /// Longest wait for the next chunk.
    idle: Duration,
    done: bool,
}

impl Submission {
    /// The next chunk; `None` if none came within the idle bound (a lost worker).
    pub async fn next(&mut self) -> Option<WireChunk> {
        if self.done {
            return None;
        }
        loop {
            let payload = match tokio::time::timeout(self.idle, self.replies.recv()).await {
                Ok(Some(payload)) => payload,
                Ok(None) | Err(_) => {
                    self.done = true;
                    return None;
                }
            };
            match serde_json::from_slice::<WireChunk>(&payload) {
                Ok(chunk) => {
                    if chunk.is_last() {
                        self.done = true;
                    }
                    return Some(chunk);
                }
                Err(err) => tracing::warn!(error = %err, "unreadable chunk skipped"),
            }
        }
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The client went away: stop the worker; it charges what was produced.
        let client = self.client.clone();
        let subject = std::mem::take(&mut self.cancel_subject);
        tokio::spawn(async move {
            if let Err(err) = client.publish(subject, bytes::Bytes::new()).await {
                tracing::debug!(error = %err, "could not publish a cancellation");
            }
        });
    }
}

/// Estimate, reserve and publish; the answer comes from [`Submission::next`].
pub async fn submit(
    state: &Arc<Hub>,
    caller: &Payer,
    params: ChatParams,
) -> Result<Submission, GatewayError> {
    // Held until the command is queued: bounds the work (and memory) of a burst.
    let _admitted = state
        .admission
        .try_acquire()
        .map_err(|_| GatewayError::Overloaded)?;
    let models = &state.settings.models;
    if params.messages.is_empty() {
        return Err(GatewayError::BadRequest(
            "messages must not be empty".into(),
        ));
    }
    if let Some(bad) = params.messages.iter().find(|m| {
        !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer" | "tool"
        )
    }) {
        return Err(GatewayError::BadRequest(format!(
            "unknown message role {:?}",
            bad.role
        )));
    }
    let Some(info) = state.router.model_info(&params.model) else {
        return Err(GatewayError::UnknownModel(params.model));
    };
    let price = info.price;
    if state.settings.auth.require_verified_email && caller.api_key.is_none() {
        let user = state
            .users
            .load(UserId(caller.user))
            .await
            .map_err(|_| GatewayError::Unavailable("the event store is unavailable"))?;
        if !user.email_verified() {
            return Err(GatewayError::EmailNotVerified);
        }
    }
    let prompt_tokens = hub_workers::tokens::count_prompt_tokens(info.tokenizer, &params.messages);
    if let Some(context) = info.context_tokens {
        if prompt_tokens >= u64::from(context) {
            return Err(GatewayError::BadRequest(format!(
                "the prompt has {prompt_tokens} tokens; the model's context holds {context}"
            )));
        }
    }
    let max_tokens = state
        .router
        .effective_max_tokens(&params.model, params.max_tokens)
        .unwrap_or(info.default_max_tokens)
        .max(1);
    let max_cost = price
        .max_cost(prompt_tokens, u64::from(max_tokens))
        .map_err(|_| GatewayError::BadRequest("the request is too large to price".into()))?
        .max(Credits::from_micros(1));

    if let Some(key) = caller.api_key {
        check_key_limit(state, caller, key, max_cost).await?;
    }

    let request_id = format!("req_{}", Uuid::new_v4().simple());
    let rid = RequestId::parse(&request_id).map_err(|e| GatewayError::Internal(e.into()))?;
    let now = Utc::now();
    let run_max = Duration::from_millis(models.total_timeout_ms) + EXPIRY_MARGIN;
    let expires_at =
        now + chrono::Duration::from_std(run_max).map_err(|e| GatewayError::Internal(e.into()))?;
    let reserve = CreditCommand::ReserveCredits {
        request_id: rid.clone(),
        amount: max_cost,
        expires_at,
        now,
    };
    let account = AccountId(caller.user);
    match state
        .credits
        .execute(account, reserve, &format!("user:{}", caller.user))
        .await
    {
        Ok(_) => {}
        Err(CommandError::Rejected(CreditError::InsufficientCredits { available, .. })) => {
            return Err(GatewayError::InsufficientCredits {
                needed: max_cost,
                available,
            })
        }
        Err(CommandError::Rejected(CreditError::AccountNotOpen)) => {
            return Err(GatewayError::InsufficientCredits {
                needed: max_cost,
                available: Credits::ZERO,
            })
        }
        Err(CommandError::Unavailable(_)) => {
            return Err(GatewayError::Unavailable("the event store is unavailable"))
        }
        Err(err) => return Err(GatewayError::Internal(anyhow::anyhow!(err.to_string()))),
    }

    let topology = &state.topology;
    let (reply_subject, registration, replies) = state.replies.register(&request_id);
    let command = InferenceCommand {
        request_id: request_id.clone(),
        account: caller.user,
        api_key: caller.api_key,
        model: params.model.clone(),
        messages: params.messages,
        max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        stop: params.stop,
        prompt_tokens,
        whole: params.whole,
        reserved_micros: max_cost.micros(),
        price: price.into(),
        price_version: info.price_version.clone(),
        accepted_at: now,
        start_by: expires_at - chrono::Duration::from_std(EXPIRY_MARGIN).unwrap_or_default(),
        reply_subject: Some(reply_subject),
    };
    let body = serde_json::to_vec(&command).map_err(|e| GatewayError::Internal(e.into()))?;
    let published = state
        .js
        .send_publish(
            topology.inference_command_subject(),
            PublishMessage::build()
                .payload(body.into())
                .message_id(request_id.clone()),
        )
        .await;
    let acked = match published {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if !acked {
        release(state, account, rid).await;
        return Err(GatewayError::Unavailable(
            "the command queue is unavailable",
        ));
    }
    Ok(Submission {
        request_id: request_id.clone(),
        model: params.model,
        created: now.timestamp(),
        prompt_tokens,
        replies,
        _registration: registration,
        client: state.nats.clone(),
        cancel_subject: topology.inference_cancel_subject(&request_id),
        idle: Duration::from_millis(models.first_token_timeout_ms.max(models.total_timeout_ms))
            + Duration::from_secs(5),
        done: false,
    })
}

async fn release(state: &Hub, account: AccountId, request_id: RequestId) {
    let release = CreditCommand::ReleaseReservation { request_id };
    if let Err(err) = state.credits.execute(account, release, "gateway").await {
        tracing::warn!(error = %err, "could not release a reservation; it will expire");
    }
}

/// An API key with a spending limit may not have charged plus reserved more than it.
async fn check_key_limit(
    state: &Hub,
    caller: &Payer,
    key: hub_domain::ApiKeyId,
    max_cost: Credits,
) -> Result<(), GatewayError> {
    let user = state
        .users
        .load(UserId(caller.user))
        .await
        .map_err(|_| GatewayError::Unavailable("the event store is unavailable"))?;
    let Some(limit) = user.api_key(key).and_then(|k| k.spending_limit()) else {
        return Ok(());
    };
    let spent: Option<i64> = sqlx::query_scalar(
        "SELECT sum(charged_micros)::bigint FROM usage_records WHERE api_key_id = $1",
    )
    .bind(key.0)
    .fetch_one(&state.pool)
    .await
    .map_err(|_| GatewayError::Unavailable("the database is unavailable"))?;
    if spent.unwrap_or(0).saturating_add(max_cost.micros()) > limit.micros() {
        return Err(GatewayError::KeySpendingLimit);
    }
    Ok(())
}

/// The answers to this process's requests, taken from NATS with one subscription
/// (`<inbox>.*`) and handed to each waiting request. Subscribing per request would change the
/// server's interest graph twice per request, which costs the server more than the answer.
pub struct Replies {
    inbox: String,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Bytes>>>,
}

impl Replies {
    /// Subscribes to a fresh inbox and spawns the task that dispatches its messages.
    pub async fn start(
        nats: &async_nats::Client,
        topology: &hub_nats::Topology,
    ) -> Result<Arc<Replies>, async_nats::SubscribeError> {
        let inbox = topology.inference_reply_inbox(&Uuid::new_v4().simple().to_string());
        let mut subscription = nats.subscribe(format!("{inbox}.*")).await?;
        let replies = Arc::new(Replies {
            inbox,
            waiting: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&replies);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(replies) = weak.upgrade() else {
                    break;
                };
                let Some(request_id) = message.subject.as_str().rsplit('.').next() else {
                    continue;
                };
                let waiting = replies
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|waiting| waiting.get(request_id).cloned());
                // No one waiting: the client went away and its cancellation is on its way.
                if let Some(sender) = waiting {
                    let _ = sender.send(message.payload);
                }
            }
        });
        Ok(replies)
    }

    /// The reply subject for `request_id`, and its answers until the registration drops.
    fn register(
        self: &Arc<Self>,
        request_id: &str,
    ) -> (String, Registration, mpsc::UnboundedReceiver<Bytes>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(request_id.to_string(), sender);
        }
        let registration = Registration {
            replies: self.clone(),
            request_id: request_id.to_string(),
        };
        (
            format!("{}.{request_id}", self.inbox),
            registration,
            receiver,
        )
    }
}

/// A request waiting for its answer; dropping it stops the dispatch to it.
struct Registration {
    replies: Arc<Replies>,
    request_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.replies.waiting.lock() {
            waiting.remove(&self.request_id);
        }
    }
}
