//! The `promo_codes` read model: codes with their redemption counts, oldest first, and
//! waiting until a code shows a change.

use chrono::{DateTime, Utc};
use hub_domain::PromoCodeValue;
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::time::Duration;

use crate::page::{CursorKey, Limits, Page, TimeCursor};
use crate::queries::QueryError;

/// Page size bounds for the list of promo codes, in rows.
pub const LIMITS: Limits = Limits {
    default: 50,
    max: 200,
};

/// A code (as the read model stores it: normalised), after its creation time in a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeKey(pub String);

impl CursorKey for CodeKey {
    fn encode_key(&self) -> String {
        self.0.clone()
    }

    fn decode_key(raw: &str) -> Option<Self> {
        Some(CodeKey(PromoCodeValue::parse(raw).ok()?.to_string()))
    }
}

/// A promo code as the read model has it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PromoRow {
    pub code: String,
    pub credits_micros: i64,
    pub max_redemptions: i32,
    pub redemptions: i32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// One page of promo codes, oldest first; `cursor` is the previous page's `next_cursor`.
pub async fn list(
    pool: &PgPool,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<PromoRow>, QueryError> {
    let request = LIMITS.request::<TimeCursor<CodeKey>>(limit, cursor)?;
    let rows = sqlx::query(
        "SELECT code, credits_micros, max_redemptions, redemptions, valid_from, valid_until,
                active, created_by, created_at
           FROM promo_codes
          WHERE ($1::timestamptz IS NULL OR (created_at, code) > ($1, $2))
          ORDER BY created_at, code
          LIMIT $3",
    )
    .bind(request.after.as_ref().map(|c| c.at))
    .bind(request.after.as_ref().map(|c| c.key.0.clone()))
    .bind(request.fetch_limit())
    .fetch_all(pool)
    .await?;
    let promos = rows
        .iter()
        .map(|row| {
            Ok(PromoRow {
                code: row.try_get("code")?,
                credits_micros: row.try_get("credits_micros")?,
                max_redemptions: row.try_get("max_redemptions")?,
                redemptions: row.try_get("redemptions")?,
                valid_from: row.try_get("valid_from")?,
                valid_until: row.try_get("valid_until")?,
                active: row.try_get("active")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(request.page(promos, |p| TimeCursor {
        at: p.created_at,
        key: CodeKey(p.code.clone()),
    }))
}

/// Wait until the read model shows `code` at `version` or later, up to `max_wait`. Answers
/// whether it does.
pub async fn wait_for_version(
    pool: &PgPool,
    code: &PromoCodeValue,
    version: usize,
    max_wait: Duration,
) -> Result<bool, sqlx::Error> {
    // A version past i64::MAX is never shown: wait the whole bound, as for any unseen one.
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    super::wait_for_version(version, max_wait, || {
        sqlx::query_scalar("SELECT version FROM promo_codes WHERE code = $1")
            .bind(code.as_str())
            .fetch_optional(pool)
    })
    .await
}
