//! `/api/credits`: an account's balance and its ledger, from the read models.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use hub_app::queries::balances::Balance;
use hub_app::queries::{self, ledger::LedgerEntry};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Another user's account: admins and auditors only.
    pub user_id: Option<Uuid>,
}

/// `GET /api/credits/balance`
#[utoipa::path(
    get,
    path = "/api/credits/balance",
    tag = "credits",
    params(AccountQuery),
    responses((status = 200, description = "OK", body = Balance), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn balance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> Result<Json<Balance>, ApiError> {
    let account = queries::account_for(caller.user, &caller.roles, query.user_id)?;
    Ok(Json(
        queries::balances::balance(&state.pool, account).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    pub user_id: Option<Uuid>,
    /// 1..=200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerPage {
    pub account_id: Uuid,
    pub data: Vec<LedgerEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/credits/transactions`: the caller's ledger, newest first.
#[utoipa::path(
    get,
    path = "/api/credits/transactions",
    tag = "credits",
    params(LedgerQuery),
    responses((status = 200, description = "The ledger, newest first", body = LedgerPage), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn transactions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<LedgerPage>, ApiError> {
    let account = queries::account_for(caller.user, &caller.roles, query.user_id)?;
    let page =
        queries::ledger::page(&state.pool, account, query.limit, query.cursor.as_deref()).await?;
    Ok(Json(LedgerPage {
        account_id: account,
        data: page.items,
        next_cursor: page.next_cursor,
    }))
}
