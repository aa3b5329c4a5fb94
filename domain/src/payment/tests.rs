//! Given/when/then tests for each transition of a payment and each out-of-order pair of
//! Stripe deliveries, and a property test over random orders and repetitions of a
//! realistic set of deliveries.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use cqrs_es::DomainEvent;
use proptest::prelude::*;
use std::collections::BTreeSet;
use uuid::Uuid;

use super::*;
use crate::decider::{Decider, Decision};
use crate::ids::UserId;
use crate::money::{Credits, MoneyError};

type PaymentTest = TestFramework<Payment>;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed time")
}

fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

fn sid(s: &str) -> StripeId {
    StripeId::parse(s).expect("a valid Stripe id")
}

fn alice() -> UserId {
    UserId(Uuid::from_u128(1))
}

fn bob() -> UserId {
    UserId(Uuid::from_u128(2))
}

/// The `pro` package: 1,000 credits for $80.
fn pro_credits() -> Credits {
    Credits::from_credits(1_000)
}

const PRO_CENTS: i64 = 8_000;

fn start() -> PaymentCommand {
    PaymentCommand::StartCheckout {
        session_id: sid("cs_1"),
        user: alice(),
        package_id: "pro".into(),
        credits: pro_credits(),
        amount_cents: PRO_CENTS,
        currency: "USD".into(),
        now: at(0),
    }
}

/// Alice's checkout of the `pro` package, as the events carry it.
fn pro_checkout() -> Checkout {
    Checkout {
        session_id: sid("cs_1"),
        user: alice(),
        package_id: "pro".into(),
        credits: pro_credits(),
        amount_cents: PRO_CENTS,
        currency: "usd".into(),
    }
}

fn started() -> PaymentEvent {
    PaymentEvent::CheckoutStarted {
        checkout: pro_checkout(),
        started_at: at(0),
    }
}

fn complete(paid: bool, event: &str) -> PaymentCommand {
    PaymentCommand::CompleteCheckout {
        session_id: sid("cs_1"),
        user_from_metadata: alice(),
        package_id: "pro".into(),
        credits: pro_credits(),
        amount_cents: PRO_CENTS,
        currency: "usd".into(),
        payment_intent: Some(sid("pi_1")),
        paid,
        listed_price: None,
        stripe_event_id: sid(event),
        now: at(10),
    }
}

fn completed(event: &str, s: i64) -> PaymentEvent {
    PaymentEvent::PaymentCompleted {
        checkout: pro_checkout(),
        payment_intent: Some(sid("pi_1")),
        stripe_event_id: sid(event),
        paid_at: at(s),
    }
}

fn awaiting(event: &str) -> PaymentEvent {
    PaymentEvent::CheckoutAwaitingPayment {
        checkout: pro_checkout(),
        payment_intent: Some(sid("pi_1")),
        stripe_event_id: sid(event),
        completed_at: at(10),
    }
}

fn mark_paid(event: &str) -> PaymentCommand {
    PaymentCommand::MarkPaid {
        stripe_event_id: sid(event),
        now: at(20),
    }
}

fn mark_failed(event: &str) -> PaymentCommand {
    PaymentCommand::MarkFailed {
        reason: "card declined".into(),
        stripe_event_id: sid(event),
        now: at(20),
    }
}

fn failed(event: &str) -> PaymentEvent {
    PaymentEvent::PaymentFailed {
        user: alice(),
        reason: "card declined".into(),
        stripe_event_id: sid(event),
        failed_at: at(20),
    }
}

fn expire(event: &str) -> PaymentCommand {
    PaymentCommand::Expire {
        stripe_event_id: sid(event),
        now: at(30),
    }
}

fn expired(event: &str) -> PaymentEvent {
    PaymentEvent::CheckoutExpired {
        user: alice(),
        stripe_event_id: sid(event),
        expired_at: at(30),
    }
}

fn refund(total_cents: i64, event: &str) -> PaymentCommand {
    PaymentCommand::Refund {
        refund_id: sid("re_1"),
        amount_refunded_cents: total_cents,
        stripe_event_id: sid(event),
        now: at(40),
    }
}

fn payment_with(events: &[PaymentEvent]) -> Payment {
    let mut payment = Payment::default();
    for e in events {
        payment.evolve(e.clone());
    }
    payment
}

// ---- starting ------------------------------------------------------------------------------

#[test]
fn starting_a_checkout_records_it_with_a_lowercase_currency() {
    PaymentTest::with(())
        .given_no_previous_events()
        .when(start())
        .then_expect_events(vec![started()]);
}

#[test]
fn starting_a_started_checkout_again_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started()])
        .when(start())
        .then_expect_events(vec![]);
}

#[test]
fn starting_a_session_recorded_for_another_user_is_refused() {
    PaymentTest::with(())
        .given(vec![started()])
        .when(PaymentCommand::StartCheckout {
            session_id: sid("cs_1"),
            user: bob(),
            package_id: "pro".into(),
            credits: pro_credits(),
            amount_cents: PRO_CENTS,
            currency: "usd".into(),
            now: at(0),
        })
        .then_expect_error(PaymentError::CheckoutMismatch { field: "user" });
}

#[test]
fn a_checkout_refuses_bad_credits_amounts_currencies_and_packages() {
    let with =
        |credits: i64, cents: i64, currency: &str, package: &str| PaymentCommand::StartCheckout {
            session_id: sid("cs_1"),
            user: alice(),
            package_id: package.into(),
            credits: Credits::from_micros(credits),
            amount_cents: cents,
            currency: currency.into(),
            now: at(0),
        };
    let cases = [
        (
            with(0, 1, "usd", "pro"),
            PaymentError::InvalidCredits(MoneyError::NotPositive(0)),
        ),
        (
            with(1, 0, "usd", "pro"),
            PaymentError::InvalidAmountCents(0),
        ),
        (
            with(1, AMOUNT_CENTS_MAX + 1, "usd", "pro"),
            PaymentError::InvalidAmountCents(AMOUNT_CENTS_MAX + 1),
        ),
        (with(1, 1, "us", "pro"), PaymentError::InvalidCurrency),
        (with(1, 1, "u$d", "pro"), PaymentError::InvalidCurrency),
        (
            with(1, 1, "usd", " "),
            PaymentError::InvalidPackageId {
                max: PACKAGE_ID_LEN_MAX,
            },
        ),
        (
            with(1, 1, "usd", &"p".repeat(PACKAGE_ID_LEN_MAX + 1)),
            PaymentError::InvalidPackageId {
                max: PACKAGE_ID_LEN_MAX,
            },
        ),
    ];
    for (command, error) in cases {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(error);
    }
}

// ---- completing ----------------------------------------------------------------------------

#[test]
fn a_paid_completion_completes_the_payment_once() {
    PaymentTest::with(())
        .given(vec![started()])
        .when(complete(true, "evt_c"))
        .then_expect_events(vec![completed("evt_c", 10)]);
}

#[test]
fn a_paid_completion_of_a_session_never_started_credits_the_user_of_its_metadata() {
    PaymentTest::with(())
        .given_no_previous_events()
        .when(complete(true, "evt_c"))
        .then_expect_events(vec![completed("evt_c", 10)]);
}

#[test]
fn a_completion_records_what_stripe_charged() {
    // More than the price (tax added at checkout) is what Stripe charged, and credits.
    let mut command = complete(true, "evt_c");
    if let PaymentCommand::CompleteCheckout {
        amount_cents,
        currency,
        ..
    } = &mut command
    {
        *amount_cents = 8_640;
        *currency = "USD".into();
    }
    let mut expected = completed("evt_c", 10);
    if let PaymentEvent::PaymentCompleted { checkout, .. } = &mut expected {
        checkout.amount_cents = 8_640;
        checkout.currency = "usd".into();
    }
    PaymentTest::with(())
        .given(vec![started()])
        .when(command)
        .then_expect_events(vec![expected]);
}

#[test]
fn a_completion_for_another_user_or_package_than_the_start_is_refused() {
    let mut other_user = complete(true, "evt_c");
    if let PaymentCommand::CompleteCheckout {
        user_from_metadata, ..
    } = &mut other_user
    {
        *user_from_metadata = bob();
    }
    PaymentTest::with(())
        .given(vec![started()])
        .when(other_user)
        .then_expect_error(PaymentError::CheckoutMismatch { field: "user" });
    let mut other_credits = complete(true, "evt_c");
    if let PaymentCommand::CompleteCheckout { credits, .. } = &mut other_credits {
        *credits = Credits::from_credits(10_000);
    }
    PaymentTest::with(())
        .given(vec![started()])
        .when(other_credits)
        .then_expect_error(PaymentError::CheckoutMismatch { field: "credits" });
}

#[test]
fn an_unpaid_completion_awaits_the_payment() {
    PaymentTest::with(())
        .given(vec![started()])
        .when(complete(false, "evt_c"))
        .then_expect_events(vec![awaiting("evt_c")]);
}

#[test]
fn an_unpaid_completion_of_a_session_never_started_awaits_the_payment() {
    PaymentTest::with(())
        .given_no_previous_events()
        .when(complete(false, "evt_c"))
        .then_expect_events(vec![awaiting("evt_c")]);
}

#[test]
fn an_awaited_payment_that_succeeds_completes_with_its_payment_intent() {
    PaymentTest::with(())
        .given(vec![started(), awaiting("evt_c")])
        .when(mark_paid("evt_s"))
        .then_expect_events(vec![completed("evt_s", 20)]);
}

#[test]
fn an_awaited_payment_that_fails_fails() {
    PaymentTest::with(())
        .given(vec![started(), awaiting("evt_c")])
        .when(mark_failed("evt_f"))
        .then_expect_events(vec![failed("evt_f")]);
}

#[test]
fn a_card_that_fails_during_checkout_fails_the_payment() {
    // payment_intent.payment_failed while the session is still open.
    PaymentTest::with(())
        .given(vec![started()])
        .when(mark_failed("evt_f"))
        .then_expect_events(vec![failed("evt_f")]);
}

#[test]
fn a_failure_reason_is_cut_never_refused() {
    let payment = payment_with(&[started()]);
    let events = payment
        .decide(PaymentCommand::MarkFailed {
            reason: "x".repeat(FAILURE_REASON_LEN_MAX * 2),
            stripe_event_id: sid("evt_f"),
            now: at(20),
        })
        .expect("a failure is recorded")
        .events;
    match events.as_slice() {
        [PaymentEvent::PaymentFailed { reason, .. }] => {
            assert_eq!(reason.chars().count(), FAILURE_REASON_LEN_MAX);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[test]
fn an_open_checkout_expires() {
    PaymentTest::with(())
        .given(vec![started()])
        .when(expire("evt_x"))
        .then_expect_events(vec![expired("evt_x")]);
}

#[test]
fn a_checkout_whose_card_failed_may_still_expire() {
    PaymentTest::with(())
        .given(vec![started(), failed("evt_f")])
        .when(expire("evt_x"))
        .then_expect_events(vec![expired("evt_x")]);
}

#[test]
fn webhooks_for_an_unknown_session_are_refused_until_it_is_known() {
    for command in [
        mark_paid("evt_s"),
        mark_failed("evt_f"),
        expire("evt_x"),
        refund(100, "evt_r"),
    ] {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(PaymentError::UnknownSession);
    }
}

// ---- refunds -------------------------------------------------------------------------------

#[test]
fn a_partial_refund_takes_back_its_share_of_the_credits() {
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(refund(2_000, "evt_r1"))
        .then_expect_events(vec![PaymentEvent::PaymentRefunded {
            user: alice(),
            refund_id: sid("re_1"),
            refunded_cents: 2_000,
            refunded_cents_total: 2_000,
            fully_refunded: false,
            credits_to_take_back: Credits::from_credits(250),
            credits_taken_back_total: Credits::from_credits(250),
            stripe_event_id: sid("evt_r1"),
            refunded_at: at(40),
        }]);
}

#[test]
fn a_full_refund_after_a_partial_one_takes_back_the_rest() {
    let partial = PaymentEvent::PaymentRefunded {
        user: alice(),
        refund_id: sid("re_1"),
        refunded_cents: 2_000,
        refunded_cents_total: 2_000,
        fully_refunded: false,
        credits_to_take_back: Credits::from_credits(250),
        credits_taken_back_total: Credits::from_credits(250),
        stripe_event_id: sid("evt_r1"),
        refunded_at: at(40),
    };
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10), partial])
        .when(refund(PRO_CENTS, "evt_r2"))
        .then_expect_events(vec![PaymentEvent::PaymentRefunded {
            user: alice(),
            refund_id: sid("re_1"),
            refunded_cents: 6_000,
            refunded_cents_total: PRO_CENTS,
            fully_refunded: true,
            credits_to_take_back: Credits::from_credits(750),
            credits_taken_back_total: pro_credits(),
            stripe_event_id: sid("evt_r2"),
            refunded_at: at(40),
        }]);
    let payment = payment_with(&[started(), completed("evt_c", 10)]);
    assert_eq!(payment.status(), PaymentStatus::Paid);
}

#[test]
fn refunds_round_down_yet_a_full_refund_takes_back_exactly_what_was_bought() {
    // 100 micro-credits for 3 cents, refunded a cent at a time: 33, 33, 34.
    let mut payment = payment_with(&[]);
    let buy = PaymentCommand::CompleteCheckout {
        session_id: sid("cs_1"),
        user_from_metadata: alice(),
        package_id: "odd".into(),
        credits: Credits::from_micros(100),
        amount_cents: 3,
        currency: "usd".into(),
        payment_intent: None,
        paid: true,
        listed_price: None,
        stripe_event_id: sid("evt_c"),
        now: at(10),
    };
    let mut backs = Vec::new();
    for command in [
        buy,
        refund(1, "evt_r1"),
        refund(2, "evt_r2"),
        refund(3, "evt_r3"),
    ] {
        for event in payment.decide(command).expect("accepted").events {
            if let PaymentEvent::PaymentRefunded {
                credits_to_take_back,
                ..
            } = &event
            {
                backs.push(credits_to_take_back.micros());
            }
            payment.evolve(event);
        }
    }
    assert_eq!(backs, vec![33, 33, 34]);
    assert_eq!(payment.credits_taken_back(), Credits::from_micros(100));
    assert_eq!(payment.status(), PaymentStatus::Refunded);
}

#[test]
fn a_refund_no_larger_than_the_refunds_so_far_changes_nothing() {
    let partial = PaymentEvent::PaymentRefunded {
        user: alice(),
        refund_id: sid("re_1"),
        refunded_cents: 4_000,
        refunded_cents_total: 4_000,
        fully_refunded: false,
        credits_to_take_back: Credits::from_credits(500),
        credits_taken_back_total: Credits::from_credits(500),
        stripe_event_id: sid("evt_r2"),
        refunded_at: at(40),
    };
    // The same amount under another event id, and a smaller one delivered late.
    for command in [refund(4_000, "evt_r3"), refund(2_000, "evt_r1")] {
        PaymentTest::with(())
            .given(vec![started(), completed("evt_c", 10), partial.clone()])
            .when(command)
            .then_expect_events(vec![]);
    }
}

#[test]
fn a_refund_of_more_than_was_paid_is_refused() {
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(refund(PRO_CENTS + 1, "evt_r"))
        .then_expect_error(PaymentError::RefundExceedsPayment {
            refunded_cents: PRO_CENTS + 1,
            amount_cents: PRO_CENTS,
        });
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(refund(-1, "evt_r"))
        .then_expect_error(PaymentError::NegativeRefund(-1));
}

#[test]
fn a_refund_before_the_payment_is_refused_so_that_stripe_delivers_it_again() {
    for given in [
        vec![started()],
        vec![started(), awaiting("evt_c")],
        vec![started(), failed("evt_f")],
    ] {
        PaymentTest::with(())
            .given(given)
            .when(refund(100, "evt_r"))
            .then_expect_error(PaymentError::NotPaid);
    }
}

// ---- out of order and duplicated deliveries ------------------------------------------------

#[test]
fn the_same_completion_delivered_again_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(complete(true, "evt_c"))
        .then_expect_events(vec![]);
}

#[test]
fn paid_twice_under_two_stripe_events_credits_once() {
    // completed(paid) and async_payment_succeeded both say "paid".
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(mark_paid("evt_s"))
        .then_expect_events(vec![]);
    PaymentTest::with(())
        .given(vec![started(), completed("evt_s", 20)])
        .when(complete(true, "evt_c"))
        .then_expect_events(vec![]);
}

#[test]
fn expired_after_paid_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(expire("evt_x"))
        .then_expect_events(vec![]);
}

#[test]
fn failed_after_paid_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started(), completed("evt_c", 10)])
        .when(mark_failed("evt_f"))
        .then_expect_events(vec![]);
}

#[test]
fn an_unpaid_completion_after_the_async_success_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started(), completed("evt_s", 20)])
        .when(complete(false, "evt_c"))
        .then_expect_events(vec![]);
}

#[test]
fn an_async_success_delivered_before_the_completion_pays_a_started_checkout() {
    let mut paid = completed("evt_s", 20);
    if let PaymentEvent::PaymentCompleted { payment_intent, .. } = &mut paid {
        *payment_intent = None;
    }
    PaymentTest::with(())
        .given(vec![started()])
        .when(mark_paid("evt_s"))
        .then_expect_events(vec![paid]);
}

#[test]
fn money_wins_a_payment_after_a_failure_is_paid() {
    // The first card failed, the second was charged.
    PaymentTest::with(())
        .given(vec![started(), failed("evt_f")])
        .when(complete(true, "evt_c"))
        .then_expect_events(vec![completed("evt_c", 10)]);
    // The failure was delivered after the async success it preceded.
    let mut paid = completed("evt_s", 20);
    if let PaymentEvent::PaymentCompleted { payment_intent, .. } = &mut paid {
        *payment_intent = None;
    }
    PaymentTest::with(())
        .given(vec![started(), failed("evt_f")])
        .when(mark_paid("evt_s"))
        .then_expect_events(vec![paid]);
}

#[test]
fn money_wins_a_payment_after_an_expiry_is_paid() {
    PaymentTest::with(())
        .given(vec![started(), expired("evt_x")])
        .when(complete(true, "evt_c"))
        .then_expect_events(vec![completed("evt_c", 10)]);
}

#[test]
fn an_unpaid_completion_after_a_failure_changes_nothing() {
    // async_payment_failed overtook the completion that preceded it.
    PaymentTest::with(())
        .given(vec![started(), failed("evt_f")])
        .when(complete(false, "evt_c"))
        .then_expect_events(vec![]);
}

#[test]
fn an_expiry_after_an_unpaid_completion_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started(), awaiting("evt_c")])
        .when(expire("evt_x"))
        .then_expect_events(vec![]);
}

#[test]
fn a_failure_after_an_expiry_changes_nothing() {
    PaymentTest::with(())
        .given(vec![started(), expired("evt_x")])
        .when(mark_failed("evt_f"))
        .then_expect_events(vec![]);
}

#[test]
fn a_failure_delivered_twice_fails_once() {
    PaymentTest::with(())
        .given(vec![started(), awaiting("evt_c"), failed("evt_f")])
        .when(mark_failed("evt_f2"))
        .then_expect_events(vec![]);
}

#[test]
fn a_start_recorded_after_its_completion_changes_nothing() {
    PaymentTest::with(())
        .given(vec![completed("evt_c", 10)])
        .when(start())
        .then_expect_events(vec![]);
}

#[test]
fn a_stripe_event_that_wrote_an_event_writes_nothing_again_whatever_it_says() {
    // The window answers before the state machine: an id that wrote once never writes again.
    PaymentTest::with(())
        .given(vec![started(), failed("evt_f")])
        .when(complete(true, "evt_f"))
        .then_expect_events(vec![]);
    let mut payment = payment_with(&[started()]);
    assert!(!payment.has_seen(&sid("evt_old")));
    payment.recall(vec![failed("evt_old")]);
    assert!(payment.has_seen(&sid("evt_old")));
    assert_eq!(
        payment.status(),
        PaymentStatus::Started,
        "recall never moves the status"
    );
}

// ---- keys, snapshots, bounds --------------------------------------------------------------

#[test]
fn each_event_has_its_key() {
    assert_eq!(started().idempotency_key().as_deref(), Some("checkout"));
    assert_eq!(
        completed("evt_c", 10).idempotency_key().as_deref(),
        Some("paid")
    );
    assert_eq!(
        awaiting("evt_c").idempotency_key().as_deref(),
        Some("stripe-event:evt_c")
    );
    assert_eq!(
        failed("evt_f").idempotency_key().as_deref(),
        Some("stripe-event:evt_f")
    );
    assert_eq!(
        expired("evt_x").idempotency_key().as_deref(),
        Some("stripe-event:evt_x")
    );
    let payment = payment_with(&[started(), completed("evt_c", 10)]);
    let refunded = payment
        .decide(refund(500, "evt_r"))
        .expect("a refund is accepted")
        .events;
    assert_eq!(
        refunded
            .first()
            .and_then(PaymentEvent::idempotency_key)
            .as_deref(),
        Some("refunded:500")
    );
    assert_eq!(
        mark_paid("evt_s").related_keys(),
        vec!["paid".to_string(), "stripe-event:evt_s".to_string()]
    );
    assert_eq!(
        refund(500, "evt_r").related_keys(),
        vec!["refunded:500".to_string(), "stripe-event:evt_r".to_string()]
    );
    assert_eq!(start().related_keys(), vec!["checkout".to_string()]);
}

#[test]
fn a_session_id_is_the_key_of_its_purchase() {
    assert_eq!(
        sid("cs_test_a1B2")
            .to_idempotency_key()
            .expect("a key")
            .as_str(),
        "cs_test_a1B2"
    );
    assert!(StripeId::parse("").is_err());
    assert!(StripeId::parse("cs 1").is_err());
    assert!(StripeId::parse("x".repeat(crate::ids::KEY_LEN_MAX + 1)).is_err());
    assert!(serde_json::from_str::<StripeId>("\"evt/1\"").is_err());
}

#[test]
fn a_snapshot_of_the_state_round_trips_through_json() {
    let payment = payment_with(&[
        started(),
        awaiting("evt_c"),
        completed("evt_s", 20),
        PaymentEvent::PaymentRefunded {
            user: alice(),
            refund_id: sid("re_1"),
            refunded_cents: 100,
            refunded_cents_total: 100,
            fully_refunded: false,
            credits_to_take_back: Credits::from_micros(12_500_000),
            credits_taken_back_total: Credits::from_micros(12_500_000),
            stripe_event_id: sid("evt_r"),
            refunded_at: at(40),
        },
    ]);
    let json = serde_json::to_value(&payment).expect("state serializes");
    let back: Payment = serde_json::from_value(json).expect("state deserializes");
    assert_eq!(back, payment);
    assert_eq!(back.status(), PaymentStatus::PartiallyRefunded);
}

#[test]
fn the_payment_remembers_a_bounded_window_of_stripe_events() {
    let mut payment = payment_with(&[started(), completed("evt_c", 10)]);
    let refunds = i64::try_from(STRIPE_EVENTS_KEPT).expect("small") + 10;
    for cents in 1..=refunds {
        for e in payment
            .decide(refund(cents, &format!("evt_r{cents}")))
            .expect("accepted")
            .events
        {
            payment.evolve(e);
        }
    }
    assert_eq!(payment.stripe_events_remembered(), STRIPE_EVENTS_KEPT);
    assert!(payment.has_seen(&sid(&format!("evt_r{refunds}"))));
    assert!(!payment.has_seen(&sid("evt_c")));
    // Forgotten, yet a redelivery still changes nothing: it is a transition already past.
    assert_eq!(
        payment.decide(complete(true, "evt_c")),
        Ok(Decision::write(vec![]))
    );
}

// ---- property test -----------------------------------------------------------------------

/// What Stripe says of one session in real life, before delivery shuffles and repeats it.
#[derive(Debug, Clone)]
struct Story {
    /// The hub recorded the start (false: the record was lost).
    started: bool,
    /// A card failed while the checkout was open.
    card_failed: bool,
    /// An expiry delivered whatever happened: Stripe would not send it for a completed
    /// session, but the hub must survive it.
    stray_expiry: bool,
    completion: Completion,
    /// Cumulative refunded amounts, increasing (only when paid).
    refunds: Vec<i64>,
    credits_micros: i64,
    amount_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Completion {
    /// The customer walked away: the session expired.
    Expired,
    Paid,
    /// An asynchronous method that later succeeded.
    AsyncSucceeded,
    /// An asynchronous method that later failed.
    AsyncFailed,
}

fn story() -> impl Strategy<Value = Story> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            Just(Completion::Expired),
            Just(Completion::Paid),
            Just(Completion::AsyncSucceeded),
            Just(Completion::AsyncFailed),
        ],
        proptest::collection::btree_set(1i64..=1_000, 0..4),
        1i64..5_000_000_000,
        1i64..=1_000,
    )
        .prop_map(
            |(
                started,
                card_failed,
                stray_expiry,
                completion,
                refunds,
                credits_micros,
                amount_cents,
            )| {
                let paid = matches!(completion, Completion::Paid | Completion::AsyncSucceeded);
                let refunds = if paid {
                    refunds
                        .into_iter()
                        .map(|r| r.min(amount_cents))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                } else {
                    Vec::new()
                };
                Story {
                    started,
                    card_failed,
                    stray_expiry,
                    completion,
                    refunds,
                    credits_micros,
                    amount_cents,
                }
            },
        )
}

impl Story {
    /// Every delivery the story makes, in the order things happened.
    fn deliveries(&self) -> Vec<PaymentCommand> {
        let credits = Credits::from_micros(self.credits_micros);
        let mut out = Vec::new();
        if self.started {
            out.push(PaymentCommand::StartCheckout {
                session_id: sid("cs_1"),
                user: alice(),
                package_id: "pro".into(),
                credits,
                amount_cents: self.amount_cents,
                currency: "usd".into(),
                now: at(0),
            });
        }
        if self.card_failed {
            out.push(PaymentCommand::MarkFailed {
                reason: "card declined".into(),
                stripe_event_id: sid("evt_card_failed"),
                now: at(5),
            });
        }
        let completion = |paid: bool| PaymentCommand::CompleteCheckout {
            session_id: sid("cs_1"),
            user_from_metadata: alice(),
            package_id: "pro".into(),
            credits,
            amount_cents: self.amount_cents,
            currency: "usd".into(),
            payment_intent: Some(sid("pi_1")),
            paid,
            listed_price: None,
            stripe_event_id: sid("evt_completed"),
            now: at(10),
        };
        match self.completion {
            Completion::Expired => out.push(expire("evt_expired")),
            Completion::Paid => out.push(completion(true)),
            Completion::AsyncSucceeded => {
                out.push(completion(false));
                out.push(mark_paid("evt_async_ok"));
            }
            Completion::AsyncFailed => {
                out.push(completion(false));
                out.push(mark_failed("evt_async_failed"));
            }
        }
        if self.stray_expiry {
            out.push(expire("evt_stray_expired"));
        }
        for (i, total) in self.refunds.iter().enumerate() {
            out.push(refund(*total, &format!("evt_refund_{i}")));
        }
        out
    }

    /// Whether Stripe took the money.
    fn pays(&self) -> bool {
        matches!(
            self.completion,
            Completion::Paid | Completion::AsyncSucceeded
        )
    }
}

/// Whether any of these events paid the payment.
fn was_paid(events: &[PaymentEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, PaymentEvent::PaymentCompleted { .. }))
}

/// Give a delivery another Stripe event id.
fn rename_stripe_event(command: &mut PaymentCommand, k: usize) {
    match command {
        PaymentCommand::StartCheckout { .. } => {}
        PaymentCommand::CompleteCheckout {
            stripe_event_id, ..
        }
        | PaymentCommand::MarkPaid {
            stripe_event_id, ..
        }
        | PaymentCommand::MarkFailed {
            stripe_event_id, ..
        }
        | PaymentCommand::Expire {
            stripe_event_id, ..
        }
        | PaymentCommand::Refund {
            stripe_event_id, ..
        }
        | PaymentCommand::OpenDispute {
            stripe_event_id, ..
        }
        | PaymentCommand::CloseDispute {
            stripe_event_id, ..
        } => *stripe_event_id = sid(&format!("{stripe_event_id}_again_{k}")),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_order_and_repetition_of_deliveries_credits_once_and_refunds_at_most_what_was_paid(
        story in story(),
        copies in proptest::collection::vec((1usize..=3, any::<bool>()), 9),
        seed in any::<u64>(),
    ) {
        // Each delivery one to three times, in a shuffled order. Some repeats come under a
        // fresh Stripe event id (the same news again, or an id the window forgot), so the
        // state machine is tested without the window's help.
        let mut queue: Vec<PaymentCommand> = Vec::new();
        for (delivery, (n, fresh)) in story.deliveries().into_iter().zip(copies.iter().cycle()) {
            for k in 0..*n {
                let mut delivery = delivery.clone();
                if *fresh && k > 0 {
                    rename_stripe_event(&mut delivery, k);
                }
                queue.push(delivery);
            }
        }
        let mut state = seed;
        for i in (1..queue.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap_or(0);
            queue.swap(i, j);
        }

        let mut payment = Payment::default();
        let mut all_events: Vec<PaymentEvent> = Vec::new();
        let mut completions = 0;
        let mut taken_back: i64 = 0;
        let mut keys: BTreeSet<String> = BTreeSet::new();
        // A refused delivery is delivered again later, as Stripe does, until nothing moves.
        loop {
            let mut retry = Vec::new();
            let written_before = all_events.len();
            for command in queue {
                let before = payment.clone();
                match payment.decide(command.clone()) {
                    Ok(decision) => {
                        prop_assert!(decision.replay_of.is_none(), "a payment never replays");
                        for e in decision.events {
                            if let Some(k) = e.idempotency_key() {
                                prop_assert!(keys.insert(k.clone()), "key {} written twice", k);
                            }
                            match &e {
                                PaymentEvent::PaymentCompleted { checkout, .. } => {
                                    completions += 1;
                                    prop_assert_eq!(checkout.user, alice());
                                    prop_assert_eq!(checkout.credits.micros(), story.credits_micros);
                                }
                                PaymentEvent::PaymentRefunded {
                                    credits_to_take_back,
                                    credits_taken_back_total,
                                    refunded_cents_total,
                                    refunded_cents,
                                    ..
                                } => {
                                    prop_assert!(*refunded_cents > 0);
                                    prop_assert!(*refunded_cents_total <= story.amount_cents);
                                    prop_assert!(!credits_to_take_back.is_negative());
                                    taken_back += credits_to_take_back.micros();
                                    prop_assert_eq!(taken_back, credits_taken_back_total.micros());
                                    prop_assert!(taken_back <= story.credits_micros, "took back more than was bought");
                                }
                                _ => {}
                            }
                            payment.evolve(e.clone());
                            all_events.push(e);
                        }
                    }
                    Err(refusal) => {
                        prop_assert!(
                            matches!(refusal, PaymentError::UnknownSession | PaymentError::NotPaid),
                            "only an overtaking delivery is refused, got {:?}", refusal
                        );
                        prop_assert_eq!(&payment, &before, "a refused command changes nothing");
                        retry.push(command);
                    }
                }
                prop_assert!(completions <= 1, "credited twice");
                prop_assert!(!was_paid(&all_events) || payment.status().is_paid(), "a paid payment moved back");
                prop_assert!(payment.refunded_cents() <= story.amount_cents);
            }
            if retry.is_empty() || all_events.len() == written_before {
                break;
            }
            queue = retry;
        }

        // Credited exactly once when Stripe took the money, never otherwise.
        prop_assert_eq!(completions, usize::from(story.pays()));
        prop_assert_eq!(payment.status().is_paid(), story.pays());
        if story.pays() {
            let refunded = story.refunds.last().copied().unwrap_or(0);
            prop_assert_eq!(payment.refunded_cents(), refunded);
            let expected = i128::from(story.credits_micros) * i128::from(refunded) / i128::from(story.amount_cents);
            prop_assert_eq!(i128::from(payment.credits_taken_back().micros()), expected);
        } else {
            prop_assert_eq!(payment.refunded_cents(), 0);
        }
        // A fresh fold of every event gives the same state (what replay and snapshots rely on).
        prop_assert_eq!(payment_with(&all_events), payment);
    }
}

/// Payment events are stored forever, so the JSON each variant was first written as must
/// still be what it reads and writes. These literals are the shape as stored since the
/// first version; a change to the event types that moves a field fails here.
#[test]
fn stored_payment_events_keep_the_json_shape_they_were_first_written_in() {
    let stored = [
        (
            started(),
            serde_json::json!({"CheckoutStarted": {
                "session_id": "cs_1",
                "user": "00000000-0000-0000-0000-000000000001",
                "package_id": "pro",
                "credits": 1_000_000_000_i64,
                "amount_cents": 8_000,
                "currency": "usd",
                "started_at": "2026-01-01T00:00:00Z"
            }}),
        ),
        (
            awaiting("evt_1"),
            serde_json::json!({"CheckoutAwaitingPayment": {
                "session_id": "cs_1",
                "user": "00000000-0000-0000-0000-000000000001",
                "package_id": "pro",
                "credits": 1_000_000_000_i64,
                "amount_cents": 8_000,
                "currency": "usd",
                "payment_intent": "pi_1",
                "stripe_event_id": "evt_1",
                "completed_at": "2026-01-01T00:00:10Z"
            }}),
        ),
        (
            completed("evt_2", 20),
            serde_json::json!({"PaymentCompleted": {
                "session_id": "cs_1",
                "user": "00000000-0000-0000-0000-000000000001",
                "package_id": "pro",
                "credits": 1_000_000_000_i64,
                "amount_cents": 8_000,
                "currency": "usd",
                "payment_intent": "pi_1",
                "stripe_event_id": "evt_2",
                "paid_at": "2026-01-01T00:00:20Z"
            }}),
        ),
    ];
    for (event, json) in stored {
        assert_eq!(
            serde_json::to_value(&event).expect("an event serializes"),
            json,
            "{} is written in its stored shape",
            event.event_type()
        );
        let read: PaymentEvent =
            serde_json::from_value(json).expect("the stored shape still reads");
        assert_eq!(read, event);
    }
}

// ---- the price paid, and disputes (issue 14, finding 16) ------------------------------------

fn complete_paying(amount_cents: i64, currency: &str, listed: Option<ListPrice>) -> PaymentCommand {
    let mut command = complete(true, "evt_c");
    if let PaymentCommand::CompleteCheckout {
        amount_cents: a,
        currency: c,
        listed_price,
        ..
    } = &mut command
    {
        *a = amount_cents;
        *c = currency.into();
        *listed_price = listed;
    }
    command
}

fn decide(payment: &Payment, command: PaymentCommand) -> Vec<PaymentEvent> {
    match payment.decide(command) {
        Ok(Decision { events, .. }) => events,
        Err(err) => panic!("refused: {err}"),
    }
}

fn dispute(id: &str, amount_cents: i64, event: &str) -> PaymentCommand {
    PaymentCommand::OpenDispute {
        dispute_id: sid(id),
        amount_cents,
        stripe_event_id: sid(event),
        now: at(50),
    }
}

fn close(id: &str, won: bool, event: &str) -> PaymentCommand {
    PaymentCommand::CloseDispute {
        dispute_id: sid(id),
        won,
        stripe_event_id: sid(event),
        now: at(60),
    }
}

/// Decide and apply each command in turn; the events written, all together.
fn run(payment: &mut Payment, commands: Vec<PaymentCommand>) -> Vec<PaymentEvent> {
    let mut all = Vec::new();
    for command in commands {
        for event in decide(payment, command) {
            payment.evolve(event.clone());
            all.push(event);
        }
    }
    all
}

#[test]
fn a_completion_that_paid_less_than_the_recorded_price_is_held_and_never_credited() {
    let mut payment = payment_with(&[started()]);
    let events = run(
        &mut payment,
        vec![
            complete_paying(PRO_CENTS - 1, "usd", None),
            mark_paid("evt_p"),
        ],
    );
    assert!(
        matches!(&events[..], [PaymentEvent::PaymentHeld { expected_cents, .. }] if *expected_cents == PRO_CENTS),
        "{events:?}"
    );
    assert!(!was_paid(&events));
    assert_eq!(payment.status(), PaymentStatus::Held);
    // A refund of a held payment moves nothing, and is not refused (Stripe would retry).
    assert!(decide(&payment, refund(PRO_CENTS - 1, "evt_r")).is_empty());
}

#[test]
fn a_completion_in_another_currency_is_held() {
    let mut payment = payment_with(&[started()]);
    let events = run(&mut payment, vec![complete_paying(PRO_CENTS, "eur", None)]);
    assert!(
        matches!(&events[..], [PaymentEvent::PaymentHeld { .. }]),
        "{events:?}"
    );
}

#[test]
fn without_a_recorded_start_the_listed_price_is_the_reference() {
    let listed = || {
        Some(ListPrice {
            amount_cents: PRO_CENTS,
            currency: "USD".into(),
        })
    };
    let mut short = Payment::default();
    let events = run(&mut short, vec![complete_paying(100, "usd", listed())]);
    assert!(
        matches!(&events[..], [PaymentEvent::PaymentHeld { .. }]),
        "{events:?}"
    );
    let mut taxed = Payment::default();
    let events = run(
        &mut taxed,
        vec![complete_paying(PRO_CENTS + 640, "usd", listed())],
    );
    assert!(
        was_paid(&events),
        "paying more than the price (tax) credits"
    );
}

#[test]
fn a_dispute_takes_back_its_share_once_and_a_won_dispute_gives_it_back() {
    let mut payment = payment_with(&[started(), completed("evt_c", 10)]);
    let opened = run(
        &mut payment,
        vec![
            dispute("dp_1", PRO_CENTS / 2, "evt_d"),
            dispute("dp_1", PRO_CENTS / 2, "evt_d_again"),
        ],
    );
    let [PaymentEvent::PaymentDisputed {
        credits_to_take_back,
        ..
    }] = &opened[..]
    else {
        panic!("one dispute: {opened:?}")
    };
    assert_eq!(*credits_to_take_back, Credits::from_credits(500));
    assert_eq!(payment.status(), PaymentStatus::Disputed);
    let closed = run(
        &mut payment,
        vec![close("dp_1", true, "evt_w"), close("dp_1", true, "evt_w2")],
    );
    let [PaymentEvent::DisputeClosed {
        credits_to_restore,
        won: true,
        ..
    }] = &closed[..]
    else {
        panic!("one closing: {closed:?}")
    };
    assert_eq!(*credits_to_restore, Credits::from_credits(500));
    assert_eq!(payment.status(), PaymentStatus::Paid);
}

#[test]
fn a_lost_dispute_keeps_what_it_took_and_refunds_never_take_back_more_than_was_bought() {
    let mut payment = payment_with(&[started(), completed("evt_c", 10)]);
    let events = run(
        &mut payment,
        vec![
            dispute("dp_1", PRO_CENTS, "evt_d"),
            refund(PRO_CENTS, "evt_r"),
            close("dp_1", false, "evt_l"),
        ],
    );
    let taken: i64 = events
        .iter()
        .map(|e| match e {
            PaymentEvent::PaymentDisputed {
                credits_to_take_back,
                ..
            }
            | PaymentEvent::PaymentRefunded {
                credits_to_take_back,
                ..
            } => credits_to_take_back.micros(),
            PaymentEvent::DisputeClosed {
                credits_to_restore, ..
            } => -credits_to_restore.micros(),
            _ => 0,
        })
        .sum();
    assert_eq!(taken, pro_credits().micros(), "{events:?}");
    assert_eq!(payment.status(), PaymentStatus::DisputeLost);
}

#[test]
fn a_dispute_closed_before_it_was_reported_open_takes_nothing() {
    let mut payment = payment_with(&[started(), completed("evt_c", 10)]);
    let events = run(
        &mut payment,
        vec![
            close("dp_1", true, "evt_w"),
            dispute("dp_1", PRO_CENTS, "evt_d"),
        ],
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, PaymentEvent::PaymentDisputed { .. })),
        "{events:?}"
    );
}
