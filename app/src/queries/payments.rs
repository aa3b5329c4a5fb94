//! The `payments` read model: a user's payments, newest first.

use chrono::{DateTime, Utc};
use hub_domain::StripeId;
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::page::{CursorKey, Limits, Page, TimeCursor};
use crate::queries::QueryError;

/// Page size bounds for payment history, in rows.
pub const LIMITS: Limits = Limits {
    default: 20,
    max: 100,
};

/// A payment's session id, after its creation time in a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionKey(pub String);

impl CursorKey for SessionKey {
    fn encode_key(&self) -> String {
        self.0.clone()
    }

    fn decode_key(raw: &str) -> Option<Self> {
        StripeId::parse(raw).ok()?;
        Some(SessionKey(raw.to_string()))
    }
}

/// A payment as the read model has it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    pub session_id: String,
    /// `started`, `awaiting_payment`, `paid`, `partially_refunded`, `refunded`, `failed` or
    /// `expired`.
    pub status: String,
    pub package_id: String,
    pub credits_micros: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub refunded_cents: i64,
    pub credits_taken_back_micros: i64,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// One page of `user`'s payments, newest first; `cursor` is the previous page's
/// `next_cursor`.
pub async fn history(
    pool: &PgPool,
    user: Uuid,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<PaymentView>, QueryError> {
    let request = LIMITS.request::<TimeCursor<SessionKey>>(limit, cursor)?;
    let rows = sqlx::query(
        "SELECT session_id, status, package_id, credits_micros, amount_cents, currency,
                refunded_cents, credits_taken_back_micros, failure_reason, created_at,
                paid_at, updated_at
           FROM payments
          WHERE user_id = $1
            AND ($2::timestamptz IS NULL OR (created_at, session_id) < ($2, $3))
          ORDER BY created_at DESC, session_id DESC
          LIMIT $4",
    )
    .bind(user)
    .bind(request.after.as_ref().map(|c| c.at))
    .bind(request.after.as_ref().map(|c| c.key.0.clone()))
    .bind(request.fetch_limit())
    .fetch_all(pool)
    .await?;
    let payments = rows
        .iter()
        .map(|row| {
            Ok(PaymentView {
                session_id: row.try_get("session_id")?,
                status: row.try_get("status")?,
                package_id: row.try_get("package_id")?,
                credits_micros: row.try_get("credits_micros")?,
                amount_cents: row.try_get("amount_cents")?,
                currency: row.try_get("currency")?,
                refunded_cents: row.try_get("refunded_cents")?,
                credits_taken_back_micros: row.try_get("credits_taken_back_micros")?,
                failure_reason: row.try_get("failure_reason")?,
                created_at: row.try_get("created_at")?,
                paid_at: row.try_get("paid_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(request.page(payments, |p| TimeCursor {
        at: p.created_at,
        key: SessionKey(p.session_id.clone()),
    }))
}
