//! `/api/admin/users`: admins list users, grant or revoke roles, and suspend users or lift
//! a suspension.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::auth::{Caller, Role};
use crate::error::money::admin_listing;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::auth::{UserEnvelope, UserView};
use crate::state::AppState;
use hub_app::queries::users::{self, UserRow};
use hub_app::users::{change_role, change_suspension, RoleChange, SuspensionChange};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only addresses containing this text.
    pub email: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub users: Vec<UserRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/admin/users` — admin. Oldest first, from the `users` read model.
#[utoipa::path(
    get,
    path = "/api/admin/users",
    tag = "admin",
    params(ListQuery),
    responses((status = 200, description = "OK", body = UserPage), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserPage>, ApiError> {
    caller.require(&[Role::Admin])?;
    let page = users::list(
        &state.pool,
        query.email.as_deref(),
        query.limit,
        query.cursor.as_deref(),
    )
    .await
    .map_err(admin_listing)?;
    Ok(Json(UserPage {
        users: page.items,
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: String,
}

/// `POST /api/admin/users/{id}/roles` `{role}` — admin. Granting a held role changes nothing.
/// The user's access tokens carry the new roles from their next refresh.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/roles",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    request_body = RoleBody,
    responses((status = 200, description = "The user's roles now", body = UserEnvelope), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn grant_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Json<UserEnvelope>, ApiError> {
    caller.require(&[Role::Admin])?;
    let (user, loaded) =
        change_role(&state, caller.user, &id, &body.role, RoleChange::Grant).await?;
    Ok(Json(UserEnvelope {
        user: UserView::of(user, &loaded),
    }))
}

/// `DELETE /api/admin/users/{id}/roles/{role}` — admin. The `user` role cannot be revoked.
/// The user's access tokens minted before it are refused from the next request (401
/// `session_ended`); a refresh gives one without the role.
#[utoipa::path(
    delete,
    path = "/api/admin/users/{id}/roles/{role}",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id"), ("role" = String, Path, description = "user, admin, analyst or auditor")),
    responses((status = 200, description = "The user's roles now", body = UserEnvelope), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn revoke_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<UserEnvelope>, ApiError> {
    caller.require(&[Role::Admin])?;
    let (user, loaded) = change_role(&state, caller.user, &id, &role, RoleChange::Revoke).await?;
    Ok(Json(UserEnvelope {
        user: UserView::of(user, &loaded),
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspensionBody {
    /// Why (kept in the event, shown to admins).
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuspensionView {
    pub user: UserView,
    pub suspended: bool,
    pub suspended_at: Option<chrono::DateTime<chrono::Utc>>,
    pub reason: Option<String>,
    pub suspended_by: Option<String>,
}

impl SuspensionView {
    fn of(id: hub_domain::UserId, user: &hub_domain::User) -> Self {
        let suspension = user.suspension();
        SuspensionView {
            user: UserView::of(id, user),
            suspended: suspension.is_some(),
            suspended_at: suspension.map(|s| s.since()),
            reason: suspension.map(|s| s.reason().as_str().to_string()),
            suspended_by: suspension.map(|s| s.by().to_string()),
        }
    }
}

async fn suspension(
    state: &AppState,
    caller: &Caller,
    id: &str,
    body: SuspensionBody,
    change: SuspensionChange,
) -> Result<Json<SuspensionView>, ApiError> {
    caller.require(&[Role::Admin])?;
    let reason = body.reason.unwrap_or_default();
    let (user, loaded) = change_suspension(state, caller.user, id, &reason, change).await?;
    Ok(Json(SuspensionView::of(user, &loaded)))
}

/// `POST /api/admin/users/{id}/suspend` `{reason}` — admin, not on their own account. Every
/// credential of the user (access tokens, refresh tokens, API keys, open WebSockets) is
/// refused from its next use. Suspending a suspended user changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/suspend",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    request_body = SuspensionBody,
    responses((status = 200, description = "OK", body = SuspensionView), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn suspend(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SuspensionBody>,
) -> Result<Json<SuspensionView>, ApiError> {
    suspension(&state, &caller, &id, body, SuspensionChange::Suspend).await
}

/// `POST /api/admin/users/{id}/unsuspend` `{reason}` — admin. The user signs in again;
/// their API keys work again; nothing else issued before the suspension does.
#[utoipa::path(
    post,
    path = "/api/admin/users/{id}/unsuspend",
    tag = "admin",
    params(("id" = String, Path, description = "The user's id")),
    request_body = SuspensionBody,
    responses((status = 200, description = "OK", body = SuspensionView), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn unsuspend(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SuspensionBody>,
) -> Result<Json<SuspensionView>, ApiError> {
    suspension(&state, &caller, &id, body, SuspensionChange::Unsuspend).await
}
