//! `/api/audit`: what auditors read. Every route is a read, for the `auditor` and `admin`
//! roles only: a user, an analyst and an API key (which acts with its owner's `user` role
//! only) get 403. What each shows and proves is in docs/audit.md.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use hub_app::audit::accounts::{self, AccountAsOf, AsOfRequest};
use hub_app::audit::admin_actions::{self, AdminAction, RawActionFilter};
use hub_app::audit::ledger::{self, AuditLedgerEntry, RawLedgerFilter};
use hub_app::audit::reconciliation::{self, Reconciliation};
use hub_app::audit::trial_balance::{self, TrialBalance};
use hub_app::audit::AUDIT_ROLES;

/// A page of a listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/audit/ledger`'s filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub account: Option<String>,
    pub kind: Option<String>,
    pub cause_type: Option<String>,
    pub cause_id: Option<String>,
    pub actor: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// `GET /api/audit/ledger`: every account's entries, newest first, filtered.
#[utoipa::path(
    get,
    path = "/api/audit/ledger",
    tag = "audit",
    params(LedgerQuery),
    responses((status = 200, description = "OK", body = AuditPage<AuditLedgerEntry>), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn ledger(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<AuditPage<AuditLedgerEntry>>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    let filter = RawLedgerFilter {
        from: query.from,
        to: query.to,
        account: query.account,
        kind: query.kind,
        cause_type: query.cause_type,
        cause_id: query.cause_id,
        actor: query.actor,
    }
    .parse()?;
    let page = ledger::page(&state.pool, &filter, query.limit, query.cursor.as_deref()).await?;
    Ok(Json(AuditPage {
        data: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/audit/accounts/{id}`'s parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    pub as_of: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// `GET /api/audit/accounts/{id}?as_of=`: the account folded from its events up to a time.
#[utoipa::path(
    get,
    path = "/api/audit/accounts/{id}",
    tag = "audit",
    params(("id" = String, Path, description = "The account's (user's) id"), AccountQuery),
    responses((status = 200, description = "OK", body = AccountAsOf), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn account(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> Result<Json<AccountAsOf>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    let account: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_filter", "the account id must be a UUID"))?;
    let answer = accounts::as_of(
        &state.pool,
        state.clock.now(),
        AsOfRequest {
            account,
            as_of: query.as_of,
            limit: query.limit,
            cursor: query.cursor,
        },
    )
    .await?;
    Ok(Json(answer))
}

/// `GET /api/audit/trial-balance`'s parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TrialBalanceQuery {
    pub as_of: Option<String>,
}

/// `GET /api/audit/trial-balance?as_of=`: every system account and the users' accounts.
#[utoipa::path(
    get,
    path = "/api/audit/trial-balance",
    tag = "audit",
    params(TrialBalanceQuery),
    responses((status = 200, description = "OK", body = TrialBalance), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn trial_balance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TrialBalanceQuery>,
) -> Result<Json<TrialBalance>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    Ok(Json(
        trial_balance::trial_balance(&state.pool, state.clock.now(), query.as_of.as_deref())
            .await?,
    ))
}

/// `GET /api/audit/payments/reconciliation`'s parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// `GET /api/audit/payments/reconciliation?from&to`: each Stripe session and its credits.
#[utoipa::path(
    get,
    path = "/api/audit/payments/reconciliation",
    tag = "audit",
    params(ReconciliationQuery),
    responses((status = 200, description = "OK", body = Reconciliation), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn reconciliation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ReconciliationQuery>,
) -> Result<Json<Reconciliation>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    Ok(Json(
        reconciliation::reconciliation(
            &state.pool,
            query.from.as_deref(),
            query.to.as_deref(),
            query.limit,
            query.cursor.as_deref(),
        )
        .await?,
    ))
}

/// `GET /api/audit/admin-actions`'s filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AdminActionsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub actor: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// `GET /api/audit/admin-actions`: what admins did, newest first.
#[utoipa::path(
    get,
    path = "/api/audit/admin-actions",
    tag = "audit",
    params(AdminActionsQuery),
    responses((status = 200, description = "OK", body = AuditPage<AdminAction>), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn admin_actions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AdminActionsQuery>,
) -> Result<Json<AuditPage<AdminAction>>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    let page = admin_actions::page(
        &state.pool,
        RawActionFilter {
            from: query.from,
            to: query.to,
            actor: query.actor,
        },
        query.limit,
        query.cursor.as_deref(),
    )
    .await?;
    Ok(Json(AuditPage {
        data: page.items,
        next_cursor: page.next_cursor,
    }))
}
