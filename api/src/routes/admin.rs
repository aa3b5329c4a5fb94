//! `/api/admin/credits`: admins grant credits.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use hub_app::credits::{self, GrantRequest, Granted};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub user_id: Uuid,
    /// Integer micro-credits (1 credit = 1,000,000), greater than zero.
    pub amount_micros: i64,
    pub reason: String,
}

/// `POST /api/admin/credits/grant` (admin). Requires an `Idempotency-Key` header; a repeat
/// returns the first grant with 200 and `replayed: true`.
#[utoipa::path(
    post,
    path = "/api/admin/credits/grant",
    tag = "admin",
    params(("Idempotency-Key" = String, Header, description = "Makes a retry return the first grant")),
    request_body = GrantBody,
    responses((status = 201, description = "Granted", body = Granted), (status = 200, description = "A repeated Idempotency-Key: the first grant", body = Granted), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn grant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<(StatusCode, Json<Granted>), ApiError> {
    caller.require(&[Role::Admin])?;
    // A header that is not text is no valid key: the empty key is refused as invalid.
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or_default());
    let granted = credits::grant(
        &state,
        GrantRequest {
            admin: caller.user,
            user: body.user_id,
            key,
            amount_micros: body.amount_micros,
            reason: &body.reason,
        },
    )
    .await?;
    let status = if granted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(granted)))
}
