//! The submit pipeline: a chat request accepted, paid for in advance and handed to a worker.
//!
//! 1. [`validate`]: messages present with known roles, the model configured, and every
//!    parameter one the model can take;
//! 2. [`require_verified_email`]: the verified-email policy (people and their API keys alike);
//! 3. [`estimate`]: the prompt counted, `max_tokens` capped, the most it can cost;
//! 4. [`reserve`]: that much reserved on the payer's account (402 when it is short, or when
//!    an API key's charges and holds would pass its spending limit: decided by the account
//!    in the same step, [`key_limit`]);
//! 5. [`publish`]: registered with this process's [`Replies`](crate::replies::Replies), then the command, naming
//!    the reply subject, published to `HUB_COMMANDS` with `Nats-Msg-Id` = request id and
//!    the trace context of the span `publish` (the reservation is released when the queue
//!    does not take it);
//! 6. the answer is awaited through the returned [`Submission`].

use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use hub_commands::CommandError;
use hub_domain::{AccountId, CreditCommand, CreditError, Credits, KeyLimit, RequestId};
use hub_workers::wire::InferenceCommand;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use super::estimate::{estimate, Estimate};
use super::limits::{key_limit, load_payer, require_verified_email};
use super::validate::validate;
use super::{Chat, GatewayError, Payer, Submission, EVENT_STORE_UNAVAILABLE};
use crate::hub::Hub;
use crate::replies::Registration;

/// Margin between the request's deadline and its reservation's expiry: time for the worker
/// to settle or release it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Added to the worker's own timeouts before a silent request counts as lost.
const LOST_WORKER_MARGIN: Duration = Duration::from_secs(5);

/// Validate, check, estimate, reserve and publish; the answer comes from the [`Submission`].
///
/// Traced under the span the caller is in (the HTTP request's); a chat that runs on a task
/// of its own, outside any span (an MCP tool call), gets a root span `chat`, so that its
/// reservation, its publish and the worker's spans are one trace.
pub async fn submit(hub: &Arc<Hub>, payer: &Payer, chat: Chat) -> Result<Submission, GatewayError> {
    if tracing::Span::current().is_none() {
        let span = tracing::info_span!("chat", model = %chat.model);
        return tracing::Instrument::instrument(submit_traced(hub, payer, chat), span).await;
    }
    submit_traced(hub, payer, chat).await
}

async fn submit_traced(
    hub: &Arc<Hub>,
    payer: &Payer,
    chat: Chat,
) -> Result<Submission, GatewayError> {
    // Held until the command is queued: bounds the work (and memory) of a burst.
    let _admitted = hub
        .admission
        .try_acquire()
        .map_err(|_| GatewayError::Overloaded)?;
    let model = validate(&hub.router, &chat)?;
    let user = load_payer(hub, payer).await?;
    require_verified_email(hub, user.as_deref())?;
    let estimate = estimate(&hub.router, &model, &chat).await?;
    // Rate limits: its tokens (prompt + the most it may generate) per minute, or 429.
    let tokens = estimate.prompt_tokens + u64::from(estimate.max_tokens);
    let taken = crate::rate_limits::take_tokens(hub, payer, user.as_deref(), tokens).await?;
    let key = key_limit(payer, user.as_deref());
    let reservation = reserve(hub, payer, key, estimate.max_cost).await?;
    let (model, prompt_tokens) = (chat.model.clone(), estimate.prompt_tokens);
    let mut submission = publish(
        hub,
        reservation,
        model,
        prompt_tokens,
        |reservation, registration| command(payer, chat, estimate, reservation, registration),
    )
    .await?;
    // Corrected at settlement: what the answer does not use goes back to the budget.
    submission.tokens_taken = taken.map(|taken| (hub.clone(), taken));
    Ok(submission)
}

/// Credits held for one request until a worker settles or releases them.
pub(super) struct Reservation {
    /// `req_<32 hex>`: one subject token, and the reservation's id.
    pub(super) request_id: String,
    /// The same, as the credit account knows it.
    id: RequestId,
    account: AccountId,
    pub(super) accepted_at: DateTime<Utc>,
    /// The request's one deadline: acceptance plus `models.total_timeout_ms`. Every upstream
    /// attempt, retry and fallback ends by then.
    pub(super) deadline: DateTime<Utc>,
}

/// Step 4: reserve `max_cost` on the payer's account for a new request, within the API
/// key's spending limit. Traced as the span `reserve`.
#[tracing::instrument(
    name = "reserve",
    skip_all,
    fields(request = tracing::field::Empty, reserved_micros = max_cost.micros())
)]
pub(super) async fn reserve(
    hub: &Hub,
    payer: &Payer,
    key: Option<KeyLimit>,
    max_cost: Credits,
) -> Result<Reservation, GatewayError> {
    let request_id = format!("req_{}", Uuid::new_v4().simple());
    let rid = RequestId::parse(&request_id).map_err(|e| GatewayError::Internal(e.into()))?;
    tracing::Span::current().record("request", request_id.as_str());
    let now = hub.clock.now();
    let duration =
        |d: Duration| chrono::Duration::from_std(d).map_err(|e| GatewayError::Internal(e.into()));
    let deadline = now + duration(Duration::from_millis(hub.settings.models.total_timeout_ms))?;
    // The worker settles or releases by the deadline; the margin is its time to do so.
    let expires_at = deadline + duration(EXPIRY_MARGIN)?;
    let reserve = CreditCommand::ReserveCredits {
        request_id: rid.clone(),
        amount: max_cost,
        expires_at,
        now,
        key,
    };
    let account = AccountId(payer.user);
    let short = |available| GatewayError::InsufficientCredits {
        needed: max_cost,
        available,
    };
    match hub
        .credits
        .execute(account, reserve, &format!("user:{}", payer.user))
        .await
    {
        Ok(_) => Ok(Reservation {
            request_id,
            id: rid,
            account,
            accepted_at: now,
            deadline,
        }),
        Err(CommandError::Rejected(CreditError::InsufficientCredits { available, .. })) => {
            Err(short(available))
        }
        Err(CommandError::Rejected(CreditError::KeySpendingLimit { .. })) => {
            Err(GatewayError::KeySpendingLimit)
        }
        Err(CommandError::Rejected(CreditError::AccountNotOpen)) => Err(short(Credits::ZERO)),
        Err(CommandError::Unavailable(_)) => Err(EVENT_STORE_UNAVAILABLE),
        Err(err) => Err(GatewayError::Internal(anyhow::anyhow!(err.to_string()))),
    }
}

/// Step 5: queue the command `build` makes for a worker, listening for its answer first. A
/// command the queue did not take releases its reservation.
pub(super) async fn publish(
    hub: &Hub,
    reservation: Reservation,
    model: String,
    prompt_tokens: u64,
    build: impl FnOnce(&Reservation, &Registration) -> InferenceCommand,
) -> Result<Submission, GatewayError> {
    let registration = hub.replies.register(&reservation.request_id);
    let command = build(&reservation, &registration);
    let body = serde_json::to_vec(&command).map_err(|e| GatewayError::Internal(e.into()))?;
    let request_id = reservation.request_id.clone();
    let subject = hub.topology.inference_command_subject();
    // The worker's `process` span is this one's child: its context rides in the headers.
    let span = tracing::info_span!(
        "publish",
        otel.kind = "producer",
        request = %request_id,
        messaging.system = "nats",
        messaging.destination.name = %subject,
        otel.status_code = tracing::field::Empty,
    );
    let mut message = PublishMessage::build()
        .payload(body.into())
        .message_id(request_id.clone());
    if let Some(id) = &command.correlation_id {
        message = message.header("x-request-id", id.as_str());
    }
    for (name, value) in hub_nats::trace_context::headers(&span) {
        message = message.header(name.as_str(), value.as_str());
    }
    let acked = tracing::Instrument::instrument(
        async {
            match hub.js.send_publish(subject, message).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        },
        span.clone(),
    )
    .await;
    if !acked {
        span.record("otel.status_code", "ERROR");
    }
    drop(span);
    if !acked {
        release(hub, &reservation).await;
        return Err(GatewayError::Unavailable(
            "the command queue is unavailable",
        ));
    }
    let models = &hub.settings.models;
    Ok(Submission {
        cancel_subject: hub.topology.inference_cancel_subject(&request_id),
        request_id,
        model,
        created: reservation.accepted_at.timestamp(),
        prompt_tokens,
        registration,
        client: hub.nats.clone(),
        idle: Duration::from_millis(models.first_token_timeout_ms.max(models.total_timeout_ms))
            + LOST_WORKER_MARGIN,
        done: false,
        tokens_taken: None,
    })
}

/// The wire command for an accepted request: the one conversion from [`Chat`] to the wire.
fn command(
    payer: &Payer,
    chat: Chat,
    estimate: Estimate,
    reservation: &Reservation,
    registration: &Registration,
) -> InferenceCommand {
    InferenceCommand {
        request_id: reservation.request_id.clone(),
        account: payer.user,
        api_key: payer.api_key,
        model: chat.model,
        messages: chat.messages,
        max_tokens: estimate.max_tokens,
        temperature: chat.temperature,
        top_p: chat.top_p,
        stop: chat.stop,
        options: chat.options,
        embed: None,
        correlation_id: super::correlation(),
        prompt_tokens: estimate.prompt_tokens,
        whole: chat.whole,
        reserved_micros: estimate.max_cost.micros(),
        price: estimate.price.into(),
        price_version: estimate.price_version,
        accepted_at: reservation.accepted_at,
        start_by: reservation.deadline,
        deadline: Some(reservation.deadline),
        reply_subject: Some(registration.subject.clone()),
    }
}

/// Gives back a reservation no worker will settle.
async fn release(hub: &Hub, reservation: &Reservation) {
    let release = CreditCommand::ReleaseReservation {
        request_id: reservation.id.clone(),
    };
    if let Err(err) = hub
        .credits
        .execute(reservation.account, release, "gateway")
        .await
    {
        tracing::warn!(error = %err, "could not release a reservation; it will expire");
    }
}
