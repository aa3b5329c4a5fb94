//! The `users` read model: registered users, oldest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::page::{CursorKey, Limits, Page, TimeCursor};
use crate::queries::QueryError;

/// Page size bounds for the list of users, in rows.
pub const LIMITS: Limits = Limits {
    default: 50,
    max: 200,
};

impl CursorKey for Uuid {
    fn encode_key(&self) -> String {
        self.simple().to_string()
    }

    fn decode_key(raw: &str) -> Option<Self> {
        Uuid::parse_str(raw).ok()
    }
}

/// A user as the read model has it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// Set while the user is suspended.
    pub suspended_at: Option<DateTime<Utc>>,
}

/// One page of users, oldest first, only those whose address contains `email` if given;
/// `cursor` is the previous page's `next_cursor`.
pub async fn list(
    pool: &PgPool,
    email: Option<&str>,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<UserRow>, QueryError> {
    let request = LIMITS.request::<TimeCursor<Uuid>>(limit, cursor)?;
    // LIKE's wildcards are dropped from the filter: it matches text, not patterns.
    let pattern = email.map(|e| format!("%{}%", e.trim().to_lowercase().replace(['%', '_'], "")));
    let rows = sqlx::query(
        "SELECT user_id, email, display_name, roles, email_verified, has_password,
                google_linked, api_keys_live, registered_at, suspended_at
           FROM users
          WHERE ($1::timestamptz IS NULL OR (registered_at, user_id) > ($1, $2))
            AND ($3::text IS NULL OR email LIKE $3)
          ORDER BY registered_at, user_id
          LIMIT $4",
    )
    .bind(request.after.as_ref().map(|c| c.at))
    .bind(request.after.as_ref().map(|c| c.key))
    .bind(pattern)
    .bind(request.fetch_limit())
    .fetch_all(pool)
    .await?;
    let users = rows
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
                suspended_at: row.try_get("suspended_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(request.page(users, |u| TimeCursor {
        at: u.registered_at,
        key: u.id,
    }))
}
