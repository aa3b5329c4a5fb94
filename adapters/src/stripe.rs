//! Stripe at the edge: settings, the one API call the hub makes (create a Checkout Session,
//! through async-stripe's 1.0 split crates), and webhooks (signature verification and the
//! few fields of the few events the hub reads).
//!
//! Webhook signatures are verified here rather than by `async-stripe-webhook`: its
//! `Webhook::construct_event` verifies *and* parses the whole event into the SDK's types for
//! the API version it was generated for, and exposes no verification alone. An event
//! rendered in the account's own API version that the SDK cannot parse would then be refused
//! after its signature checked out, and Stripe would retry it for days while the money
//! waits. Verification is a few lines of HMAC-SHA256 (`hmac`/`sha2`, already in the
//! workspace), with every `v1` signature accepted and a configurable tolerance; the event
//! itself is read as JSON, field by field, for the fields the hub needs. See
//! `docs/payments.md`.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;
use stripe::StripeRequest;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, ProductData,
};
use stripe_checkout::CheckoutSessionMode;

/// Longest webhook tolerance accepted: Stripe signs each delivery anew, so a tolerance above
/// a few minutes only widens the window for a replayed delivery.
pub const WEBHOOK_TOLERANCE_S_MAX: u64 = 3_600;
/// Most credit packages configured: the list is shown to every user.
pub const PACKAGES_MAX: usize = 32;

/// Metadata keys the hub puts on each Checkout Session (and its payment intent), read back
/// from webhooks. Stripe keeps them with the session, so a session whose checkout record was
/// lost still names its user, package and credits.
pub mod metadata {
    pub const USER_ID: &str = "aihub_user_id";
    pub const PACKAGE_ID: &str = "aihub_package_id";
    pub const CREDITS_MICROS: &str = "aihub_credits_micros";
    /// The hub's reference of the checkout (also its Stripe idempotency key), on the payment
    /// intent too: a failed payment intent is mapped to its session through it.
    pub const CHECKOUT_REF: &str = "aihub_checkout_ref";
}

/// Payments settings (`[payments]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// The Stripe secret key (`sk_...`). Empty: checkout answers 503
    /// `payments_not_configured`, and the rest of the hub runs. Never printed.
    pub stripe_secret_key: String,
    /// The webhook endpoint's signing secret (`whsec_...`). Empty: the webhook answers 503.
    /// Never printed.
    pub webhook_secret: String,
    /// Stripe's API base URL. Tests point it at a local Stripe-speaking server.
    pub api_base: String,
    /// Where Stripe sends the customer after paying; `{CHECKOUT_SESSION_ID}` is replaced by
    /// Stripe.
    pub success_url: String,
    /// Where Stripe sends a customer who cancels.
    pub cancel_url: String,
    /// How old a webhook signature's timestamp may be, in seconds (Stripe's libraries: 300).
    pub webhook_tolerance_s: u64,
    /// Timeout of each request to Stripe, in milliseconds.
    pub http_timeout_ms: u64,
    /// The currency of every package (ISO 4217, lowercase).
    pub currency: String,
    /// What users may buy.
    pub packages: Vec<CreditPackage>,
}

/// A package of credits for sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditPackage {
    /// Stable id, named in checkouts (`starter`, `pro`, ...).
    pub id: String,
    /// What the customer sees on Stripe's page.
    pub name: String,
    /// Whole credits bought.
    pub credits: i64,
    /// Price in the currency's smallest unit (cents).
    pub price_cents: i64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            stripe_secret_key: String::new(),
            webhook_secret: String::new(),
            api_base: "https://api.stripe.com/".into(),
            success_url: "http://127.0.0.1:8080/payments/success?session_id={CHECKOUT_SESSION_ID}"
                .into(),
            cancel_url: "http://127.0.0.1:8080/payments/cancel".into(),
            webhook_tolerance_s: 300,
            http_timeout_ms: 10_000,
            currency: "usd".into(),
            // The seeds' packages.
            packages: vec![
                CreditPackage {
                    id: "starter".into(),
                    name: "Starter Pack".into(),
                    credits: 100,
                    price_cents: 1_000,
                },
                CreditPackage {
                    id: "pro".into(),
                    name: "Pro Pack".into(),
                    credits: 1_000,
                    price_cents: 8_000,
                },
                CreditPackage {
                    id: "business".into(),
                    name: "Business Pack".into(),
                    credits: 10_000,
                    price_cents: 60_000,
                },
            ],
        }
    }
}

impl fmt::Debug for PaymentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| {
            if s.is_empty() {
                "<unset>"
            } else {
                "<redacted>"
            }
        };
        f.debug_struct("PaymentSettings")
            .field("stripe_secret_key", &redact(&self.stripe_secret_key))
            .field("webhook_secret", &redact(&self.webhook_secret))
            .field("api_base", &self.api_base)
            .field("success_url", &self.success_url)
            .field("cancel_url", &self.cancel_url)
            .field("webhook_tolerance_s", &self.webhook_tolerance_s)
            .field("http_timeout_ms", &self.http_timeout_ms)
            .field("currency", &self.currency)
            .field("packages", &self.packages)
            .finish()
    }
}

impl PaymentSettings {
    /// Checkout is on when a secret key is set.
    pub fn checkout_enabled(&self) -> bool {
        !self.stripe_secret_key.is_empty()
    }

    pub fn package(&self, id: &str) -> Option<&CreditPackage> {
        self.packages.iter().find(|p| p.id == id)
    }

    /// Check every field; the error names it (`payments.<field>: ...`).
    pub fn validate(&self) -> Result<(), String> {
        let http = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        if !http(&self.api_base) {
            return Err("api_base must start with http:// or https://".into());
        }
        if !http(&self.success_url) || !http(&self.cancel_url) {
            return Err("success_url and cancel_url must start with http:// or https://".into());
        }
        if !(1..=WEBHOOK_TOLERANCE_S_MAX).contains(&self.webhook_tolerance_s) {
            return Err(format!(
                "webhook_tolerance_s must be 1 to {WEBHOOK_TOLERANCE_S_MAX}"
            ));
        }
        if self.http_timeout_ms == 0 {
            return Err("http_timeout_ms must be at least 1".into());
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err("currency must be a lowercase three-letter ISO 4217 code".into());
        }
        if self.currency.parse::<stripe_types::Currency>().is_err() {
            return Err(format!(
                "currency {:?} is not one Stripe knows",
                self.currency
            ));
        }
        if self.checkout_enabled() && self.webhook_secret.is_empty() {
            return Err(
                "webhook_secret must be set with stripe_secret_key: without webhooks no payment is ever credited"
                    .into(),
            );
        }
        if self.packages.is_empty() || self.packages.len() > PACKAGES_MAX {
            return Err(format!("packages must hold 1 to {PACKAGES_MAX} packages"));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.packages {
            if p.id.is_empty()
                || p.id.len() > hub_domain::payment::PACKAGE_ID_LEN_MAX
                || !p
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "package id {:?} must be 1 to {} letters, digits, _ or -",
                    p.id,
                    hub_domain::payment::PACKAGE_ID_LEN_MAX
                ));
            }
            if !ids.insert(p.id.as_str()) {
                return Err(format!("package id {:?} appears twice", p.id));
            }
            if p.name.trim().is_empty() {
                return Err(format!("package {:?} needs a name", p.id));
            }
            let micros = p
                .credits
                .checked_mul(1_000_000)
                .filter(|m| *m > 0 && *m <= hub_domain::money::AMOUNT_MAX.micros());
            if micros.is_none() {
                return Err(format!(
                    "package {:?}: credits must be positive and at most one billion",
                    p.id
                ));
            }
            if !(1..=hub_domain::payment::AMOUNT_CENTS_MAX).contains(&p.price_cents) {
                return Err(format!("package {:?}: price_cents must be positive", p.id));
            }
        }
        Ok(())
    }
}

// ---- Checkout ---------------------------------------------------------------------------

/// What a checkout asks Stripe for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub user: uuid::Uuid,
    pub package: &'a CreditPackage,
    pub currency: &'a str,
    /// The hub's reference of this checkout: Stripe's idempotency key, and metadata.
    pub checkout_ref: &'a str,
    /// The customer's address, prefilled on Stripe's page.
    pub customer_email: Option<&'a str>,
}

/// The session Stripe created.
#[derive(Debug, Clone)]
pub struct CreatedSession {
    pub id: String,
    /// Stripe's hosted page for it.
    pub url: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
}

/// Why Stripe did not create a session.
#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe answered with an error (its code and status are kept; its message may name
    /// configuration, so it goes to the log, not to the client).
    #[error("Stripe refused the request with status {status}: {code}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// Stripe could not be reached, timed out, or answered something unreadable.
    #[error("Stripe could not be reached or answered badly: {0}")]
    Unavailable(String),
}

/// The Stripe API client for the one call the hub makes.
pub struct StripeCheckout {
    client: stripe::Client,
    success_url: String,
    cancel_url: String,
}

impl StripeCheckout {
    /// `None` when no secret key is configured.
    pub fn from_settings(settings: &PaymentSettings) -> Result<Option<StripeCheckout>, String> {
        if !settings.checkout_enabled() {
            return Ok(None);
        }
        let mut base = settings.api_base.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = stripe::ClientBuilder::new(settings.stripe_secret_key.clone())
            .url(base)
            .timeout(Duration::from_millis(settings.http_timeout_ms))
            .app_info("aihub", Some(env!("CARGO_PKG_VERSION").to_string()), None)
            .build()
            .map_err(|e| format!("invalid Stripe client settings: {e}"))?;
        Ok(Some(StripeCheckout {
            client,
            success_url: settings.success_url.clone(),
            cancel_url: settings.cancel_url.clone(),
        }))
    }

    /// Create a Checkout Session in payment mode for one package. Stripe answers a repeat
    /// of the same idempotency key (within 24 hours) with the same session.
    pub async fn create_session(
        &self,
        request: &CheckoutRequest<'_>,
    ) -> Result<CreatedSession, StripeCallError> {
        let currency: stripe_types::Currency = request
            .currency
            .parse()
            .map_err(|_| StripeCallError::Unavailable("invalid currency".into()))?;
        let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
        price.unit_amount = Some(request.package.price_cents);
        let mut product = ProductData::new(request.package.name.clone());
        product.description = Some(format!(
            "{} credits for Smart AI Hub",
            request.package.credits
        ));
        price.product_data = Some(product);
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price_data = Some(price);
        item.quantity = Some(1);
        let credits_micros = request.package.credits.saturating_mul(1_000_000);
        let meta = HashMap::from([
            (metadata::USER_ID.to_string(), request.user.to_string()),
            (metadata::PACKAGE_ID.to_string(), request.package.id.clone()),
            (
                metadata::CREDITS_MICROS.to_string(),
                credits_micros.to_string(),
            ),
            (
                metadata::CHECKOUT_REF.to_string(),
                request.checkout_ref.to_string(),
            ),
        ]);
        let mut intent = CreateCheckoutSessionPaymentIntentData::new();
        intent.metadata = Some(meta.clone());
        let mut create = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![item])
            .metadata(meta)
            .payment_intent_data(intent)
            .client_reference_id(request.user.to_string())
            .success_url(self.success_url.clone())
            .cancel_url(self.cancel_url.clone());
        if let Some(email) = request.customer_email {
            create = create.customer_email(email);
        }
        let key = stripe::IdempotencyKey::new(request.checkout_ref)
            .map_err(|e| StripeCallError::Unavailable(format!("invalid idempotency key: {e}")))?;
        let session = create
            .customize()
            .request_strategy(stripe::RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(|err| match err {
                stripe::StripeError::Stripe(e, status) => StripeCallError::Refused {
                    status,
                    code: e
                        .code
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    message: e.message.unwrap_or_default(),
                },
                other => StripeCallError::Unavailable(other.to_string()),
            })?;
        Ok(CreatedSession {
            id: session.id.to_string(),
            url: session.url,
            amount_total: session.amount_total,
            currency: session.currency.map(|c| c.to_string()),
        })
    }
}

// ---- Webhooks ---------------------------------------------------------------------------

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is missing its `t=` or has no `v1=`.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    /// No `v1` signature matches the payload under the secret.
    #[error("no v1 signature matches the payload")]
    Mismatch,
    /// The signature's timestamp is outside the tolerance.
    #[error("the signature's timestamp is outside the tolerance of {tolerance_s} s")]
    Stale { tolerance_s: u64 },
}

/// Longest `Stripe-Signature` header read: a timestamp and a few signatures (one per active
/// secret during a rotation), each 64 hex digits.
const SIGNATURE_HEADER_LEN_MAX: usize = 4_096;

/// Verify a `Stripe-Signature: t=<unix seconds>,v1=<hex>,v1=<hex>,...` header: one `v1`
/// must be HMAC-SHA256 of `"<t>.<payload>"` under `secret` (compared in constant time), and
/// `t` within `tolerance_s` of `now`. Other schemes (`v0`) are ignored, as Stripe's
/// libraries do.
pub fn verify_signature(
    payload: &[u8],
    header: &str,
    secret: &str,
    now: i64,
    tolerance_s: u64,
) -> Result<(), SignatureError> {
    if header.len() > SIGNATURE_HEADER_LEN_MAX {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for pair in header.split(',') {
        let Some((key, value)) = pair.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let matches = signatures.iter().any(|candidate| {
        decode_hex(candidate).is_some_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    let tolerance = i64::try_from(tolerance_s).unwrap_or(i64::MAX);
    if now.saturating_sub(timestamp).abs() > tolerance {
        return Err(SignatureError::Stale { tolerance_s });
    }
    Ok(())
}

/// `t=<timestamp>,v1=<signature>`: how Stripe signs `payload` (tests and tools use it).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    // HMAC accepts a key of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A Stripe event, as far as the hub reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: Value,
}

/// A Checkout Session in an event (`checkout.session.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct SessionObject {
    pub id: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// An id, or the expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
}

/// A PaymentIntent in an event (`payment_intent.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntentObject {
    pub id: String,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
}

/// A Charge in an event (`charge.*`).
#[derive(Debug, Clone, Deserialize)]
pub struct ChargeObject {
    pub id: String,
    /// An id, or the expanded object.
    #[serde(default)]
    pub payment_intent: Option<Value>,
    /// Refunded so far (cumulative), in the smallest unit.
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub refunds: Option<RefundList>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefundList {
    #[serde(default)]
    pub data: Vec<RefundObject>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RefundObject {
    pub id: String,
}

/// The id of an expandable field: `"pi_1"` or `{"id": "pi_1", ...}`.
pub fn expandable_id(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(id) => Some(id.as_str()),
        Value::Object(object) => object.get("id").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_767_225_600;

    #[test]
    fn a_signature_made_the_way_stripe_makes_it_is_accepted() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, SECRET, NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW + 10, 300),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let payload = br#"{"id":"evt_1"}"#;
        let good = sign(payload, SECRET, NOW);
        let good_v1 = good.split_once(",v1=").map(|(_, v)| v).unwrap_or_default();
        let header = format!("t={NOW},v1={},v0=abc,v1={good_v1}", "0".repeat(64));
        assert_eq!(verify_signature(payload, &header, SECRET, NOW, 300), Ok(()));
    }

    #[test]
    fn a_signature_under_another_secret_or_of_another_payload_is_refused() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, "whsec_other", NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let header = sign(br#"{"id":"evt_2"}"#, SECRET, NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_timestamp_outside_the_tolerance_is_refused_either_way() {
        let payload = br#"{"id":"evt_1"}"#;
        let header = sign(payload, SECRET, NOW);
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW + 301, 300),
            Err(SignatureError::Stale { tolerance_s: 300 })
        );
        assert_eq!(
            verify_signature(payload, &header, SECRET, NOW - 301, 300),
            Err(SignatureError::Stale { tolerance_s: 300 })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let payload = b"{}";
        for header in ["", "v1=abc", "t=1", "t=x,v1=ab", "garbage"] {
            assert_eq!(
                verify_signature(payload, header, SECRET, NOW, 300),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }

    #[test]
    fn the_default_packages_are_the_seeds_and_valid() {
        let settings = PaymentSettings::default();
        assert_eq!(settings.validate(), Ok(()));
        let pro = settings.package("pro").expect("pro");
        assert_eq!((pro.credits, pro.price_cents), (1_000, 8_000));
    }

    #[test]
    fn a_secret_key_without_a_webhook_secret_is_refused() {
        let settings = PaymentSettings {
            stripe_secret_key: "sk_test_1".into(),
            ..PaymentSettings::default()
        };
        assert!(settings.validate().is_err());
        assert!(!format!("{settings:?}").contains("sk_test_1"));
    }
}
