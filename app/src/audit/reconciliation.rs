//! `GET /api/audit/payments/reconciliation?from&to`: each Stripe Checkout Session created in
//! the range (the `payments` read model) beside the credits it moved (the `journal`: the
//! purchase, a won dispute's restored credits, what refunds and disputes asked back, took,
//! left owed or wrote off, and the debt repaid since), oldest first, with totals over the
//! whole range (money per currency).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::{parse_range, snapshot, AuditError};
use crate::page::{CursorKey, Limits, Page, TimeCursor};

/// Page size bounds, in sessions.
pub const LIMITS: Limits = Limits {
    default: 100,
    max: 500,
};

/// The journal's sums for one session, as columns `granted` … `repaid`. A session's
/// credits are the journal legs caused by it: its id, or (a won dispute's restored credits)
/// its id followed by `:won:`. The two conditions each use `journal_by_cause`.
const SESSION_SUMS: &str = "
    LEFT JOIN LATERAL (
        SELECT
            COALESCE(SUM(credit_micros) FILTER (WHERE kind = 'purchase' AND ledger_account = 'user:available'), 0)::int8 AS granted,
            COALESCE(SUM(credit_micros) FILTER (WHERE kind = 'refund' AND ledger_account = 'system:refunds'), 0)::int8 AS requested,
            COALESCE(SUM(debit_micros) FILTER (WHERE kind = 'refund' AND ledger_account = 'user:available'), 0)::int8 AS taken,
            COALESCE(SUM(debit_micros) FILTER (WHERE kind = 'refund' AND ledger_account = 'system:debt'), 0)::int8 AS owed,
            COALESCE(SUM(debit_micros) FILTER (WHERE kind = 'refund' AND ledger_account = 'system:written-off'), 0)::int8 AS written_off,
            COALESCE(SUM(credit_micros) FILTER (WHERE kind = 'debt_repayment' AND ledger_account = 'system:debt'), 0)::int8 AS repaid
          FROM journal j
         WHERE j.cause_type = 'payment'
           AND (j.cause_id = p.session_id
                OR (j.cause_id >= p.session_id || ':won:' AND j.cause_id < p.session_id || ':won;'))
    ) s ON true";

/// One session and the credits it moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionLine {
    pub session_id: String,
    pub user_id: Uuid,
    pub package_id: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// The package's price, in the currency's smallest unit.
    pub amount_cents: i64,
    pub currency: String,
    /// What Stripe reported paid: the price once the session was paid, else 0 (a payment
    /// held for paying less than the price is not counted as paid).
    pub amount_paid_cents: i64,
    /// Refunded so far, in the currency's smallest unit.
    pub refunded_cents: i64,
    /// The package's credits.
    pub package_credits_micros: i64,
    /// Credits the payment put on the account (a won dispute's restored credits included).
    pub credits_granted_micros: i64,
    /// Credits refunds and disputes asked back.
    pub refund_credits_requested_micros: i64,
    /// Of those, taken from the account at once.
    pub credits_revoked_micros: i64,
    /// Of those, not available to take (spent or held): `requested − revoked`.
    pub shortfall_micros: i64,
    /// Of the shortfall, owed as a debt (the rest was written off, before debts were kept).
    pub shortfall_owed_micros: i64,
    pub shortfall_written_off_micros: i64,
    /// Repaid since from the account's later credits.
    pub debt_repaid_micros: i64,
    /// Still owed: `owed − repaid`.
    pub debt_outstanding_micros: i64,
}

/// Sums over every session of the range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub sessions: i64,
    /// Per currency: what was paid and refunded, in its smallest unit.
    pub paid_cents: BTreeMap<String, i64>,
    pub refunded_cents: BTreeMap<String, i64>,
    pub credits_granted_micros: i64,
    pub refund_credits_requested_micros: i64,
    pub credits_revoked_micros: i64,
    pub shortfall_micros: i64,
    pub debt_repaid_micros: i64,
    pub debt_outstanding_micros: i64,
    pub shortfall_written_off_micros: i64,
}

/// One page of the reconciliation, and the totals of the whole range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reconciliation {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub sessions: Vec<SessionLine>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
    pub totals: Totals,
}

/// The tie-breaker after the time in a reconciliation cursor: the session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey(pub String);

impl CursorKey for SessionKey {
    fn encode_key(&self) -> String {
        self.0.clone()
    }
    fn decode_key(raw: &str) -> Option<Self> {
        (!raw.is_empty()).then(|| SessionKey(raw.to_string()))
    }
}

fn push_range(
    sql: &mut QueryBuilder<'_, Postgres>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) {
    if let Some(from) = from {
        sql.push(" AND p.created_at >= ").push_bind(from);
    }
    if let Some(to) = to {
        sql.push(" AND p.created_at < ").push_bind(to);
    }
}

fn line(row: &sqlx::postgres::PgRow) -> Result<SessionLine, sqlx::Error> {
    let paid_at: Option<DateTime<Utc>> = row.try_get("paid_at")?;
    let status: String = row.try_get("status")?;
    let amount_cents: i64 = row.try_get("amount_cents")?;
    let requested: i64 = row.try_get("requested")?;
    let taken: i64 = row.try_get("taken")?;
    let owed: i64 = row.try_get("owed")?;
    let repaid: i64 = row.try_get("repaid")?;
    Ok(SessionLine {
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        package_id: row.try_get("package_id")?,
        amount_paid_cents: if paid_at.is_some() && status != "held" {
            amount_cents
        } else {
            0
        },
        status,
        created_at: row.try_get("created_at")?,
        paid_at,
        amount_cents,
        currency: row.try_get("currency")?,
        refunded_cents: row.try_get("refunded_cents")?,
        package_credits_micros: row.try_get("credits_micros")?,
        credits_granted_micros: row.try_get("granted")?,
        refund_credits_requested_micros: requested,
        credits_revoked_micros: taken,
        shortfall_micros: requested - taken,
        shortfall_owed_micros: owed,
        shortfall_written_off_micros: row.try_get("written_off")?,
        debt_repaid_micros: repaid,
        debt_outstanding_micros: owed - repaid,
    })
}

/// The reconciliation of sessions created in `[from, to)`: one page, and the range's totals.
pub async fn reconciliation(
    pool: &PgPool,
    from: Option<&str>,
    to: Option<&str>,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Reconciliation, AuditError> {
    let (from, to) = parse_range(from, to)?;
    let request = LIMITS.request::<TimeCursor<SessionKey>>(limit, cursor)?;
    let mut tx = snapshot(pool).await?;

    let mut sql = QueryBuilder::new(format!(
        "SELECT p.session_id, p.user_id, p.package_id, p.status, p.created_at, p.paid_at,
                p.amount_cents, p.currency, p.refunded_cents, p.credits_micros, s.*
           FROM payments p {SESSION_SUMS}
          WHERE true"
    ));
    push_range(&mut sql, from, to);
    if let Some(after) = &request.after {
        sql.push(" AND (p.created_at, p.session_id) > (")
            .push_bind(after.at)
            .push(", ")
            .push_bind(after.key.0.clone())
            .push(")");
    }
    sql.push(" ORDER BY p.created_at, p.session_id LIMIT ")
        .push_bind(request.fetch_limit());
    let rows = sql.build().fetch_all(&mut *tx).await?;
    let lines = rows
        .iter()
        .map(line)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let Page {
        items: sessions,
        next_cursor,
    } = request.page(lines, |l| TimeCursor {
        at: l.created_at,
        key: SessionKey(l.session_id.clone()),
    });

    // The totals: the same sums over every session of the range, per currency.
    let mut sql = QueryBuilder::new(format!(
        "SELECT p.currency, count(*) AS sessions,
                COALESCE(SUM(p.amount_cents) FILTER (WHERE p.paid_at IS NOT NULL AND p.status <> 'held'), 0)::int8 AS paid,
                COALESCE(SUM(p.refunded_cents), 0)::int8 AS refunded,
                COALESCE(SUM(s.granted), 0)::int8 AS granted,
                COALESCE(SUM(s.requested), 0)::int8 AS requested,
                COALESCE(SUM(s.taken), 0)::int8 AS taken,
                COALESCE(SUM(s.owed), 0)::int8 AS owed,
                COALESCE(SUM(s.written_off), 0)::int8 AS written_off,
                COALESCE(SUM(s.repaid), 0)::int8 AS repaid
           FROM payments p {SESSION_SUMS}
          WHERE true"
    ));
    push_range(&mut sql, from, to);
    sql.push(" GROUP BY p.currency ORDER BY p.currency");
    let rows = sql.build().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let mut totals = Totals::default();
    for row in &rows {
        let currency: String = row.try_get("currency")?;
        let requested: i64 = row.try_get("requested")?;
        let taken: i64 = row.try_get("taken")?;
        let owed: i64 = row.try_get("owed")?;
        let repaid: i64 = row.try_get("repaid")?;
        totals.sessions += row.try_get::<i64, _>("sessions")?;
        totals
            .paid_cents
            .insert(currency.clone(), row.try_get("paid")?);
        totals
            .refunded_cents
            .insert(currency, row.try_get("refunded")?);
        totals.credits_granted_micros += row.try_get::<i64, _>("granted")?;
        totals.refund_credits_requested_micros += requested;
        totals.credits_revoked_micros += taken;
        totals.shortfall_micros += requested - taken;
        totals.debt_repaid_micros += repaid;
        totals.debt_outstanding_micros += owed - repaid;
        totals.shortfall_written_off_micros += row.try_get::<i64, _>("written_off")?;
    }
    Ok(Reconciliation {
        from,
        to,
        sessions,
        next_cursor,
        totals,
    })
}
