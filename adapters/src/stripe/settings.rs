//! The `[payments]` settings: the Stripe keys, where the customer is sent back, the webhook
//! tolerance, and the credit packages for sale; and the checks made on them at start-up.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest webhook tolerance accepted: Stripe signs each delivery anew, so a tolerance above
/// a few minutes only widens the window for a replayed delivery.
pub const WEBHOOK_TOLERANCE_S_MAX: u64 = 3_600;
/// Most credit packages configured: the list is shown to every user.
pub const PACKAGES_MAX: usize = 32;

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

#[cfg(test)]
mod tests {
    use super::*;

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
