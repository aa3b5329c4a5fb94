//! Given/when/then tests for every rule of the credit account, and a property test that
//! random command sequences keep every invariant.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use proptest::prelude::*;

use super::*;
use crate::decider::Decider;
use crate::ids::{ApiKeyId, IdempotencyKey, RequestId};
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
        key: None,
    }
}

fn reserved(r: &str, amount: i64, expires_in_s: i64, balance: i64, res: i64) -> CreditEvent {
    CreditEvent::CreditsReserved {
        request_id: rid(r),
        amount: c(amount),
        expires_at: t0() + Duration::seconds(expires_in_s),
        balance_after: c(balance),
        reserved_after: c(res),
        api_key: None,
        key_limit: None,
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
        // On an account that owed nothing before: the shortfall.
        debt_after: c(requested - taken),
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
    /// Request, amount, expiry in seconds, and which payer: see [`payer_key`].
    Reserve(u8, i64, i64, u8),
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
        (0u8..12, 1i64..400, 1i64..50, 0u8..4).prop_map(|(r, a, e, p)| Op::Reserve(r, a, e, p)),
        (0u8..12, 0i64..400).prop_map(|(r, c)| Op::Settle(r, c)),
        (0u8..12, 0i64..500).prop_map(|(r, c)| Op::SettleUsage(r, c)),
        (0u8..12).prop_map(Op::Release),
        (0i64..60).prop_map(Op::Expire),
        (1i64..20).prop_map(Op::Tick),
    ]
}

fn api_key(n: u128) -> ApiKeyId {
    ApiKeyId(uuid::Uuid::from_u128(n))
}

/// Payer 0 is a person; 1 a key without a limit; 2 and 3 keys limited to 300 and 700.
fn payer_key(payer: u8) -> Option<KeyLimit> {
    match payer {
        1 => Some(KeyLimit {
            id: api_key(1),
            limit: None,
        }),
        2 => Some(KeyLimit {
            id: api_key(2),
            limit: Some(c(300)),
        }),
        3 => Some(KeyLimit {
            id: api_key(3),
            limit: Some(c(700)),
        }),
        _ => None,
    }
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
        let mut shortfalls: i64 = 0;
        let mut repaid: i64 = 0;
        // The key each request was reserved with, its holds, and each key's charges.
        let mut key_of: std::collections::HashMap<RequestId, Option<ApiKeyId>> = Default::default();
        let mut held: std::collections::HashMap<RequestId, (Option<ApiKeyId>, i64)> = Default::default();
        let mut key_charged: std::collections::HashMap<ApiKeyId, i64> = Default::default();

        for op in ops {
            let command = match op {
                Op::Grant(k, a) => grant(&format!("g{k}"), a),
                Op::Revoke(k, a) => revoke(&format!("v{k}"), a),
                Op::Reserve(r, a, e, p) => CreditCommand::ReserveCredits {
                    request_id: rid(&format!("r{r}")),
                    amount: c(a),
                    expires_at: now + Duration::seconds(e),
                    now,
                    key: payer_key(p),
                },
                Op::Settle(r, ch) => CreditCommand::SettleReservation {
                    request_id: rid(&format!("r{r}")),
                    charge: c(ch),
                },
                Op::SettleUsage(r, cost) => {
                    let request_id = rid(&format!("r{r}"));
                    // A worker names the key the request was made with.
                    let mut usage = usage(cost);
                    usage.api_key = key_of.get(&request_id).copied().flatten();
                    CreditCommand::SettleUsage { request_id, usage }
                }
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
                        let available_before_event = account.available();
                        match &e {
                            CreditEvent::CreditsGranted { amount, .. } => credited += amount.micros(),
                            CreditEvent::CreditsRevoked { requested, taken, .. } => {
                                prop_assert!(taken <= requested, "never takes more than asked");
                                prop_assert!(!taken.is_negative());
                                prop_assert!(*taken <= before.available(), "never takes more than is available");
                                revoked_total += taken.micros();
                                shortfalls += requested.micros() - taken.micros();
                            }
                            CreditEvent::DebtRepaid { amount, .. } => {
                                prop_assert!(amount.micros() > 0, "a repayment repays something");
                                prop_assert!(*amount <= available_before_event, "a repayment never overdraws");
                                repaid += amount.micros();
                            }
                            CreditEvent::CreditsReserved { request_id, amount, api_key, .. } => {
                                key_of.insert(request_id.clone(), *api_key);
                                held.insert(request_id.clone(), (*api_key, amount.micros()));
                            }
                            CreditEvent::ReservationSettled { request_id, charged: ch, reserved, after_expiry, usage, .. } => {
                                prop_assert!(ch <= reserved);
                                if after_expiry.is_some() {
                                    prop_assert!(*ch <= before.available(), "a late charge never overdraws");
                                }
                                charged += ch.micros();
                                let payer = held.remove(request_id).and_then(|(k, _)| k)
                                    .or(usage.as_ref().and_then(|u| u.api_key));
                                if let Some(k) = payer {
                                    *key_charged.entry(k).or_default() += ch.micros();
                                }
                            }
                            CreditEvent::ReservationReleased { request_id, .. }
                            | CreditEvent::ReservationExpired { request_id, .. } => {
                                held.remove(request_id);
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
                credited - charged - revoked_total - repaid,
                "balance = credits in - charges - revocations - repayments"
            );
            prop_assert_eq!(account.debt().micros(), shortfalls - repaid, "debt = shortfalls - repayments");
            prop_assert_eq!(account.debt(), account.sum_of_debts());
            prop_assert!(
                account.debt().micros() == 0 || account.available().micros() == 0,
                "while a debt is owed nothing is available"
            );
            for payer in 1..4u8 {
                let Some(KeyLimit { id, limit }) = payer_key(payer) else { continue };
                let holds: i64 = held.values().filter(|(k, _)| *k == Some(id)).map(|(_, a)| a).sum();
                let spent = key_charged.get(&id).copied().unwrap_or(0) + holds;
                prop_assert_eq!(account.key_spend(&id).spent().micros(), spent, "the key's spending is its charges and holds");
                if let Some(limit) = limit {
                    prop_assert!(spent <= limit.micros(), "key {} charged and held {} past its limit {}", id, spent, limit.micros());
                }
            }
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

// ---- API keys' spending limits ------------------------------------------------------------

fn limited(n: u128, limit: i64) -> Option<KeyLimit> {
    Some(KeyLimit {
        id: api_key(n),
        limit: Some(c(limit)),
    })
}

fn reserve_with(r: &str, amount: i64, key: Option<KeyLimit>) -> CreditCommand {
    CreditCommand::ReserveCredits {
        request_id: rid(r),
        amount: c(amount),
        expires_at: t0() + Duration::seconds(30),
        now: t0(),
        key,
    }
}

fn reserved_with(
    r: &str,
    amount: i64,
    balance: i64,
    res: i64,
    key: Option<KeyLimit>,
) -> CreditEvent {
    CreditEvent::CreditsReserved {
        request_id: rid(r),
        amount: c(amount),
        expires_at: t0() + Duration::seconds(30),
        balance_after: c(balance),
        reserved_after: c(res),
        api_key: key.map(|k| k.id),
        key_limit: key.and_then(|k| k.limit),
    }
}

#[test]
fn a_reservation_names_the_api_key_it_was_made_with() {
    AccountTest::with(())
        .given(vec![opened(), granted("g", 1_000, 1_000, 0)])
        .when(reserve_with("r1", 60, limited(1, 100)))
        .then_expect_events(vec![reserved_with("r1", 60, 1_000, 60, limited(1, 100))]);
}

#[test]
fn a_reservation_that_would_take_a_key_past_its_limit_is_refused_though_credits_remain() {
    // The first request still holds 60 of the key's 100: a second one of 60 would pass it.
    AccountTest::with(())
        .given(vec![
            opened(),
            granted("g", 1_000, 1_000, 0),
            reserved_with("r1", 60, 1_000, 60, limited(1, 100)),
        ])
        .when(reserve_with("r2", 60, limited(1, 100)))
        .then_expect_error(CreditError::KeySpendingLimit {
            key: api_key(1),
            limit: c(100),
            spent: c(60),
            requested: c(60),
        });
}

#[test]
fn a_key_limit_counts_what_its_requests_were_charged_not_what_they_held() {
    // Settled for 10 of 60: the key has spent 10, so 90 more fit and 91 do not.
    let account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved_with("r1", 60, 1_000, 60, limited(1, 100)),
        CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(60),
            charged: c(10),
            balance_after: c(990),
            reserved_after: c(0),
            usage: None,
            after_expiry: None,
        },
    ]);
    assert_eq!(account.key_spend(&api_key(1)).spent(), c(10));
    assert!(account
        .decide(reserve_with("r2", 90, limited(1, 100)))
        .is_ok());
    assert!(matches!(
        account.decide(reserve_with("r2", 91, limited(1, 100))),
        Err(CreditError::KeySpendingLimit { .. })
    ));
}

#[test]
fn a_released_or_expired_hold_no_longer_counts_against_the_key() {
    let mut account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved_with("r1", 100, 1_000, 100, limited(1, 100)),
    ]);
    let release = CreditCommand::ReleaseReservation {
        request_id: rid("r1"),
    };
    for event in account.decide(release).expect("released").events {
        account.evolve(event);
    }
    assert_eq!(account.key_spend(&api_key(1)).spent(), c(0));
    // An expiry in the same decision frees the key's room too.
    let account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved_with("r1", 100, 1_000, 100, limited(1, 100)),
    ]);
    let later = CreditCommand::ReserveCredits {
        request_id: rid("r2"),
        amount: c(100),
        expires_at: t0() + Duration::seconds(120),
        now: t0() + Duration::seconds(60),
        key: limited(1, 100),
    };
    assert!(account.decide(later).is_ok());
}

#[test]
fn other_keys_and_the_person_are_not_held_to_a_keys_limit() {
    let account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved_with("r1", 100, 1_000, 100, limited(1, 100)),
    ]);
    assert!(account
        .decide(reserve_with("r2", 500, limited(2, 500)))
        .is_ok());
    assert!(account.decide(reserve_with("r3", 500, None)).is_ok());
    let unlimited = Some(KeyLimit {
        id: api_key(1),
        limit: None,
    });
    assert!(account.decide(reserve_with("r4", 500, unlimited)).is_ok());
}

#[test]
fn usage_settled_before_reservations_named_keys_counts_against_the_key() {
    // History: a reservation without a key, settled with usage that names the key.
    let mut usage = usage(80);
    usage.api_key = Some(api_key(1));
    let account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved("r1", 80, 30, 1_000, 80),
        CreditEvent::ReservationSettled {
            request_id: rid("r1"),
            reserved: c(80),
            charged: c(80),
            balance_after: c(920),
            reserved_after: c(0),
            usage: Some(usage),
            after_expiry: None,
        },
    ]);
    assert!(matches!(
        account.decide(reserve_with("r2", 21, limited(1, 100))),
        Err(CreditError::KeySpendingLimit { spent, .. }) if spent == c(80)
    ));
}

#[test]
fn a_late_settlement_is_capped_at_what_the_keys_limit_still_allows() {
    // r1 (60) expired; r2 then took 70 of the key's 100; r1's late usage costs 50.
    let mut late = usage(50);
    late.api_key = Some(api_key(1));
    let account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved_with("r1", 60, 1_000, 60, limited(1, 100)),
        expired("r1", 60, 1_000, 0),
        reserved_with("r2", 70, 1_000, 70, limited(1, 100)),
    ]);
    let decision = account
        .decide(CreditCommand::SettleUsage {
            request_id: rid("r1"),
            usage: late,
        })
        .expect("a late settlement is accepted");
    assert!(matches!(
        decision.events.as_slice(),
        [CreditEvent::ReservationSettled { charged, after_expiry: Some(LateSettlement { uncollected }), .. }]
            if *charged == c(30) && *uncollected == c(20)
    ));
}

#[test]
fn events_stored_before_keys_and_debts_were_recorded_still_read() {
    let reserved: CreditEvent = serde_json::from_value(serde_json::json!({"CreditsReserved": {
        "request_id": "r1", "amount": 60, "expires_at": "2026-01-01T00:00:30Z",
        "balance_after": 100, "reserved_after": 60
    }}))
    .expect("an old reservation reads");
    assert_eq!(reserved, reserved_with("r1", 60, 100, 60, None));
    let revoked: CreditEvent = serde_json::from_value(serde_json::json!({"CreditsRevoked": {
        "key": "refund:cs_1:8000", "payment_id": "cs_1", "requested": 100, "taken": 40,
        "balance_after": 0, "reserved_after": 60
    }}))
    .expect("an old refund reads");
    // Its shortfall was written off then, and stays so.
    assert_eq!(revoked.debt_after(), Some(c(0)));
    let account = account_with(&[opened(), granted("g", 100, 100, 0), revoked]);
    assert_eq!(account.debt(), c(0));
}

// ---- refund shortfalls as debts -----------------------------------------------------------

fn repaid(payment: &str, amount: i64, balance: i64, res: i64, debt: i64) -> CreditEvent {
    CreditEvent::DebtRepaid {
        payment_id: key(payment),
        amount: c(amount),
        balance_after: c(balance),
        reserved_after: c(res),
        debt_after: c(debt),
    }
}

/// 100 granted, 80 held by r1, then a refund of 100 took the 20 available: 80 owed.
fn owing() -> Vec<CreditEvent> {
    vec![
        opened(),
        granted("g", 100, 100, 0),
        reserved("r1", 80, 30, 100, 80),
        revoked("refund:cs_1:8000", 100, 20, 80, 80),
    ]
}

#[test]
fn a_refund_shortfall_is_owed_as_a_debt() {
    let account = account_with(&owing());
    assert_eq!(account.debt(), c(80));
    assert_eq!(account.available(), c(0));
}

#[test]
fn a_grant_repays_the_debt_before_anything_is_available() {
    AccountTest::with(())
        .given(owing())
        .when(grant("g2", 50))
        .then_expect_events(vec![
            granted("g2", 50, 130, 80),
            repaid("cs_1", 50, 80, 80, 30),
        ]);
}

#[test]
fn a_released_reservation_repays_the_debt() {
    AccountTest::with(())
        .given(owing())
        .when(CreditCommand::ReleaseReservation {
            request_id: rid("r1"),
        })
        .then_expect_events(vec![
            CreditEvent::ReservationReleased {
                request_id: rid("r1"),
                amount: c(80),
                balance_after: c(80),
                reserved_after: c(0),
            },
            repaid("cs_1", 80, 0, 0, 0),
        ]);
}

#[test]
fn a_settlement_for_less_than_was_held_repays_the_debt_from_the_rest() {
    AccountTest::with(())
        .given(owing())
        .when(CreditCommand::SettleReservation {
            request_id: rid("r1"),
            charge: c(30),
        })
        .then_expect_events(vec![
            CreditEvent::ReservationSettled {
                request_id: rid("r1"),
                reserved: c(80),
                charged: c(30),
                balance_after: c(50),
                reserved_after: c(0),
                usage: None,
                after_expiry: None,
            },
            repaid("cs_1", 50, 0, 0, 30),
        ]);
}

#[test]
fn expiries_before_a_reservation_repay_the_debt_before_it_holds_anything() {
    // r1 expires (80 freed), the debt takes all 80, nothing is left to hold.
    let later = CreditCommand::ReserveCredits {
        request_id: rid("r2"),
        amount: c(10),
        expires_at: t0() + Duration::seconds(120),
        now: t0() + Duration::seconds(60),
        key: None,
    };
    let account = account_with(&owing());
    assert_eq!(
        account.decide(later),
        Err(CreditError::InsufficientCredits {
            requested: c(10),
            available: c(0),
        })
    );
    // With 100 more granted, 20 remain after the debt: a reservation of 20 fits.
    let account = account_with(
        &[
            owing(),
            vec![granted("g2", 100, 180, 80), repaid("cs_1", 80, 100, 80, 0)],
        ]
        .concat(),
    );
    assert_eq!(account.debt(), c(0));
    assert!(account.decide(reserve("r2", 20, 30)).is_ok());
}

#[test]
fn debts_of_two_refunds_are_repaid_oldest_first_each_in_its_own_line() {
    let mut events = owing();
    events.push(CreditEvent::CreditsRevoked {
        key: key("refund:cs_2:500"),
        payment_id: key("cs_2"),
        requested: c(5),
        taken: c(0),
        balance_after: c(80),
        reserved_after: c(80),
        debt_after: c(85),
    });
    AccountTest::with(())
        .given(events)
        .when(grant("g2", 100))
        .then_expect_events(vec![
            granted("g2", 100, 180, 80),
            repaid("cs_1", 80, 100, 80, 5),
            repaid("cs_2", 5, 95, 80, 0),
        ]);
}

#[test]
fn a_revocation_while_owing_adds_its_whole_amount_to_the_debt() {
    AccountTest::with(())
        .given(owing())
        .when(revoke("refund:cs_1:9000", 10))
        .then_expect_events(vec![CreditEvent::CreditsRevoked {
            key: key("refund:cs_1:9000"),
            payment_id: key("cs_1"),
            requested: c(10),
            taken: c(0),
            balance_after: c(80),
            reserved_after: c(80),
            debt_after: c(90),
        }]);
}

#[test]
fn a_snapshot_of_an_account_with_keys_and_debts_round_trips_through_json() {
    let account = account_with(&[
        opened(),
        granted("g", 1_000, 1_000, 0),
        reserved_with("r1", 60, 1_000, 60, limited(1, 100)),
        revoked("refund:cs_1:8000", 1_000, 940, 60, 60),
    ]);
    assert_eq!(
        (account.debt(), account.key_spend(&api_key(1)).spent()),
        (c(60), c(60))
    );
    let json = serde_json::to_string(&account).expect("serializes");
    let back: CreditAccount = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, account);
}
