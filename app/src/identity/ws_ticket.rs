//! WebSocket tickets: how a browser opens the chat socket without putting its access token
//! in the URL, where proxies and servers log it.
//!
//! `POST /api/ws/ticket` (with the access token in the `Authorization` header) gives a
//! ticket: 256 random bits, stored as SHA-256, alive [`TICKET_TTL_S`] seconds, consumed by
//! the first connection that presents it (`GET /api/ws?ticket=…`). The ticket carries the
//! access token's user, roles, expiry and session version, so the socket it opens is
//! checked exactly as if that token had opened it.

use chrono::{DateTime, Duration, Utc};
use hub_adapters::secrets::{opaque_token, sha256_hash};
use hub_domain::{Role, UserId};
use sqlx::Row;

use super::access::Credential;
use super::IdentityError;
use crate::hub::Hub;

/// How long a ticket may wait for its connection, in seconds: a browser opens the socket
/// right after asking.
pub const TICKET_TTL_S: i64 = 30;

/// A ticket just issued: shown once.
#[derive(Debug)]
pub struct Ticket {
    pub ticket: String,
    /// Seconds until it stops working.
    pub expires_in: i64,
}

/// What a redeemed ticket stands for: the access token it was issued to.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub user: UserId,
    pub roles: Vec<Role>,
    pub credential: Credential,
}

/// Issue a ticket for `user`, holding an access token (already checked) with `roles` that
/// expires at `token_expires_at` and carries `session_version`.
pub async fn issue(
    hub: &Hub,
    user: UserId,
    roles: &[Role],
    token_expires_at: DateTime<Utc>,
    session_version: u32,
) -> Result<Ticket, IdentityError> {
    let now = hub.clock.now();
    // Tickets nobody used go as new ones come (the index on `expires_at` keeps this cheap).
    sqlx::query("DELETE FROM ws_tickets WHERE expires_at <= $1")
        .bind(now)
        .execute(&hub.pool)
        .await?;
    let ticket = opaque_token();
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    sqlx::query(
        "INSERT INTO ws_tickets
             (ticket_hash, user_id, roles, token_expires_at, session_version, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sha256_hash(&ticket).as_str())
    .bind(user.0)
    .bind(roles)
    .bind(token_expires_at)
    .bind(i64::from(session_version))
    .bind(now + Duration::seconds(TICKET_TTL_S))
    .execute(&hub.pool)
    .await?;
    Ok(Ticket {
        ticket,
        expires_in: TICKET_TTL_S,
    })
}

/// Consume a ticket: `None` when it is unknown, used or expired (the three answer alike).
/// The row goes in the same statement that reads it, so two connections presenting one
/// ticket cannot both get it.
pub async fn redeem(hub: &Hub, presented: &str) -> Result<Option<Redeemed>, IdentityError> {
    let row = sqlx::query(
        "DELETE FROM ws_tickets WHERE ticket_hash = $1 AND expires_at > $2
         RETURNING user_id, roles, token_expires_at, session_version",
    )
    .bind(sha256_hash(presented).as_str())
    .bind(hub.clock.now())
    .fetch_optional(&hub.pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let roles: Vec<String> = row.try_get("roles")?;
    let session_version: i64 = row.try_get("session_version")?;
    Ok(Some(Redeemed {
        user: UserId(row.try_get("user_id")?),
        roles: roles.iter().filter_map(|r| r.parse().ok()).collect(),
        credential: Credential::AccessToken {
            expires_at: row.try_get("token_expires_at")?,
            session_version: u32::try_from(session_version).unwrap_or(u32::MAX),
        },
    }))
}
