//! The provider's discovery document (`<issuer>/.well-known/openid-configuration`): where its
//! authorization, token and key endpoints are. Read once and kept for [`DISCOVERY_MAX_AGE`];
//! a stale copy is kept while the provider cannot be reached.

use super::settings::secure_or_loopback;
use super::{GoogleOidc, OidcError};
use reqwest::Url;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a discovery document is trusted before it is read again. Google changes it rarely.
pub const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(24 * 3_600);

/// The endpoints of the provider, from its discovery document.
#[derive(Debug, Clone)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
}

impl GoogleOidc {
    /// The provider's endpoints, read from its discovery document and cached. Its `issuer`
    /// must equal the configured one exactly (OpenID Connect Discovery §4.3).
    pub async fn discover(&self) -> Result<Arc<ProviderMetadata>, OidcError> {
        let mut cached = self.inner.discovery.lock().await;
        if let Some((read_at, metadata)) = cached.as_ref() {
            if read_at.elapsed() < DISCOVERY_MAX_AGE {
                return Ok(metadata.clone());
            }
        }
        match self.read_discovery().await {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                *cached = Some((Instant::now(), metadata.clone()));
                Ok(metadata)
            }
            // A stale document beats none while the provider has a bad moment.
            Err(err) => match cached.as_ref() {
                Some((_, metadata)) => {
                    tracing::warn!(error = %err, "could not refresh the OpenID discovery document; keeping the old one");
                    Ok(metadata.clone())
                }
                None => Err(err),
            },
        }
    }

    async fn read_discovery(&self) -> Result<ProviderMetadata, OidcError> {
        let settings = &self.inner.settings;
        let url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let body = self.get_json(url, OidcError::Discovery).await?;
        let document: DiscoveryDocument = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Discovery(format!("not the expected JSON: {e}")))?;
        if document.issuer != settings.issuer {
            return Err(OidcError::Discovery(format!(
                "it names the issuer {:?}, not the configured {:?}",
                document.issuer, settings.issuer
            )));
        }
        // An https issuer must not hand its tokens or keys to plain http.
        let issuer_is_https = settings.issuer.starts_with("https://");
        let endpoint = |name: &str, value: &str| -> Result<Url, OidcError> {
            let url = Url::parse(value)
                .map_err(|e| OidcError::Discovery(format!("{name} is not a URL: {e}")))?;
            let acceptable = if issuer_is_https {
                url.scheme() == "https"
            } else {
                secure_or_loopback(&url)
            };
            if !acceptable {
                return Err(OidcError::Discovery(format!("{name} does not use https")));
            }
            Ok(url)
        };
        Ok(ProviderMetadata {
            authorization_endpoint: endpoint(
                "authorization_endpoint",
                &document.authorization_endpoint,
            )?,
            token_endpoint: endpoint("token_endpoint", &document.token_endpoint)?,
            jwks_uri: endpoint("jwks_uri", &document.jwks_uri)?,
            issuer: document.issuer,
        })
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}
