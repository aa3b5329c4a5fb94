//! Adapters to the services outside the hub, each speaking one outside protocol and knowing
//! nothing of HTTP routes, the event store or NATS.
//!
//! # Layout
//!
//! - [`oidc`]: Google sign-in over OpenID Connect (discovery, keys, authorization code + PKCE).
//! - [`mail`]: outgoing email — files on a laptop, SMTP in production.
//! - [`stripe`]: payments settings, the Stripe Checkout call and webhook signatures.
//! - [`secrets`]: password hashing (argon2id), opaque tokens, codes and API keys, and their hashes.
//! - [`jwt`]: access tokens (HS256 JWTs).
//! - [`rate_store`]: the shared rate-limit store (Redis, one atomic script per decision).
//! - [`webhook`]: outgoing webhooks, signed (HMAC-SHA256 over a timestamp and the body).

pub mod http;
pub mod jwt;
pub mod mail;
pub mod oidc;
pub mod rate_store;
pub mod secrets;
pub mod stripe;
pub mod webhook;
