//! Leader election with Postgres session advisory locks.
//!
//! The lock lives on a connection of its own, never a pooled one: closing the connection (or
//! losing it) releases the lock, and no other query can inherit it.

use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

/// How long a successful check of the lock's connection is trusted. A leader checks before
/// each round of work; checking at most this often keeps a busy leader from spending a
/// round trip per batch. Leaders must already tolerate a second leader for this long (a
/// lost connection is noticed only when checked): the relay's message ids and the
/// projections' checkpoints make a duplicate round harmless.
pub const RECHECK_AFTER: Duration = Duration::from_millis(250);

/// A stable lock key for a role name (FNV-1a, so it never changes between builds).
pub fn lock_key(role: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in role.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// A held leadership; dropped or closed, it is released.
pub struct Leadership {
    conn: PgConnection,
    checked_at: Instant,
}

impl Leadership {
    /// Try once to become the leader for `role`.
    pub async fn try_acquire(url: &str, role: &str) -> Result<Option<Leadership>, sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(role))
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(Leadership {
            conn,
            checked_at: Instant::now(),
        }))
    }

    /// Whether the lock's connection is still alive (so the lock is still ours), as last
    /// seen at most [`RECHECK_AFTER`] ago.
    pub async fn still_held(&mut self) -> bool {
        if self.checked_at.elapsed() < RECHECK_AFTER {
            return true;
        }
        let alive = self.conn.ping().await.is_ok();
        if alive {
            self.checked_at = Instant::now();
        }
        alive
    }

    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// Run `attempt` until `shutdown` resolves: whenever it returns (an error, or leadership
/// given up), log and try again after `retry_delay`. The loop every single-writer role uses.
pub async fn supervise<F, Fut>(
    role: &str,
    retry_delay: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            result = attempt() => {
                if let Err(err) = result {
                    tracing::warn!(role, error = format!("{err:#}"), "interrupted; retrying");
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(retry_delay) => {}
        }
    }
}
