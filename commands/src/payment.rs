//! Payments: the `Payment` aggregate's entry point, the lookup of Stripe objects that name
//! no Checkout Session, and the process manager that turns a payment's events into credits.
//!
//! # Payment → credits
//!
//! Two aggregates, two steps, each idempotent: the payment records what Stripe said
//! (`PaymentCompleted` once per session, `PaymentRefunded` once per cumulative amount), and
//! [`Payments::settle_credits`] then brings the user's credit account in line with *every*
//! event of the payment — `PurchaseCredits` for its completion (key `payment:<session>`),
//! `RevokeCredits` for each refund (key `revoke:refund:<session>:<cents refunded so far>`)
//! and each dispute (key `revoke:dispute:<session>:<dispute>`), and `PurchaseCredits` for a
//! dispute the hub won (key `payment:<session>:won:<dispute>`). A held payment (paid less
//! than its price, or in another currency) moves no credits.
//! [`Payments::handle`] runs both for each webhook of a known session, whether or not the
//! webhook changed the payment, and the webhook answers 2xx only after both succeeded. A
//! crash between the two steps therefore leaves a webhook that Stripe delivers again, and
//! that delivery (or any later one for the session) completes the second step; a repeat
//! finds every key used and changes nothing.

use cqrs_es::EventStore;
use hub_domain::{
    AccountId, CreditCommand, CreditError, CreditEvent, Credits, IdempotencyKey, Payment,
    PaymentCommand, PaymentError, PaymentEvent, StripeId, UserId,
};
use sqlx::PgPool;
use std::collections::HashMap;

use crate::bus::{CommandBus, Committed};
use crate::credit::CreditAccounts;
use crate::error::{CommandError, StoreError};

pub type PaymentResult = Result<Committed<PaymentEvent>, CommandError<PaymentError>>;

/// Who the credit movements of payments are attributed to in the events' metadata.
const CREDITS_ACTOR: &str = "system:payments";

/// Why a payment's webhook did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PaymentFlowError {
    /// The payment refused the command, or its store failed.
    #[error(transparent)]
    Payment(#[from] CommandError<PaymentError>),
    /// The user's credit account refused or failed.
    #[error("could not move the payment's credits: {0}")]
    Credits(#[source] CommandError<CreditError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a webhook did.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The payment's events written now (empty: a repeat, or a transition already past).
    pub events: Vec<PaymentEvent>,
    /// What the credit side did.
    pub credits: CreditsSettled,
}

/// What [`Payments::settle_credits`] did to the user's account.
#[derive(Debug, Clone, Default)]
pub struct CreditsSettled {
    /// Credits bought, written now (`None`: not paid, or written before).
    pub purchased: Option<Credits>,
    /// Revocations written now, each `(requested, taken)`.
    pub revoked: Vec<(Credits, Credits)>,
}

/// The kind of Stripe object a reference names (see [`Payments::remember_ref`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    PaymentIntent,
    Charge,
    /// The hub's own checkout reference, carried in the payment intent's metadata.
    Checkout,
}

impl RefKind {
    fn as_str(self) -> &'static str {
        match self {
            RefKind::PaymentIntent => "payment_intent",
            RefKind::Charge => "charge",
            RefKind::Checkout => "checkout",
        }
    }
}

/// Commands for payments, one aggregate per Stripe Checkout Session.
pub struct Payments {
    bus: CommandBus<Payment>,
    pool: PgPool,
}

impl Payments {
    pub fn new(bus: CommandBus<Payment>) -> Self {
        Payments {
            pool: bus.store().pool().clone(),
            bus,
        }
    }

    /// Run a command; `actor` goes into each event's metadata.
    pub async fn execute(
        &self,
        session: &StripeId,
        command: PaymentCommand,
        actor: &str,
    ) -> PaymentResult {
        let metadata = HashMap::from([("actor".to_string(), actor.to_string())]);
        self.bus.execute(session.as_str(), command, &metadata).await
    }

    /// The payment as the event store has it now.
    pub async fn load(&self, session: &StripeId) -> Result<Payment, StoreError> {
        Ok(self.bus.store().load(session.as_str()).await?.aggregate)
    }

    /// Run a webhook's command, then bring the user's credits in line with the payment
    /// (see the module's documentation). Both steps are idempotent.
    pub async fn handle(
        &self,
        credits: &CreditAccounts,
        session: &StripeId,
        command: PaymentCommand,
        actor: &str,
    ) -> Result<Handled, PaymentFlowError> {
        let committed = self.execute(session, command, actor).await?;
        let settled = self.settle_credits(credits, session).await?;
        Ok(Handled {
            events: committed.events,
            credits: settled,
        })
    }

    /// Issue, for every event of the payment that moves credits, its credit command:
    /// `PurchaseCredits` for `PaymentCompleted`, `RevokeCredits` for each `PaymentRefunded`.
    /// Each is keyed, so those already applied change nothing. A payment has a handful of
    /// events, so reading them all is cheap.
    pub async fn settle_credits(
        &self,
        credits: &CreditAccounts,
        session: &StripeId,
    ) -> Result<CreditsSettled, PaymentFlowError> {
        let events = self
            .bus
            .store()
            .load_events(session.as_str())
            .await
            .map_err(StoreError::from_aggregate)?;
        let payment_id = key(session.as_str())?;
        let mut settled = CreditsSettled::default();
        for envelope in events {
            match envelope.payload {
                PaymentEvent::PaymentCompleted { checkout, .. } => {
                    let (user, amount) = (checkout.user, checkout.credits);
                    let committed = credits
                        .credit(
                            AccountId::from(user),
                            CreditCommand::PurchaseCredits {
                                payment_id: payment_id.clone(),
                                amount,
                            },
                            CREDITS_ACTOR,
                        )
                        .await
                        .map_err(PaymentFlowError::Credits)?;
                    if !committed.events.is_empty() {
                        settled.purchased = Some(amount);
                    }
                }
                PaymentEvent::PaymentRefunded {
                    user,
                    refunded_cents_total,
                    credits_to_take_back,
                    ..
                } => {
                    let key = key(&format!("refund:{session}:{refunded_cents_total}"))?;
                    let revoked = revoke(credits, user, key, &payment_id, credits_to_take_back);
                    settled.revoked.extend(revoked.await?);
                }
                PaymentEvent::PaymentDisputed {
                    user,
                    dispute_id,
                    credits_to_take_back,
                    ..
                } => {
                    let key = key(&format!("dispute:{session}:{dispute_id}"))?;
                    let revoked = revoke(credits, user, key, &payment_id, credits_to_take_back);
                    settled.revoked.extend(revoked.await?);
                }
                PaymentEvent::DisputeClosed {
                    user,
                    dispute_id,
                    credits_to_restore,
                    ..
                } => {
                    if credits_to_restore.micros() <= 0 {
                        continue;
                    }
                    // A won dispute gives back what it took, as a purchase of its own
                    // (`payment:<session>:won:<dispute>`), so it is given back once.
                    credits
                        .credit(
                            AccountId::from(user),
                            CreditCommand::PurchaseCredits {
                                payment_id: key(&format!("{session}:won:{dispute_id}"))?,
                                amount: credits_to_restore,
                            },
                            CREDITS_ACTOR,
                        )
                        .await
                        .map_err(PaymentFlowError::Credits)?;
                }
                PaymentEvent::CheckoutStarted { .. }
                | PaymentEvent::CheckoutAwaitingPayment { .. }
                | PaymentEvent::PaymentHeld { .. }
                | PaymentEvent::PaymentFailed { .. }
                | PaymentEvent::CheckoutExpired { .. } => {}
            }
        }
        Ok(settled)
    }

    /// Remember that a Stripe object (a payment intent, a charge, the hub's checkout
    /// reference) belongs to `session`. The first mapping of a reference is kept.
    pub async fn remember_ref(
        &self,
        ref_id: &str,
        kind: RefKind,
        session: &StripeId,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stripe_refs (ref_id, kind, session_id) VALUES ($1, $2, $3)
             ON CONFLICT (ref_id) DO NOTHING",
        )
        .bind(ref_id)
        .bind(kind.as_str())
        .bind(session.as_str())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// The session the first of `ref_ids` that is mapped was mapped to, if any: one query
    /// for every id a Stripe object names (its own, its payment intent's, its metadata's).
    pub async fn session_for(&self, ref_ids: &[&str]) -> Result<Option<StripeId>, StoreError> {
        let session: Option<String> = sqlx::query_scalar(
            "SELECT session_id FROM stripe_refs WHERE ref_id = ANY($1)
              ORDER BY array_position($1, ref_id) LIMIT 1",
        )
        .bind(ref_ids)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        session
            .map(|s| StripeId::parse(s).map_err(|e| StoreError::Internal(Box::new(e))))
            .transpose()
    }
}

/// Take `amount` back from `user` for a refund or dispute of `payment_id` under `key`;
/// answers each revocation written now as `(requested, taken)`. An amount too small to take
/// back one micro-credit moves nothing.
async fn revoke(
    credits: &CreditAccounts,
    user: UserId,
    key: IdempotencyKey,
    payment_id: &IdempotencyKey,
    amount: Credits,
) -> Result<Vec<(Credits, Credits)>, PaymentFlowError> {
    if amount.micros() <= 0 {
        return Ok(Vec::new());
    }
    let committed = credits
        .execute(
            AccountId::from(user),
            CreditCommand::RevokeCredits {
                key,
                payment_id: payment_id.clone(),
                amount,
            },
            CREDITS_ACTOR,
        )
        .await
        .map_err(PaymentFlowError::Credits)?;
    Ok(committed
        .events
        .into_iter()
        .filter_map(|event| match event {
            CreditEvent::CreditsRevoked {
                requested, taken, ..
            } => Some((requested, taken)),
            _ => None,
        })
        .collect())
}

fn key(s: &str) -> Result<IdempotencyKey, PaymentFlowError> {
    IdempotencyKey::parse(s)
        .map_err(|e| PaymentFlowError::Credits(CommandError::Internal(Box::new(e))))
}
