//! What auditors read (issue 16, the queries): every account's ledger, an account as it
//! stood at a time (folded from the event store), the double-entry trial balance, the
//! reconciliation of Stripe payments with the credits they moved, and what admins did.
//!
//! Everything here only reads. Who may read it is [`AUDIT_ROLES`]; the API checks it.
//! What each query proves, and what it cannot, is in docs/audit.md.
//!
//! # Layout
//!
//! - [`ledger`]: the `ledger` read model across accounts, filtered, newest first.
//! - [`accounts`]: one account as of a time, folded from its `CreditAccount` events, with
//!   its ledger up to then, compared with the read models.
//! - [`trial_balance`]: the `journal` read model summed per account as of a time.
//! - [`reconciliation`]: each Stripe Checkout Session beside the credits it moved.
//! - [`verify`]: `aihub audit verify`, every check from the event store outward.
//! - [`admin_actions`]: admins' grants, role changes, suspensions, promo codes and key
//!   revocations, from the event store.

pub mod accounts;
pub mod admin_actions;
pub mod ledger;
pub mod reconciliation;
pub mod trial_balance;
pub mod verify;

use chrono::{DateTime, Utc};
use hub_domain::Role;
use uuid::Uuid;

use crate::page::PageError;

/// The roles that read the audit queries (read-only, all accounts).
pub const AUDIT_ROLES: [Role; 2] = [Role::Auditor, Role::Admin];

/// The credit account's aggregate type in the event store.
pub(crate) const CREDIT_ACCOUNT: &str = "CreditAccount";

/// Why an audit query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A filter or parameter cannot be read; the message names it.
    #[error("{field} {why}")]
    Filter {
        field: &'static str,
        why: &'static str,
    },
    #[error(transparent)]
    Page(#[from] PageError),
    /// The event store has no credit account with this id.
    #[error("no credit account with this id")]
    UnknownAccount,
    /// A stored event does not read as its aggregate's event: the store and the code
    /// disagree (a bug, or an edited row).
    #[error("event {aggregate_type}/{aggregate_id}/{sequence} does not read as an event")]
    UnreadableEvent {
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        #[source]
        source: serde_json::Error,
    },
    /// A sum that does not fit 64 bits, or another value out of range.
    #[error("a value is out of range: {0}")]
    OutOfRange(&'static str),
    #[error("could not read the audit tables")]
    Database(#[from] sqlx::Error),
}

/// Read a time parameter: RFC 3339, or a date (its midnight, UTC).
pub(crate) fn parse_time(field: &'static str, raw: &str) -> Result<DateTime<Utc>, AuditError> {
    crate::queries::usage::parse_time(field, raw).map_err(|_| AuditError::Filter {
        field,
        why: "must be an RFC 3339 time (2026-12-01T10:00:00Z) or a date (2026-12-01)",
    })
}

pub(crate) fn parse_optional_time(
    field: &'static str,
    raw: Option<&str>,
) -> Result<Option<DateTime<Utc>>, AuditError> {
    raw.map(|r| parse_time(field, r)).transpose()
}

pub(crate) fn parse_uuid(field: &'static str, raw: &str) -> Result<Uuid, AuditError> {
    raw.parse().map_err(|_| AuditError::Filter {
        field,
        why: "must be a UUID",
    })
}

/// A time range: `from` inclusive, `to` exclusive; either may be open.
pub(crate) type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `from` inclusive, `to` exclusive, `from` before `to`.
pub(crate) fn parse_range(from: Option<&str>, to: Option<&str>) -> Result<Range, AuditError> {
    let from = parse_optional_time("from", from)?;
    let to = parse_optional_time("to", to)?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(AuditError::Filter {
                field: "from",
                why: "must be before to",
            });
        }
    }
    Ok((from, to))
}

/// The longest free-text filter (a cause id, an actor) taken.
const TEXT_FILTER_MAX: usize = 200;

pub(crate) fn parse_text(field: &'static str, raw: String) -> Result<String, AuditError> {
    if raw.is_empty() || raw.chars().count() > TEXT_FILTER_MAX {
        return Err(AuditError::Filter {
            field,
            why: "must be 1 to 200 characters",
        });
    }
    Ok(raw)
}

/// Begin a read-only transaction whose reads all see one snapshot, so that figures read
/// from several tables (or a fold and a read model) are of the same moment.
pub(crate) async fn snapshot(
    pool: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_must_run_forwards() {
        assert!(parse_range(Some("2026-01-02"), Some("2026-01-01")).is_err());
        assert!(parse_range(Some("2026-01-01"), Some("2026-01-02")).is_ok());
        assert!(parse_range(Some("yesterday"), None).is_err());
        assert_eq!(parse_range(None, None).ok(), Some((None, None)));
    }
}
