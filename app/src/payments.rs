//! Payments: credit packages, Stripe Checkout, and Stripe's webhook events turned into
//! payment commands (which move the user's credits). See `docs/payments.md`.

use chrono::{DateTime, Utc};
use hub_adapters::stripe::{self, metadata, CheckoutRequest, SignatureError, StripeCallError};
use hub_commands::{CommandError, Handled, PaymentFlowError, RefKind, StoreError};
use hub_domain::payment::ListPrice;
use hub_domain::{Credits, PaymentCommand, PaymentError, StripeId, UserId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

use crate::credits::{idempotency_key, InvalidKey};
use crate::Hub;

// ---- packages ---------------------------------------------------------------------------

/// A credit package on sale.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageView {
    pub id: String,
    pub name: String,
    /// Whole credits.
    pub credits: i64,
    pub credits_micros: i64,
    /// In the currency's smallest unit.
    pub price_cents: i64,
    pub currency: String,
}

/// The packages on sale.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackageList {
    pub packages: Vec<PackageView>,
    /// Whether checkout is available (Stripe is configured).
    pub checkout_enabled: bool,
}

/// The packages on sale, from settings.
pub fn packages(hub: &Hub) -> PackageList {
    let settings = &hub.settings.payments;
    PackageList {
        packages: settings
            .packages
            .iter()
            .map(|p| PackageView {
                id: p.id.clone(),
                name: p.name.clone(),
                credits: p.credits,
                credits_micros: Credits::from_credits(p.credits).micros(),
                price_cents: p.price_cents,
                currency: settings.currency.clone(),
            })
            .collect(),
        checkout_enabled: hub.stripe.is_some(),
    }
}

// ---- checkout ---------------------------------------------------------------------------

/// Why a checkout was not started.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// Payments are off: `setting` is not set.
    #[error("payments are not configured on this hub ({setting} is not set)")]
    NotConfigured { setting: &'static str },
    /// No package has this id; `known` lists those that do, comma-separated.
    #[error("unknown package; one of: {known}")]
    UnknownPackage { known: String },
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    #[error("verify your email address before buying credits")]
    EmailNotVerified,
    /// Stripe refused or could not be reached.
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    /// Stripe answered a session id that is not one.
    #[error("the payment provider answered an invalid session id: {0}")]
    BadSessionId(String),
    #[error(transparent)]
    Command(#[from] CommandError<PaymentError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A checkout started: send the customer to `url`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckoutStarted {
    /// The Checkout Session's id.
    pub id: String,
    /// Stripe's hosted payment page.
    pub url: Option<String>,
    pub package_id: String,
    pub credits_micros: i64,
    pub amount_cents: i64,
    pub currency: String,
}

/// Start a Stripe Checkout of `package_id` for `user`'s own account. An idempotency key
/// makes a retry return the same session (Stripe keeps keys for 24 hours).
pub async fn checkout(
    hub: &Hub,
    user: Uuid,
    package_id: &str,
    key: Option<&str>,
) -> Result<CheckoutStarted, CheckoutError> {
    let Some(client) = hub.stripe.as_ref() else {
        return Err(CheckoutError::NotConfigured {
            setting: "payments.stripe_secret_key",
        });
    };
    let settings = &hub.settings.payments;
    let package =
        settings
            .package(package_id.trim())
            .ok_or_else(|| CheckoutError::UnknownPackage {
                known: settings
                    .packages
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
    let checkout_ref = match key {
        None => format!("checkout:{}", Uuid::new_v4().simple()),
        Some(raw) => format!("checkout:{}:{}", user.simple(), idempotency_key(raw)?),
    };
    let account = hub.users.load(UserId(user)).await?;
    if hub.settings.auth.require_verified_email && !account.email_verified() {
        return Err(CheckoutError::EmailNotVerified);
    }
    let session = client
        .create_session(&CheckoutRequest {
            user,
            package,
            currency: &settings.currency,
            checkout_ref: &checkout_ref,
            customer_email: account.email().map(|e| e.as_str()),
        })
        .await
        .inspect_err(|err| {
            tracing::warn!(error = ?err, package = %package.id, "Stripe checkout failed");
        })?;
    let session_id = StripeId::parse(session.id.clone())
        .map_err(|e| CheckoutError::BadSessionId(e.to_string()))?;
    let credits = Credits::from_credits(package.credits);
    hub.payments
        .execute(
            &session_id,
            PaymentCommand::StartCheckout {
                session_id: session_id.clone(),
                user: UserId(user),
                package_id: package.id.clone(),
                credits,
                amount_cents: package.price_cents,
                currency: settings.currency.clone(),
                now: hub.clock.now(),
            },
            &format!("user:{user}"),
        )
        .await?;
    hub.payments
        .remember_ref(&checkout_ref, RefKind::Checkout, &session_id)
        .await?;
    Ok(CheckoutStarted {
        id: session.id,
        url: session.url,
        package_id: package.id.clone(),
        credits_micros: credits.micros(),
        amount_cents: package.price_cents,
        currency: settings.currency.clone(),
    })
}

// ---- webhook ----------------------------------------------------------------------------

/// Why a webhook's event was not applied. Those a later delivery may cure are
/// [`WebhookError::UnknownCharge`] and the payment's own "unknown session" / "not paid".
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Payments are off: `setting` is not set.
    #[error("payments are not configured on this hub ({setting} is not set)")]
    NotConfigured { setting: &'static str },
    #[error("the Stripe-Signature header is required")]
    MissingSignature,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body is not a Stripe event the hub can read.
    #[error("{0}")]
    InvalidEvent(String),
    /// A session the hub created carries metadata it cannot read; `what` names the field.
    #[error("the session's metadata has an invalid {what}")]
    InvalidMetadata { what: &'static str },
    /// A refund of a charge no payment is known for yet (it may have overtaken the
    /// checkout's completion): Stripe should deliver it again later.
    #[error("no payment is known for this charge yet; deliver it again later")]
    UnknownCharge,
    #[error(transparent)]
    Command(#[from] CommandError<PaymentError>),
    #[error(transparent)]
    Flow(#[from] PaymentFlowError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verify a webhook's `Stripe-Signature` over its raw body, then apply its event (see
/// [`apply_event`]). Answers whether the event was the hub's to handle.
pub async fn receive_webhook(
    hub: &Hub,
    body: &[u8],
    signature: Option<&str>,
) -> Result<bool, WebhookError> {
    let settings = &hub.settings.payments;
    if settings.webhook_secret.is_empty() {
        return Err(WebhookError::NotConfigured {
            setting: "payments.webhook_secret",
        });
    }
    let signature = signature.ok_or(WebhookError::MissingSignature)?;
    stripe::verify_signature(
        body,
        signature,
        &settings.webhook_secret,
        hub.clock.now().timestamp(),
        settings.webhook_tolerance_s,
    )
    .inspect_err(|err| tracing::warn!(error = %err, "refused a Stripe webhook"))?;
    let event: stripe::Event = serde_json::from_slice(body)
        .map_err(|e| WebhookError::InvalidEvent(format!("not a Stripe event: {e}")))?;
    apply_event(hub, &event).await
}

/// Turn a verified Stripe event into payment commands (which settle the user's credits).
/// Answers `true` for an event applied or repeated, `false` for one that is not the hub's
/// (unknown types included).
pub async fn apply_event(hub: &Hub, event: &stripe::Event) -> Result<bool, WebhookError> {
    let event_id = stripe_id(&event.id)?;
    match event.kind.as_str() {
        "checkout.session.completed" => on_session(hub, event, &event_id, Session::Completed).await,
        "checkout.session.async_payment_succeeded" => {
            on_session(hub, event, &event_id, Session::AsyncSucceeded).await
        }
        "checkout.session.async_payment_failed" => {
            on_session(hub, event, &event_id, Session::AsyncFailed).await
        }
        "checkout.session.expired" => on_session(hub, event, &event_id, Session::Expired).await,
        "payment_intent.payment_failed" => on_intent_failed(hub, event, &event_id).await,
        "charge.refunded" => on_charge_refunded(hub, event, &event_id).await,
        "charge.dispute.created" | "charge.dispute.closed" => {
            on_dispute(hub, event, &event_id).await
        }
        other => {
            tracing::info!(event = %event.id, kind = other, "ignored a Stripe event of a type the hub does not handle");
            Ok(false)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Completed,
    AsyncSucceeded,
    AsyncFailed,
    Expired,
}

fn stripe_id(raw: &str) -> Result<StripeId, WebhookError> {
    StripeId::parse(raw).map_err(|e| WebhookError::InvalidEvent(format!("invalid Stripe id: {e}")))
}

fn object<T: DeserializeOwned>(event: &stripe::Event) -> Result<T, WebhookError> {
    serde_json::from_value(event.data.object.clone())
        .map_err(|e| WebhookError::InvalidEvent(format!("unexpected {} object: {e}", event.kind)))
}

/// When Stripe saw it; now if the event does not say.
fn event_time(hub: &Hub, unix_s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix_s, 0)
        .filter(|_| unix_s > 0)
        .unwrap_or_else(|| hub.clock.now())
}

/// What the hub put in a session's metadata at checkout.
struct Terms {
    user: UserId,
    package_id: String,
    credits: Credits,
}

/// `None` for a session the hub did not create (no user in its metadata).
fn terms(meta: Option<&HashMap<String, String>>) -> Result<Option<Terms>, WebhookError> {
    let Some(meta) = meta else { return Ok(None) };
    let Some(user) = meta.get(metadata::USER_ID) else {
        return Ok(None);
    };
    let bad = |what| WebhookError::InvalidMetadata { what };
    let user = user.parse::<UserId>().map_err(|_| bad("user id"))?;
    let package_id = meta
        .get(metadata::PACKAGE_ID)
        .cloned()
        .ok_or_else(|| bad("package id"))?;
    let credits = meta
        .get(metadata::CREDITS_MICROS)
        .and_then(|c| c.parse::<i64>().ok())
        .and_then(|c| Credits::positive(c).ok())
        .ok_or_else(|| bad("amount of credits"))?;
    Ok(Some(Terms {
        user,
        package_id,
        credits,
    }))
}

async fn on_session(
    hub: &Hub,
    event: &stripe::Event,
    event_id: &StripeId,
    kind: Session,
) -> Result<bool, WebhookError> {
    let session: stripe::SessionObject = object(event)?;
    let session_id = stripe_id(&session.id)?;
    let Some(terms) = terms(session.metadata.as_ref())? else {
        tracing::info!(event = %event.id, session = %session.id, "ignored a Checkout Session the hub did not create");
        return Ok(false);
    };
    let actor = format!("stripe:{event_id}");
    let now = event_time(hub, event.created);
    let payment_intent = stripe::expandable_id(session.payment_intent.as_ref())
        .map(stripe_id)
        .transpose()?;
    if let Some(intent) = &payment_intent {
        hub.payments
            .remember_ref(intent.as_str(), RefKind::PaymentIntent, &session_id)
            .await?;
    }
    let amount_cents = session.amount_total.unwrap_or(0);
    let currency = session
        .currency
        .clone()
        .unwrap_or_else(|| hub.settings.payments.currency.clone());
    let stripe_event_id = event_id.clone();
    let listed = listed_price(hub, &terms.package_id);
    let command = match kind {
        Session::Completed => PaymentCommand::CompleteCheckout {
            session_id: session_id.clone(),
            user_from_metadata: terms.user,
            package_id: terms.package_id,
            credits: terms.credits,
            amount_cents,
            currency,
            payment_intent,
            paid: session.payment_status.as_deref() == Some("paid"),
            listed_price: listed,
            stripe_event_id,
            now,
        },
        Session::AsyncSucceeded | Session::AsyncFailed | Session::Expired => {
            // The session may be unknown here (its checkout record was lost, or this event
            // overtook `completed`): its metadata names the checkout, so record the start
            // first. A start already recorded changes nothing.
            hub.payments
                .execute(
                    &session_id,
                    PaymentCommand::StartCheckout {
                        session_id: session_id.clone(),
                        user: terms.user,
                        package_id: terms.package_id,
                        credits: terms.credits,
                        amount_cents,
                        currency,
                        now: event_time(hub, session.created),
                    },
                    &actor,
                )
                .await?;
            match kind {
                Session::AsyncSucceeded => PaymentCommand::MarkPaid {
                    stripe_event_id,
                    now,
                },
                Session::AsyncFailed => PaymentCommand::MarkFailed {
                    reason: "the asynchronous payment failed".into(),
                    stripe_event_id,
                    now,
                },
                Session::Expired | Session::Completed => PaymentCommand::Expire {
                    stripe_event_id,
                    now,
                },
            }
        }
    };
    let handled = hub
        .payments
        .handle(&hub.credits, &session_id, command, &actor)
        .await?;
    log_credits(&session_id, &handled);
    Ok(true)
}

async fn on_intent_failed(
    hub: &Hub,
    event: &stripe::Event,
    event_id: &StripeId,
) -> Result<bool, WebhookError> {
    let intent: stripe::PaymentIntentObject = object(event)?;
    let reference = intent
        .metadata
        .as_ref()
        .and_then(|m| m.get(metadata::CHECKOUT_REF));
    let candidates: Vec<&str> = std::iter::once(intent.id.as_str())
        .chain(reference.map(String::as_str))
        .collect();
    let Some(session_id) = hub.payments.session_for(&candidates).await? else {
        // Nothing moved: a payment intent of another product, or of a checkout whose record
        // was lost (its session's own `expired` or `completed` will say the rest).
        tracing::info!(event = %event.id, intent = %intent.id, "ignored a failed payment intent of no known checkout");
        return Ok(false);
    };
    hub.payments
        .remember_ref(&intent.id, RefKind::PaymentIntent, &session_id)
        .await?;
    let reason = intent
        .last_payment_error
        .as_ref()
        .and_then(|e| {
            e.message
                .clone()
                .or_else(|| e.decline_code.clone())
                .or_else(|| e.code.clone())
        })
        .unwrap_or_else(|| "the payment failed".into());
    let command = PaymentCommand::MarkFailed {
        reason,
        stripe_event_id: event_id.clone(),
        now: event_time(hub, event.created),
    };
    drive(hub, &session_id, command, event_id).await
}

async fn on_charge_refunded(
    hub: &Hub,
    event: &stripe::Event,
    event_id: &StripeId,
) -> Result<bool, WebhookError> {
    let charge: stripe::ChargeObject = object(event)?;
    let intent = stripe::expandable_id(charge.payment_intent.as_ref());
    let reference = charge
        .metadata
        .as_ref()
        .and_then(|m| m.get(metadata::CHECKOUT_REF));
    let candidates: Vec<&str> = std::iter::once(charge.id.as_str())
        .chain(intent)
        .chain(reference.map(String::as_str))
        .collect();
    let Some(session_id) = hub.payments.session_for(&candidates).await? else {
        // Money moved back, so it is not dropped: the refund may have overtaken the
        // `checkout.session.completed` that maps its payment intent. Stripe retries.
        tracing::warn!(event = %event.id, charge = %charge.id, "a refund of no known payment (yet)");
        return Err(WebhookError::UnknownCharge);
    };
    hub.payments
        .remember_ref(&charge.id, RefKind::Charge, &session_id)
        .await?;
    let refund_id = charge
        .refunds
        .as_ref()
        .and_then(|r| r.data.first())
        .map(|r| r.id.as_str())
        .unwrap_or(charge.id.as_str());
    let command = PaymentCommand::Refund {
        refund_id: stripe_id(refund_id)?,
        amount_refunded_cents: charge.amount_refunded,
        stripe_event_id: event_id.clone(),
        now: event_time(hub, event.created),
    };
    drive(hub, &session_id, command, event_id).await
}

/// A package's price as configured now, if it is still sold.
fn listed_price(hub: &Hub, package_id: &str) -> Option<ListPrice> {
    let payments = &hub.settings.payments;
    payments
        .packages
        .iter()
        .find(|p| p.id == package_id)
        .map(|p| ListPrice {
            amount_cents: p.price_cents,
            currency: payments.currency.clone(),
        })
}

/// `charge.dispute.created` takes the disputed share of the credits back;
/// `charge.dispute.closed` gives it back when the dispute was won.
async fn on_dispute(
    hub: &Hub,
    event: &stripe::Event,
    event_id: &StripeId,
) -> Result<bool, WebhookError> {
    let dispute: stripe::DisputeObject = object(event)?;
    let charge = stripe::expandable_id(dispute.charge.as_ref());
    let intent = stripe::expandable_id(dispute.payment_intent.as_ref());
    let candidates: Vec<&str> = charge.into_iter().chain(intent).collect();
    let Some(session_id) = hub.payments.session_for(&candidates).await? else {
        // As for a refund: money moved, so Stripe is asked to deliver it again until the
        // completion that maps its charge has been seen.
        tracing::warn!(event = %event.id, dispute = %dispute.id, "a dispute of no known payment (yet)");
        return Err(WebhookError::UnknownCharge);
    };
    let dispute_id = stripe_id(&dispute.id)?;
    let now = event_time(hub, event.created);
    let command = if event.kind == "charge.dispute.created" {
        PaymentCommand::OpenDispute {
            dispute_id,
            amount_cents: dispute.amount,
            stripe_event_id: event_id.clone(),
            now,
        }
    } else {
        PaymentCommand::CloseDispute {
            dispute_id,
            won: dispute.status == "won",
            stripe_event_id: event_id.clone(),
            now,
        }
    };
    drive(hub, &session_id, command, event_id).await
}

/// Run one of a Stripe event's payment commands (keyed by the event, so a repeat changes
/// nothing), then the credit commands it implies, and log what they did.
async fn drive(
    hub: &Hub,
    session_id: &StripeId,
    command: PaymentCommand,
    event_id: &StripeId,
) -> Result<bool, WebhookError> {
    let handled = hub
        .payments
        .handle(
            &hub.credits,
            session_id,
            command,
            &format!("stripe:{event_id}"),
        )
        .await?;
    log_credits(session_id, &handled);
    Ok(true)
}

fn log_credits(session: &StripeId, handled: &Handled) {
    if let Some(credits) = handled.credits.purchased {
        tracing::info!(%session, %credits, "credited a payment");
    }
    for (requested, taken) in &handled.credits.revoked {
        tracing::info!(%session, %requested, %taken, "took back the credits of a refund");
    }
}
