//! A small Stripe-speaking server for tests, and Stripe's side of webhooks.
//!
//! It listens on `127.0.0.1:0`, so every test has its own. `POST /v1/checkout/sessions`
//! takes Stripe's form encoding (`line_items[0][price_data][unit_amount]=...`), checks
//! `Authorization: Bearer <secret key>` (401 otherwise) and requires an `Idempotency-Key`
//! (the hub always sends one). It answers a realistic Checkout Session object; a repeated
//! key with the same parameters gets the same session, with other parameters a 400
//! `idempotency_error`, as Stripe does. [`FakeStripe::fail_next`] makes the next call fail
//! with a Stripe error.
//!
//! Webhooks: [`FakeStripe::event`] wraps an object as Stripe's event envelope,
//! [`stripe_signature`] signs a payload the way Stripe does (HMAC-SHA256 over
//! `"<t>.<payload>"`, written here from the definition rather than borrowed from the code
//! under test), and the `*_object` helpers give the session, payment intent and charge
//! objects of each step of a payment.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::JoinHandle;

/// The webhook signing secret the test apps use.
pub const WEBHOOK_SECRET: &str = "whsec_test_0123456789abcdef";

/// A checkout request as the server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    /// The form, decoded: `metadata[aihub_user_id]` → value.
    pub form: HashMap<String, String>,
}

/// A running fake; stopped when dropped.
pub struct FakeStripe {
    shared: Arc<Shared>,
    url: String,
    task: JoinHandle<()>,
}

struct Shared {
    secret_key: String,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    requests: Vec<SeenRequest>,
    /// Idempotency key → (the parameters, the answer). Parameters are compared decoded, as
    /// Stripe does: the order of form fields does not matter.
    by_key: HashMap<String, (HashMap<String, String>, Value)>,
    /// Session id → the session as created.
    sessions: HashMap<String, Value>,
    /// The next call fails with this status and Stripe error object.
    fail_next: Option<(StatusCode, Value)>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Stripe");
        let address = listener.local_addr().expect("a local address");
        let shared = Arc::new(Shared {
            secret_key: format!("sk_test_{}", random(24)),
            state: Mutex::new(FakeState::default()),
        });
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe {
            shared,
            url: format!("http://{address}/"),
            task,
        }
    }

    /// The API base to configure (`payments.api_base`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The secret key it accepts (`payments.stripe_secret_key`).
    pub fn secret_key(&self) -> &str {
        &self.shared.secret_key
    }

    /// Every checkout request so far, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared.state).requests.clone()
    }

    /// A session it created.
    pub fn session(&self, id: &str) -> Option<Value> {
        lock(&self.shared.state).sessions.get(id).cloned()
    }

    /// Make the next call answer `status` with a Stripe error of `kind` and `code`.
    pub fn fail_next(&self, status: StatusCode, kind: &str, code: &str) {
        lock(&self.shared.state).fail_next = Some((
            status,
            json!({ "error": { "type": kind, "code": code, "message": format!("fake failure: {code}") } }),
        ));
    }

    /// Stripe's event envelope around `object`, created now.
    pub fn event(id: &str, kind: &str, object: Value) -> Value {
        json!({
            "id": id,
            "object": "event",
            "api_version": "2024-06-20",
            "created": chrono::Utc::now().timestamp(),
            "data": { "object": object },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": kind
        })
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn stripe_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "type": kind, "code": code, "message": message } })),
    )
        .into_response()
}

async fn create_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let seen = SeenRequest {
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        stripe_version: header("stripe-version"),
        form: form.clone(),
    };
    let mut state = lock(&shared.state);
    state.requests.push(seen.clone());
    if seen.authorization.as_deref() != Some(&format!("Bearer {}", shared.secret_key)) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided",
        );
    }
    if let Some((status, error)) = state.fail_next.take() {
        return (status, Json(error)).into_response();
    }
    let Some(key) = seen.idempotency_key else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "idempotency_key_missing",
            "this fake requires an Idempotency-Key",
        );
    };
    if let Some((first_form, answer)) = state.by_key.get(&key) {
        if *first_form != form {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                "idempotency_key_in_use",
                "Keys for idempotent requests can only be used with the same parameters",
            );
        }
        return Json(answer.clone()).into_response();
    }
    for required in ["mode", "success_url", "cancel_url"] {
        if !form.contains_key(required) {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_missing",
                &format!("Missing required param: {required}."),
            );
        }
    }
    let unit = form
        .get("line_items[0][price_data][unit_amount]")
        .and_then(|v| v.parse::<i64>().ok());
    let quantity = form
        .get("line_items[0][quantity]")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(1);
    let currency = form.get("line_items[0][price_data][currency]").cloned();
    let (Some(unit), Some(currency)) = (unit, currency) else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_missing",
            "Missing required param: line_items[0][price_data].",
        );
    };
    let metadata: Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_string(), Value::String(v.clone())))
        })
        .collect();
    let id = format!("cs_test_{}", random(58));
    let now = chrono::Utc::now().timestamp();
    let session = session_object(SessionParts {
        id: &id,
        amount_total: unit * quantity,
        currency: &currency,
        metadata: Value::Object(metadata),
        client_reference_id: form.get("client_reference_id").cloned(),
        customer_email: form.get("customer_email").cloned(),
        success_url: form.get("success_url").cloned().unwrap_or_default(),
        cancel_url: form.get("cancel_url").cloned().unwrap_or_default(),
        created: now,
    });
    state.sessions.insert(id, session.clone());
    state.by_key.insert(key, (form, session.clone()));
    Json(session).into_response()
}

struct SessionParts<'a> {
    id: &'a str,
    amount_total: i64,
    currency: &'a str,
    metadata: Value,
    client_reference_id: Option<String>,
    customer_email: Option<String>,
    success_url: String,
    cancel_url: String,
    created: i64,
}

/// A Checkout Session object as Stripe returns it on creation (open, unpaid).
fn session_object(p: SessionParts<'_>) -> Value {
    let mut head = json!({
        "id": p.id,
        "object": "checkout.session",
        "adaptive_pricing": { "enabled": false },
        "after_expiration": null,
        "allow_promotion_codes": null,
        "amount_subtotal": p.amount_total,
        "amount_total": p.amount_total,
        "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
        "billing_address_collection": null,
        "cancel_url": p.cancel_url,
        "client_reference_id": p.client_reference_id,
        "client_secret": null,
        "collected_information": null,
        "consent": null,
        "consent_collection": null,
        "created": p.created,
        "currency": p.currency,
        "currency_conversion": null,
        "custom_fields": [],
        "custom_text": {
            "after_submit": null, "shipping_address": null, "submit": null,
            "terms_of_service_acceptance": null
        },
        "customer": null,
        "customer_creation": "if_required",
        "customer_details": null,
        "customer_email": p.customer_email,
        "discounts": [],
        "expires_at": p.created + 24 * 3_600,
        "invoice": null,
        "invoice_creation": {
            "enabled": false,
            "invoice_data": {
                "account_tax_ids": null, "custom_fields": null, "description": null,
                "footer": null, "issuer": null, "metadata": {}, "rendering_options": null
            }
        },
    });
    let rest = json!({
        "livemode": false,
        "locale": null,
        "metadata": p.metadata,
        "mode": "payment",
        "origin_context": null,
        "payment_intent": null,
        "payment_link": null,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": null,
        "payment_method_options": { "card": { "request_three_d_secure": "automatic" } },
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "permissions": null,
        "phone_number_collection": { "enabled": false },
        "recovered_from": null,
        "saved_payment_method_options": null,
        "setup_intent": null,
        "shipping_address_collection": null,
        "shipping_cost": null,
        "shipping_options": [],
        "status": "open",
        "submit_type": null,
        "subscription": null,
        "success_url": p.success_url,
        "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        "ui_mode": "hosted",
        "url": format!("https://checkout.stripe.com/c/pay/{}", p.id),
        "wallet_options": null
    });
    // Two literals: one would exceed `json!`'s macro recursion limit.
    if let (Some(head), Value::Object(rest)) = (head.as_object_mut(), rest) {
        head.extend(rest);
    }
    head
}

/// The metadata the hub puts on a session for `user` buying `package_id` (`credits` whole
/// credits), for a session the fake never created (a lost checkout record).
pub fn hub_metadata(user: uuid::Uuid, package_id: &str, credits: i64) -> Value {
    json!({
        "aihub_user_id": user.to_string(),
        "aihub_package_id": package_id,
        "aihub_credits_micros": (credits * 1_000_000).to_string(),
        "aihub_checkout_ref": format!("checkout:{}", random(16)),
    })
}

/// A session object for a session created elsewhere (the hub never asked for it).
pub fn foreign_session(id: &str, amount_total: i64, metadata: Value) -> Value {
    session_object(SessionParts {
        id,
        amount_total,
        currency: "usd",
        metadata,
        client_reference_id: None,
        customer_email: None,
        success_url: "http://127.0.0.1/ok".into(),
        cancel_url: "http://127.0.0.1/cancel".into(),
        created: chrono::Utc::now().timestamp(),
    })
}

/// The session after the customer finished: `status: complete`, `payment_status` `paid`
/// (card) or `unpaid` (an asynchronous method), with its payment intent.
pub fn completed_session(session: &Value, payment_intent: &str, paid: bool) -> Value {
    let mut s = session.clone();
    s["status"] = json!("complete");
    s["payment_status"] = json!(if paid { "paid" } else { "unpaid" });
    s["payment_intent"] = json!(payment_intent);
    s["customer_details"] = json!({
        "address": null, "email": "buyer@example.com", "name": "Buyer", "phone": null,
        "tax_exempt": "none", "tax_ids": []
    });
    s
}

/// The session after it expired unpaid.
pub fn expired_session(session: &Value) -> Value {
    let mut s = session.clone();
    s["status"] = json!("expired");
    s
}

/// A payment intent whose payment failed, carrying the session's metadata as the hub set it
/// with `payment_intent_data.metadata`.
pub fn failed_intent(id: &str, session: &Value) -> Value {
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": session["amount_total"],
        "currency": session["currency"],
        "status": "requires_payment_method",
        "metadata": session["metadata"],
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds."
        },
        "livemode": false
    })
}

/// A charge of `payment_intent` with `amount_refunded` refunded so far (cumulative), the
/// newest refund `refund_id`.
pub fn refunded_charge(
    charge_id: &str,
    payment_intent: &str,
    amount: i64,
    amount_refunded: i64,
    refund_id: &str,
) -> Value {
    json!({
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "captured": true,
        "currency": "usd",
        "paid": true,
        "payment_intent": payment_intent,
        "refunded": amount_refunded == amount,
        "status": "succeeded",
        "metadata": {},
        "refunds": {
            "object": "list",
            "data": [{ "id": refund_id, "object": "refund", "amount": amount_refunded, "charge": charge_id }],
            "has_more": false,
            "total_count": 1
        },
        "livemode": false
    })
}

/// A dispute of `charge_id` (of `payment_intent`) for `amount`, as Stripe's `charge.dispute.*`
/// events carry it; `status` is `needs_response` while open, `won` or `lost` once closed.
pub fn dispute(
    dispute_id: &str,
    charge_id: &str,
    payment_intent: &str,
    amount: i64,
    status: &str,
) -> Value {
    json!({
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "charge": charge_id,
        "currency": "usd",
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
        "is_charge_refundable": false,
        "metadata": {},
        "livemode": false
    })
}

/// `t=<timestamp>,v1=<HMAC-SHA256(secret, "<timestamp>.<payload>") in hex>`.
pub fn stripe_signature(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(payload);
    let mac = hmac_sha256(secret.as_bytes(), &message);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// HMAC (RFC 2104) over SHA-256, from its definition.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_key: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_key: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_key)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_key)
        .chain_update(inner)
        .finalize()
        .to_vec()
}
