//! Google sign-in: the OpenID Connect authorization-code flow with PKCE, state and nonce.
//!
//! # Layout
//!
//! - [`settings`]: [`GoogleSettings`], the settings section (issuer, client, redirect URL),
//!   validated at start-up.
//! - [`client`]: [`GoogleOidc`], the client and the provider metadata it caches.
//! - [`discovery`]: the discovery document ([`GoogleOidc::discover`], [`ProviderMetadata`]).
//! - [`keys`]: the provider's signing keys (JWKS), cached and re-read on rotation.
//! - [`flow`]: the authorization-code flow with PKCE. [`GoogleOidc::begin`] builds the URL the
//!   browser is sent to, with a fresh `state`, `nonce` and PKCE verifier
//!   ([`AuthorizationRequest`]); [`GoogleOidc::finish`] redeems the code at the token endpoint.
//! - [`id_token`]: [`GoogleOidc::verify_id_token`] (RS256 signature against the provider's
//!   JWKS, issuer, audience, expiry, issue time, nonce, authorized party) and
//!   [`GoogleIdentity`], what a verified ID token says about the user.
//! - [`error`]: [`OidcError`], every way a sign-in fails, each with a stable code for the error
//!   body.
//!
//! This module keeps no per-login state. The caller (the `/api/auth/google` routes) stores
//! `state → (nonce, pkce_verifier)` server-side, single use and short-lived, checks the `state`
//! the browser brings back, and only then calls `finish`.
//!
//! What it does keep is the provider's metadata: the discovery document (re-read after
//! [`DISCOVERY_MAX_AGE`]) and the signing keys (re-read after [`JWKS_MAX_AGE`], or at once when a
//! token names a key we do not know — providers rotate keys — at most once per
//! [`JWKS_REFETCH_INTERVAL_MIN`], so forged `kid`s cannot make us hammer the provider).

pub mod client;
pub mod discovery;
pub mod error;
pub mod flow;
pub mod id_token;
pub mod keys;
pub mod settings;

pub use client::GoogleOidc;
pub use discovery::{ProviderMetadata, DISCOVERY_MAX_AGE};
pub use error::OidcError;
pub use flow::AuthorizationRequest;
pub use id_token::GoogleIdentity;
pub use keys::{JWKS_MAX_AGE, JWKS_REFETCH_INTERVAL_MIN};
pub use settings::{GoogleSettings, GOOGLE_ISSUER};

use crate::http::{read_limited, ReadLimitedError};

/// Largest discovery document, key set or token response read, in bytes. Google's are a few KiB.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Reads a provider's answer of at most [`RESPONSE_BYTES_MAX`]; `None` if it is larger.
async fn read_response(response: reqwest::Response) -> Result<Option<Vec<u8>>, OidcError> {
    // No deadline: each request to the provider carries the client's timeout, which covers
    // its body too.
    match read_limited(response, RESPONSE_BYTES_MAX, None).await {
        Ok(body) => Ok(Some(body)),
        Err(ReadLimitedError::TooLarge { .. } | ReadLimitedError::DeadlineElapsed) => Ok(None),
        Err(ReadLimitedError::Read(err)) => Err(OidcError::Http(err)),
    }
}

/// Settings and clients shared by the tests of every part.
#[cfg(test)]
mod test_support {
    use super::{GoogleOidc, GoogleSettings};

    pub(super) fn enabled() -> GoogleSettings {
        GoogleSettings {
            enabled: true,
            client_id: "client-1.apps.example".into(),
            client_secret: "very-secret-value".into(),
            ..GoogleSettings::default()
        }
    }

    /// Nothing listens on the discard port: a token refused here was refused before any request.
    pub(super) fn offline_client() -> GoogleOidc {
        let settings = GoogleSettings {
            issuer: "http://127.0.0.1:9".into(),
            http_timeout_ms: 200,
            ..enabled()
        };
        GoogleOidc::new(settings, reqwest::Client::new())
    }
}
