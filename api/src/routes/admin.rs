use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hub_domain::{AccountId, CreditCommand, CreditEvent, Credits, IdempotencyKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::credits::{read_balance, wait_for_version, Balance};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub user_id: Uuid,
    /// Integer micro-credits (1 credit = 1,000,000), greater than zero.
    pub amount_micros: i64,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct GrantResponse {
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

/// `POST /api/admin/credits/grant` (admin). Requires an `Idempotency-Key` header; a repeat
/// returns the first grant with 200 and `replayed: true`.
pub async fn grant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<GrantRequest>,
) -> Result<(StatusCode, Json<GrantResponse>), ApiError> {
    caller.require(&[Role::Admin])?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_idempotency_key",
                "the Idempotency-Key header is required",
            )
        })?
        .to_str()
        .ok()
        .and_then(|k| IdempotencyKey::parse(k.trim()).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1-128 characters of letters, digits and . _ : -",
            )
        })?;
    let amount = Credits::positive(request.amount_micros)
        .map_err(|e| ApiError::bad_request("invalid_amount", e.to_string()))?;
    let reason = request.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_reason",
            "reason must not be empty",
        ));
    }
    let granted_by = caller.user.to_string();
    let committed = state
        .credits
        .credit(
            AccountId(request.user_id),
            CreditCommand::GrantCredits {
                key: key.clone(),
                amount,
                reason,
                granted_by: granted_by.clone(),
            },
            &format!("user:{}", caller.user),
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
        return Err(ApiError::internal(anyhow::anyhow!(
            "a grant produced no CreditsGranted event"
        )));
    };
    let wait = Duration::from_millis(state.settings.credits.read_your_writes_wait_ms);
    let version = i64::try_from(committed.version).map_err(|e| ApiError::internal(e))?;
    let visible = wait_for_version(&state.pool, request.user_id, version, wait).await?;
    let balance = read_balance(&state.pool, request.user_id).await?;
    let status = if committed.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(GrantResponse {
            user_id: request.user_id,
            amount_micros: amount.micros(),
            reason,
            granted_by,
            idempotency_key: key.to_string(),
            balance_after_micros: balance_after.micros(),
            replayed: committed.replayed,
            balance,
            visible,
        }),
    ))
}
