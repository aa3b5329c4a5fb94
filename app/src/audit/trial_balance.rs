//! `GET /api/audit/trial-balance?as_of=`: the `journal` read model (every movement of
//! credit as balanced double-entry legs, see `hub_projections::journal`) summed per account
//! over the legs recorded up to a time: every system account, and the users' accounts
//! summed (`users:available`, `users:held`). Debits equal credits when the books balance.
//!
//! At the head the sums are also set beside the `balances` read model (the sums of every
//! account's available, reserved and debt), read in the same snapshot.

use chrono::{DateTime, Utc};
use hub_projections::journal::{self, SYSTEM_ACCOUNTS, USER_AVAILABLE, USER_HELD};
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;

use super::{parse_optional_time, snapshot, AuditError};

/// The line of the users' available credits, summed over every user.
pub const USERS_AVAILABLE: &str = "users:available";
/// The line of the users' held credits, summed over every user.
pub const USERS_HELD: &str = "users:held";

/// One account's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Line {
    pub account: String,
    /// Every debit posted to it up to `as_of`.
    pub debits_micros: i64,
    /// Every credit posted to it up to `as_of`.
    pub credits_micros: i64,
    /// `debits − credits` when positive, else 0.
    pub debit_balance_micros: i64,
    /// `credits − debits` when positive, else 0.
    pub credit_balance_micros: i64,
}

impl Line {
    fn new(account: &str, debits: i64, credits: i64) -> Line {
        let net = i128::from(debits) - i128::from(credits);
        Line {
            account: account.to_string(),
            debits_micros: debits,
            credits_micros: credits,
            debit_balance_micros: i64::try_from(net.max(0)).unwrap_or(i64::MAX),
            credit_balance_micros: i64::try_from((-net).max(0)).unwrap_or(i64::MAX),
        }
    }
}

/// The trial balance at a time.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrialBalance {
    /// The time asked for; `null`: the head (everything projected so far).
    pub as_of: Option<DateTime<Utc>>,
    /// Every system account (those never posted to with zeros), then the users' lines.
    pub accounts: Vec<Line>,
    pub total_debits_micros: i64,
    pub total_credits_micros: i64,
    pub total_debit_balances_micros: i64,
    pub total_credit_balances_micros: i64,
    /// Total debits equal total credits, and debit balances equal credit balances.
    pub balanced: bool,
    /// What users hold in all (available + held): the sum of their balances.
    pub users_balance_micros: i64,
    /// Legs summed.
    pub legs: i64,
    /// The stream sequence the journal has applied up to (it reflects the events published
    /// up to there).
    pub journal_checkpoint: i64,
    /// At the head only: the `balances` read model's sums beside the journal's.
    pub read_model: Option<ReadModelTotals>,
}

/// The sums of the `balances` read model beside the journal's user and debt lines.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReadModelTotals {
    pub available_micros: i64,
    pub reserved_micros: i64,
    pub debt_micros: i64,
    /// `users:available` = Σ available, `users:held` = Σ reserved, `system:debt` = Σ debt.
    pub agrees: bool,
}

/// The trial balance as of `as_of` (text; absent or not in the past: the head).
pub async fn trial_balance(
    pool: &PgPool,
    now: DateTime<Utc>,
    as_of: Option<&str>,
) -> Result<TrialBalance, AuditError> {
    let as_of = parse_optional_time("as_of", as_of)?.filter(|t| *t < now);
    let mut tx = snapshot(pool).await?;
    let rows = sqlx::query(
        "SELECT ledger_account, SUM(debit_micros)::int8 AS debits,
                SUM(credit_micros)::int8 AS credits, count(*) AS legs
           FROM journal
          WHERE $1::timestamptz IS NULL OR recorded_at <= $1
          GROUP BY ledger_account",
    )
    .bind(as_of)
    .fetch_all(&mut *tx)
    .await?;
    let mut sums: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut legs = 0_i64;
    for row in &rows {
        let account: String = row.try_get("ledger_account")?;
        let name = match account.as_str() {
            USER_AVAILABLE => USERS_AVAILABLE.to_string(),
            USER_HELD => USERS_HELD.to_string(),
            _ => account,
        };
        sums.insert(name, (row.try_get("debits")?, row.try_get("credits")?));
        legs += row.try_get::<i64, _>("legs")?;
    }
    let mut accounts: Vec<Line> = Vec::with_capacity(sums.len() + SYSTEM_ACCOUNTS.len());
    for name in SYSTEM_ACCOUNTS {
        let (d, c) = sums.remove(name).unwrap_or((0, 0));
        accounts.push(Line::new(name, d, c));
    }
    let users_available = sums.remove(USERS_AVAILABLE).unwrap_or((0, 0));
    let users_held = sums.remove(USERS_HELD).unwrap_or((0, 0));
    // An account the code does not list (a journal written by a newer version): shown.
    for (name, (d, c)) in sums {
        accounts.push(Line::new(&name, d, c));
    }
    accounts.push(Line::new(
        USERS_AVAILABLE,
        users_available.0,
        users_available.1,
    ));
    accounts.push(Line::new(USERS_HELD, users_held.0, users_held.1));

    let total = |f: fn(&Line) -> i64| -> Result<i64, AuditError> {
        accounts
            .iter()
            .try_fold(0_i64, |sum, l| sum.checked_add(f(l)))
            .ok_or(AuditError::OutOfRange("a trial balance total"))
    };
    let total_debits = total(|l| l.debits_micros)?;
    let total_credits = total(|l| l.credits_micros)?;
    let total_debit_balances = total(|l| l.debit_balance_micros)?;
    let total_credit_balances = total(|l| l.credit_balance_micros)?;
    let users_balance = (users_available.1 - users_available.0) + (users_held.1 - users_held.0);

    let checkpoint: Option<i64> = sqlx::query_scalar(
        "SELECT stream_sequence FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(hub_projections::ProjectionKind::Journal.name())
    .fetch_optional(&mut *tx)
    .await?;

    let read_model = if as_of.is_none() {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(available_micros), 0)::int8 AS available,
                    COALESCE(SUM(reserved_micros), 0)::int8 AS reserved,
                    COALESCE(SUM(debt_micros), 0)::int8 AS debt
               FROM balances",
        )
        .fetch_one(&mut *tx)
        .await?;
        let (available, reserved, debt): (i64, i64, i64) = (
            row.try_get("available")?,
            row.try_get("reserved")?,
            row.try_get("debt")?,
        );
        let debt_line = accounts
            .iter()
            .find(|l| l.account == journal::DEBT)
            .map_or(0, |l| l.debits_micros - l.credits_micros);
        Some(ReadModelTotals {
            available_micros: available,
            reserved_micros: reserved,
            debt_micros: debt,
            agrees: available == users_available.1 - users_available.0
                && reserved == users_held.1 - users_held.0
                && debt == debt_line,
        })
    } else {
        None
    };
    tx.commit().await?;

    Ok(TrialBalance {
        as_of,
        balanced: total_debits == total_credits && total_debit_balances == total_credit_balances,
        accounts,
        total_debits_micros: total_debits,
        total_credits_micros: total_credits,
        total_debit_balances_micros: total_debit_balances,
        total_credit_balances_micros: total_credit_balances,
        users_balance_micros: users_balance,
        legs,
        journal_checkpoint: checkpoint.unwrap_or(0),
        read_model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_its_balance_on_one_side() {
        let grants = Line::new("system:grants", 100, 0);
        assert_eq!(
            (grants.debit_balance_micros, grants.credit_balance_micros),
            (100, 0)
        );
        let users = Line::new(USERS_AVAILABLE, 30, 100);
        assert_eq!(
            (users.debit_balance_micros, users.credit_balance_micros),
            (0, 70)
        );
    }
}
