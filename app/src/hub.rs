//! [`Hub`]: the services of one hub process, built once from settings.

use anyhow::Context;
use async_nats::jetstream;
use hub_commands::{Buses, SharedClock};
use hub_commands::{CreditAccounts, Payments, Promos, Users};
use hub_nats::CommitSignal;
use sqlx::PgPool;
use std::sync::Arc;

use crate::config::Settings;
use hub_adapters::jwt::Jwt;

/// The services of one hub process: what every handler and role reaches.
pub struct Hub {
    /// The time every time-based decision reads (tests move it instead of sleeping).
    pub clock: SharedClock,
    pub settings: Settings,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: hub_nats::Topology,
    pub credits: Arc<CreditAccounts>,
    pub users: Arc<Users>,
    pub jwt: Jwt,
    /// Password hashing and verification, capped (`auth.password_work_max`).
    pub passwords: hub_adapters::secrets::Passwords,
    pub mailer: hub_adapters::mail::Mailer,
    /// Models and providers (the inference gateway).
    pub router: Arc<hub_workers::ProviderRouter>,
    /// Inference requests between acceptance and publication (`models.admission_limit`).
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Answers to this process's inference requests (one NATS subscription).
    pub replies: Arc<crate::replies::Replies>,
    /// The workers' latest reports of their providers' health (one NATS subscription).
    pub provider_status: Arc<hub_workers::status::StatusBoard>,
    /// Google sign-in, when `google.enabled`.
    pub google: Option<hub_adapters::oidc::GoogleOidc>,
    /// Payments, one aggregate per Stripe Checkout Session.
    pub payments: Arc<Payments>,
    /// Promo codes, one aggregate per code.
    pub promos: Arc<Promos>,
    /// The Stripe API client, when `payments.stripe_secret_key` is set.
    pub stripe: Option<hub_adapters::stripe::StripeCheckout>,
    /// Answered requests' settlements, durable in JetStream until applied.
    pub settlements: Arc<hub_workers::settlement::Settlements>,
    /// The key ledger checkpoints are signed with (`audit.signing_key`).
    pub checkpoint_key: crate::evidence::CheckpointKey,
    /// Recent checkpoints' trees, for proofs.
    pub checkpoint_trees: crate::evidence::checkpoints::Trees,
    /// Rate limits and quotas over the store every API process shares (`rate_limits`).
    pub rate_limits: crate::rate_limits::RateLimits,
}

impl Hub {
    /// Build the services from settings, over a pool and a NATS connection made by the caller;
    /// every writer wakes the relay through `commit_signal` after each commit.
    pub async fn build(
        settings: Settings,
        pool: PgPool,
        nats: async_nats::Client,
        js: jetstream::Context,
        commit_signal: &CommitSignal,
        clock: SharedClock,
    ) -> anyhow::Result<Hub> {
        // Writers wake the relay (here or in another process) after each commit.
        let hook: hub_commands::CommitHook = {
            let signal = commit_signal.clone();
            Arc::new(move || signal.committed())
        };
        let buses = Buses::new(
            pool.clone(),
            settings.credits.snapshot_every,
            settings.credits.cache_accounts,
        )
        .with_commit_hook(hook);
        let bus = buses.bus();
        // Payments and promo codes: aggregates of their own, through the same store and relay.
        let payments = Payments::new(buses.bus());
        let promos = Promos::new(buses.bus());
        let stripe = hub_adapters::stripe::StripeCheckout::from_settings(&settings.payments)
            .map_err(|reason| anyhow::anyhow!("invalid payments settings: {reason}"))?;
        let users = Users::new(buses.bus());
        let mailer =
            hub_adapters::mail::Mailer::new(&settings.mail).context("invalid mail settings")?;
        let router = Arc::new(
            hub_workers::ProviderRouter::new(&settings.models)
                .map_err(|reason| anyhow::anyhow!("invalid models settings: {reason}"))?,
        );
        let google = if settings.google.enabled {
            Some(
                hub_adapters::oidc::GoogleOidc::from_settings(settings.google.clone())
                    .context("could not build the HTTP client for Google sign-in")?,
            )
        } else {
            None
        };
        let replies = crate::replies::Replies::start(&nats, &settings.topology())
            .await
            .context("could not subscribe to inference replies")?;
        let provider_status = hub_workers::status::StatusBoard::start(
            &nats,
            settings.topology().provider_status_all(),
        )
        .await
        .context("could not subscribe to the workers' provider status")?;
        let admission = Arc::new(tokio::sync::Semaphore::new(settings.models.admission_limit));
        let credits = Arc::new(CreditAccounts::new(bus));
        let settlements = Arc::new(hub_workers::settlement::Settlements::new(
            js.clone(),
            settings.topology(),
            credits.clone(),
        ));
        let rate_limits = crate::rate_limits::RateLimits::new(
            &settings.rate_limits,
            std::time::Duration::from_millis(settings.models.total_timeout_ms),
        )
        .context("invalid rate_limits settings")?;
        Ok(Hub {
            rate_limits,
            checkpoint_key: settings.checkpoint_key()?,
            checkpoint_trees: crate::evidence::checkpoints::Trees::default(),
            clock,
            admission,
            replies,
            provider_status,
            jwt: Jwt::new(&settings.auth.jwt_secret),
            passwords: hub_adapters::secrets::Passwords::new(
                settings.auth.password_work_max,
                std::time::Duration::from_millis(settings.auth.password_queue_wait_ms),
            ),
            topology: settings.topology(),
            settings,
            pool,
            nats,
            js,
            credits,
            settlements,
            users: Arc::new(users),
            mailer,
            router,
            google,
            payments: Arc::new(payments),
            promos: Arc::new(promos),
            stripe,
        })
    }
}
