//! Expires reservations that were never settled (a worker died, a client vanished).

use hub_domain::{AccountId, CreditCommand};
use sqlx::{PgPool, Row};
use std::future::Future;
use std::time::Duration;

use crate::clock::Clock;
use crate::credit::CreditAccounts;

/// Accounts handled per sweep; the next sweep takes the rest.
const ACCOUNTS_PER_SWEEP_MAX: i64 = 500;

/// Expire every reservation past its time, reading due ones from the `active_reservations`
/// read model. Returns how many accounts were swept.
pub async fn sweep_once(
    pool: &PgPool,
    accounts: &CreditAccounts,
    clock: &dyn Clock,
) -> anyhow::Result<usize> {
    let now = clock.now();
    let rows = sqlx::query(
        "SELECT DISTINCT account_id FROM active_reservations WHERE expires_at <= $1 LIMIT $2",
    )
    .bind(now)
    .bind(ACCOUNTS_PER_SWEEP_MAX)
    .fetch_all(pool)
    .await?;
    let mut swept = 0;
    for row in rows {
        let account = AccountId(row.try_get("account_id")?);
        match accounts
            .execute(
                account,
                CreditCommand::ExpireReservations { now },
                "system:sweeper",
            )
            .await
        {
            Ok(_) => swept += 1,
            Err(err) => tracing::warn!(%account, error = %err, "could not expire reservations"),
        }
    }
    Ok(swept)
}

/// Sweep every `interval` until `shutdown` resolves.
pub async fn run(
    pool: PgPool,
    accounts: std::sync::Arc<CreditAccounts>,
    clock: crate::clock::SharedClock,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = ticker.tick() => {
                if let Err(err) = sweep_once(&pool, &accounts, clock.as_ref()).await {
                    tracing::warn!(error = %err, "expiry sweep failed");
                }
            }
        }
    }
}
