//! Promo codes: admins create, list, disable and enable them (`/api/admin/promos`); users
//! redeem them (`/api/promos/redeem`). Codes are trimmed and case-insensitive.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::auth::{Caller, Role};
use crate::error::money::admin_listing;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use hub_app::promos::{self, Activation, NewPromo, PromoChanged, Redeemed};
use hub_app::queries::promos::PromoRow;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePromoBody {
    /// 3 to 64 of `[A-Za-z0-9_-]`; stored uppercase.
    pub code: String,
    /// Credits each redemption gives, in micro-credits (1 credit = 1,000,000).
    #[serde(alias = "creditsMicros")]
    pub credits_micros: i64,
    /// How many users may redeem it in all.
    #[serde(alias = "maxRedemptions")]
    pub max_redemptions: u32,
    #[serde(default, alias = "validFrom")]
    pub valid_from: Option<DateTime<Utc>>,
    #[serde(default, alias = "validUntil")]
    pub valid_until: Option<DateTime<Utc>>,
    /// Default true.
    #[serde(default)]
    pub active: Option<bool>,
}

/// `POST /api/admin/promos` — admin.
#[utoipa::path(
    post,
    path = "/api/admin/promos",
    tag = "promos",
    request_body = CreatePromoBody,
    responses((status = 201, description = "Created", body = PromoChanged), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreatePromoBody>,
) -> Result<(StatusCode, Json<PromoChanged>), ApiError> {
    caller.require(&[Role::Admin])?;
    let new = NewPromo {
        code: body.code,
        credits_micros: body.credits_micros,
        max_redemptions: body.max_redemptions,
        valid_from: body.valid_from,
        valid_until: body.valid_until,
        active: body.active.unwrap_or(true),
    };
    let changed = promos::create(&state, caller.user, new).await?;
    Ok((StatusCode::CREATED, Json(changed)))
}

/// `POST /api/admin/promos/{code}/disable` — admin. Disabling a disabled code changes
/// nothing.
#[utoipa::path(
    post,
    path = "/api/admin/promos/{code}/disable",
    tag = "promos",
    params(("code" = String, Path, description = "The promo code")),
    responses((status = 200, description = "OK", body = PromoChanged), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn disable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<PromoChanged>, ApiError> {
    caller.require(&[Role::Admin])?;
    let changed = promos::set_active(&state, caller.user, &code, Activation::Disable).await?;
    Ok(Json(changed))
}

/// `POST /api/admin/promos/{code}/enable` — admin. Enabling an active code changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/promos/{code}/enable",
    tag = "promos",
    params(("code" = String, Path, description = "The promo code")),
    responses((status = 200, description = "OK", body = PromoChanged), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn enable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<PromoChanged>, ApiError> {
    caller.require(&[Role::Admin])?;
    let changed = promos::set_active(&state, caller.user, &code, Activation::Enable).await?;
    Ok(Json(changed))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PromoPage {
    pub promos: Vec<PromoRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/admin/promos` — admin. Oldest first, with redemption counts, from the
/// `promo_codes` read model.
#[utoipa::path(
    get,
    path = "/api/admin/promos",
    tag = "promos",
    params(ListQuery),
    responses((status = 200, description = "OK", body = PromoPage), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<PromoPage>, ApiError> {
    caller.require(&[Role::Admin])?;
    let page = hub_app::queries::promos::list(&state.pool, query.limit, query.cursor.as_deref())
        .await
        .map_err(admin_listing)?;
    Ok(Json(PromoPage {
        promos: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    pub code: String,
}

/// `POST /api/promos/redeem {code}` — any signed-in caller, for their own account. Each
/// user redeems a code once; a retry after a failure completes the first redemption.
#[utoipa::path(
    post,
    path = "/api/promos/redeem",
    tag = "promos",
    request_body = RedeemBody,
    responses((status = 200, description = "OK", body = Redeemed), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn redeem(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Json<Redeemed>, ApiError> {
    Ok(Json(promos::redeem(&state, caller.user, &body.code).await?))
}
