//! The Google OpenID Connect client: its settings, its HTTP client and the provider metadata
//! it caches. What it does lives beside it: [`super::discovery`], [`super::keys`],
//! [`super::flow`] and [`super::id_token`].

use super::discovery::ProviderMetadata;
use super::keys::KeyCache;
use super::GoogleSettings;
use jsonwebtoken::{Algorithm, Validation};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// The Google OpenID Connect client. Cheap to clone: clones share the cached metadata and keys.
/// Built without I/O; the provider is first contacted by `discover`, `begin` or `finish`.
#[derive(Clone)]
pub struct GoogleOidc {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) settings: GoogleSettings,
    pub(super) http: reqwest::Client,
    pub(super) timeout: Duration,
    pub(super) validation: Validation,
    /// The discovery document and when it was read. The lock is held while reading it, so
    /// concurrent sign-ins wait for one request instead of each sending their own.
    pub(super) discovery: Mutex<Option<(Instant, Arc<ProviderMetadata>)>>,
    /// The signing keys; held across a read for the same reason.
    pub(super) keys: Mutex<KeyCache>,
}

impl fmt::Debug for GoogleOidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleOidc")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl GoogleOidc {
    /// A client for `settings`, with an HTTP client of its own that follows no redirects
    /// (the token request carries the client secret) and gives up after
    /// `settings.http_timeout_ms`.
    pub fn from_settings(settings: GoogleSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.http_timeout_ms))
            .build()?;
        Ok(Self::new(settings, http))
    }

    /// A client over `http` (whose redirect and proxy policy it keeps); each request to the
    /// provider also gets `settings.http_timeout_ms`. Settings are expected to be validated.
    /// Best given a client built with `redirect::Policy::none()`: the token request carries
    /// the client secret and should not be replayed to wherever a redirect points.
    pub fn new(settings: GoogleSettings, http: reqwest::Client) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = settings.clock_skew_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&settings.accepted_issuers());
        validation.set_audience(&[settings.client_id.as_str()]);
        GoogleOidc {
            inner: Arc::new(Inner {
                timeout: Duration::from_millis(settings.http_timeout_ms.max(1)),
                settings,
                http,
                validation,
                discovery: Mutex::new(None),
                keys: Mutex::new(KeyCache::default()),
            }),
        }
    }

    pub fn settings(&self) -> &GoogleSettings {
        &self.inner.settings
    }
}

impl GoogleOidc {
    /// GET a JSON document from the provider (discovery, keys): refused unless it answers
    /// 2xx with at most 64 KiB. `what` names the document in the error.
    pub(super) async fn get_json(
        &self,
        url: impl reqwest::IntoUrl,
        what: fn(String) -> super::OidcError,
    ) -> Result<Vec<u8>, super::OidcError> {
        let response = self
            .inner
            .http
            .get(url)
            .timeout(self.inner.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(super::OidcError::Http)?;
        if !response.status().is_success() {
            return Err(what(format!("answered {}", response.status().as_u16())));
        }
        super::read_response(response)
            .await?
            .ok_or_else(|| what("larger than 64 KiB".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::test_support::enabled;

    #[test]
    fn oidc_client_debug_never_shows_the_client_secret() {
        let client = GoogleOidc::new(enabled(), reqwest::Client::new());
        assert!(!format!("{client:?}").contains("very-secret-value"));
    }
}
