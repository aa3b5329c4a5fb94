//! The application layer of Smart AI Hub: what the hub does, whatever the transport.
//!
//! HTTP handlers (and the WebSocket, and the command line) parse and authorize, then call one
//! function here and map its answer. Nothing here knows HTTP.
//!
//! # Layout
//!
//! - [`config`]: typed, layered, validated settings.
//! - [`hub`]: [`Hub`], the services every caller reaches, built once per process.
//! - [`inference`]: submitting a chat request — estimate, reserve, publish, read the answer back.
//! - [`identity`]: registration, sign-in, email verification, password reset, Google sign-in.
//! - [`keys`]: API keys — create, list, revoke, and resolve a presented key to its owner.
//! - [`rate_limits`]: requests, tokens and concurrent requests per caller, and requests per
//!   client address, held across every API process by one shared store.
//! - [`replies`]: [`Replies`], this process's one NATS subscription for every inference answer.
//! - [`sessions`]: refresh-token families and login throttling.
//! - [`bootstrap`]: the first admin.
//!
//! Money and the read side:
//!
//! - [`payments`]: credit packages, Stripe Checkout, Stripe's webhook events as commands.
//! - [`promos`]: promo codes — create, disable, enable, redeem.
//! - [`credits`]: granting credits, answered once the balance shows the grant.
//! - [`users`]: granting and revoking roles.
//! - [`readiness`]: whether the hub's dependencies answer, and how far behind it is.
//! - [`metrics`]: the process's Prometheus recorder, its text for `GET /metrics`, and the
//!   gauges sampled on a timer (outbox, relay and projection lag, pool, NATS).
//! - [`queries`]: the read models (balances, ledger, payments, promo codes, users, usage).
//! - [`audit`]: what auditors read: the ledger across accounts, an account as of a time
//!   (folded from the event store), the trial balance, payment reconciliation, admin actions.
//! - [`analytics`]: usage summaries from the hourly rollups, and the streamed usage export.
//! - [`evidence`]: tamper evidence — the events' hash chain, signed checkpoints, proofs.
//! - [`page`]: the one page-and-cursor shape every listing uses.
//! - [`alerts`]: low-balance alerts: each user's threshold and webhook, and the delivery of
//!   the notifications the `alerts` projection writes (email, signed webhook, retries).

pub mod bootstrap;
pub mod config;
pub mod hub;
pub mod identity;
pub mod inference;
pub mod janitor;
pub mod keys;
pub mod rate_limits;
pub mod replies;
pub mod sessions;

// Money and the read side.
pub mod alerts;
pub mod analytics;
pub mod audit;
pub mod credits;
pub mod evidence;
pub mod metrics;
pub mod page;
pub mod payments;
pub mod promos;
pub mod queries;
pub mod readiness;
pub mod users;

pub use config::Settings;
pub use hub::Hub;
