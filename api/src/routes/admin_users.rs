//! `/api/admin/users`: admins list users and grant or revoke roles.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use hub_commands::CommandError;
use hub_domain::{Role, UserCommand, UserError, UserId};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::auth::UserView;
use crate::state::AppState;

const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 200;

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
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub email_verified: bool,
    pub has_password: bool,
    pub google_linked: bool,
    pub api_keys_live: i32,
    pub registered_at: DateTime<Utc>,
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
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be 1 to {PAGE_MAX}"),
        ));
    }
    let after: Option<(DateTime<Utc>, Uuid)> = match &query.cursor {
        None => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API gave")
        })?),
    };
    let pattern = query
        .email
        .as_deref()
        .map(|e| format!("%{}%", e.trim().to_lowercase().replace(['%', '_'], "")));
    let rows = sqlx::query(
        "SELECT user_id, email, display_name, roles, email_verified, has_password,
                google_linked, api_keys_live, registered_at
           FROM users
          WHERE ($1::timestamptz IS NULL OR (registered_at, user_id) > ($1, $2))
            AND ($3::text IS NULL OR email LIKE $3)
          ORDER BY registered_at, user_id
          LIMIT $4",
    )
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(pattern)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let mut users = rows
        .iter()
        .map(|row| {
            Ok(UserRow {
                id: row.try_get("user_id")?,
                email: row.try_get("email")?,
                display_name: row.try_get("display_name")?,
                roles: row.try_get("roles")?,
                email_verified: row.try_get("email_verified")?,
                has_password: row.try_get("has_password")?,
                google_linked: row.try_get("google_linked")?,
                api_keys_live: row.try_get("api_keys_live")?,
                registered_at: row.try_get("registered_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_cursor = if users.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        users.pop();
        users
            .last()
            .map(|u| format!("{}_{}", u.registered_at.timestamp_micros(), u.id.simple()))
    } else {
        None
    };
    Ok(Json(UserPage { users, next_cursor }))
}

fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = cursor.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, Uuid::parse_str(id).ok()?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: String,
}

fn parse_role(raw: &str) -> Result<Role, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_role",
            "role must be user, admin, analyst or auditor",
        )
    })
}

fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    Uuid::parse_str(raw)
        .map(UserId)
        .map_err(|_| ApiError::not_found("no user with this id"))
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
    let user = parse_user(&id)?;
    let role = parse_role(&body.role)?;
    let command = UserCommand::GrantRole {
        role,
        granted_by: caller.user.to_string(),
    };
    change_role(&state, user, command, &caller).await
}

/// `DELETE /api/admin/users/{id}/roles/{role}` — admin. The `user` role cannot be revoked.
pub async fn revoke_role(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let user = parse_user(&id)?;
    let role = parse_role(&role)?;
    let command = UserCommand::RevokeRole {
        role,
        revoked_by: caller.user.to_string(),
    };
    change_role(&state, user, command, &caller).await
}

async fn change_role(
    state: &AppState,
    user: UserId,
    command: UserCommand,
    caller: &Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    match state
        .users
        .execute(user, command, &format!("user:{}", caller.user))
        .await
    {
        Ok(_) => {}
        Err(CommandError::Rejected(UserError::NotRegistered)) => {
            return Err(ApiError::not_found("no user with this id"))
        }
        Err(err) => return Err(err.into()),
    }
    let loaded = state.users.load(user).await?;
    Ok(Json(
        serde_json::json!({ "user": UserView::of(user, &loaded) }),
    ))
}
