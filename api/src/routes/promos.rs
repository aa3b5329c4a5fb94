//! Promo codes: admins create, list, disable and enable them (`/api/admin/promos`); users
//! redeem them (`/api/promos/redeem`). Codes are trimmed and case-insensitive.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use hub_domain::{Credits, PromoCode, PromoCodeValue, PromoCommand, UserId};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::credits::{read_balance, wait_for_version, Balance};
use crate::state::AppState;

const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 200;

/// A string that names no code is answered as an unknown code.
fn parse_code(raw: &str) -> Result<PromoCodeValue, ApiError> {
    PromoCodeValue::parse(raw)
        .map_err(|_| ApiError::not_found_code("promo_code_unknown", "unknown promo code"))
}

/// A promo code as its aggregate has it now.
#[derive(Debug, Serialize)]
pub struct PromoView {
    pub code: String,
    /// Credits each redemption gives.
    pub credits_micros: i64,
    pub max_redemptions: u32,
    pub redemptions: u32,
    pub remaining: u32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
}

impl PromoView {
    fn of(code: &PromoCodeValue, promo: &PromoCode) -> Self {
        PromoView {
            code: code.to_string(),
            credits_micros: promo.credits().micros(),
            max_redemptions: promo.max_redemptions(),
            redemptions: promo.redemptions(),
            remaining: promo.remaining(),
            valid_from: promo.valid_from(),
            valid_until: promo.valid_until(),
            active: promo.is_active(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PromoChanged {
    pub promo: PromoView,
    /// Whether `GET /api/admin/promos` shows the change yet (waited up to
    /// `credits.read_your_writes_wait_ms`).
    pub visible: bool,
}

/// Wait until the `promo_codes` read model shows the code at `version` or later.
async fn wait_for_promo(
    pool: &PgPool,
    code: &PromoCodeValue,
    version: i64,
    max_wait: Duration,
) -> Result<bool, ApiError> {
    let deadline = Instant::now() + max_wait;
    let mut pause = Duration::from_millis(2);
    loop {
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT version FROM promo_codes WHERE code = $1")
                .bind(code.as_str())
                .fetch_optional(pool)
                .await?;
        if seen.is_some_and(|v| v >= version) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

async fn changed(
    state: &AppState,
    code: &PromoCodeValue,
    version: usize,
) -> Result<PromoChanged, ApiError> {
    let promo = state.promos.load(code).await?;
    let version = i64::try_from(version).map_err(|e| ApiError::internal(e))?;
    let wait = Duration::from_millis(state.settings.credits.read_your_writes_wait_ms);
    let visible = wait_for_promo(&state.pool, code, version, wait).await?;
    Ok(PromoChanged {
        promo: PromoView::of(code, &promo),
        visible,
    })
}

#[derive(Debug, Deserialize)]
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
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreatePromoBody>,
) -> Result<(StatusCode, Json<PromoChanged>), ApiError> {
    caller.require(&[Role::Admin])?;
    let code = PromoCodeValue::parse(&body.code)
        .map_err(|e| ApiError::bad_request("invalid_promo_code", e.to_string()))?;
    let committed = state
        .promos
        .execute(
            &code,
            PromoCommand::CreatePromoCode {
                code: code.clone(),
                credits: Credits::from_micros(body.credits_micros),
                max_redemptions: body.max_redemptions,
                valid_from: body.valid_from,
                valid_until: body.valid_until,
                active: body.active.unwrap_or(true),
                created_by: caller.user.to_string(),
                now: Utc::now(),
            },
            &format!("user:{}", caller.user),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(changed(&state, &code, committed.version).await?),
    ))
}

/// `POST /api/admin/promos/{code}/disable` — admin. Disabling a disabled code changes
/// nothing.
pub async fn disable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<PromoChanged>, ApiError> {
    set_active(&state, &caller, &code, |by, now| {
        PromoCommand::DisablePromoCode { by, now }
    })
    .await
}

/// `POST /api/admin/promos/{code}/enable` — admin. Enabling an active code changes nothing.
pub async fn enable(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Json<PromoChanged>, ApiError> {
    set_active(&state, &caller, &code, |by, now| {
        PromoCommand::EnablePromoCode { by, now }
    })
    .await
}

/// Disable or enable `code` as `caller` (an admin).
async fn set_active(
    state: &AppState,
    caller: &Caller,
    code: &str,
    command: impl FnOnce(String, chrono::DateTime<Utc>) -> PromoCommand,
) -> Result<Json<PromoChanged>, ApiError> {
    caller.require(&[Role::Admin])?;
    let code = parse_code(code)?;
    let committed = state
        .promos
        .execute(
            &code,
            command(caller.user.to_string(), Utc::now()),
            &format!("user:{}", caller.user),
        )
        .await?;
    Ok(Json(changed(state, &code, committed.version).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PromoRow {
    pub code: String,
    pub credits_micros: i64,
    pub max_redemptions: i32,
    pub redemptions: i32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct PromoPage {
    pub promos: Vec<PromoRow>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/admin/promos` — admin. Oldest first, with redemption counts, from the
/// `promo_codes` read model.
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<PromoPage>, ApiError> {
    caller.require(&[Role::Admin])?;
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {PAGE_MAX}"),
        ));
    }
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API gave")
        })?),
    };
    let rows = sqlx::query(
        "SELECT code, credits_micros, max_redemptions, redemptions, valid_from, valid_until,
                active, created_by, created_at
           FROM promo_codes
          WHERE ($1::timestamptz IS NULL OR (created_at, code) > ($1, $2))
          ORDER BY created_at, code
          LIMIT $3",
    )
    .bind(after.as_ref().map(|a| a.0))
    .bind(after.as_ref().map(|a| a.1.clone()))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let mut promos = rows
        .iter()
        .map(|row| {
            Ok(PromoRow {
                code: row.try_get("code")?,
                credits_micros: row.try_get("credits_micros")?,
                max_redemptions: row.try_get("max_redemptions")?,
                redemptions: row.try_get("redemptions")?,
                valid_from: row.try_get("valid_from")?,
                valid_until: row.try_get("valid_until")?,
                active: row.try_get("active")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_cursor = if promos.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        promos.pop();
        promos
            .last()
            .map(|p| format!("{}_{}", p.created_at.timestamp_micros(), p.code))
    } else {
        None
    };
    Ok(Json(PromoPage {
        promos,
        next_cursor,
    }))
}

fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, code) = cursor.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, PromoCodeValue::parse(code).ok()?.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    pub code: String,
}

#[derive(Debug, Serialize)]
pub struct Redeemed {
    pub code: String,
    pub user_id: Uuid,
    pub credits_micros: i64,
    /// The code's redemptions after this one.
    pub redemptions_after: Option<u32>,
    /// The balance right after the credits, from their event.
    pub balance_after_micros: i64,
    /// The balance as `GET /api/credits/balance` now shows it.
    pub balance: Balance,
    /// Whether the read model caught up within the wait bound.
    pub visible: bool,
}

/// `POST /api/promos/redeem {code}` — any signed-in caller, for their own account. Each
/// user redeems a code once; a retry after a failure completes the first redemption.
pub async fn redeem(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<RedeemBody>,
) -> Result<Json<Redeemed>, ApiError> {
    let code = parse_code(&body.code)?;
    let redemption = state
        .promos
        .redeem(&state.credits, &code, UserId(caller.user), Utc::now())
        .await?;
    let wait = Duration::from_millis(state.settings.credits.read_your_writes_wait_ms);
    let version = i64::try_from(redemption.account_version).map_err(|e| ApiError::internal(e))?;
    let visible = wait_for_version(&state.pool, caller.user, version, wait).await?;
    let balance = read_balance(&state.pool, caller.user).await?;
    Ok(Json(Redeemed {
        code: code.to_string(),
        user_id: caller.user,
        credits_micros: redemption.credits.micros(),
        redemptions_after: redemption.redemptions_after,
        balance_after_micros: redemption.balance_after.micros(),
        balance,
        visible,
    }))
}
