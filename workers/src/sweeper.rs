//! Expires reservations nobody settled (a worker died before answering, a client vanished
//! before any provider took the request), and never one whose answer was delivered: a
//! reservation with a settlement waiting in JetStream is settled from it instead.

use hub_commands::{Clock, CreditAccounts, SharedClock};
use hub_domain::{AccountId, CreditCommand, RequestId};
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::settlement::Settlements;

/// Due reservations read per sweep; the next sweep takes the rest.
const DUE_PER_SWEEP_MAX: i64 = 5_000;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Accounts whose due reservations were expired.
    pub accounts_expired: usize,
    /// Due reservations settled from a waiting settlement instead.
    pub settled: usize,
}

/// Settle or expire every reservation past its time, reading due ones from the
/// `active_reservations` read model. An account is left for the next sweep when its
/// waiting settlements cannot be read or applied (the broker or the database is away):
/// expiring blind could expire an answer that is to be paid.
pub async fn sweep_once(
    pool: &PgPool,
    accounts: &CreditAccounts,
    settlements: &Settlements,
    clock: &dyn Clock,
) -> anyhow::Result<Swept> {
    let now = clock.now();
    let rows = sqlx::query(
        "SELECT account_id, request_id FROM active_reservations
          WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(DUE_PER_SWEEP_MAX)
    .fetch_all(pool)
    .await?;
    let mut due: BTreeMap<AccountId, Vec<String>> = BTreeMap::new();
    for row in rows {
        due.entry(AccountId(row.try_get("account_id")?))
            .or_default()
            .push(row.try_get("request_id")?);
    }
    let mut swept = Swept::default();
    'accounts: for (account, requests) in due {
        for request in requests {
            let Ok(request_id) = RequestId::parse(&request) else {
                continue;
            };
            let waiting = match settlements.pending(&request_id).await {
                Ok(waiting) => waiting,
                Err(err) => {
                    tracing::warn!(%account, error = %err, "could not look for waiting settlements; not expiring");
                    continue 'accounts;
                }
            };
            if let Some(settlement) = waiting {
                match settlements.apply(settlement).await {
                    Ok(_) => swept.settled += 1,
                    Err(err) if err.is_transient() => {
                        tracing::warn!(%account, error = %err, "a waiting settlement could not be applied; not expiring");
                        continue 'accounts;
                    }
                    Err(err) => {
                        tracing::error!(%account, error = %err, "a waiting settlement was refused")
                    }
                }
            }
        }
        match accounts
            .execute(
                account,
                CreditCommand::ExpireReservations { now },
                "system:sweeper",
            )
            .await
        {
            Ok(_) => swept.accounts_expired += 1,
            Err(err) => tracing::warn!(%account, error = %err, "could not expire reservations"),
        }
    }
    Ok(swept)
}

/// Sweep every `interval` until `shutdown` resolves.
pub async fn run(
    pool: PgPool,
    accounts: Arc<CreditAccounts>,
    settlements: Arc<Settlements>,
    clock: SharedClock,
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
                if let Err(err) = sweep_once(&pool, &accounts, &settlements, clock.as_ref()).await {
                    tracing::warn!(error = %err, "expiry sweep failed");
                }
            }
        }
    }
}
