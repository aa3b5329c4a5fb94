use async_nats::jetstream;
use hub_commands::{CreditAccounts, Payments, Promos, Users};
use sqlx::PgPool;
use std::sync::Arc;

use crate::auth::Jwt;
use crate::config::Settings;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: hub_nats::Topology,
    pub credits: Arc<CreditAccounts>,
    pub users: Arc<Users>,
    pub jwt: Jwt,
    pub mailer: crate::mail::Mailer,
    /// Models and providers (the inference gateway).
    pub router: Arc<hub_workers::ProviderRouter>,
    /// Inference requests between acceptance and publication (`models.admission_limit`).
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Answers to this process's inference requests (one NATS subscription).
    pub replies: Arc<crate::gateway::Replies>,
    /// Google sign-in, when `google.enabled`.
    pub google: Option<crate::oidc::GoogleOidc>,
    /// Payments, one aggregate per Stripe Checkout Session.
    pub payments: Arc<Payments>,
    /// Promo codes, one aggregate per code.
    pub promos: Arc<Promos>,
    /// The Stripe API client, when `payments.stripe_secret_key` is set.
    pub stripe: Option<crate::stripe::StripeCheckout>,
}
