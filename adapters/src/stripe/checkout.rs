//! The one Stripe API call the hub makes: create a Checkout Session in payment mode for one
//! package, idempotent on the hub's checkout reference (async-stripe's 1.0 split crates).

use super::{metadata, CreditPackage, PaymentSettings};
use std::collections::HashMap;
use std::time::Duration;
use stripe::StripeRequest;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionLineItemsPriceData,
    CreateCheckoutSessionPaymentIntentData, ProductData,
};
use stripe_checkout::CheckoutSessionMode;

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
