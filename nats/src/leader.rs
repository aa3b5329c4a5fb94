//! Leader election with Postgres session advisory locks.
//!
//! The lock lives on a connection of its own, never a pooled one: closing the connection (or
//! losing it) releases the lock, and no other query can inherit it.

use sqlx::{Connection, PgConnection};

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
}

impl Leadership {
    /// Try once to become the leader for `role`.
    pub async fn try_acquire(url: &str, role: &str) -> Result<Option<Leadership>, sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(role))
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(Leadership { conn }))
    }

    /// Whether the lock's connection is still alive (so the lock is still ours).
    pub async fn still_held(&mut self) -> bool {
        self.conn.ping().await.is_ok()
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
