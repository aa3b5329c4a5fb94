//! The `ledger` read model: every movement of an account's balance, newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::page::{Limits, Page, SequenceCursor};
use crate::queries::QueryError;

/// Page size bounds for the ledger, in rows.
pub const LIMITS: Limits = Limits {
    default: 50,
    max: 200,
};

/// One movement of a balance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// What a movement was for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Cause {
    /// `grant`, `payment`, `promo` or `request`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

/// One page of the account's ledger, newest first; `cursor` is the previous page's
/// `next_cursor`.
pub async fn page(
    pool: &PgPool,
    account: Uuid,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<LedgerEntry>, QueryError> {
    let request = LIMITS.request::<SequenceCursor>(limit, cursor)?;
    let before = request.after.map_or(i64::MAX, |c| c.0);
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
    .bind(request.fetch_limit())
    .fetch_all(pool)
    .await?;
    let entries = rows
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(request.page(entries, |e| SequenceCursor(e.sequence)))
}

/// The entries a request caused on the account (its charge), oldest first.
pub async fn for_request(
    pool: &PgPool,
    account: Uuid,
    request_id: &str,
) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sequence, kind, amount_micros, balance_after_micros, cause_type, cause_id,
                description, actor, stream_sequence, recorded_at
           FROM ledger
          WHERE account_id = $1 AND cause_type = 'request' AND cause_id = $2
          ORDER BY sequence",
    )
    .bind(account)
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(entry).collect()
}

pub(crate) fn entry(row: &sqlx::postgres::PgRow) -> Result<LedgerEntry, sqlx::Error> {
    Ok(LedgerEntry {
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
    })
}
