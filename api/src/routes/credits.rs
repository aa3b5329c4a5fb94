use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Page size bounds for the ledger.
const PAGE_DEFAULT: i64 = 50;
const PAGE_MAX: i64 = 200;

/// An account's standing. Amounts are integer micro-credits (1 credit = 1,000,000).
#[derive(Debug, Serialize)]
pub struct Balance {
    pub account_id: Uuid,
    pub balance_micros: i64,
    pub reserved_micros: i64,
    pub available_micros: i64,
    /// The account's event sequence this reflects (0: no account yet).
    pub version: i64,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Another user's account: admins and auditors only.
    pub user_id: Option<Uuid>,
}

/// Which account a caller may read: their own, or any for admins and auditors.
fn account_for(caller: &Caller, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    match requested {
        Some(other) if other != caller.user => {
            caller.require(&[Role::Admin, Role::Auditor])?;
            Ok(other)
        }
        _ => Ok(caller.user),
    }
}

pub async fn read_balance(pool: &PgPool, account: Uuid) -> Result<Balance, ApiError> {
    let row = sqlx::query(
        "SELECT balance_micros, reserved_micros, available_micros, version, updated_at
           FROM balances WHERE account_id = $1",
    )
    .bind(account)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some(row) => Balance {
            account_id: account,
            balance_micros: row.try_get("balance_micros")?,
            reserved_micros: row.try_get("reserved_micros")?,
            available_micros: row.try_get("available_micros")?,
            version: row.try_get("version")?,
            updated_at: row.try_get("updated_at")?,
        },
        None => Balance {
            account_id: account,
            balance_micros: 0,
            reserved_micros: 0,
            available_micros: 0,
            version: 0,
            updated_at: None,
        },
    })
}

/// Wait until the balances read model shows the account at `version` or later, up to
/// `max_wait`. Returns whether it does. This is how a write is visible to the next read.
pub async fn wait_for_version(
    pool: &PgPool,
    account: Uuid,
    version: i64,
    max_wait: Duration,
) -> Result<bool, ApiError> {
    let deadline = Instant::now() + max_wait;
    let mut pause = Duration::from_millis(2);
    loop {
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT version FROM balances WHERE account_id = $1")
                .bind(account)
                .fetch_optional(pool)
                .await?;
        if seen.is_some_and(|v| v >= version) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// `GET /api/credits/balance`
pub async fn balance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> Result<Json<Balance>, ApiError> {
    let account = account_for(&caller, query.user_id)?;
    Ok(Json(read_balance(&state.pool, account).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    pub user_id: Option<Uuid>,
    /// 1..=200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One movement of a balance.
#[derive(Debug, Serialize)]
pub struct LedgerEntry {
    pub sequence: i64,
    pub kind: String,
    /// Signed: credits in are positive, charges negative.
    pub amount_micros: i64,
    pub balance_after_micros: i64,
    pub cause: Cause,
    pub description: Option<String>,
    pub actor: Option<String>,
    pub stream_sequence: i64,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Cause {
    /// `grant`, `payment`, `promo` or `request`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Serialize)]
pub struct LedgerPage {
    pub account_id: Uuid,
    pub data: Vec<LedgerEntry>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/credits/transactions`: the caller's ledger, newest first.
pub async fn transactions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<LedgerPage>, ApiError> {
    let account = account_for(&caller, query.user_id)?;
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {PAGE_MAX}"),
        ));
    }
    let before = match query.cursor.as_deref() {
        None => i64::MAX,
        Some(c) => c.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
        })?,
    };
    let rows = sqlx::query(
        "SELECT sequence, kind, amount_micros, balance_after_micros, cause_type, cause_id,
                description, actor, stream_sequence, recorded_at
           FROM ledger
          WHERE account_id = $1 AND sequence < $2
          ORDER BY sequence DESC
          LIMIT $3",
    )
    .bind(account)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let mut data = Vec::with_capacity(rows.len());
    for row in rows {
        data.push(LedgerEntry {
            sequence: row.try_get("sequence")?,
            kind: row.try_get("kind")?,
            amount_micros: row.try_get("amount_micros")?,
            balance_after_micros: row.try_get("balance_after_micros")?,
            cause: Cause {
                kind: row.try_get("cause_type")?,
                id: row.try_get("cause_id")?,
            },
            description: row.try_get("description")?,
            actor: row.try_get("actor")?,
            stream_sequence: row.try_get("stream_sequence")?,
            recorded_at: row.try_get("recorded_at")?,
        });
    }
    let next_cursor = if data.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        data.pop();
        data.last().map(|e| e.sequence.to_string())
    } else {
        None
    };
    Ok(Json(LedgerPage {
        account_id: account,
        data,
        next_cursor,
    }))
}
