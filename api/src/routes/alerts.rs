//! `/api/alerts/low-balance`: the caller's low-balance alert — the threshold below which
//! their available balance is warned about (by email, and by a signed webhook if they set
//! one). Always the caller's own: there is no way to name another user.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use hub_app::alerts::{self, LowBalanceAlert, NewLowBalanceAlert};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LowBalanceBody {
    /// Warn when the available balance falls below this many micro-credits (1 credit =
    /// 1,000,000; 0: never). Absent or null: the hub's default.
    #[serde(default)]
    pub threshold_micros: Option<i64>,
    /// An `http` or `https` URL to post a signed event to; absent or null: none.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Issue a new signing secret for the same URL (a new URL always gets one).
    #[serde(default)]
    pub rotate_webhook_secret: bool,
}

/// `GET /api/alerts/low-balance`
#[utoipa::path(
    get,
    path = "/api/alerts/low-balance",
    tag = "credits",
    responses((status = 200, description = "The caller's low-balance alert", body = LowBalanceAlert), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn get_low_balance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<LowBalanceAlert>, ApiError> {
    Ok(Json(alerts::low_balance(&state, caller.user).await?))
}

/// `PUT /api/alerts/low-balance`: replaces the whole setting. The answer carries
/// `webhook_secret` when this change issued one (shown this once).
#[utoipa::path(
    put,
    path = "/api/alerts/low-balance",
    tag = "credits",
    request_body = LowBalanceBody,
    responses((status = 200, description = "The alert as set", body = LowBalanceAlert), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn put_low_balance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<LowBalanceBody>,
) -> Result<Json<LowBalanceAlert>, ApiError> {
    let new = NewLowBalanceAlert {
        threshold_micros: body.threshold_micros,
        webhook_url: body.webhook_url,
        rotate_webhook_secret: body.rotate_webhook_secret,
    };
    Ok(Json(
        alerts::set_low_balance(&state, caller.user, new).await?,
    ))
}
