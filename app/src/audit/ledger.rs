//! `GET /api/audit/ledger`: the `ledger` read model across every account, newest first (by
//! stream sequence: the order the events were published in), each entry with its account
//! and the balance after it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::{parse_range, parse_text, parse_uuid, AuditError};
use crate::page::{Limits, Page, SequenceCursor};
use crate::queries::ledger::{entry, LedgerEntry};

/// Page size bounds, in entries.
pub const LIMITS: Limits = Limits {
    default: 100,
    max: 1_000,
};

/// The ledger's kinds of entry.
const KINDS: [&str; 6] = [
    "grant",
    "purchase",
    "promo",
    "charge",
    "refund",
    "debt_repayment",
];

/// The ledger's kinds of cause.
const CAUSE_TYPES: [&str; 4] = ["grant", "payment", "promo", "request"];

/// The filters as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct RawLedgerFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub account: Option<String>,
    pub kind: Option<String>,
    pub cause_type: Option<String>,
    pub cause_id: Option<String>,
    pub actor: Option<String>,
}

/// Which entries: `from` inclusive, `to` exclusive (on the time each was recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub account: Option<Uuid>,
    pub kind: Option<&'static str>,
    pub cause_type: Option<&'static str>,
    pub cause_id: Option<String>,
    pub actor: Option<String>,
}

fn one_of(
    field: &'static str,
    raw: Option<String>,
    known: &[&'static str],
    why: &'static str,
) -> Result<Option<&'static str>, AuditError> {
    raw.map(|r| {
        known
            .iter()
            .copied()
            .find(|k| *k == r)
            .ok_or(AuditError::Filter { field, why })
    })
    .transpose()
}

impl RawLedgerFilter {
    pub fn parse(self) -> Result<LedgerFilter, AuditError> {
        let (from, to) = parse_range(self.from.as_deref(), self.to.as_deref())?;
        Ok(LedgerFilter {
            from,
            to,
            account: self
                .account
                .map(|a| parse_uuid("account", &a))
                .transpose()?,
            kind: one_of(
                "kind",
                self.kind,
                &KINDS,
                "must be one of: grant, purchase, promo, charge, refund, debt_repayment",
            )?,
            cause_type: one_of(
                "cause_type",
                self.cause_type,
                &CAUSE_TYPES,
                "must be one of: grant, payment, promo, request",
            )?,
            cause_id: self
                .cause_id
                .map(|c| parse_text("cause_id", c))
                .transpose()?,
            actor: self.actor.map(|a| parse_text("actor", a)).transpose()?,
        })
    }
}

impl LedgerFilter {
    fn push_where(&self, sql: &mut QueryBuilder<'_, Postgres>) {
        if let Some(from) = self.from {
            sql.push(" AND recorded_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            sql.push(" AND recorded_at < ").push_bind(to);
        }
        if let Some(account) = self.account {
            sql.push(" AND account_id = ").push_bind(account);
        }
        if let Some(kind) = self.kind {
            sql.push(" AND kind = ").push_bind(kind);
        }
        if let Some(cause_type) = self.cause_type {
            sql.push(" AND cause_type = ").push_bind(cause_type);
        }
        if let Some(cause_id) = &self.cause_id {
            sql.push(" AND cause_id = ").push_bind(cause_id.clone());
        }
        if let Some(actor) = &self.actor {
            sql.push(" AND actor = ").push_bind(actor.clone());
        }
    }
}

/// One ledger entry and the account it belongs to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditLedgerEntry {
    pub account_id: Uuid,
    #[serde(flatten)]
    pub entry: LedgerEntry,
}

/// One page of entries, newest first; `cursor` is the previous page's `next_cursor`.
pub async fn page(
    pool: &PgPool,
    filter: &LedgerFilter,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<AuditLedgerEntry>, AuditError> {
    let request = LIMITS.request::<SequenceCursor>(limit, cursor)?;
    let mut sql = QueryBuilder::new(
        "SELECT account_id, sequence, kind, amount_micros, balance_after_micros, cause_type,
                cause_id, description, actor, stream_sequence, recorded_at
           FROM ledger WHERE true",
    );
    filter.push_where(&mut sql);
    if let Some(after) = request.after {
        sql.push(" AND stream_sequence < ").push_bind(after.0);
    }
    sql.push(" ORDER BY stream_sequence DESC LIMIT ")
        .push_bind(request.fetch_limit());
    let rows = sql.build().fetch_all(pool).await?;
    let entries = rows
        .iter()
        .map(|row| {
            Ok(AuditLedgerEntry {
                account_id: row.try_get("account_id")?,
                entry: entry(row)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(request.page(entries, |e| SequenceCursor(e.entry.stream_sequence)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_and_causes_are_refused_with_the_field_named() {
        let bad_kind = RawLedgerFilter {
            kind: Some("gift".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad_kind.parse(),
            Err(AuditError::Filter { field: "kind", .. })
        ));
        let bad_cause = RawLedgerFilter {
            cause_type: Some("refund".into()),
            ..Default::default()
        };
        assert!(matches!(
            bad_cause.parse(),
            Err(AuditError::Filter {
                field: "cause_type",
                ..
            })
        ));
        let good = RawLedgerFilter {
            kind: Some("refund".into()),
            cause_type: Some("payment".into()),
            ..Default::default()
        };
        assert_eq!(good.parse().ok().and_then(|f| f.kind), Some("refund"));
    }
}
