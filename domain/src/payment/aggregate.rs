use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::commands::{
    PaymentCommand, AMOUNT_CENTS_MAX, FAILURE_REASON_LEN_MAX, PACKAGE_ID_LEN_MAX,
};
use super::error::PaymentError;
use super::events::{Checkout, PaymentEvent};
use super::seen::SeenStripeEvents;
use super::values::StripeId;
use crate::decider::{cqrs_aggregate, Decider, Decision};
use crate::ids::UserId;
use crate::money::Credits;

/// Where a payment stands.
///
/// ```text
/// NotStarted ─start─▶ Started ─completed(paid)──────────────▶ Paid ─refund─▶ PartiallyRefunded ─▶ Refunded
///     │                  │ ─completed(unpaid)─▶ AwaitingPayment ─paid─▶ Paid
///     │                  │                          └─failed─▶ Failed
///     │                  │ ─failed─▶ Failed ─expired─▶ Expired
///     │                  └─expired─▶ Expired
///     └─completed (start lost: the user comes from the session's metadata)
/// ```
///
/// Money wins: Stripe saying "paid" moves any unpaid state (failed and expired included)
/// to `Paid`, because the customer was charged. Every other transition only moves
/// forward; one already past is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    #[default]
    NotStarted,
    Started,
    AwaitingPayment,
    Paid,
    PartiallyRefunded,
    Refunded,
    Failed,
    Expired,
    /// Stripe says paid, but less than the price or in another currency: not credited.
    Held,
    /// The customer disputed the charge; its share of the credits was taken back.
    Disputed,
    /// The dispute was lost: the credits it took stay taken.
    DisputeLost,
}

impl PaymentStatus {
    /// Whether the money came (refunds since included).
    pub const fn is_paid(self) -> bool {
        matches!(
            self,
            Self::Paid
                | Self::PartiallyRefunded
                | Self::Refunded
                | Self::Disputed
                | Self::DisputeLost
        )
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not_started",
            Self::Started => "started",
            Self::AwaitingPayment => "awaiting_payment",
            Self::Paid => "paid",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Held => "held",
            Self::Disputed => "disputed",
            Self::DisputeLost => "dispute_lost",
        }
    }
}

/// One Stripe Checkout Session and everything Stripe said of it after. Its aggregate id is
/// the session id. The state is what the rules need and no more.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    status: PaymentStatus,
    /// `None` only while `NotStarted`. The amount and currency are what Stripe charged once
    /// it said so.
    checkout: Option<Checkout>,
    payment_intent: Option<StripeId>,
    /// Refunded so far (Stripe's cumulative `amount_refunded`).
    refunded_cents: i64,
    /// Credits taken back so far for those refunds.
    credits_taken_back: Credits,
    /// Disputes not closed yet, each with the credits it took back.
    #[serde(default)]
    open_disputes: Vec<(StripeId, Credits)>,
    /// Disputes closed, so that a late `created` takes nothing.
    #[serde(default)]
    closed_disputes: Vec<StripeId>,
    /// The last [`super::STRIPE_EVENTS_KEPT`] Stripe events that wrote an event here.
    seen: SeenStripeEvents,
}

impl Payment {
    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    pub fn session_id(&self) -> Option<&StripeId> {
        self.checkout.as_ref().map(|c| &c.session_id)
    }

    pub fn user(&self) -> Option<UserId> {
        self.checkout.as_ref().map(|c| c.user)
    }

    pub fn package_id(&self) -> Option<&str> {
        self.checkout.as_ref().map(|c| c.package_id.as_str())
    }

    /// What the payment buys; zero before the checkout is known.
    pub fn credits(&self) -> Credits {
        self.checkout.as_ref().map_or(Credits::ZERO, |c| c.credits)
    }

    /// What the customer pays (or paid), in the currency's smallest unit.
    pub fn amount_cents(&self) -> i64 {
        self.checkout.as_ref().map_or(0, |c| c.amount_cents)
    }

    pub fn currency(&self) -> Option<&str> {
        self.checkout.as_ref().map(|c| c.currency.as_str())
    }

    pub fn payment_intent(&self) -> Option<&StripeId> {
        self.payment_intent.as_ref()
    }

    pub fn refunded_cents(&self) -> i64 {
        self.refunded_cents
    }

    pub fn credits_taken_back(&self) -> Credits {
        self.credits_taken_back
    }

    /// Whether this Stripe event wrote an event here (among the most recent ones).
    pub fn has_seen(&self, stripe_event_id: &StripeId) -> bool {
        self.seen.contains(stripe_event_id)
    }

    /// How many Stripe event ids the state holds: at most [`super::STRIPE_EVENTS_KEPT`].
    pub fn stripe_events_remembered(&self) -> usize {
        self.seen.len()
    }

    /// The events [`Decider::decide`] writes.
    fn decide_events(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        if command
            .stripe_event_id()
            .is_some_and(|id| self.seen.contains(id))
        {
            return Ok(Vec::new());
        }
        match command {
            PaymentCommand::StartCheckout {
                session_id,
                user,
                package_id,
                credits,
                amount_cents,
                currency,
                now,
            } => {
                let checkout = Checkout::parse(
                    session_id,
                    user,
                    package_id,
                    credits,
                    amount_cents,
                    &currency,
                )?;
                if let Some(known) = &self.checkout {
                    known.check_same(&checkout)?;
                    return Ok(Vec::new());
                }
                Ok(vec![PaymentEvent::CheckoutStarted {
                    checkout,
                    started_at: now,
                }])
            }
            PaymentCommand::CompleteCheckout {
                session_id,
                user_from_metadata,
                package_id,
                credits,
                amount_cents,
                currency,
                payment_intent,
                paid,
                listed_price,
                stripe_event_id,
                now,
            } => {
                let checkout = Checkout::parse(
                    session_id,
                    user_from_metadata,
                    package_id,
                    credits,
                    amount_cents,
                    &currency,
                )?;
                if let Some(known) = &self.checkout {
                    known.check_same(&checkout)?;
                }
                let payment_intent = payment_intent.or_else(|| self.payment_intent.clone());
                if self.status == PaymentStatus::Held {
                    return Ok(Vec::new());
                }
                let expected = self
                    .checkout
                    .as_ref()
                    .map(|known| (known.amount_cents, known.currency.clone()))
                    .or_else(|| {
                        listed_price.map(|p| (p.amount_cents, p.currency.to_ascii_lowercase()))
                    });
                if let Some((expected_cents, expected_currency)) = expected {
                    if checkout.currency != expected_currency
                        || checkout.amount_cents < expected_cents
                    {
                        if self.status.is_paid() {
                            return Ok(Vec::new());
                        }
                        return Ok(vec![PaymentEvent::PaymentHeld {
                            checkout,
                            expected_cents,
                            expected_currency,
                            payment_intent,
                            stripe_event_id,
                            held_at: now,
                        }]);
                    }
                }
                if paid {
                    if self.status.is_paid() {
                        return Ok(Vec::new());
                    }
                    return Ok(vec![checkout.completed(
                        payment_intent,
                        stripe_event_id,
                        now,
                    )]);
                }
                if !matches!(
                    self.status,
                    PaymentStatus::NotStarted | PaymentStatus::Started
                ) {
                    return Ok(Vec::new());
                }
                Ok(vec![PaymentEvent::CheckoutAwaitingPayment {
                    checkout,
                    payment_intent,
                    stripe_event_id,
                    completed_at: now,
                }])
            }
            PaymentCommand::MarkPaid {
                stripe_event_id,
                now,
            } => {
                let known = self.known()?;
                if self.status.is_paid() || self.status == PaymentStatus::Held {
                    return Ok(Vec::new());
                }
                Ok(vec![known.clone().completed(
                    self.payment_intent.clone(),
                    stripe_event_id,
                    now,
                )])
            }
            PaymentCommand::MarkFailed {
                reason,
                stripe_event_id,
                now,
            } => {
                let known = self.known()?;
                if !matches!(
                    self.status,
                    PaymentStatus::Started | PaymentStatus::AwaitingPayment
                ) {
                    return Ok(Vec::new());
                }
                Ok(vec![PaymentEvent::PaymentFailed {
                    user: known.user,
                    reason: reason.chars().take(FAILURE_REASON_LEN_MAX).collect(),
                    stripe_event_id,
                    failed_at: now,
                }])
            }
            PaymentCommand::Expire {
                stripe_event_id,
                now,
            } => {
                let known = self.known()?;
                if !matches!(self.status, PaymentStatus::Started | PaymentStatus::Failed) {
                    return Ok(Vec::new());
                }
                Ok(vec![PaymentEvent::CheckoutExpired {
                    user: known.user,
                    stripe_event_id,
                    expired_at: now,
                }])
            }
            PaymentCommand::Refund {
                refund_id,
                amount_refunded_cents,
                stripe_event_id,
                now,
            } => self.refund(refund_id, amount_refunded_cents, stripe_event_id, now),
            PaymentCommand::OpenDispute {
                dispute_id,
                amount_cents,
                stripe_event_id,
                now,
            } => self.open_dispute(dispute_id, amount_cents, stripe_event_id, now),
            PaymentCommand::CloseDispute {
                dispute_id,
                won,
                stripe_event_id,
                now,
            } => self.close_dispute(dispute_id, won, stripe_event_id, now),
        }
    }

    /// Credits neither refunds nor open disputes have taken back.
    fn credits_left(&self) -> Credits {
        let disputed: i64 = self.open_disputes.iter().map(|(_, c)| c.micros()).sum();
        Credits::from_micros(
            (self.credits().micros() - self.credits_taken_back.micros() - disputed).max(0),
        )
    }

    fn open_dispute(
        &self,
        dispute_id: StripeId,
        amount_cents: i64,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        if amount_cents < 0 {
            return Err(PaymentError::NegativeRefund(amount_cents));
        }
        let known = self.known()?;
        if self.status == PaymentStatus::Held {
            // Never credited: nothing to take back.
            return Ok(Vec::new());
        }
        if !self.status.is_paid() {
            return Err(PaymentError::NotPaid);
        }
        if self.open_disputes.iter().any(|(id, _)| *id == dispute_id)
            || self.closed_disputes.contains(&dispute_id)
        {
            return Ok(Vec::new());
        }
        let share = pro_rata(
            known.credits,
            amount_cents.min(known.amount_cents),
            known.amount_cents,
        );
        Ok(vec![PaymentEvent::PaymentDisputed {
            user: known.user,
            dispute_id,
            amount_cents,
            credits_to_take_back: Credits::from_micros(
                share.micros().min(self.credits_left().micros()),
            ),
            stripe_event_id,
            disputed_at: now,
        }])
    }

    fn close_dispute(
        &self,
        dispute_id: StripeId,
        won: bool,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let known = self.known()?;
        if self.closed_disputes.contains(&dispute_id) {
            return Ok(Vec::new());
        }
        let taken = self
            .open_disputes
            .iter()
            .find(|(id, _)| *id == dispute_id)
            .map_or(Credits::ZERO, |(_, c)| *c);
        Ok(vec![PaymentEvent::DisputeClosed {
            user: known.user,
            dispute_id,
            won,
            credits_to_restore: if won { taken } else { Credits::ZERO },
            stripe_event_id,
            closed_at: now,
        }])
    }

    /// The status once no dispute is open: what the refunds make it.
    fn settled_status(&self) -> PaymentStatus {
        if self.refunded_cents == 0 {
            PaymentStatus::Paid
        } else if self.refunded_cents >= self.amount_cents() {
            PaymentStatus::Refunded
        } else {
            PaymentStatus::PartiallyRefunded
        }
    }

    fn known(&self) -> Result<&Checkout, PaymentError> {
        self.checkout.as_ref().ok_or(PaymentError::UnknownSession)
    }

    fn refund(
        &self,
        refund_id: StripeId,
        refunded_cents_total: i64,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        if refunded_cents_total < 0 {
            return Err(PaymentError::NegativeRefund(refunded_cents_total));
        }
        let known = self.known()?;
        if self.status == PaymentStatus::Held {
            // The money goes back and no credits were given: nothing moves here.
            return Ok(Vec::new());
        }
        if !self.status.is_paid() {
            return Err(PaymentError::NotPaid);
        }
        if refunded_cents_total <= self.refunded_cents {
            return Ok(Vec::new());
        }
        if refunded_cents_total > known.amount_cents {
            return Err(PaymentError::RefundExceedsPayment {
                refunded_cents: refunded_cents_total,
                amount_cents: known.amount_cents,
            });
        }
        let disputed: i64 = self.open_disputes.iter().map(|(_, c)| c.micros()).sum();
        // What open disputes took is not taken twice.
        let taken_back_total = Credits::from_micros(
            pro_rata(known.credits, refunded_cents_total, known.amount_cents)
                .micros()
                .min(known.credits.micros() - disputed)
                .max(self.credits_taken_back.micros()),
        );
        Ok(vec![PaymentEvent::PaymentRefunded {
            user: known.user,
            refund_id,
            refunded_cents: refunded_cents_total - self.refunded_cents,
            refunded_cents_total,
            fully_refunded: refunded_cents_total == known.amount_cents,
            credits_to_take_back: Credits::from_micros(
                taken_back_total.micros() - self.credits_taken_back.micros(),
            ),
            credits_taken_back_total: taken_back_total,
            stripe_event_id,
            refunded_at: now,
        }])
    }
}

impl Checkout {
    /// A checkout's terms, checked; the currency lowercased.
    fn parse(
        session_id: StripeId,
        user: UserId,
        package_id: String,
        credits: Credits,
        amount_cents: i64,
        currency: &str,
    ) -> Result<Checkout, PaymentError> {
        Credits::positive(credits.micros()).map_err(PaymentError::InvalidCredits)?;
        if !(1..=AMOUNT_CENTS_MAX).contains(&amount_cents) {
            return Err(PaymentError::InvalidAmountCents(amount_cents));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(PaymentError::InvalidCurrency);
        }
        if package_id.trim().is_empty()
            || package_id.chars().count() > PACKAGE_ID_LEN_MAX
            || package_id.chars().any(char::is_control)
        {
            return Err(PaymentError::InvalidPackageId {
                max: PACKAGE_ID_LEN_MAX,
            });
        }
        Ok(Checkout {
            session_id,
            user,
            package_id,
            credits,
            amount_cents,
            currency: currency.to_ascii_lowercase(),
        })
    }

    /// Refuse a start or completion that names another session, user, package or amount
    /// of credits than the one recorded: crediting it would credit the wrong thing. The
    /// amount and currency may differ: the completion's are what Stripe charged.
    fn check_same(&self, other: &Checkout) -> Result<(), PaymentError> {
        let field = if self.session_id != other.session_id {
            "session id"
        } else if self.user != other.user {
            "user"
        } else if self.package_id != other.package_id {
            "package"
        } else if self.credits != other.credits {
            "credits"
        } else {
            return Ok(());
        };
        Err(PaymentError::CheckoutMismatch { field })
    }

    fn completed(
        self,
        payment_intent: Option<StripeId>,
        stripe_event_id: StripeId,
        now: DateTime<Utc>,
    ) -> PaymentEvent {
        PaymentEvent::PaymentCompleted {
            checkout: self,
            payment_intent,
            stripe_event_id,
            paid_at: now,
        }
    }
}

/// `credits × refunded / amount`, rounded down to the micro-credit, at most `credits`.
/// The product is taken in `i128`: at most 10^15 micro-credits times 10^12 cents.
fn pro_rata(credits: Credits, refunded_cents: i64, amount_cents: i64) -> Credits {
    let share = (i128::from(credits.micros()) * i128::from(refunded_cents))
        .checked_div(i128::from(amount_cents))
        .unwrap_or(0);
    let share = i64::try_from(share).unwrap_or(i64::MAX);
    Credits::from_micros(share.clamp(0, credits.micros()))
}

impl Decider for Payment {
    const TYPE: &'static str = "Payment";
    const STATE_VERSION: i32 = 1;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    /// Decide what a command does to this payment. Pure: the caller writes the events. Never a
    /// replay: no events means nothing changes: a Stripe event already applied, or a transition
    /// already past (`expired` after `paid`, `paid` twice, a refund no larger than the
    /// refunds so far).
    fn decide(&self, command: PaymentCommand) -> Result<Decision<PaymentEvent>, PaymentError> {
        self.decide_events(command).map(Decision::write)
    }

    /// Apply an event. Only assigns: every check happened in [`Decider::decide`].
    fn evolve(&mut self, event: PaymentEvent) {
        if let Some(id) = event.stripe_event_id() {
            self.seen.remember(id.clone());
        }
        match event {
            PaymentEvent::CheckoutStarted { checkout, .. } => {
                self.checkout = Some(checkout);
                self.status = PaymentStatus::Started;
            }
            PaymentEvent::CheckoutAwaitingPayment {
                checkout,
                payment_intent,
                ..
            } => {
                self.checkout = Some(checkout);
                self.payment_intent = payment_intent;
                self.status = PaymentStatus::AwaitingPayment;
            }
            PaymentEvent::PaymentCompleted {
                checkout,
                payment_intent,
                ..
            } => {
                self.checkout = Some(checkout);
                self.payment_intent = payment_intent;
                self.status = PaymentStatus::Paid;
            }
            PaymentEvent::PaymentHeld {
                checkout,
                payment_intent,
                ..
            } => {
                self.checkout = Some(checkout);
                self.payment_intent = payment_intent;
                self.status = PaymentStatus::Held;
            }
            PaymentEvent::PaymentDisputed {
                dispute_id,
                credits_to_take_back,
                ..
            } => {
                self.open_disputes.push((dispute_id, credits_to_take_back));
                self.status = PaymentStatus::Disputed;
            }
            PaymentEvent::DisputeClosed {
                dispute_id, won, ..
            } => {
                self.open_disputes.retain(|(id, _)| *id != dispute_id);
                self.closed_disputes.push(dispute_id);
                self.status = if !self.open_disputes.is_empty() {
                    PaymentStatus::Disputed
                } else if won {
                    self.settled_status()
                } else {
                    PaymentStatus::DisputeLost
                };
            }
            PaymentEvent::PaymentFailed { .. } => self.status = PaymentStatus::Failed,
            PaymentEvent::CheckoutExpired { .. } => self.status = PaymentStatus::Expired,
            PaymentEvent::PaymentRefunded {
                refunded_cents_total,
                fully_refunded,
                credits_taken_back_total,
                ..
            } => {
                self.refunded_cents = refunded_cents_total;
                self.credits_taken_back = credits_taken_back_total;
                self.status = if matches!(
                    self.status,
                    PaymentStatus::Disputed | PaymentStatus::DisputeLost
                ) {
                    self.status
                } else if fully_refunded {
                    PaymentStatus::Refunded
                } else {
                    PaymentStatus::PartiallyRefunded
                };
            }
        }
    }

    /// Take back into memory Stripe events the payment no longer remembers (found in the
    /// event store by key, see [`PaymentCommand::related_keys`]), so their redelivery
    /// changes nothing. Nothing else is touched: the status is a fold of every event.
    fn recall(&mut self, events: impl IntoIterator<Item = PaymentEvent>) {
        for event in events {
            if let Some(id) = event.stripe_event_id() {
                self.seen.remember(id.clone());
            }
        }
    }

    fn event_key(event: &PaymentEvent) -> Option<String> {
        event.idempotency_key()
    }

    fn related_keys(command: &PaymentCommand) -> Vec<String> {
        command.related_keys()
    }

    fn may_be_forgotten(_refusal: &PaymentError) -> bool {
        // A payment forgets only Stripe event ids, and a forgotten one is not refused: it
        // conflicts on its key in the store, and the write side recalls it then.
        false
    }
}

cqrs_aggregate!(Payment);
