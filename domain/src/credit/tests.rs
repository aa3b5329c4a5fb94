//! Given/when/then tests for every rule of the credit account, and a property test that
//! random command sequences keep every invariant.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use proptest::prelude::*;

use super::*;
use crate::decider::Decider;
use crate::ids::{IdempotencyKey, RequestId};
use crate::money::{Credits, MoneyError};

type AccountTest = TestFramework<CreditAccount>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed time")
}

fn rid(s: &str) -> RequestId {
    RequestId::parse(s).expect("a valid request id")
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("a valid key")
}

fn c(micros: i64) -> Credits {
    Credits::from_micros(micros)
}

fn granted(k: &str, amount: i64, balance: i64, reserved: i64) -> CreditEvent {
    CreditEvent::CreditsGranted {
        key: key(k),
        amount: c(amount),
        reason: "welcome".into(),
        granted_by: "admin".into(),
        balance_after: c(balance),
        reserved_after: c(reserved),
    }
}

fn grant(k: &str, amount: i64) -> CreditCommand {
    CreditCommand::GrantCredits {
        key: key(k),
        amount: c(amount),
        reason: "welcome".into(),
        granted_by: "admin".into(),
    }
}

fn reserve(r: &str, amount: i64, expires_in_s: i64) -> CreditCommand {
    CreditCommand::ReserveCredits {
        request_id: rid(r),
        amount: c(amount),
        expires_at: t0() + Duration::seconds(expires_in_s),
        now: t0(),
    }
}

fn reserved(r: &str, amount: i64, expires_in_s: i64, balance: i64, res: i64) -> CreditEvent {
    CreditEvent::CreditsReserved {
        request_id: rid(r),
        amount: c(amount),
        expires_at: t0() + Duration::seconds(expires_in_s),
        balance_after: c(balance),
        reserved_after: c(res),
    }
}

fn opened() -> CreditEvent {
    CreditEvent::AccountOpened {}
}

fn account_with(events: &[CreditEvent]) -> CreditAccount {
    let mut account = CreditAccount::default();
    for e in events {
        account.evolve(e.clone());
    }
    account
}

#[test]
fn opening_a_new_account_emits_account_opened() {
    AccountTest::with(())
        .given_no_previous_events()
        .when(CreditCommand::OpenAccount)
        .then_expect_events(vec![opened()]);
}

#[test]
fn opening_an_open_account_changes_nothing() {
    AccountTest::with(())
        .given(vec![opened()])
        .when(CreditCommand::OpenAccount)
        .then_expect_events(vec![]);
}

#[test]
fn commands_on_an_unopened_account_are_refused() {
    AccountTest::with(())
        .given_no_previous_events()
        .when(grant("g1", 10))
        .then_expect_error(CreditError::AccountNotOpen);
}

#[test]
fn a_grant_adds_credits_and_reports_the_balance_after() {
    AccountTest::with(())
        .given(vec![opened(), granted("g1", 100, 100, 0)])
        .when(grant("g2", 50))
        .then_expect_events(vec![granted("g2", 50, 150, 0)]);
}

#[test]
fn a_repeated_grant_key_writes_nothing_and_returns_the_first_outcome() {
    AccountTest::with(())
        .given(vec![opened(), granted("g1", 100, 100, 0)])
        .when(grant("g1", 999))
        .then_expect_events(vec![]);
    let account = account_with(&[opened(), granted("g1", 100, 100, 0)]);
    let decision = account
        .decide(grant("g1", 999))
        .expect("a repeat is not an error");
    assert_eq!(decision.replay_of, Some(granted("g1", 100, 100, 0)));
}

#[test]
fn a_grant_refuses_zero_and_negative_amounts() {
    AccountTest::with(())
        .given(vec![opened()])
        .when(grant("g1", 0))
        .then_expect_error(CreditError::InvalidAmount(MoneyError::NotPositive(0)));
    AccountTest::with(())
        .given(vec![opened()])
        .when(grant("g1", -3))
        .then_expect_error(CreditError::InvalidAmount(MoneyError::NotPositive(-3)));
}

#[test]
fn a_grant_refuses_an_overlong_reason() {
    AccountTest::with(())
        .given(vec![opened()])
        .when(CreditCommand::GrantCredits {
            key: key("g1"),
            amount: c(1),
            reason: "x".repeat(REASON_LEN_MAX + 1),
            granted_by: "admin".into(),
        })
        .then_expect_error(CreditError::ReasonTooLong {
            max: REASON_LEN_MAX,
        });
}

#[test]
fn a_purchase_credits_once_per_payment_id() {
    let purchased = CreditEvent::CreditsPurchased {
        payment_id: key("cs_1"),
        amount: c(1_000),
        balance_after: c(1_000),
        reserved_after: c(0),
    };
    AccountTest::with(())
        .given(vec![opened()])
        .when(CreditCommand::PurchaseCredits {
            payment_id: key("cs_1"),
            amount: c(1_000),
        })
        .then_expect_events(vec![purchased.clone()]);
    AccountTest::with(())
        .given(vec![opened(), purchased])
        .when(CreditCommand::PurchaseCredits {
            payment_id: key("cs_1"),
            amount: c(1_000),
        })
        .then_expect_events(vec![]);
}

#[test]
fn a_promo_code_credits_once_per_account() {
    let applied = CreditEvent::PromoCreditsApplied {
        code: key("WELCOME10"),
        amount: c(10),
        balance_after: c(10),
        reserved_after: c(0),
    };
    AccountTest::with(())
        .given(vec![opened()])
        .when(CreditCommand::ApplyPromoCredits {
            code: key("WELCOME10"),
            amount: c(10),
        })
        .then_expect_events(vec![applied.clone()]);
    AccountTest::with(())
        .given(vec![opened(), applied])
        .when(CreditCommand::ApplyPromoCredits {
            code: key("WELCOME10"),
            amount: c(10),
        })
        .then_expect_events(vec![]);
}

fn revoke(k: &str, amount: i64) -> CreditCommand {
    CreditCommand::RevokeCredits {
        key: key(k),
        payment_id: key("cs_1"),
        amount: c(amount),
    }
}

fn revoked(k: &str, requested: i64, taken: i64, balance: i64, res: i64) -> CreditEvent {
    CreditEvent::CreditsRevoked {
        key: key(k),
        payment_id: key("cs_1"),
        requested: c(requested),
        taken: c(taken),
        balance_after: c(balance),
        reserved_after: c(res),
    }
}

#[test]
fn a_revocation_takes_the_refunded_credits_back() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 1_000, 1_000, 0)])
        .when(revoke("refund:cs_1:8000", 1_000))
        .then_expect_events(vec![revoked("refund:cs_1:8000", 1_000, 1_000, 0, 0)]);
}

#[test]
fn a_revocation_of_credits_already_spent_takes_what_is_available_and_records_the_shortfall() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 1_000, 1_000, 0)])
        .when(revoke("refund:cs_1:8000", 1_500))
        .then_expect_events(vec![revoked("refund:cs_1:8000", 1_500, 1_000, 0, 0)]);
}

#[test]
fn a_revocation_never_takes_credits_held_by_a_reservation() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(revoke("refund:cs_1:8000", 100))
        .then_expect_events(vec![revoked("refund:cs_1:8000", 100, 40, 60, 60)]);
}

#[test]
fn a_revocation_with_nothing_available_is_recorded_with_its_whole_shortfall() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 100, 30, 100, 100),
        ])
        .when(revoke("refund:cs_1:8000", 50))
        .then_expect_events(vec![revoked("refund:cs_1:8000", 50, 0, 100, 100)]);
}

#[test]
fn a_repeated_revocation_returns_the_first_outcome_and_takes_nothing_more() {
    let first = revoked("refund:cs_1:8000", 40, 40, 60, 0);
    let account = account_with(&[opened(), granted("g", 100, 100, 0), first.clone()]);
    let decision = account
        .decide(revoke("refund:cs_1:8000", 40))
        .expect("a repeat is not an error");
    assert!(decision.events.is_empty());
    assert_eq!(decision.replay_of, Some(first));
}

#[test]
fn a_revocation_refuses_zero_and_negative_amounts() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 100, 100, 0)])
        .when(revoke("refund:cs_1:0", 0))
        .then_expect_error(CreditError::InvalidAmount(MoneyError::NotPositive(0)));
}

#[test]
fn a_reservation_holds_credits_without_changing_the_balance() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 100, 100, 0)])
        .when(reserve("r1", 60, 30))
        .then_expect_events(vec![reserved("r1", 60, 30, 100, 60)]);
}

#[test]
fn a_reservation_larger_than_the_available_balance_is_refused() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(reserve("r2", 41, 30))
        .then_expect_error(CreditError::InsufficientCredits {
            requested: c(41),
            available: c(40),
        });
}

#[test]
fn a_reservation_may_take_exactly_the_available_balance() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(reserve("r2", 40, 30))
        .then_expect_events(vec![reserved("r2", 40, 30, 100, 100)]);
}

#[test]
fn a_reservation_must_expire_in_the_future() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 100, 100, 0)])
        .when(reserve("r1", 10, 0))
        .then_expect_error(CreditError::ExpiryNotInFuture);
}

#[test]
fn a_repeated_reservation_returns_the_first_one_and_holds_nothing_more() {
    let given = vec![
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 60, 30, 100, 60),
    ];
    AccountTest::with(())
        .given(given.clone())
        .when(reserve("r1", 90, 99))
        .then_expect_events(vec![]);
    let decision = account_with(&given)
        .decide(reserve("r1", 90, 99))
        .expect("a repeat is not an error");
    assert_eq!(decision.replay_of, Some(reserved("r1", 60, 30, 100, 60)));
}

#[test]
fn a_reservation_first_expires_those_past_their_time() {
    // r1 expired 10 s before now; its 60 come back before r2 is checked.
    let given = vec![
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 60, -10, 100, 60),
    ];
    AccountTest::with(())
        .given(given)
        .when(reserve("r2", 100, 30))
        .then_expect_events(vec![
            CreditEvent::ReservationExpired {
                request_id: rid("r1"),
                amount: c(60),
                balance_after: c(100),
                reserved_after: c(0),
            },
            reserved("r2", 100, 30, 100, 100),
        ]);
}

#[test]
fn settling_charges_the_actual_cost_and_releases_the_rest() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(25),
        })
        .then_expect_events(vec![CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(60),
            charged: c(25),
            balance_after: c(75),
            reserved_after: c(0),
            usage: None,
            after_expiry: None,
        }]);
}

#[test]
fn settling_for_more_than_was_reserved_is_refused() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(61),
        })
        .then_expect_error(CreditError::ChargeExceedsReservation {
            charge: c(61),
            reserved: c(60),
        });
}

#[test]
fn settling_twice_returns_the_first_settlement() {
    let settled = CreditEvent::ReservationSettled {
        request_id: rid("r1"),
        reserved: c(60),
        charged: c(25),
        balance_after: c(75),
        reserved_after: c(0),
        usage: None,
        after_expiry: None,
    };
    let given = vec![
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 60, 30, 100, 60),
        settled.clone(),
    ];
    AccountTest::with(())
        .given(given.clone())
        .when(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(50),
        })
        .then_expect_events(vec![]);
    let decision = account_with(&given)
        .decide(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(50),
        })
        .expect("a repeat is not an error");
    assert_eq!(decision.replay_of, Some(settled));
}

#[test]
fn settling_an_unknown_reservation_is_refused() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 100, 100, 0)])
        .when(CreditCommand::SettleReservation {
            request_id: rid("nope"),
            charge: c(1),
        })
        .then_expect_error(CreditError::ReservationNotFound(rid("nope")));
}

#[test]
fn settling_a_released_reservation_is_refused() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
            CreditEvent::ReservationReleased {
                request_id: rid("r1"),
                amount: c(60),
                balance_after: c(100),
                reserved_after: c(0),
            },
        ])
        .when(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(1),
        })
        .then_expect_error(CreditError::ReservationReleased(rid("r1")));
}

#[test]
fn settling_an_expired_reservation_is_refused() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
            CreditEvent::ReservationExpired {
                request_id: rid("r1"),
                amount: c(60),
                balance_after: c(100),
                reserved_after: c(0),
            },
        ])
        .when(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(1),
        })
        .then_expect_error(CreditError::ReservationExpired(rid("r1")));
}

#[test]
fn releasing_gives_the_whole_reservation_back() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(CreditCommand::ReleaseReservation {
            request_id: rid("r1"),
        })
        .then_expect_events(vec![CreditEvent::ReservationReleased {
            request_id: rid("r1"),
            amount: c(60),
            balance_after: c(100),
            reserved_after: c(0),
        }]);
}

#[test]
fn releasing_a_settled_reservation_is_refused() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
            CreditEvent::ReservationSettled {
                request_id: rid("r1"),
                reserved: c(60),
                charged: c(60),
                balance_after: c(40),
                reserved_after: c(0),
                usage: None,
                after_expiry: None,
            },
        ])
        .when(CreditCommand::ReleaseReservation {
            request_id: rid("r1"),
        })
        .then_expect_error(CreditError::ReservationSettled(rid("r1")));
}

#[test]
fn expiring_releases_only_reservations_past_their_time() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 10, 5, 100, 10),
            reserved("r2", 20, 60, 100, 30),
        ])
        .when(CreditCommand::ExpireReservations {
            now: t0() + Duration::seconds(5),
        })
        .then_expect_events(vec![CreditEvent::ReservationExpired {
            request_id: rid("r1"),
            amount: c(10),
            balance_after: c(100),
            reserved_after: c(20),
        }]);
}

#[test]
fn a_snapshot_of_the_state_round_trips_through_json() {
    let account = account_with(&[
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 10, 5, 100, 10),
        reserved("r2", 20, 60, 100, 30),
        CreditEvent::ReservationReleased {
            request_id: rid("r2"),
            amount: c(20),
            balance_after: c(100),
            reserved_after: c(10),
        },
    ]);
    let json = serde_json::to_value(&account).expect("state serializes");
    let back: CreditAccount = serde_json::from_value(json).expect("state deserializes");
    assert_eq!(back, account);
}

#[test]
fn the_account_forgets_old_keys_but_keeps_a_bounded_window() {
    let mut account = account_with(&[opened()]);
    for i in 0..(RECENT_KEYS_MAX + 10) {
        let decision = account
            .decide(grant(&format!("g{i}"), 1))
            .expect("grant is accepted");
        for e in decision.events {
            account.evolve(e);
        }
    }
    let json = serde_json::to_string(&account).expect("state serializes");
    // Bounded: a few hundred bytes per remembered key, not one entry per event ever.
    assert!(
        json.len() < RECENT_KEYS_MAX * 400,
        "snapshot is {} bytes",
        json.len()
    );
    let last = format!("g{}", RECENT_KEYS_MAX + 9);
    assert!(account
        .decide(grant(&last, 1))
        .expect("repeat")
        .replay_of
        .is_some());
}

// ---- property test ----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Grant(u8, i64),
    Revoke(u8, i64),
    Reserve(u8, i64, i64),
    Settle(u8, i64),
    SettleUsage(u8, i64),
    Release(u8),
    Expire(i64),
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 1i64..500).prop_map(|(k, a)| Op::Grant(k, a)),
        (0u8..6, 1i64..600).prop_map(|(k, a)| Op::Revoke(k, a)),
        (0u8..12, 1i64..400, 1i64..50).prop_map(|(r, a, e)| Op::Reserve(r, a, e)),
        (0u8..12, 0i64..400).prop_map(|(r, c)| Op::Settle(r, c)),
        (0u8..12, 0i64..500).prop_map(|(r, c)| Op::SettleUsage(r, c)),
        (0u8..12).prop_map(Op::Release),
        (0i64..60).prop_map(Op::Expire),
        (1i64..20).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_command_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..120)) {
        let mut account = account_with(&[opened()]);
        let mut now = t0();
        let mut all_events = vec![opened()];
        // Each key's first decisive event; a repeat must return exactly it.
        let mut first: std::collections::HashMap<String, CreditEvent> = Default::default();
        let mut credited: i64 = 0;
        let mut charged: i64 = 0;
        let mut revoked_total: i64 = 0;

        for op in ops {
            let command = match op {
                Op::Grant(k, a) => grant(&format!("g{k}"), a),
                Op::Revoke(k, a) => revoke(&format!("v{k}"), a),
                Op::Reserve(r, a, e) => CreditCommand::ReserveCredits {
                    request_id: rid(&format!("r{r}")),
                    amount: c(a),
                    expires_at: now + Duration::seconds(e),
                    now,
                },
                Op::Settle(r, ch) => CreditCommand::SettleReservation {
                    request_id: rid(&format!("r{r}")),
                    charge: c(ch),
                },
                Op::SettleUsage(r, cost) => CreditCommand::SettleUsage {
                    request_id: rid(&format!("r{r}")),
                    usage: usage(cost),
                },
                Op::Release(r) => CreditCommand::ReleaseReservation { request_id: rid(&format!("r{r}")) },
                Op::Expire(dt) => CreditCommand::ExpireReservations { now: now + Duration::seconds(dt) },
                Op::Tick(dt) => { now += Duration::seconds(dt); continue; }
            };
            let key = command.idempotency_key();
            let before = account.clone();
            match account.decide(command) {
                Ok(decision) => {
                    if let Some(replayed) = &decision.replay_of {
                        prop_assert!(decision.events.is_empty(), "a repeat writes nothing");
                        if let Some(k) = &key {
                            prop_assert_eq!(Some(replayed), first.get(k), "a repeat returns the first outcome");
                        }
                    }
                    for e in decision.events {
                        if let Some(k) = e.idempotency_key() {
                            prop_assert!(!first.contains_key(&k), "key {} applied twice", k);
                            first.insert(k, e.clone());
                        }
                        match &e {
                            CreditEvent::CreditsGranted { amount, .. } => credited += amount.micros(),
                            CreditEvent::CreditsRevoked { requested, taken, .. } => {
                                prop_assert!(taken <= requested, "never takes more than asked");
                                prop_assert!(!taken.is_negative());
                                prop_assert!(*taken <= before.available(), "never takes more than is available");
                                revoked_total += taken.micros();
                            }
                            CreditEvent::ReservationSettled { charged: ch, reserved, after_expiry, .. } => {
                                prop_assert!(ch <= reserved);
                                if after_expiry.is_some() {
                                    prop_assert!(*ch <= before.available(), "a late charge never overdraws");
                                }
                                charged += ch.micros();
                            }
                            _ => {}
                        }
                        account.evolve(e.clone());
                        all_events.push(e);
                    }
                }
                Err(_) => prop_assert_eq!(&account, &before, "a refused command changes nothing"),
            }
            prop_assert!(!account.available().is_negative(), "available went negative");
            prop_assert!(!account.reserved().is_negative());
            prop_assert_eq!(account.reserved(), account.sum_of_active_reservations());
            prop_assert_eq!(
                account.balance().micros(),
                credited - charged - revoked_total,
                "balance = credits in - charges - revocations"
            );
        }
        // A fresh fold of every event gives the same state (what replay and snapshots rely on).
        prop_assert_eq!(account_with(&all_events), account);
    }
}

#[test]
fn a_recalled_settlement_is_replayed_even_after_the_account_forgot_it() {
    let settled = CreditEvent::ReservationSettled {
        request_id: rid("old"),
        reserved: c(60),
        charged: c(25),
        balance_after: c(75),
        reserved_after: c(0),
        usage: None,
        after_expiry: None,
    };
    let mut account = account_with(&[opened(), granted("g", 100, 100, 0)]);
    let settle = CreditCommand::SettleReservation {
        request_id: rid("old"),
        charge: c(1),
    };
    assert_eq!(
        account.decide(settle.clone()),
        Err(CreditError::ReservationNotFound(rid("old")))
    );
    account.recall(vec![settled.clone()]);
    let decision = account.decide(settle).expect("replayed");
    assert_eq!(decision.replay_of, Some(settled));
    assert_eq!(account.balance(), c(100), "recall never changes totals");
}

fn usage(cost: i64) -> Box<UsageRecord> {
    Box::new(UsageRecord {
        model: "mock-1".into(),
        provider: "mock".into(),
        api_key: None,
        input_tokens: 12,
        output_tokens: 30,
        cached_input_tokens: 0,
        token_source: TokenSource::Provider,
        latency_ms: 40,
        first_token_ms: Some(5),
        cost: c(cost),
        price_version: "v1".into(),
        outcome: UsageOutcome::Completed,
    })
}

#[test]
fn settling_from_usage_charges_its_cost_and_records_the_usage() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(CreditCommand::SettleUsage {
            request_id: rid("r1"),
            usage: usage(25),
        })
        .then_expect_events(vec![CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(60),
            charged: c(25),
            balance_after: c(75),
            reserved_after: c(0),
            usage: Some(usage(25)),
            after_expiry: None,
        }]);
}

#[test]
fn usage_costing_more_than_was_reserved_is_charged_the_reservation_only() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
        ])
        .when(CreditCommand::SettleUsage {
            request_id: rid("r1"),
            usage: usage(90),
        })
        .then_expect_events(vec![CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(60),
            charged: c(60),
            balance_after: c(40),
            reserved_after: c(0),
            usage: Some(usage(90)),
            after_expiry: None,
        }]);
}

#[test]
fn a_repeated_usage_settlement_returns_the_first_and_charges_nothing_more() {
    let first = CreditEvent::ReservationSettled {
        request_id: rid("r1"),
        reserved: c(60),
        charged: c(25),
        balance_after: c(75),
        reserved_after: c(0),
        usage: Some(usage(25)),
        after_expiry: None,
    };
    let account = [
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 60, 30, 100, 60),
        first.clone(),
    ]
    .into_iter()
    .fold(CreditAccount::default(), |mut a, e| {
        a.evolve(e);
        a
    });
    let decision = account
        .decide(CreditCommand::SettleUsage {
            request_id: rid("r1"),
            usage: usage(50),
        })
        .expect("a repeat is not an error");
    assert!(decision.events.is_empty());
    assert_eq!(decision.replay_of, Some(first));
}

fn expired(r: &str, amount: i64, balance: i64, res: i64) -> CreditEvent {
    CreditEvent::ReservationExpired {
        request_id: rid(r),
        amount: c(amount),
        balance_after: c(balance),
        reserved_after: c(res),
    }
}

#[test]
fn usage_settled_after_its_reservation_expired_is_still_charged() {
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
            expired("r1", 60, 100, 0),
        ])
        .when(CreditCommand::SettleUsage {
            request_id: rid("r1"),
            usage: usage(25),
        })
        .then_expect_events(vec![CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(60),
            charged: c(25),
            balance_after: c(75),
            reserved_after: c(0),
            usage: Some(usage(25)),
            after_expiry: Some(LateSettlement { uncollected: c(0) }),
        }]);
}

#[test]
fn a_late_settlement_is_capped_at_the_reservation_and_at_what_is_available() {
    // r1 expired; r2 now holds 70 of the 100, so only 30 are available for r1's 60.
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 100, 100, 0),
            reserved("r1", 60, 30, 100, 60),
            expired("r1", 60, 100, 0),
            reserved("r2", 70, 90, 100, 70),
        ])
        .when(CreditCommand::SettleUsage {
            request_id: rid("r1"),
            usage: usage(90),
        })
        .then_expect_events(vec![CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(60),
            charged: c(30),
            balance_after: c(70),
            reserved_after: c(70),
            usage: Some(usage(90)),
            after_expiry: Some(LateSettlement { uncollected: c(30) }),
        }]);
}

#[test]
fn a_late_settlement_repeated_charges_once() {
    let given = vec![
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 60, 30, 100, 60),
        expired("r1", 60, 100, 0),
    ];
    let mut account = account_with(&given);
    let settle = CreditCommand::SettleUsage {
        request_id: rid("r1"),
        usage: usage(25),
    };
    let first = account
        .decide(settle.clone())
        .expect("a late settlement is accepted");
    for event in first.events.clone() {
        account.evolve(event);
    }
    let again = account.decide(settle).expect("a repeat is not an error");
    assert!(again.events.is_empty());
    assert_eq!(again.replay_of, first.events.first().cloned());
    assert_eq!(account.balance(), c(75));
    assert_eq!(
        account.reservation_state(&rid("r1")),
        ReservationState::Settled
    );
}

#[test]
fn a_late_settlement_found_only_in_the_store_is_charged_after_recall() {
    // The account forgot the expiry (it fell out of its recent keys); the command layer
    // recalls it from the store by key, and the settlement is then charged.
    let mut account = account_with(&[opened(), granted("g", 100, 100, 0)]);
    let settle = CreditCommand::SettleUsage {
        request_id: rid("old"),
        usage: usage(25),
    };
    assert_eq!(
        account.decide(settle.clone()),
        Err(CreditError::ReservationNotFound(rid("old")))
    );
    account.recall(vec![expired("old", 60, 100, 0)]);
    let decision = account.decide(settle).expect("charged after recall");
    assert!(matches!(
        decision.events.as_slice(),
        [CreditEvent::ReservationSettled { charged, after_expiry: Some(_), .. }] if *charged == c(25)
    ));
}
