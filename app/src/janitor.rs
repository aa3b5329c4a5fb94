//! Bounds the identity tables that anonymous callers make grow: sign-in throttle rows whose
//! window and lock are over, and refresh tokens past their expiry (rotated and revoked ones
//! included: reuse detection needs a token only until it expires). Runs in the `sweeper`
//! role, every `credits.sweep_interval_ms`, in batches so that no purge holds a long lock.

use chrono::{DateTime, Duration, Utc};
use hub_commands::SharedClock;
use sqlx::PgPool;
use std::future::Future;

/// Rows deleted per statement; the next round takes the rest.
const PURGE_BATCH: i64 = 5_000;

/// What one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub throttle_rows: u64,
    pub refresh_tokens: u64,
}

/// Delete throttle rows that neither count nor lock any more at `now` (their first failure is
/// older than `window`, and any lock has ended), and refresh tokens expired before `now`.
pub async fn purge_once(
    pool: &PgPool,
    window: Duration,
    now: DateTime<Utc>,
) -> Result<Purged, sqlx::Error> {
    let throttle = sqlx::query(
        "DELETE FROM login_throttle WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM login_throttle
             WHERE first_failed < $1 AND (locked_until IS NULL OR locked_until <= $2)
             LIMIT $3))",
    )
    .bind(now - window)
    .bind(now)
    .bind(PURGE_BATCH)
    .execute(pool)
    .await?;
    let tokens = sqlx::query(
        "DELETE FROM refresh_tokens WHERE token_hash IN (
            SELECT token_hash FROM refresh_tokens WHERE expires_at <= $1 LIMIT $2)",
    )
    .bind(now)
    .bind(PURGE_BATCH)
    .execute(pool)
    .await?;
    Ok(Purged {
        throttle_rows: throttle.rows_affected(),
        refresh_tokens: tokens.rows_affected(),
    })
}

/// Purge every `interval` until `stop` resolves. A failed round is logged and retried at the
/// next one.
pub async fn run(
    pool: PgPool,
    clock: SharedClock,
    window: std::time::Duration,
    interval: std::time::Duration,
    stop: impl Future<Output = ()>,
) {
    let window = Duration::from_std(window).unwrap_or(Duration::MAX);
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        match purge_once(&pool, window, clock.now()).await {
            Ok(purged) if purged != Purged::default() => {
                tracing::debug!(?purged, "purged expired identity rows");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "could not purge expired identity rows"),
        }
    }
}
