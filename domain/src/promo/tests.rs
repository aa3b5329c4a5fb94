//! Given/when/then tests for every rule of a promo code, and a property test that random
//! redemptions, disables and enables keep every invariant.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use proptest::prelude::*;
use std::collections::BTreeSet;
use uuid::Uuid;

use super::*;
use crate::decider::Decider;
use crate::money::{Credits, MoneyError};

type PromoTest = TestFramework<PromoCode>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed time")
}

fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

fn c(micros: i64) -> Credits {
    Credits::from_micros(micros)
}

fn user(n: u128) -> crate::ids::UserId {
    crate::ids::UserId(Uuid::from_u128(n))
}

fn welcome() -> PromoCodeValue {
    PromoCodeValue::parse("WELCOME10").expect("a valid code")
}

/// `WELCOME10`: 10 credits, `max` redemptions, valid from t0+0 until t0+1000 s.
fn created(max: u32) -> PromoEvent {
    PromoEvent::PromoCodeCreated {
        code: welcome(),
        credits: c(10_000_000),
        max_redemptions: max,
        valid_from: Some(at(0)),
        valid_until: Some(at(1_000)),
        active: true,
        created_by: "admin".into(),
        created_at: at(-10),
    }
}

fn create(max: u32) -> PromoCommand {
    PromoCommand::CreatePromoCode {
        code: welcome(),
        credits: c(10_000_000),
        max_redemptions: max,
        valid_from: Some(at(0)),
        valid_until: Some(at(1_000)),
        active: true,
        created_by: "admin".into(),
        now: at(-10),
    }
}

fn redeem(u: u128, s: i64) -> PromoCommand {
    PromoCommand::RedeemPromoCode {
        user: user(u),
        now: at(s),
    }
}

fn redeemed(u: u128, after: u32, s: i64) -> PromoEvent {
    PromoEvent::PromoCodeRedeemed {
        user: user(u),
        credits: c(10_000_000),
        redemptions_after: after,
        redeemed_at: at(s),
    }
}

fn disabled() -> PromoEvent {
    PromoEvent::PromoCodeDisabled {
        disabled_by: "admin".into(),
        disabled_at: at(1),
    }
}

fn code_with(events: &[PromoEvent]) -> PromoCode {
    let mut code = PromoCode::default();
    for e in events {
        code.evolve(e.clone());
    }
    code
}

// ---- the code itself ---------------------------------------------------------------------

#[test]
fn a_code_is_trimmed_and_uppercased() {
    let code = PromoCodeValue::parse("  welcome-10_x ").expect("a valid code");
    assert_eq!(code.as_str(), "WELCOME-10_X");
    assert_eq!(code, PromoCodeValue::parse("WELCOME-10_X").expect("valid"));
    assert_eq!(
        code.credit_key().expect("a valid key").as_str(),
        "WELCOME-10_X"
    );
}

#[test]
fn a_code_refuses_empty_short_long_and_odd_strings() {
    assert_eq!(
        PromoCodeValue::parse("   "),
        Err(PromoCodeValueError::Empty)
    );
    let length = Err(PromoCodeValueError::Length {
        min: PROMO_CODE_LEN_MIN,
        max: PROMO_CODE_LEN_MAX,
    });
    assert_eq!(PromoCodeValue::parse("ab"), length);
    assert_eq!(
        PromoCodeValue::parse("a".repeat(PROMO_CODE_LEN_MAX + 1)),
        length
    );
    assert!(PromoCodeValue::parse("a".repeat(PROMO_CODE_LEN_MAX)).is_ok());
    assert!(PromoCodeValue::parse("abc").is_ok());
    for bad in ["WEL COME", "WELCOME!", "CAFÉ10", "a.b.c", "x:yz"] {
        assert_eq!(
            PromoCodeValue::parse(bad),
            Err(PromoCodeValueError::BadCharacter),
            "{bad}"
        );
    }
}

#[test]
fn a_code_is_normalised_when_deserialized_and_refused_when_bad() {
    let code: PromoCodeValue = serde_json::from_str("\"welcome10\"").expect("valid");
    assert_eq!(code, welcome());
    assert!(serde_json::from_str::<PromoCodeValue>("\"no way\"").is_err());
}

// ---- creating ----------------------------------------------------------------------------

#[test]
fn creating_a_code_emits_promo_code_created() {
    PromoTest::with(())
        .given_no_previous_events()
        .when(create(5))
        .then_expect_events(vec![created(5)]);
}

#[test]
fn creating_a_code_twice_is_refused() {
    PromoTest::with(())
        .given(vec![created(5)])
        .when(create(5))
        .then_expect_error(PromoError::AlreadyExists);
}

#[test]
fn a_code_must_give_a_positive_amount() {
    for micros in [0, -1] {
        PromoTest::with(())
            .given_no_previous_events()
            .when(PromoCommand::CreatePromoCode {
                code: welcome(),
                credits: c(micros),
                max_redemptions: 1,
                valid_from: None,
                valid_until: None,
                active: true,
                created_by: "admin".into(),
                now: t0(),
            })
            .then_expect_error(PromoError::InvalidCredits(MoneyError::NotPositive(micros)));
    }
}

#[test]
fn a_code_allows_one_to_a_million_redemptions() {
    for max in [0, REDEMPTIONS_MAX + 1] {
        PromoTest::with(())
            .given_no_previous_events()
            .when(create(max))
            .then_expect_error(PromoError::MaxRedemptionsOutOfRange {
                max: REDEMPTIONS_MAX,
            });
    }
    PromoTest::with(())
        .given_no_previous_events()
        .when(create(REDEMPTIONS_MAX))
        .then_expect_events(vec![created(REDEMPTIONS_MAX)]);
}

#[test]
fn a_code_must_end_after_it_starts_and_in_the_future() {
    let with_window = |from: Option<i64>, until: Option<i64>| PromoCommand::CreatePromoCode {
        code: welcome(),
        credits: c(1),
        max_redemptions: 1,
        valid_from: from.map(at),
        valid_until: until.map(at),
        active: true,
        created_by: "admin".into(),
        now: at(100),
    };
    PromoTest::with(())
        .given_no_previous_events()
        .when(with_window(Some(500), Some(500)))
        .then_expect_error(PromoError::ValidityWindowEmpty);
    PromoTest::with(())
        .given_no_previous_events()
        .when(with_window(None, Some(100)))
        .then_expect_error(PromoError::ValidUntilNotInFuture);
    // A window that starts in the past is fine: the code is valid at once.
    let code = code_with(&[]);
    assert!(code.decide(with_window(Some(0), Some(101))).is_ok());
    assert!(code.decide(with_window(None, None)).is_ok());
}

#[test]
fn a_code_needs_an_actor() {
    PromoTest::with(())
        .given_no_previous_events()
        .when(PromoCommand::CreatePromoCode {
            code: welcome(),
            credits: c(1),
            max_redemptions: 1,
            valid_from: None,
            valid_until: None,
            active: true,
            created_by: "  ".into(),
            now: t0(),
        })
        .then_expect_error(PromoError::ActorInvalid {
            max: crate::user::ACTOR_LEN_MAX,
        });
}

// ---- disabling and enabling ----------------------------------------------------------------

#[test]
fn disabling_an_active_code_emits_promo_code_disabled() {
    PromoTest::with(())
        .given(vec![created(5)])
        .when(PromoCommand::DisablePromoCode {
            by: "admin".into(),
            now: at(1),
        })
        .then_expect_events(vec![disabled()]);
}

#[test]
fn disabling_a_disabled_code_changes_nothing() {
    PromoTest::with(())
        .given(vec![created(5), disabled()])
        .when(PromoCommand::DisablePromoCode {
            by: "admin".into(),
            now: at(2),
        })
        .then_expect_events(vec![]);
}

#[test]
fn enabling_a_disabled_code_emits_promo_code_enabled_and_an_active_one_nothing() {
    PromoTest::with(())
        .given(vec![created(5), disabled()])
        .when(PromoCommand::EnablePromoCode {
            by: "admin".into(),
            now: at(2),
        })
        .then_expect_events(vec![PromoEvent::PromoCodeEnabled {
            enabled_by: "admin".into(),
            enabled_at: at(2),
        }]);
    PromoTest::with(())
        .given(vec![created(5)])
        .when(PromoCommand::EnablePromoCode {
            by: "admin".into(),
            now: at(2),
        })
        .then_expect_events(vec![]);
}

#[test]
fn disabling_or_enabling_an_unknown_code_is_refused() {
    PromoTest::with(())
        .given_no_previous_events()
        .when(PromoCommand::DisablePromoCode {
            by: "admin".into(),
            now: t0(),
        })
        .then_expect_error(PromoError::Unknown);
    PromoTest::with(())
        .given_no_previous_events()
        .when(PromoCommand::EnablePromoCode {
            by: "admin".into(),
            now: t0(),
        })
        .then_expect_error(PromoError::Unknown);
}

// ---- redeeming -----------------------------------------------------------------------------

#[test]
fn redeeming_gives_the_credits_and_counts_the_redemption() {
    PromoTest::with(())
        .given(vec![created(5), redeemed(1, 1, 5)])
        .when(redeem(2, 6))
        .then_expect_events(vec![redeemed(2, 2, 6)]);
}

#[test]
fn redeeming_an_unknown_code_is_refused() {
    PromoTest::with(())
        .given_no_previous_events()
        .when(redeem(1, 5))
        .then_expect_error(PromoError::Unknown);
}

#[test]
fn redeeming_before_the_code_is_valid_is_refused() {
    PromoTest::with(())
        .given(vec![created(5)])
        .when(redeem(1, -1))
        .then_expect_error(PromoError::NotYetValid { valid_from: at(0) });
}

#[test]
fn redeeming_from_the_first_valid_moment_is_accepted() {
    PromoTest::with(())
        .given(vec![created(5)])
        .when(redeem(1, 0))
        .then_expect_events(vec![redeemed(1, 1, 0)]);
}

#[test]
fn redeeming_an_expired_code_is_refused() {
    PromoTest::with(())
        .given(vec![created(5)])
        .when(redeem(1, 1_000))
        .then_expect_error(PromoError::Expired {
            valid_until: at(1_000),
        });
}

#[test]
fn redeeming_a_disabled_code_is_refused() {
    PromoTest::with(())
        .given(vec![created(5), disabled()])
        .when(redeem(1, 5))
        .then_expect_error(PromoError::Disabled);
}

#[test]
fn redeeming_an_exhausted_code_is_refused() {
    PromoTest::with(())
        .given(vec![created(2), redeemed(1, 1, 5), redeemed(2, 2, 6)])
        .when(redeem(3, 7))
        .then_expect_error(PromoError::Exhausted { max_redemptions: 2 });
}

#[test]
fn redeeming_twice_is_refused_with_the_credits_of_the_first_redemption() {
    PromoTest::with(())
        .given(vec![created(5), redeemed(1, 1, 5)])
        .when(redeem(1, 6))
        .then_expect_error(PromoError::AlreadyRedeemed {
            credits: c(10_000_000),
        });
}

#[test]
fn a_user_who_redeemed_hears_so_even_after_the_code_is_exhausted_disabled_or_expired() {
    // A retry after a crash must learn the first redemption succeeded.
    PromoTest::with(())
        .given(vec![created(1), redeemed(1, 1, 5), disabled()])
        .when(redeem(1, 5_000))
        .then_expect_error(PromoError::AlreadyRedeemed {
            credits: c(10_000_000),
        });
}

#[test]
fn a_disabled_code_that_is_enabled_again_is_redeemable() {
    PromoTest::with(())
        .given(vec![
            created(5),
            disabled(),
            PromoEvent::PromoCodeEnabled {
                enabled_by: "admin".into(),
                enabled_at: at(2),
            },
        ])
        .when(redeem(1, 3))
        .then_expect_events(vec![redeemed(1, 1, 3)]);
}

#[test]
fn a_code_without_a_window_is_always_valid() {
    let created = PromoEvent::PromoCodeCreated {
        code: welcome(),
        credits: c(5),
        max_redemptions: 1,
        valid_from: None,
        valid_until: None,
        active: true,
        created_by: "admin".into(),
        created_at: t0(),
    };
    PromoTest::with(())
        .given(vec![created])
        .when(redeem(1, 10_000_000))
        .then_expect_events(vec![PromoEvent::PromoCodeRedeemed {
            user: user(1),
            credits: c(5),
            redemptions_after: 1,
            redeemed_at: at(10_000_000),
        }]);
}

#[test]
fn a_redemption_is_keyed_by_its_user() {
    assert_eq!(
        redeemed(7, 1, 0).idempotency_key(),
        Some(format!("redeem:{}", user(7)))
    );
    assert_eq!(
        redeem(7, 0).idempotency_key(),
        redeemed(7, 1, 0).idempotency_key()
    );
    assert_eq!(
        redeem(7, 0).related_keys(),
        vec![format!("redeem:{}", user(7))]
    );
    assert_eq!(created(1).idempotency_key(), None);
}

#[test]
fn a_recalled_redemption_is_refused_as_already_redeemed_without_changing_the_count() {
    let mut code = code_with(&[created(5)]);
    code.recall(vec![redeemed(1, 1, 5)]);
    assert_eq!(
        code.decide(redeem(1, 6)),
        Err(PromoError::AlreadyRedeemed {
            credits: c(10_000_000)
        })
    );
    assert_eq!(code.redemptions(), 0);
}

#[test]
fn a_snapshot_of_the_state_round_trips_through_json() {
    let code = code_with(&[created(5), redeemed(1, 1, 5), redeemed(2, 2, 6), disabled()]);
    let json = serde_json::to_value(&code).expect("state serializes");
    let back: PromoCode = serde_json::from_value(json).expect("state deserializes");
    assert_eq!(back, code);
}

#[test]
fn a_snapshot_grows_by_about_forty_bytes_per_redeemer() {
    let redeemers = 1_000u32;
    let mut events = vec![created(redeemers)];
    for n in 1..=redeemers {
        events.push(redeemed(u128::from(n), n, 5));
    }
    let code = code_with(&events);
    let json = serde_json::to_string(&code).expect("state serializes");
    let per_redeemer = json.len() / redeemers as usize;
    assert!(
        (38..=42).contains(&per_redeemer),
        "{per_redeemer} bytes per redeemer"
    );
}

// ---- property test -----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Redeem(u8),
    Disable,
    Enable,
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..16).prop_map(Op::Redeem),
        1 => Just(Op::Disable),
        1 => Just(Op::Enable),
        2 => (1i64..200).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_redemptions_never_exceed_the_limit_nor_repeat_a_user(
        max in 1u32..10,
        from in proptest::option::of(0i64..300),
        length in proptest::option::of(1i64..1_000),
        active in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let valid_from = from.map(at);
        let valid_until = length.map(|l| at(from.unwrap_or(0) + l));
        let create = PromoCommand::CreatePromoCode {
            code: welcome(),
            credits: c(3),
            max_redemptions: max,
            valid_from,
            valid_until,
            active,
            created_by: "admin".into(),
            now: at(-1),
        };
        let mut code = PromoCode::default();
        let mut all_events = code.decide(create).expect("a valid code").events;
        for e in &all_events {
            code.evolve(e.clone());
        }
        let mut now = at(-100);
        // The model: what the rules say, tracked beside the aggregate.
        let mut model_active = active;
        let mut redeemers: BTreeSet<crate::ids::UserId> = BTreeSet::new();

        for op in ops {
            let command = match op {
                Op::Redeem(u) => redeem(u128::from(u), 0),
                Op::Disable => PromoCommand::DisablePromoCode { by: "admin".into(), now },
                Op::Enable => PromoCommand::EnablePromoCode { by: "admin".into(), now },
                Op::Tick(dt) => { now += Duration::seconds(dt); continue; }
            };
            let command = match command {
                PromoCommand::RedeemPromoCode { user, .. } => PromoCommand::RedeemPromoCode { user, now },
                other => other,
            };
            let expected: Result<(), PromoError> = match &command {
                PromoCommand::RedeemPromoCode { user, .. } => {
                    if redeemers.contains(user) {
                        Err(PromoError::AlreadyRedeemed { credits: c(3) })
                    } else if !model_active {
                        Err(PromoError::Disabled)
                    } else if valid_from.is_some_and(|f| now < f) {
                        Err(PromoError::NotYetValid { valid_from: valid_from.unwrap_or(now) })
                    } else if valid_until.is_some_and(|u| now >= u) {
                        Err(PromoError::Expired { valid_until: valid_until.unwrap_or(now) })
                    } else if redeemers.len() >= max as usize {
                        Err(PromoError::Exhausted { max_redemptions: max })
                    } else {
                        Ok(())
                    }
                }
                _ => Ok(()),
            };
            let before = code.clone();
            match code.decide(command.clone()) {
                Ok(decision) => {
                    prop_assert_eq!(expected, Ok(()));
                    prop_assert!(decision.replay_of.is_none(), "a code never replays");
                    for e in decision.events {
                        match &e {
                            PromoEvent::PromoCodeRedeemed { user, credits, redemptions_after, .. } => {
                                prop_assert!(redeemers.insert(*user), "user {} redeemed twice", user);
                                prop_assert_eq!(*redemptions_after as usize, redeemers.len());
                                prop_assert_eq!(*credits, c(3));
                            }
                            PromoEvent::PromoCodeDisabled { .. } => {
                                prop_assert!(model_active, "disabled twice");
                                model_active = false;
                            }
                            PromoEvent::PromoCodeEnabled { .. } => {
                                prop_assert!(!model_active, "enabled twice");
                                model_active = true;
                            }
                            PromoEvent::PromoCodeCreated { .. } => prop_assert!(false, "created again"),
                        }
                        code.evolve(e.clone());
                        all_events.push(e);
                    }
                }
                Err(refusal) => {
                    prop_assert_eq!(Err(refusal), expected);
                    prop_assert_eq!(&code, &before, "a refused command changes nothing");
                }
            }
            prop_assert!(code.redemptions() <= max, "more redemptions than allowed");
            prop_assert_eq!(code.redemptions() as usize, redeemers.len());
            prop_assert_eq!(code.is_active(), model_active);
        }
        // Every redemption key appears once: the event store's unique index would agree.
        let keys: Vec<String> = all_events.iter().filter_map(PromoEvent::idempotency_key).collect();
        let unique: BTreeSet<&String> = keys.iter().collect();
        prop_assert_eq!(keys.len(), unique.len());
        // A fresh fold of every event gives the same state (what replay and snapshots rely on).
        prop_assert_eq!(code_with(&all_events), code);
    }
}
