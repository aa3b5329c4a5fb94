//! `/api/payments`: credit packages, Stripe Checkout, Stripe's webhooks, and a user's
//! payment history. See `docs/payments.md`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use hub_commands::RefKind;
use hub_domain::{Credits, IdempotencyKey, PaymentCommand, StripeId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use hub_adapters::stripe::{self, metadata, CheckoutRequest, StripeCallError};

const PAGE_DEFAULT: i64 = 20;
const PAGE_MAX: i64 = 100;

fn not_configured(what: &str) -> ApiError {
    ApiError::unavailable_code(
        "payments_not_configured",
        format!("payments are not configured on this hub ({what} is not set)"),
    )
}

// ---- packages ---------------------------------------------------------------------------

#[derive(Debug, Serialize)]
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

#[derive(Debug, Serialize)]
pub struct PackageList {
    pub packages: Vec<PackageView>,
    /// Whether `POST /api/payments/checkout` is available (Stripe is configured).
    pub checkout_enabled: bool,
}

/// `GET /api/payments/packages` — anyone.
pub async fn packages(State(state): State<Arc<AppState>>) -> Json<PackageList> {
    let settings = &state.settings.payments;
    Json(PackageList {
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
        checkout_enabled: state.stripe.is_some(),
    })
}

// ---- checkout ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    #[serde(alias = "packageId")]
    pub package_id: String,
}

#[derive(Debug, Serialize)]
pub struct CheckoutResponse {
    /// The Checkout Session's id.
    pub id: String,
    /// Stripe's hosted payment page: send the customer there.
    pub url: Option<String>,
    pub package_id: String,
    pub credits_micros: i64,
    pub amount_cents: i64,
    pub currency: String,
}

/// `POST /api/payments/checkout {packageId}` — any signed-in caller, for their own account.
/// An optional `Idempotency-Key` header makes a retry return the same session (Stripe keeps
/// keys for 24 hours).
pub async fn checkout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<(StatusCode, Json<CheckoutResponse>), ApiError> {
    let Some(client) = state.stripe.as_ref() else {
        return Err(not_configured("payments.stripe_secret_key"));
    };
    let settings = &state.settings.payments;
    let package = settings.package(body.package_id.trim()).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_package",
            format!(
                "unknown package; one of: {}",
                settings
                    .packages
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let checkout_ref = match headers.get("idempotency-key") {
        None => format!("checkout:{}", Uuid::new_v4().simple()),
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .and_then(|k| IdempotencyKey::parse(k.trim()).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1-128 characters of letters, digits and . _ : -",
                    )
                })?;
            format!("checkout:{}:{key}", caller.user.simple())
        }
    };
    let user = state.users.load(UserId(caller.user)).await?;
    if state.settings.auth.require_verified_email && !user.email_verified() {
        return Err(ApiError::unprocessable(
            "email_not_verified",
            "verify your email address before buying credits",
        ));
    }
    let session = client
        .create_session(&CheckoutRequest {
            user: caller.user,
            package,
            currency: &settings.currency,
            checkout_ref: &checkout_ref,
            customer_email: user.email().map(|e| e.as_str()),
        })
        .await
        .map_err(|err| {
            tracing::warn!(error = ?err, package = %package.id, "Stripe checkout failed");
            match err {
                StripeCallError::Refused { code, .. } => ApiError::bad_gateway(
                    "stripe_refused",
                    format!("the payment provider refused the checkout ({code})"),
                ),
                StripeCallError::Unavailable(_) => ApiError::bad_gateway(
                    "stripe_unavailable",
                    "the payment provider could not be reached; try again",
                ),
            }
        })?;
    let session_id = StripeId::parse(session.id.clone()).map_err(|e| {
        ApiError::bad_gateway(
            "stripe_bad_response",
            format!("the payment provider answered an invalid session id: {e}"),
        )
    })?;
    let credits = Credits::from_credits(package.credits);
    state
        .payments
        .execute(
            &session_id,
            PaymentCommand::StartCheckout {
                session_id: session_id.clone(),
                user: UserId(caller.user),
                package_id: package.id.clone(),
                credits,
                amount_cents: package.price_cents,
                currency: settings.currency.clone(),
                now: Utc::now(),
            },
            &format!("user:{}", caller.user),
        )
        .await?;
    state
        .payments
        .remember_ref(&checkout_ref, RefKind::Checkout, &session_id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CheckoutResponse {
            id: session.id,
            url: session.url,
            package_id: package.id.clone(),
            credits_micros: credits.micros(),
            amount_cents: package.price_cents,
            currency: settings.currency.clone(),
        }),
    ))
}

// ---- webhook ----------------------------------------------------------------------------

/// `POST /api/payments/webhook` — Stripe, proven by the `Stripe-Signature` header over the
/// raw body. 200 for an event applied, repeated or not the hub's (unknown types included);
/// 400 for a bad signature or body; 409 for an event that overtook the one it depends on
/// (Stripe delivers it again later); 5xx when the hub failed (Stripe retries).
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let settings = &state.settings.payments;
    if settings.webhook_secret.is_empty() {
        return Err(not_configured("payments.webhook_secret"));
    }
    let header = headers
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_signature",
                "the Stripe-Signature header is required",
            )
        })?;
    stripe::verify_signature(
        &body,
        header,
        &settings.webhook_secret,
        Utc::now().timestamp(),
        settings.webhook_tolerance_s,
    )
    .map_err(|err| {
        tracing::warn!(error = %err, "refused a Stripe webhook");
        let code = match err {
            stripe::SignatureError::Stale { .. } => "stale_signature",
            stripe::SignatureError::Malformed | stripe::SignatureError::Mismatch => {
                "invalid_signature"
            }
        };
        ApiError::bad_request(code, err.to_string())
    })?;
    let event: stripe::Event = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_event", format!("not a Stripe event: {e}")))?;
    let event_id = stripe_id(&event.id)?;
    let handled = match event.kind.as_str() {
        "checkout.session.completed" => {
            on_session(&state, &event, &event_id, Session::Completed).await?
        }
        "checkout.session.async_payment_succeeded" => {
            on_session(&state, &event, &event_id, Session::AsyncSucceeded).await?
        }
        "checkout.session.async_payment_failed" => {
            on_session(&state, &event, &event_id, Session::AsyncFailed).await?
        }
        "checkout.session.expired" => {
            on_session(&state, &event, &event_id, Session::Expired).await?
        }
        "payment_intent.payment_failed" => on_intent_failed(&state, &event, &event_id).await?,
        "charge.refunded" => on_charge_refunded(&state, &event, &event_id).await?,
        other => {
            tracing::info!(event = %event.id, kind = other, "ignored a Stripe event of a type the hub does not handle");
            false
        }
    };
    Ok(Json(json!({ "received": true, "handled": handled })))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Completed,
    AsyncSucceeded,
    AsyncFailed,
    Expired,
}

fn stripe_id(raw: &str) -> Result<StripeId, ApiError> {
    StripeId::parse(raw)
        .map_err(|e| ApiError::bad_request("invalid_event", format!("invalid Stripe id: {e}")))
}

fn object<T: serde::de::DeserializeOwned>(event: &stripe::Event) -> Result<T, ApiError> {
    serde_json::from_value(event.data.object.clone()).map_err(|e| {
        ApiError::bad_request(
            "invalid_event",
            format!("unexpected {} object: {e}", event.kind),
        )
    })
}

/// When Stripe saw it; now if the event does not say.
fn event_time(unix_s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix_s, 0)
        .filter(|_| unix_s > 0)
        .unwrap_or_else(Utc::now)
}

/// What the hub put in a session's metadata at checkout.
struct Terms {
    user: UserId,
    package_id: String,
    credits: Credits,
}

/// `None` for a session the hub did not create (no user in its metadata).
fn terms(meta: Option<&HashMap<String, String>>) -> Result<Option<Terms>, ApiError> {
    let Some(meta) = meta else { return Ok(None) };
    let Some(user) = meta.get(metadata::USER_ID) else {
        return Ok(None);
    };
    let bad = |what: &str| {
        ApiError::unprocessable(
            "invalid_metadata",
            format!("the session's metadata has an invalid {what}"),
        )
    };
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
    state: &AppState,
    event: &stripe::Event,
    event_id: &StripeId,
    kind: Session,
) -> Result<bool, ApiError> {
    let session: stripe::SessionObject = object(event)?;
    let session_id = stripe_id(&session.id)?;
    let Some(terms) = terms(session.metadata.as_ref())? else {
        tracing::info!(event = %event.id, session = %session.id, "ignored a Checkout Session the hub did not create");
        return Ok(false);
    };
    let actor = format!("stripe:{event_id}");
    let now = event_time(event.created);
    let payment_intent = stripe::expandable_id(session.payment_intent.as_ref())
        .map(stripe_id)
        .transpose()?;
    if let Some(intent) = &payment_intent {
        state
            .payments
            .remember_ref(intent.as_str(), RefKind::PaymentIntent, &session_id)
            .await?;
    }
    let amount_cents = session.amount_total.unwrap_or(0);
    let currency = session
        .currency
        .clone()
        .unwrap_or_else(|| state.settings.payments.currency.clone());
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
            stripe_event_id: event_id.clone(),
            now,
        },
        Session::AsyncSucceeded | Session::AsyncFailed | Session::Expired => {
            // The session may be unknown here (its checkout record was lost, or this event
            // overtook `completed`): its metadata names the checkout, so record the start
            // first. A start already recorded changes nothing.
            state
                .payments
                .execute(
                    &session_id,
                    PaymentCommand::StartCheckout {
                        session_id: session_id.clone(),
                        user: terms.user,
                        package_id: terms.package_id,
                        credits: terms.credits,
                        amount_cents,
                        currency,
                        now: event_time(session.created),
                    },
                    &actor,
                )
                .await?;
            match kind {
                Session::AsyncSucceeded => PaymentCommand::MarkPaid {
                    stripe_event_id: event_id.clone(),
                    now,
                },
                Session::AsyncFailed => PaymentCommand::MarkFailed {
                    reason: "the asynchronous payment failed".into(),
                    stripe_event_id: event_id.clone(),
                    now,
                },
                Session::Expired | Session::Completed => PaymentCommand::Expire {
                    stripe_event_id: event_id.clone(),
                    now,
                },
            }
        }
    };
    let handled = state
        .payments
        .handle(&state.credits, &session_id, command, &actor)
        .await?;
    log_credits(&session_id, &handled);
    Ok(true)
}

async fn on_intent_failed(
    state: &AppState,
    event: &stripe::Event,
    event_id: &StripeId,
) -> Result<bool, ApiError> {
    let intent: stripe::PaymentIntentObject = object(event)?;
    let reference = intent
        .metadata
        .as_ref()
        .and_then(|m| m.get(metadata::CHECKOUT_REF));
    let candidates: Vec<&str> = std::iter::once(intent.id.as_str())
        .chain(reference.map(String::as_str))
        .collect();
    let session = state.payments.session_for(&candidates).await?;
    let Some(session_id) = session else {
        // Nothing moved: a payment intent of another product, or of a checkout whose record
        // was lost (its session's own `expired` or `completed` will say the rest).
        tracing::info!(event = %event.id, intent = %intent.id, "ignored a failed payment intent of no known checkout");
        return Ok(false);
    };
    state
        .payments
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
    let handled = state
        .payments
        .handle(
            &state.credits,
            &session_id,
            PaymentCommand::MarkFailed {
                reason,
                stripe_event_id: event_id.clone(),
                now: event_time(event.created),
            },
            &format!("stripe:{event_id}"),
        )
        .await?;
    log_credits(&session_id, &handled);
    Ok(true)
}

async fn on_charge_refunded(
    state: &AppState,
    event: &stripe::Event,
    event_id: &StripeId,
) -> Result<bool, ApiError> {
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
    let session = state.payments.session_for(&candidates).await?;
    let Some(session_id) = session else {
        // Money moved back, so it is not dropped: the refund may have overtaken the
        // `checkout.session.completed` that maps its payment intent. Stripe retries.
        tracing::warn!(event = %event.id, charge = %charge.id, "a refund of no known payment (yet)");
        return Err(ApiError::conflict(
            "no payment is known for this charge yet; deliver it again later",
        ));
    };
    state
        .payments
        .remember_ref(&charge.id, RefKind::Charge, &session_id)
        .await?;
    let refund_id = charge
        .refunds
        .as_ref()
        .and_then(|r| r.data.first())
        .map(|r| r.id.as_str())
        .unwrap_or(charge.id.as_str());
    let handled = state
        .payments
        .handle(
            &state.credits,
            &session_id,
            PaymentCommand::Refund {
                refund_id: stripe_id(refund_id)?,
                amount_refunded_cents: charge.amount_refunded,
                stripe_event_id: event_id.clone(),
                now: event_time(event.created),
            },
            &format!("stripe:{event_id}"),
        )
        .await?;
    log_credits(&session_id, &handled);
    Ok(true)
}

fn log_credits(session: &StripeId, handled: &hub_commands::Handled) {
    if let Some(credits) = handled.credits.purchased {
        tracing::info!(%session, %credits, "credited a payment");
    }
    for (requested, taken) in &handled.credits.revoked {
        tracing::info!(%session, %requested, %taken, "took back the credits of a refund");
    }
}

// ---- history ----------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Another user's payments: admins and auditors only.
    pub user_id: Option<Uuid>,
    /// 1..=100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub session_id: String,
    /// `started`, `awaiting_payment`, `paid`, `partially_refunded`, `refunded`, `failed` or
    /// `expired`.
    pub status: String,
    pub package_id: String,
    pub credits_micros: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub refunded_cents: i64,
    pub credits_taken_back_micros: i64,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub user_id: Uuid,
    pub data: Vec<PaymentView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/payments/history` — any signed-in caller (own payments; `user_id=` for admin,
/// auditor). Newest first, from the `payments` read model.
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let user = match query.user_id {
        Some(other) if other != caller.user => {
            caller.require(&[Role::Admin, Role::Auditor])?;
            other
        }
        _ => caller.user,
    };
    let limit = query.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {PAGE_MAX}"),
        ));
    }
    let before = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
        })?),
    };
    let rows = sqlx::query(
        "SELECT session_id, status, package_id, credits_micros, amount_cents, currency,
                refunded_cents, credits_taken_back_micros, failure_reason, created_at,
                paid_at, updated_at
           FROM payments
          WHERE user_id = $1
            AND ($2::timestamptz IS NULL OR (created_at, session_id) < ($2, $3))
          ORDER BY created_at DESC, session_id DESC
          LIMIT $4",
    )
    .bind(user)
    .bind(before.as_ref().map(|b| b.0))
    .bind(before.as_ref().map(|b| b.1.clone()))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let mut data = rows
        .iter()
        .map(|row| {
            Ok(PaymentView {
                session_id: row.try_get("session_id")?,
                status: row.try_get("status")?,
                package_id: row.try_get("package_id")?,
                credits_micros: row.try_get("credits_micros")?,
                amount_cents: row.try_get("amount_cents")?,
                currency: row.try_get("currency")?,
                refunded_cents: row.try_get("refunded_cents")?,
                credits_taken_back_micros: row.try_get("credits_taken_back_micros")?,
                failure_reason: row.try_get("failure_reason")?,
                created_at: row.try_get("created_at")?,
                paid_at: row.try_get("paid_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next_cursor = if data.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        data.pop();
        data.last()
            .map(|p| format!("{}_{}", p.created_at.timestamp_micros(), p.session_id))
    } else {
        None
    };
    Ok(Json(HistoryPage {
        user_id: user,
        data,
        next_cursor,
    }))
}

fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let (micros, session) = cursor.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    StripeId::parse(session).ok()?;
    Some((at, session.to_string()))
}
