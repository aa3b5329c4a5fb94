//! The authorization-code flow with PKCE (RFC 7636): [`GoogleOidc::begin`] sends the browser
//! to the provider with a fresh `state`, `nonce` and PKCE challenge; [`GoogleOidc::finish`]
//! redeems the code the browser brings back and verifies the ID token it buys.

use super::{read_response, GoogleIdentity, GoogleOidc, GoogleSettings, OidcError};
use crate::http::read_limited;
use crate::secrets::random_token;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::ACCEPT;
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// Largest error body read from the token endpoint (only its `error` code is logged), in bytes.
const ERROR_BODY_BYTES_MAX: usize = 4 * 1024;

/// Random bytes in `state` and `nonce`: 256 bits, 43 characters once encoded.
const STATE_BYTES: usize = 32;

/// Random bytes in a PKCE verifier: 48 bytes encode to 64 characters, inside RFC 7636's 43–128.
const PKCE_VERIFIER_BYTES: usize = 48;

/// Where to send the browser, and what the caller keeps server-side under `state` until the
/// browser comes back.
#[derive(Clone)]
pub struct AuthorizationRequest {
    /// The provider's authorization URL with every parameter; redirect the browser here.
    pub url: String,
    /// Echoed back on the callback; the key under which the caller stores the other two.
    pub state: String,
    /// Must come back inside the ID token; binds the token to this sign-in.
    pub nonce: String,
    /// The PKCE secret; only its SHA-256 is in `url`. Sent to the token endpoint by `finish`.
    pub pkce_verifier: String,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("url", &self.url)
            .field("state", &self.state)
            .field("nonce", &self.nonce)
            .field("pkce_verifier", &"<redacted>")
            .finish()
    }
}

impl GoogleOidc {
    /// Starts a sign-in: fresh `state`, `nonce` and PKCE verifier, and the URL that carries
    /// them (the verifier only as its S256 challenge).
    pub async fn begin(&self) -> Result<AuthorizationRequest, OidcError> {
        let provider = self.discover().await?;
        let state = random_token::<STATE_BYTES>();
        let nonce = random_token::<STATE_BYTES>();
        let pkce_verifier = random_token::<PKCE_VERIFIER_BYTES>();
        let url = authorization_url(
            &provider.authorization_endpoint,
            &self.inner.settings,
            &state,
            &nonce,
            &pkce_challenge(&pkce_verifier),
        );
        Ok(AuthorizationRequest {
            url: url.into(),
            state,
            nonce,
            pkce_verifier,
        })
    }

    /// Ends a sign-in: redeems `code` with the PKCE verifier kept since `begin`, and verifies
    /// the ID token against `expected_nonce`, also kept since `begin`.
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        expected_nonce: &str,
    ) -> Result<GoogleIdentity, OidcError> {
        let provider = self.discover().await?;
        let settings = &self.inner.settings;
        let response = self
            .inner
            .http
            .post(provider.token_endpoint.clone())
            .timeout(self.inner.timeout)
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", settings.redirect_url.as_str()),
                ("client_id", settings.client_id.as_str()),
                ("client_secret", settings.client_secret.as_str()),
                ("code_verifier", pkce_verifier),
            ])
            .send()
            .await
            .map_err(OidcError::Http)?;
        let status = response.status();
        if !status.is_success() {
            let body = read_limited(response, ERROR_BODY_BYTES_MAX, None)
                .await
                .unwrap_or_default();
            tracing::warn!(
                status = status.as_u16(),
                error = oauth_error_code(&body),
                "the token endpoint refused the authorization code"
            );
            return Err(OidcError::TokenEndpoint {
                status: status.as_u16(),
            });
        }
        let body = read_response(response)
            .await?
            .ok_or(OidcError::Malformed("the token response is too large"))?;
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| OidcError::Malformed("the token response is not the expected JSON"))?;
        let id_token = tokens
            .id_token
            .filter(|t| !t.is_empty())
            .ok_or(OidcError::MissingIdToken)?;
        self.verify_id_token(&id_token, expected_nonce).await
    }
}

/// The URL the browser is sent to.
fn authorization_url(
    endpoint: &Url,
    settings: &GoogleSettings,
    state: &str,
    nonce: &str,
    code_challenge: &str,
) -> Url {
    let mut url = endpoint.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", &settings.redirect_url)
        .append_pair("scope", &settings.scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", code_challenge)
        .append_pair("code_challenge_method", "S256");
    url
}

/// The S256 PKCE challenge of a verifier (RFC 7636 §4.2).
fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The OAuth `error` code of a token endpoint's error body, if it looks like one; it is only
/// logged, so anything that is not a short registered-looking code is dropped.
fn oauth_error_code(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
    }
    serde_json::from_slice::<OAuthError>(body)
        .ok()
        .map(|e| e.error)
        .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .unwrap_or_else(|| "-".into())
}

/// The token endpoint's answer; the access token is not needed and not kept.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::test_support::{enabled, offline_client};

    #[test]
    fn oidc_authorization_request_debug_never_shows_the_verifier() {
        let request = AuthorizationRequest {
            url: "https://x".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "the-verifier".into(),
        };
        assert!(!format!("{request:?}").contains("the-verifier"));
    }

    #[test]
    fn oidc_pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn oidc_random_tokens_are_url_safe_fresh_and_of_pkce_length() {
        let verifier = random_token::<PKCE_VERIFIER_BYTES>();
        assert!((43..=128).contains(&verifier.len()), "{}", verifier.len());
        assert!(verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(random_token::<STATE_BYTES>().len(), 43);
        assert_ne!(random_token::<STATE_BYTES>(), random_token::<STATE_BYTES>());
    }

    #[test]
    fn oidc_authorization_url_carries_every_parameter() {
        let settings = enabled();
        let endpoint = Url::parse("https://accounts.example.com/o/auth?hl=en").expect("url");
        let url = authorization_url(&endpoint, &settings, "st", "no", "ch");
        let pairs: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(pairs["hl"], "en");
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["client_id"], settings.client_id);
        assert_eq!(pairs["redirect_uri"], settings.redirect_url);
        assert_eq!(pairs["scope"], "openid email profile");
        assert_eq!(pairs["state"], "st");
        assert_eq!(pairs["nonce"], "no");
        assert_eq!(pairs["code_challenge"], "ch");
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert!(!url.as_str().contains("very-secret-value"));
    }

    #[tokio::test]
    async fn oidc_an_unreachable_provider_is_a_provider_failure() {
        let err = offline_client().begin().await.expect_err("unreachable");
        assert!(matches!(err, OidcError::Http(_)), "{err:?}");
        assert!(err.is_provider_failure());
        assert_eq!(err.code(), "oidc_provider_unreachable");
    }

    #[test]
    fn oidc_oauth_error_codes_are_logged_only_when_they_look_like_codes() {
        assert_eq!(
            oauth_error_code(br#"{"error":"invalid_grant"}"#),
            "invalid_grant"
        );
        assert_eq!(oauth_error_code(br#"{"error":"code abc123 is bad"}"#), "-");
        assert_eq!(oauth_error_code(b"<html>"), "-");
    }
}
