//! The `balances` read model: an account's standing, and waiting until it shows a write.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

/// An account's standing. Amounts are integer micro-credits (1 credit = 1,000,000).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Balance {
    pub account_id: Uuid,
    pub balance_micros: i64,
    pub reserved_micros: i64,
    pub available_micros: i64,
    /// Refund shortfalls still owed: the next credits that become available repay it
    /// first (while it is above zero, nothing is available).
    pub debt_micros: i64,
    /// The account's event sequence this reflects (0: no account yet).
    pub version: i64,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Balance {
    /// An account the read model does not have yet: nothing in it.
    fn empty(account: Uuid) -> Self {
        Balance {
            account_id: account,
            balance_micros: 0,
            reserved_micros: 0,
            available_micros: 0,
            debt_micros: 0,
            version: 0,
            updated_at: None,
        }
    }
}

/// The account's balance as the read model has it now.
pub async fn balance(pool: &PgPool, account: Uuid) -> Result<Balance, sqlx::Error> {
    let row = sqlx::query(
        "SELECT balance_micros, reserved_micros, available_micros, debt_micros, version, updated_at
           FROM balances WHERE account_id = $1",
    )
    .bind(account)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(Balance::empty(account));
    };
    Ok(Balance {
        account_id: account,
        balance_micros: row.try_get("balance_micros")?,
        reserved_micros: row.try_get("reserved_micros")?,
        available_micros: row.try_get("available_micros")?,
        debt_micros: row.try_get("debt_micros")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Wait until the read model shows the account at `version` or later, up to `max_wait`.
/// Answers whether it does.
pub async fn wait_for_version(
    pool: &PgPool,
    account: Uuid,
    version: i64,
    max_wait: Duration,
) -> Result<bool, sqlx::Error> {
    super::wait_for_version(version, max_wait, || {
        sqlx::query_scalar("SELECT version FROM balances WHERE account_id = $1")
            .bind(account)
            .fetch_optional(pool)
    })
    .await
}

/// What a write left the account at, once the read model shows it (or the wait ran out).
#[derive(Debug, Clone)]
pub struct AfterWrite {
    /// The balance as a read now shows it.
    pub balance: Balance,
    /// Whether the read model caught up with the write within the wait.
    pub visible: bool,
}

/// Wait (up to `max_wait`) for the account's read model to reach `version`, then read it.
pub async fn after_write(
    pool: &PgPool,
    account: Uuid,
    version: usize,
    max_wait: Duration,
) -> Result<AfterWrite, sqlx::Error> {
    // A version past i64::MAX is never shown: wait the whole bound, as for any unseen one.
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    let visible = wait_for_version(pool, account, version, max_wait).await?;
    let balance = balance(pool, account).await?;
    Ok(AfterWrite { balance, visible })
}
