//! `GET /api/audit/accounts/{id}?as_of=`: one credit account as it stood at a time, folded
//! from its events in the event store (not from a read model), with its ledger up to then.
//!
//! The fold runs the account's own rules ([`CreditAccount`]'s `evolve`) over every
//! `CreditAccount` event of the account recorded at or before `as_of`. At the head (no
//! `as_of`, or one not in the past) the answer also says whether the `balances` read model
//! and the sum of the `ledger` agree with the fold, and how they differ when they do not.
//! Everything is read in one snapshot of the database.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hub_domain::{CreditAccount, CreditEvent, Decider};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{parse_optional_time, snapshot, AuditError, CREDIT_ACCOUNT};
use crate::page::{Limits, Page, SequenceCursor};
use crate::queries::ledger::{entry, LedgerEntry};

/// Page size bounds for the ledger up to `as_of`, in entries.
pub const LIMITS: Limits = Limits {
    default: 100,
    max: 1_000,
};

/// What the client asked.
#[derive(Debug, Clone, Default)]
pub struct AsOfRequest {
    pub account: Uuid,
    /// RFC 3339 or a date; absent: now.
    pub as_of: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The account as the events say it stood.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountAsOf {
    pub account_id: Uuid,
    /// The time asked for; `null`: the head (now).
    pub as_of: Option<DateTime<Utc>>,
    /// Events folded (the opening included).
    pub events_folded: i64,
    /// The aggregate sequence of the last event folded (0: none yet at that time).
    pub through_sequence: i64,
    /// When that event was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    pub balance_micros: i64,
    pub reserved_micros: i64,
    pub available_micros: i64,
    pub debt_micros: i64,
    pub active_reservations: usize,
    /// The ledger's entries up to `through_sequence`, newest first (one page).
    pub ledger: Vec<LedgerEntry>,
    /// Pass as `cursor` for the next (older) page of the ledger; null on the last.
    pub ledger_next_cursor: Option<String>,
    /// The sum of every ledger entry up to `through_sequence`.
    pub ledger_sum_micros: i64,
    /// Whether that sum equals the folded balance, and the ledger's last entry up to then
    /// shows the same balance after it.
    pub ledger_agrees: bool,
    /// At the head only: the `balances` read model beside the fold.
    pub read_model: Option<ReadModelCheck>,
}

/// The `balances` row beside the fold, at the head.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadModelCheck {
    pub balance_micros: i64,
    pub reserved_micros: i64,
    pub debt_micros: i64,
    /// The aggregate sequence of the last event the read model applied.
    pub version: i64,
    /// Balance, reserved and debt equal the fold's, at the same event.
    pub agrees: bool,
    /// What differs, in words; empty when it agrees.
    pub differences: Vec<String>,
}

/// Fold the account's events up to `as_of` and set the ledger and read models beside it.
pub async fn as_of(
    pool: &PgPool,
    now: DateTime<Utc>,
    request: AsOfRequest,
) -> Result<AccountAsOf, AuditError> {
    let page = LIMITS.request::<SequenceCursor>(request.limit, request.cursor.as_deref())?;
    // A time not in the past is the head: everything recorded so far.
    let as_of = parse_optional_time("as_of", request.as_of.as_deref())?.filter(|t| *t < now);
    let account_id = request.account;
    let aggregate_id = account_id.to_string();
    let mut tx = snapshot(pool).await?;

    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2)",
    )
    .bind(CREDIT_ACCOUNT)
    .bind(&aggregate_id)
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Err(AuditError::UnknownAccount);
    }

    let mut account = CreditAccount::default();
    let (mut folded, mut through, mut last_at) = (0_i64, 0_i64, None);
    {
        let mut rows = sqlx::query(
            "SELECT sequence, payload, recorded_at FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
                AND ($3::timestamptz IS NULL OR recorded_at <= $3)
              ORDER BY sequence",
        )
        .bind(CREDIT_ACCOUNT)
        .bind(&aggregate_id)
        .bind(as_of)
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            let sequence: i64 = row.try_get("sequence")?;
            let payload: serde_json::Value = row.try_get("payload")?;
            let event: CreditEvent =
                serde_json::from_value(payload).map_err(|source| AuditError::UnreadableEvent {
                    aggregate_type: CREDIT_ACCOUNT.to_string(),
                    aggregate_id: aggregate_id.clone(),
                    sequence,
                    source,
                })?;
            account.evolve(event);
            folded += 1;
            through = sequence;
            last_at = Some(row.try_get::<DateTime<Utc>, _>("recorded_at")?);
        }
    }

    let sums = sqlx::query(
        "SELECT COALESCE(SUM(amount_micros), 0)::int8 AS total,
                (SELECT balance_after_micros FROM ledger
                  WHERE account_id = $1 AND sequence <= $2
                  ORDER BY sequence DESC LIMIT 1) AS last_balance
           FROM ledger WHERE account_id = $1 AND sequence <= $2",
    )
    .bind(account_id)
    .bind(through)
    .fetch_one(&mut *tx)
    .await?;
    let ledger_sum: i64 = sums.try_get("total")?;
    let last_balance: Option<i64> = sums.try_get("last_balance")?;
    let balance = account.balance().micros();
    let ledger_agrees = ledger_sum == balance && last_balance.unwrap_or(0) == balance;

    let before = page.after.map_or(i64::MAX, |c| c.0);
    let rows = sqlx::query(
        "SELECT sequence, kind, amount_micros, balance_after_micros, cause_type, cause_id,
                description, actor, stream_sequence, recorded_at
           FROM ledger
          WHERE account_id = $1 AND sequence <= $2 AND sequence < $3
          ORDER BY sequence DESC
          LIMIT $4",
    )
    .bind(account_id)
    .bind(through)
    .bind(before)
    .bind(page.fetch_limit())
    .fetch_all(&mut *tx)
    .await?;
    let entries = rows
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let Page {
        items: ledger,
        next_cursor: ledger_next_cursor,
    } = page.page(entries, |e| SequenceCursor(e.sequence));

    let read_model = if as_of.is_none() {
        Some(compare_with_read_model(&mut tx, account_id, &account, through).await?)
    } else {
        None
    };
    tx.commit().await?;

    Ok(AccountAsOf {
        account_id,
        as_of,
        events_folded: folded,
        through_sequence: through,
        last_event_at: last_at,
        balance_micros: balance,
        reserved_micros: account.reserved().micros(),
        available_micros: account.available().micros(),
        debt_micros: account.debt().micros(),
        active_reservations: account.active_reservations(),
        ledger,
        ledger_next_cursor,
        ledger_sum_micros: ledger_sum,
        ledger_agrees,
        read_model,
    })
}

async fn compare_with_read_model(
    tx: &mut sqlx::PgConnection,
    account_id: Uuid,
    folded: &CreditAccount,
    through: i64,
) -> Result<ReadModelCheck, AuditError> {
    let row = sqlx::query(
        "SELECT balance_micros, reserved_micros, debt_micros, version
           FROM balances WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (balance, reserved, debt, version) = match row {
        Some(row) => (
            row.try_get("balance_micros")?,
            row.try_get("reserved_micros")?,
            row.try_get("debt_micros")?,
            row.try_get("version")?,
        ),
        None => (0_i64, 0_i64, 0_i64, 0_i64),
    };
    let mut differences = Vec::new();
    if version != through {
        differences.push(format!(
            "the read model has applied the account's events up to sequence {version}, the event store holds {through}{}",
            if version < through { " (it is behind)" } else { "" }
        ));
    }
    for (what, read, fold) in [
        ("balance", balance, folded.balance().micros()),
        ("reserved", reserved, folded.reserved().micros()),
        ("debt", debt, folded.debt().micros()),
    ] {
        if read != fold {
            differences.push(format!(
                "{what}: the read model says {read} micro-credits, the events {fold}"
            ));
        }
    }
    Ok(ReadModelCheck {
        balance_micros: balance,
        reserved_micros: reserved,
        debt_micros: debt,
        version,
        agrees: differences.is_empty(),
        differences,
    })
}
