//! The `payments` projection: one row per Stripe Checkout Session, for a user's payment
//! history.
//!
//! Payment events are rare next to credit events, so each is applied with one statement,
//! guarded by the row's version so a message applied twice changes nothing. Every event
//! carries what its row needs (the events that may come first carry the whole checkout).

use chrono::{DateTime, Utc};
use hub_domain::payment::Checkout;
use hub_domain::{PaymentEvent, StripeId};
use hub_nats::EventEnvelope;
use sqlx::PgConnection;

/// The columns a checkout fixes, from the events that carry the whole checkout.
struct CheckoutRow<'a> {
    user: uuid::Uuid,
    package_id: &'a str,
    credits_micros: i64,
    amount_cents: i64,
    currency: &'a str,
    status: &'static str,
    payment_intent: Option<&'a str>,
    at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    failure_reason: Option<String>,
}

impl<'a> CheckoutRow<'a> {
    fn of(
        checkout: &'a Checkout,
        status: &'static str,
        payment_intent: &'a Option<StripeId>,
        at: DateTime<Utc>,
        paid_at: Option<DateTime<Utc>>,
    ) -> Self {
        CheckoutRow {
            user: checkout.user.0,
            package_id: &checkout.package_id,
            credits_micros: checkout.credits.micros(),
            amount_cents: checkout.amount_cents,
            currency: &checkout.currency,
            status,
            payment_intent: payment_intent.as_ref().map(StripeId::as_str),
            at,
            paid_at,
            failure_reason: None,
        }
    }
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    messages: Vec<(EventEnvelope, u64)>,
) -> anyhow::Result<()> {
    for (envelope, _) in messages {
        if envelope.aggregate_type != "Payment" {
            continue;
        }
        let session = envelope.aggregate_id.as_str();
        let version = i64::try_from(envelope.sequence)?;
        let recorded_at = envelope.recorded_at;
        let event: PaymentEvent = envelope.payload.decode()?;
        let checkout = match &event {
            PaymentEvent::CheckoutStarted {
                checkout,
                started_at,
            } => Some(CheckoutRow::of(
                checkout,
                "started",
                &None,
                *started_at,
                None,
            )),
            PaymentEvent::CheckoutAwaitingPayment {
                checkout,
                payment_intent,
                completed_at,
                ..
            } => Some(CheckoutRow::of(
                checkout,
                "awaiting_payment",
                payment_intent,
                *completed_at,
                None,
            )),
            PaymentEvent::PaymentCompleted {
                checkout,
                payment_intent,
                paid_at,
                ..
            } => Some(CheckoutRow::of(
                checkout,
                "paid",
                payment_intent,
                *paid_at,
                Some(*paid_at),
            )),
            PaymentEvent::PaymentHeld {
                checkout,
                expected_cents,
                expected_currency,
                payment_intent,
                held_at,
                ..
            } => Some(CheckoutRow {
                failure_reason: Some(format!(
                    "held: paid {} {}, the price is {} {}",
                    checkout.amount_cents, checkout.currency, expected_cents, expected_currency
                )),
                ..CheckoutRow::of(checkout, "held", payment_intent, *held_at, None)
            }),
            PaymentEvent::PaymentFailed { .. }
            | PaymentEvent::CheckoutExpired { .. }
            | PaymentEvent::PaymentRefunded { .. }
            | PaymentEvent::PaymentDisputed { .. }
            | PaymentEvent::DisputeClosed { .. } => None,
        };
        if let Some(row) = checkout {
            // `created_at` keeps the first value: the start, or the first report of a
            // session whose start was never recorded.
            sqlx::query(
                "INSERT INTO payments (session_id, user_id, package_id, credits_micros,
                                       amount_cents, currency, status, payment_intent,
                                       created_at, paid_at, version, updated_at,
                                       failure_reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (session_id) DO UPDATE
                    SET amount_cents = excluded.amount_cents,
                        failure_reason = COALESCE(excluded.failure_reason, payments.failure_reason),
                        currency = excluded.currency,
                        status = excluded.status,
                        payment_intent = COALESCE(excluded.payment_intent, payments.payment_intent),
                        paid_at = COALESCE(excluded.paid_at, payments.paid_at),
                        version = excluded.version,
                        updated_at = excluded.updated_at
                  WHERE payments.version < excluded.version",
            )
            .bind(session)
            .bind(row.user)
            .bind(row.package_id)
            .bind(row.credits_micros)
            .bind(row.amount_cents)
            .bind(row.currency)
            .bind(row.status)
            .bind(row.payment_intent)
            .bind(row.at)
            .bind(row.paid_at)
            .bind(version)
            .bind(recorded_at)
            .bind(row.failure_reason)
            .execute(&mut *conn)
            .await?;
            continue;
        }
        if let Some(disputed) = dispute_status(&event) {
            // After a won dispute, the status is what the refunds make it.
            sqlx::query(
                "UPDATE payments
                    SET status = CASE WHEN $3 <> 'won' THEN $3
                                      WHEN refunded_cents = 0 THEN 'paid'
                                      WHEN refunded_cents >= amount_cents THEN 'refunded'
                                      ELSE 'partially_refunded' END,
                        version = $2,
                        updated_at = $4
                  WHERE session_id = $1 AND version < $2",
            )
            .bind(session)
            .bind(version)
            .bind(disputed)
            .bind(recorded_at)
            .execute(&mut *conn)
            .await?;
            continue;
        }
        let (status, failure_reason, refunded_cents, taken_back) = match &event {
            PaymentEvent::PaymentFailed { reason, .. } => {
                ("failed", Some(reason.as_str()), None, None)
            }
            PaymentEvent::CheckoutExpired { .. } => ("expired", None, None, None),
            PaymentEvent::PaymentRefunded {
                refunded_cents_total,
                fully_refunded,
                credits_taken_back_total,
                ..
            } => (
                if *fully_refunded {
                    "refunded"
                } else {
                    "partially_refunded"
                },
                None,
                Some(*refunded_cents_total),
                Some(credits_taken_back_total.micros()),
            ),
            PaymentEvent::CheckoutStarted { .. }
            | PaymentEvent::CheckoutAwaitingPayment { .. }
            | PaymentEvent::PaymentCompleted { .. }
            | PaymentEvent::PaymentHeld { .. }
            | PaymentEvent::PaymentDisputed { .. }
            | PaymentEvent::DisputeClosed { .. } => continue,
        };
        sqlx::query(
            "UPDATE payments
                SET status = $3,
                    failure_reason = COALESCE($4, failure_reason),
                    refunded_cents = COALESCE($5, refunded_cents),
                    credits_taken_back_micros = COALESCE($6, credits_taken_back_micros),
                    version = $2,
                    updated_at = $7
              WHERE session_id = $1 AND version < $2",
        )
        .bind(session)
        .bind(version)
        .bind(status)
        .bind(failure_reason)
        .bind(refunded_cents)
        .bind(taken_back)
        .bind(recorded_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The status a dispute event gives its row: `disputed`, `dispute_lost`, or `won` (the
/// status before the dispute, computed from the row).
fn dispute_status(event: &PaymentEvent) -> Option<&'static str> {
    match event {
        PaymentEvent::PaymentDisputed { .. } => Some("disputed"),
        PaymentEvent::DisputeClosed { won: true, .. } => Some("won"),
        PaymentEvent::DisputeClosed { won: false, .. } => Some("dispute_lost"),
        _ => None,
    }
}
