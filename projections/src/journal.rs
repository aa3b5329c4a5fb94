//! The `journal` projection: every movement of credit as a balanced double-entry posting.
//!
//! Each user has two accounts: `user:available` (what they may spend) and `user:held` (what
//! their in-flight requests hold); their sum is the balance. The hub's side is a fixed set
//! of system accounts ([`SYSTEM_ACCOUNTS`]). A user's accounts are credit-normal (credits
//! the hub owes them are credits in the account): a grant *debits* `system:grants` and
//! *credits* `user:available`. So that every event's legs balance, and any set of events'
//! legs balance too: total debits equal total credits, at any time (the trial balance).
//!
//! What each event posts (amounts in micro-credits; legs of zero are left out):
//!
//! | event | debit | credit |
//! |---|---|---|
//! | `CreditsGranted` a | `system:grants` a | `user:available` a |
//! | `CreditsPurchased` a | `system:stripe` a | `user:available` a |
//! | `PromoCreditsApplied` a | `system:promos` a | `user:available` a |
//! | `CreditsRevoked` requested r, taken t | `user:available` t, `system:debt` r−t | `system:refunds` r |
//! | `CreditsReserved` a | `user:available` a | `user:held` a |
//! | `ReservationSettled` held h, charged c | `user:held` h | `system:usage-revenue` c, `user:available` h−c |
//! | the same, after its reservation expired, uncollected u | `user:available` c, `system:expired` u | `system:usage-revenue` c+u |
//! | `ReservationReleased` / `ReservationExpired` a | `user:held` a | `user:available` a |
//! | `DebtRepaid` a | `user:available` a | `system:debt` a |
//!
//! A refund recorded before shortfalls were kept as debts (its `debt_after` is zero though
//! it fell short) wrote its shortfall off: that leg debits `system:written-off` instead.

use chrono::{DateTime, Utc};
use hub_domain::{CreditEvent, Credits};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::model::Projected;

/// What a user may spend (balance − reserved).
pub const USER_AVAILABLE: &str = "user:available";
/// What a user's in-flight requests hold (reserved).
pub const USER_HELD: &str = "user:held";

/// Admins' grants.
pub const GRANTS: &str = "system:grants";
/// Credits bought through Stripe (a won dispute's restored credits too).
pub const STRIPE: &str = "system:stripe";
/// Promo codes redeemed.
pub const PROMOS: &str = "system:promos";
/// What usage cost: every charge, and what a late settlement could not collect.
pub const USAGE_REVENUE: &str = "system:usage-revenue";
/// Credits asked back by refunds and disputes (taken, owed or written off).
pub const REFUNDS: &str = "system:refunds";
/// Refund shortfalls users owe: raised by a refund that could not take everything back,
/// lowered by each repayment. Its balance is the sum of every account's debt.
pub const DEBT: &str = "system:debt";
/// Refund shortfalls written off (refunds recorded before debts were kept).
pub const WRITTEN_OFF: &str = "system:written-off";
/// Usage delivered after its reservation expired that the account could no longer pay:
/// a loss, the uncollected part of `system:usage-revenue`.
pub const EXPIRED: &str = "system:expired";

/// Every system account, in the order a trial balance lists them.
pub const SYSTEM_ACCOUNTS: [&str; 8] = [
    GRANTS,
    STRIPE,
    PROMOS,
    REFUNDS,
    DEBT,
    WRITTEN_OFF,
    USAGE_REVENUE,
    EXPIRED,
];

/// One leg of a posting: an amount on one side of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub account: &'static str,
    pub debit: i64,
    pub credit: i64,
}

impl Leg {
    fn debit(account: &'static str, amount: Credits) -> Leg {
        Leg {
            account,
            debit: amount.micros(),
            credit: 0,
        }
    }

    fn credit(account: &'static str, amount: Credits) -> Leg {
        Leg {
            account,
            debit: 0,
            credit: amount.micros(),
        }
    }
}

/// What one event posts: its kind, its cause (as the ledger names it) and its legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting<'a> {
    pub kind: &'static str,
    pub cause_type: &'static str,
    pub cause_id: &'a str,
    /// Never a leg of zero; debits and credits sum to the same amount.
    pub legs: Vec<Leg>,
}

fn micros(amount: i64) -> Credits {
    Credits::from_micros(amount)
}

/// The posting of one event; `None` for an event that moves no credit (an opening).
pub fn posting(event: &CreditEvent) -> Option<Posting<'_>> {
    let (kind, cause_type, cause_id, legs) = match event {
        CreditEvent::AccountOpened {} => return None,
        CreditEvent::CreditsGranted { key, amount, .. } => (
            "grant",
            "grant",
            key.as_str(),
            vec![
                Leg::debit(GRANTS, *amount),
                Leg::credit(USER_AVAILABLE, *amount),
            ],
        ),
        CreditEvent::CreditsPurchased {
            payment_id, amount, ..
        } => (
            "purchase",
            "payment",
            payment_id.as_str(),
            vec![
                Leg::debit(STRIPE, *amount),
                Leg::credit(USER_AVAILABLE, *amount),
            ],
        ),
        CreditEvent::PromoCreditsApplied { code, amount, .. } => (
            "promo",
            "promo",
            code.as_str(),
            vec![
                Leg::debit(PROMOS, *amount),
                Leg::credit(USER_AVAILABLE, *amount),
            ],
        ),
        CreditEvent::CreditsRevoked {
            payment_id,
            requested,
            taken,
            debt_after,
            ..
        } => {
            let shortfall = micros(requested.micros() - taken.micros());
            // Before debts were kept, a shortfall was written off (and no debt recorded).
            let owed_to = if debt_after.micros() == 0 {
                WRITTEN_OFF
            } else {
                DEBT
            };
            (
                "refund",
                "payment",
                payment_id.as_str(),
                vec![
                    Leg::debit(USER_AVAILABLE, *taken),
                    Leg::debit(owed_to, shortfall),
                    Leg::credit(REFUNDS, *requested),
                ],
            )
        }
        CreditEvent::CreditsReserved {
            request_id, amount, ..
        } => (
            "reserve",
            "request",
            request_id.as_str(),
            vec![
                Leg::debit(USER_AVAILABLE, *amount),
                Leg::credit(USER_HELD, *amount),
            ],
        ),
        CreditEvent::ReservationSettled {
            request_id,
            reserved,
            charged,
            after_expiry: None,
            ..
        } => (
            "charge",
            "request",
            request_id.as_str(),
            vec![
                Leg::debit(USER_HELD, *reserved),
                Leg::credit(USAGE_REVENUE, *charged),
                Leg::credit(USER_AVAILABLE, micros(reserved.micros() - charged.micros())),
            ],
        ),
        CreditEvent::ReservationSettled {
            request_id,
            charged,
            after_expiry: Some(late),
            ..
        } => (
            "charge",
            "request",
            request_id.as_str(),
            // The hold had already gone back at the expiry: the charge is taken from what
            // is available, and what it could not take is the hub's loss.
            vec![
                Leg::debit(USER_AVAILABLE, *charged),
                Leg::debit(EXPIRED, late.uncollected),
                Leg::credit(
                    USAGE_REVENUE,
                    micros(charged.micros() + late.uncollected.micros()),
                ),
            ],
        ),
        CreditEvent::ReservationReleased {
            request_id, amount, ..
        } => (
            "release",
            "request",
            request_id.as_str(),
            vec![
                Leg::debit(USER_HELD, *amount),
                Leg::credit(USER_AVAILABLE, *amount),
            ],
        ),
        CreditEvent::ReservationExpired {
            request_id, amount, ..
        } => (
            "expiry",
            "request",
            request_id.as_str(),
            vec![
                Leg::debit(USER_HELD, *amount),
                Leg::credit(USER_AVAILABLE, *amount),
            ],
        ),
        CreditEvent::DebtRepaid {
            payment_id, amount, ..
        } => (
            "debt_repayment",
            "payment",
            payment_id.as_str(),
            vec![
                Leg::debit(USER_AVAILABLE, *amount),
                Leg::credit(DEBT, *amount),
            ],
        ),
    };
    Some(Posting {
        kind,
        cause_type,
        cause_id,
        legs: legs
            .into_iter()
            .filter(|l| l.debit != 0 || l.credit != 0)
            .collect(),
    })
}

/// Journal rows as columns, for one `UNNEST` insert.
#[derive(Default)]
struct JournalRows<'a> {
    accounts: Vec<Uuid>,
    sequences: Vec<i64>,
    legs: Vec<i16>,
    ledger_accounts: Vec<&'static str>,
    debits: Vec<i64>,
    credits: Vec<i64>,
    kinds: Vec<&'static str>,
    cause_types: Vec<&'static str>,
    cause_ids: Vec<&'a str>,
    stream_sequences: Vec<i64>,
    recorded_at: Vec<DateTime<Utc>>,
}

/// Insert the legs of `events`; a leg already written (a redelivery) is left as it is.
pub(crate) async fn apply(conn: &mut PgConnection, events: &[Projected]) -> anyhow::Result<()> {
    let mut rows = JournalRows::default();
    for e in events {
        let Some(p) = posting(&e.event) else {
            continue;
        };
        for (i, leg) in p.legs.iter().enumerate() {
            rows.accounts.push(e.account);
            rows.sequences.push(e.sequence);
            rows.legs.push(i16::try_from(i)?);
            rows.ledger_accounts.push(leg.account);
            rows.debits.push(leg.debit);
            rows.credits.push(leg.credit);
            rows.kinds.push(p.kind);
            rows.cause_types.push(p.cause_type);
            rows.cause_ids.push(p.cause_id);
            rows.stream_sequences.push(e.stream_sequence);
            rows.recorded_at.push(e.recorded_at);
        }
    }
    if rows.accounts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO journal (account_id, sequence, leg, ledger_account, debit_micros,
                              credit_micros, kind, cause_type, cause_id, stream_sequence,
                              recorded_at)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::int2[], $4::text[], $5::int8[],
                              $6::int8[], $7::text[], $8::text[], $9::text[], $10::int8[],
                              $11::timestamptz[])
         ON CONFLICT (account_id, sequence, leg) DO NOTHING",
    )
    .bind(&rows.accounts)
    .bind(&rows.sequences)
    .bind(&rows.legs)
    .bind(&rows.ledger_accounts)
    .bind(&rows.debits)
    .bind(&rows.credits)
    .bind(&rows.kinds)
    .bind(&rows.cause_types)
    .bind(&rows.cause_ids)
    .bind(&rows.stream_sequences)
    .bind(&rows.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_domain::{
        CreditAccount, CreditCommand, Decider, IdempotencyKey, LateSettlement, RequestId,
    };
    use std::collections::BTreeMap;

    const C: i64 = 1_000_000;

    fn key(k: &str) -> IdempotencyKey {
        IdempotencyKey::parse(k).expect("a key")
    }

    fn request(r: &str) -> RequestId {
        RequestId::parse(r).expect("a request id")
    }

    /// Run commands on one account; after each, every event's posting must balance, and
    /// the user's two accounts must equal the account's available and reserved credits,
    /// and `system:debt` its debt.
    fn run(commands: Vec<CreditCommand>) -> BTreeMap<&'static str, i64> {
        let mut account = CreditAccount::default();
        let mut net: BTreeMap<&'static str, i64> = BTreeMap::new();
        for command in std::iter::once(CreditCommand::OpenAccount).chain(commands) {
            let decision = account.decide(command).expect("the command is accepted");
            for event in decision.events {
                if let Some(p) = posting(&event) {
                    let debits: i64 = p.legs.iter().map(|l| l.debit).sum();
                    let credits: i64 = p.legs.iter().map(|l| l.credit).sum();
                    assert_eq!(debits, credits, "{event:?} posts {:?}", p.legs);
                    assert!(p.legs.iter().all(|l| (l.debit > 0) != (l.credit > 0)));
                    for leg in &p.legs {
                        *net.entry(leg.account).or_default() += leg.credit - leg.debit;
                    }
                }
                account.evolve(event);
            }
            assert_eq!(
                net.get(USER_AVAILABLE).copied().unwrap_or(0),
                account.available().micros()
            );
            assert_eq!(
                net.get(USER_HELD).copied().unwrap_or(0),
                account.reserved().micros()
            );
            assert_eq!(
                -net.get(DEBT).copied().unwrap_or(0),
                account.debt().micros()
            );
        }
        net
    }

    #[test]
    fn every_movement_balances_and_the_user_accounts_follow_the_aggregate() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        let net = run(vec![
            CreditCommand::GrantCredits {
                key: key("g1"),
                amount: micros(100 * C),
                reason: "welcome".into(),
                granted_by: "admin".into(),
            },
            CreditCommand::PurchaseCredits {
                payment_id: key("cs_1"),
                amount: micros(50 * C),
            },
            CreditCommand::ApplyPromoCredits {
                code: key("PROMO"),
                amount: micros(10 * C),
            },
            CreditCommand::ReserveCredits {
                request_id: request("r1"),
                amount: micros(30 * C),
                expires_at: later,
                now,
                key: None,
            },
            CreditCommand::SettleReservation {
                request_id: request("r1"),
                charge: micros(12 * C),
            },
            CreditCommand::ReserveCredits {
                request_id: request("r2"),
                amount: micros(20 * C),
                expires_at: later,
                now,
                key: None,
            },
            CreditCommand::ReleaseReservation {
                request_id: request("r2"),
            },
            CreditCommand::ReserveCredits {
                request_id: request("r3"),
                amount: micros(140 * C),
                expires_at: later,
                now,
                key: None,
            },
            // 8 available, 140 held: the refund of 50 takes 8 and 42 are owed.
            CreditCommand::RevokeCredits {
                key: key("refund-1"),
                payment_id: key("cs_1"),
                amount: micros(50 * C),
            },
            // The expiry frees 140: the debt is repaid first.
            CreditCommand::ExpireReservations {
                now: later + chrono::Duration::seconds(1),
            },
        ]);
        assert_eq!(net.get(USER_AVAILABLE), Some(&(98 * C)));
        assert_eq!(net.get(GRANTS), Some(&(-100 * C)));
        assert_eq!(net.get(STRIPE), Some(&(-50 * C)));
        assert_eq!(net.get(PROMOS), Some(&(-10 * C)));
        assert_eq!(net.get(USAGE_REVENUE), Some(&(12 * C)));
        assert_eq!(net.get(REFUNDS), Some(&(50 * C)));
        assert_eq!(net.get(DEBT).copied().unwrap_or(0), 0);
        assert_eq!(net.values().sum::<i64>(), 0);
    }

    #[test]
    fn a_late_settlement_posts_what_it_could_not_collect_to_expired() {
        let event = CreditEvent::ReservationSettled {
            request_id: request("r"),
            reserved: micros(10 * C),
            charged: micros(4 * C),
            balance_after: micros(0),
            reserved_after: micros(0),
            usage: None,
            after_expiry: Some(LateSettlement {
                uncollected: micros(6 * C),
            }),
        };
        let p = posting(&event).expect("a posting");
        assert_eq!(
            p.legs,
            vec![
                Leg::debit(USER_AVAILABLE, micros(4 * C)),
                Leg::debit(EXPIRED, micros(6 * C)),
                Leg::credit(USAGE_REVENUE, micros(10 * C)),
            ]
        );
    }

    #[test]
    fn a_refund_recorded_before_debts_were_kept_writes_its_shortfall_off() {
        let event = CreditEvent::CreditsRevoked {
            key: key("k"),
            payment_id: key("cs"),
            requested: micros(10 * C),
            taken: micros(3 * C),
            balance_after: micros(0),
            reserved_after: micros(0),
            debt_after: micros(0),
        };
        let p = posting(&event).expect("a posting");
        assert_eq!(
            p.legs,
            vec![
                Leg::debit(USER_AVAILABLE, micros(3 * C)),
                Leg::debit(WRITTEN_OFF, micros(7 * C)),
                Leg::credit(REFUNDS, micros(10 * C)),
            ]
        );
    }
}
