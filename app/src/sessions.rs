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

/// One key's throttle row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ThrottleRow {
    failures: i32,
    first_failed: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
}

impl ThrottleRow {
    /// An attempt at `now`: the row after it, or how long the key must still wait. Counted
    /// as a failure until [`forgive`] says otherwise. The attempt that uses the last free
    /// failure, and each one allowed after a lock, locks the key as it goes: 1 s, 2 s, 4 s,
    /// ... up to `lock_max`.
    fn attempt(
        self,
        policy: ThrottlePolicy,
        now: DateTime<Utc>,
    ) -> Result<Self, std::time::Duration> {
        if let Some(until) = self.locked_until.filter(|until| *until > now) {
            return Err((until - now).to_std().unwrap_or_default());
        }
        if self.first_failed < now - policy.window {
            return Ok(ThrottleRow {
                failures: 1,
                first_failed: now,
                locked_until: None,
            });
        }
        let failures = self.failures.saturating_add(1);
        let past_free = failures - policy.free_failures;
        let locked_until = (past_free >= 0).then(|| {
            let lock = 1i64 << past_free.clamp(0, 30);
            now + Duration::seconds(lock.min(policy.lock_max.num_seconds()))
        });
        Ok(ThrottleRow {
            failures,
            first_failed: self.first_failed,
            locked_until,
        })
    }
}

/// Take an attempt for `key`: refused while the key is locked, otherwise counted before the
/// password is checked. The row is locked (by the upsert) between the check and the count,
/// so a burst of parallel guesses cannot all pass one check before the first is counted.
/// Returns how long the key must still wait when refused.
pub async fn attempt(
    pool: &PgPool,
    scope: ThrottleScope,
    key: &str,
    policy: ThrottlePolicy,
    now: DateTime<Utc>,
) -> Result<Option<std::time::Duration>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Created and locked in one statement: between a separate insert and `SELECT … FOR
    // UPDATE`, a concurrent successful sign-in's `forgive` could delete the row, and the
    // select then found nothing (a 500 under concurrent sign-ins to one account).
    let (failures, first_failed, locked_until): (i32, DateTime<Utc>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "INSERT INTO login_throttle (scope, key, failures, first_failed)
             VALUES ($1, $2, 0, $3)
             ON CONFLICT (scope, key) DO UPDATE SET failures = login_throttle.failures
             RETURNING failures, first_failed, locked_until",
        )
        .bind(scope.as_str())
        .bind(key)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    let row = ThrottleRow {
        failures,
        first_failed,
        locked_until,
    };
    let next = match row.attempt(policy, now) {
        Ok(next) => next,
        Err(wait) => return Ok(Some(wait)),
    };
    sqlx::query(
        "UPDATE login_throttle SET failures = $3, first_failed = $4, locked_until = $5
          WHERE scope = $1 AND key = $2",
    )
    .bind(scope.as_str())
    .bind(key)
    .bind(next.failures)
    .bind(next.first_failed)
    .bind(next.locked_until)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(None)
}

/// The attempt succeeded: the account's failures are forgotten, and the address's count of
/// it is taken back (an address is slowed by its failures only).
pub async fn forgive(pool: &PgPool, scope: ThrottleScope, key: &str) -> Result<(), sqlx::Error> {
    let statement = match scope {
        ThrottleScope::Account => "DELETE FROM login_throttle WHERE scope = $1 AND key = $2",
        ThrottleScope::Ip => {
            "UPDATE login_throttle SET failures = failures - 1
              WHERE scope = $1 AND key = $2 AND failures > 0"
        }
    };
    sqlx::query(statement)
        .bind(scope.as_str())
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            free_failures: 3,
            window: Duration::seconds(900),
            lock_max: Duration::seconds(60),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn the_free_attempts_pass_then_one_per_lock_doubling_up_to_the_maximum_lock() {
        let mut row = ThrottleRow {
            failures: 0,
            first_failed: t(0),
            locked_until: None,
        };
        for _ in 0..2 {
            row = row.attempt(policy(), t(0)).expect("a free attempt");
            assert_eq!(row.locked_until, None);
        }
        // The third uses the last free failure and locks for 1 s; a fourth at once waits.
        row = row.attempt(policy(), t(0)).expect("the last free attempt");
        assert_eq!(row.locked_until, Some(t(1)));
        assert_eq!(
            row.attempt(policy(), t(0)),
            Err(std::time::Duration::from_secs(1))
        );
        row = row.attempt(policy(), t(1)).expect("after the lock");
        assert_eq!(row.locked_until, Some(t(3)));
        for _ in 0..10 {
            let at = row.locked_until.unwrap_or_default();
            row = row.attempt(policy(), at).expect("after each lock");
        }
        let at = row.locked_until.unwrap_or_default();
        let last = row.attempt(policy(), at).expect("after the lock");
        assert_eq!(
            last.locked_until,
            Some(at + Duration::seconds(60)),
            "capped"
        );
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let row = ThrottleRow {
            failures: 50,
            first_failed: t(0),
            locked_until: Some(t(10)),
        };
        let next = row.attempt(policy(), t(1_000)).expect("a new window");
        assert_eq!(next.failures, 1);
        assert_eq!(next.locked_until, None);
    }
}
