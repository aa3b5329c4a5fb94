//! Session state that is not a fact about a user: refresh tokens and login throttling.
//!
//! Refresh tokens are opaque, stored as SHA-256, and rotated on every use. Each sign-in
//! starts a *family*; presenting a token that was already rotated means it was copied, so
//! the whole family is revoked and the caller must sign in again.
//!
//! Every function takes `now` (the hub's clock) rather than reading the database's clock,
//! so lifetimes and locks follow the same time as every other decision.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use hub_adapters::secrets::{opaque_token, sha256_hash};

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Refreshed {
    /// A new token replaced it (same family).
    Rotated { user: Uuid, token: String },
    /// It had already been rotated: its family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// Start a family: a new sign-in.
pub async fn start(
    pool: &PgPool,
    user: Uuid,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    issue(pool, user, Uuid::new_v4(), now + ttl).await
}

async fn issue<'e, E>(
    executor: E,
    user: Uuid,
    family: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<String, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let token = opaque_token();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(sha256_hash(&token).as_str())
    .bind(family)
    .bind(user)
    .bind(expires_at)
    .execute(executor)
    .await?;
    Ok(token)
}

/// Exchange a refresh token for its successor.
pub async fn rotate(
    pool: &PgPool,
    token: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Refreshed, sqlx::Error> {
    let hash = sha256_hash(token);
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT family_id, user_id, rotated_at, revoked_at, expires_at <= $2 AS expired
           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Refreshed::Invalid);
    };
    let family: Uuid = row.try_get("family_id")?;
    let user: Uuid = row.try_get("user_id")?;
    let rotated: Option<DateTime<Utc>> = row.try_get("rotated_at")?;
    let revoked: Option<DateTime<Utc>> = row.try_get("revoked_at")?;
    let expired: bool = row.try_get("expired")?;
    if revoked.is_some() || expired {
        return Ok(Refreshed::Invalid);
    }
    if rotated.is_some() {
        revoke_family_in(&mut tx, family, now).await?;
        tx.commit().await?;
        tracing::warn!(%user, %family, "refresh token reused: its family is revoked");
        return Ok(Refreshed::Reused);
    }
    sqlx::query("UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1")
        .bind(hash.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let next = issue(&mut *tx, user, family, now + ttl).await?;
    tx.commit().await?;
    Ok(Refreshed::Rotated { user, token: next })
}

async fn revoke_family_in(
    conn: &mut sqlx::PgConnection,
    family: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2
          WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// End the sign-in a token belongs to (logout). Unknown tokens are ignored.
pub async fn end(pool: &PgPool, token: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2
          WHERE revoked_at IS NULL
            AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(sha256_hash(token).as_str())
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// End every sign-in of a user (password reset).
pub async fn end_all(pool: &PgPool, user: Uuid, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $2
          WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Where failed logins are counted.
#[derive(Debug, Clone, Copy)]
pub enum ThrottleScope {
    /// The normalised email asked for, whether or not a user has it.
    Account,
    /// The client's address.
    Ip,
}

impl ThrottleScope {
    fn as_str(self) -> &'static str {
        match self {
            ThrottleScope::Account => "account",
            ThrottleScope::Ip => "ip",
        }
    }
}

/// How failed logins slow a key down.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed in `window` before a lock.
    pub free_failures: i32,
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// The lock doubles with each failure past the free ones, up to this.
    pub lock_max: Duration,
}

/// How long `key` must still wait before its next attempt, if at all.
pub async fn locked_for(
    pool: &PgPool,
    scope: ThrottleScope,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<std::time::Duration>, sqlx::Error> {
    let ms: Option<i64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM locked_until - $3) * 1000)::bigint
           FROM login_throttle
          WHERE scope = $1 AND key = $2 AND locked_until > $3",
    )
    .bind(scope.as_str())
    .bind(key)
    .bind(now)
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok(ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(std::time::Duration::from_millis))
}

/// Count a failure; locks the key once it is past its free failures.
pub async fn failed(
    pool: &PgPool,
    scope: ThrottleScope,
    key: &str,
    policy: ThrottlePolicy,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_throttle AS t (scope, key, failures, first_failed)
         VALUES ($1, $2, 1, $4)
         ON CONFLICT (scope, key) DO UPDATE
            SET failures = CASE WHEN t.first_failed < $4 - $3 * interval '1 second'
                                THEN 1 ELSE t.failures + 1 END,
                first_failed = CASE WHEN t.first_failed < $4 - $3 * interval '1 second'
                                    THEN $4 ELSE t.first_failed END",
    )
    .bind(scope.as_str())
    .bind(key)
    .bind(policy.window.num_seconds())
    .bind(now)
    .execute(pool)
    .await?;
    // Past the free failures: lock for 1 s, 2 s, 4 s, ... up to lock_max.
    sqlx::query(
        "UPDATE login_throttle
            SET locked_until = $5
                + LEAST(power(2, LEAST(failures - $3, 30)), $4) * interval '1 second'
          WHERE scope = $1 AND key = $2 AND failures >= $3",
    )
    .bind(scope.as_str())
    .bind(key)
    .bind(policy.free_failures)
    .bind(policy.lock_max.num_seconds() as f64)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// A successful login forgets the key's failures.
pub async fn succeeded(pool: &PgPool, scope: ThrottleScope, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE scope = $1 AND key = $2")
        .bind(scope.as_str())
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}
