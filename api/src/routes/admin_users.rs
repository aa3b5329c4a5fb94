//! `/api/admin/users`: admins list users and grant or revoke roles.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::auth::{Caller, Role};
use crate::error::money::admin_listing;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::auth::UserView;
use crate::state::AppState;
use hub_app::queries::users::{self, UserRow};
use hub_app::users::{change_role, RoleChange};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only addresses containing this text.
    pub email: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UserPage {
    pub users: Vec<UserRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/admin/users` — admin. Oldest first, from the `users` read model.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: String,
}

/// `POST /api/admin/users/{id}/roles` `{role}` — admin. Granting a held role changes nothing.
/// The user's access tokens carry the new roles from their next refresh.
pub async fn grant_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let (user, loaded) =
        change_role(&state, caller.user, &id, &body.role, RoleChange::Grant).await?;
    Ok(Json(
        serde_json::json!({ "user": UserView::of(user, &loaded) }),
    ))
}

/// `DELETE /api/admin/users/{id}/roles/{role}` — admin. The `user` role cannot be revoked.
pub async fn revoke_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let (user, loaded) = change_role(&state, caller.user, &id, &role, RoleChange::Revoke).await?;
    Ok(Json(
        serde_json::json!({ "user": UserView::of(user, &loaded) }),
    ))
}
