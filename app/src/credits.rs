//! Granting credits: an admin gives a user credits, once per idempotency key, and the answer
//! waits (a bounded while) until the balance read model shows the grant.

use hub_commands::CommandError;
use hub_domain::{AccountId, CreditCommand, CreditError, CreditEvent, Credits, IdempotencyKey};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

use crate::queries::balances::{self, Balance};
use crate::Hub;

/// An `Idempotency-Key` that is not 1-128 characters of letters, digits and `. _ : -`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1-128 characters of letters, digits and . _ : -")]
pub struct InvalidKey;

/// Read a client's idempotency key (surrounding blanks ignored).
pub fn idempotency_key(raw: &str) -> Result<IdempotencyKey, InvalidKey> {
    IdempotencyKey::parse(raw.trim()).map_err(|_| InvalidKey)
}

/// How long a write's answer waits for the read models to show it
/// (`credits.read_your_writes_wait_ms`).
pub(crate) fn read_your_writes_wait(hub: &Hub) -> Duration {
    Duration::from_millis(hub.settings.credits.read_your_writes_wait_ms)
}

/// A grant as an admin asks for it.
#[derive(Debug, Clone)]
pub struct GrantRequest<'a> {
    /// The admin granting.
    pub admin: Uuid,
    pub user: Uuid,
    /// The client's idempotency key, as sent; `None` when it sent none.
    pub key: Option<&'a str>,
    /// Integer micro-credits, greater than zero.
    pub amount_micros: i64,
    pub reason: &'a str,
}

/// Why a grant was not made.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("the Idempotency-Key header is required")]
    MissingKey,
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    #[error("{0}")]
    InvalidAmount(String),
    #[error("reason must not be empty")]
    EmptyReason,
    #[error(transparent)]
    Command(#[from] CommandError<CreditError>),
    #[error("could not read the balance")]
    Database(#[from] sqlx::Error),
    #[error("a grant produced no CreditsGranted event")]
    NoGrantEvent,
}

/// A grant made (or, under a repeated key, the one made first).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Granted {
    pub user_id: Uuid,
    pub amount_micros: i64,
    pub reason: String,
    pub granted_by: String,
    pub idempotency_key: String,
    /// The balance right after this grant, from its event.
    pub balance_after_micros: i64,
    /// The request repeated an earlier `Idempotency-Key`: nothing new was granted.
    pub replayed: bool,
    /// The balance as `GET /api/credits/balance` now shows it.
    pub balance: Balance,
    /// Whether the read model caught up within the wait bound.
    pub visible: bool,
}

/// Grant credits to a user (opening their account if need be); a repeated key answers the
/// first grant with `replayed`.
pub async fn grant(hub: &Hub, request: GrantRequest<'_>) -> Result<Granted, GrantError> {
    let key = idempotency_key(request.key.ok_or(GrantError::MissingKey)?)?;
    let amount = Credits::positive(request.amount_micros)
        .map_err(|e| GrantError::InvalidAmount(e.to_string()))?;
    let reason = request.reason.trim().to_string();
    if reason.is_empty() {
        return Err(GrantError::EmptyReason);
    }
    let committed = hub
        .credits
        .credit(
            AccountId(request.user),
            CreditCommand::GrantCredits {
                key: key.clone(),
                amount,
                reason,
                granted_by: request.admin.to_string(),
            },
            &format!("user:{}", request.admin),
        )
        .await?;
    let Some(CreditEvent::CreditsGranted {
        amount,
        reason,
        granted_by,
        balance_after,
        ..
    }) = committed.decisive
    else {
        return Err(GrantError::NoGrantEvent);
    };
    let after = balances::after_write(
        &hub.pool,
        request.user,
        committed.version,
        read_your_writes_wait(hub),
    )
    .await?;
    Ok(Granted {
        user_id: request.user,
        amount_micros: amount.micros(),
        reason,
        granted_by,
        idempotency_key: key.to_string(),
        balance_after_micros: balance_after.micros(),
        replayed: committed.replayed,
        balance: after.balance,
        visible: after.visible,
    })
}
