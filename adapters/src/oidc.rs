//! Google sign-in: the OpenID Connect authorization-code flow with PKCE, state and nonce.
//!
//! # Layout
//!
//! - [`GoogleSettings`]: the settings section (issuer, client, redirect URL), validated at start-up.
//! - [`GoogleOidc`]: the client. [`GoogleOidc::begin`] builds the URL the browser is sent to,
//!   with a fresh `state`, `nonce` and PKCE verifier; [`GoogleOidc::finish`] redeems the code at
//!   the token endpoint and verifies the ID token (RS256 signature against the provider's JWKS,
//!   issuer, audience, expiry, issue time, nonce, authorized party).
//! - [`GoogleIdentity`]: what a verified ID token says about the user.
//! - [`OidcError`]: every way a sign-in fails, each with a stable code for the error body.
//!
//! This module keeps no per-login state. The caller (the `/api/auth/google` routes) stores
//! `state → (nonce, pkce_verifier)` server-side, single use and short-lived, checks the `state`
//! the browser brings back, and only then calls `finish`.
//!
//! What it does keep is the provider's metadata: the discovery document (re-read after
//! [`DISCOVERY_MAX_AGE`]) and the signing keys (re-read after [`JWKS_MAX_AGE`], or at once when a
//! token names a key we do not know — providers rotate keys — at most once per
//! [`JWKS_REFETCH_INTERVAL_MIN`], so forged `kid`s cannot make us hammer the provider).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use reqwest::header::ACCEPT;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;

/// Google's issuer, the default.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// The issuer Google also writes into some ID tokens: its documentation says `iss` is either
/// this or [`GOOGLE_ISSUER`], so both are accepted when the configured issuer is Google's.
const GOOGLE_ISSUER_BARE: &str = "accounts.google.com";

/// How long a discovery document is trusted before it is read again. Google changes it rarely.
pub const DISCOVERY_MAX_AGE: Duration = Duration::from_secs(24 * 3_600);

/// How long the signing keys are trusted before they are read again, even when every `kid`
/// is known. Google rotates keys over days and publishes the next one in advance.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3_600);

/// The shortest time between two key-set reads caused by an unknown `kid`. The first such read
/// is immediate (a rotation is picked up on the next sign-in); later ones wait, so a stream of
/// tokens with made-up `kid`s costs the provider one request per interval at most.
pub const JWKS_REFETCH_INTERVAL_MIN: Duration = Duration::from_secs(30);

/// Largest discovery document, key set or token response read, in bytes. Google's are a few KiB.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// Largest error body read from the token endpoint (only its `error` code is logged), in bytes.
const ERROR_BODY_BYTES_MAX: usize = 4 * 1024;

/// Keys kept from one key set; Google publishes two or three.
const JWKS_KEYS_MAX: usize = 32;

/// Longest ID token accepted, in bytes. Google's are about 1 KiB.
const ID_TOKEN_BYTES_MAX: usize = 16 * 1024;

/// Random bytes in `state` and `nonce`: 256 bits, 43 characters once encoded.
const STATE_BYTES: usize = 32;

/// Random bytes in a PKCE verifier: 48 bytes encode to 64 characters, inside RFC 7636's 43–128.
const PKCE_VERIFIER_BYTES: usize = 48;

/// The ceilings `validate` enforces.
const HTTP_TIMEOUT_MS_MAX: u64 = 60_000;
const CLOCK_SKEW_S_MAX: u64 = 600;

/// Google sign-in settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleSettings {
    /// Offer Google sign-in at all. Off by default: it needs a client registered with Google.
    pub enabled: bool,
    /// The OpenID provider's issuer; its metadata is read from
    /// `<issuer>/.well-known/openid-configuration`. Tests point it at a local provider.
    pub issuer: String,
    /// The OAuth client id the provider issued; ID tokens must name it in `aud`.
    pub client_id: String,
    /// The OAuth client secret, sent only to the token endpoint; never printed.
    pub client_secret: String,
    /// Where the provider sends the browser back; must equal one registered for the client.
    pub redirect_url: String,
    /// The scopes asked for; `openid` is required.
    pub scopes: Vec<String>,
    /// Timeout of each request to the provider, in milliseconds.
    pub http_timeout_ms: u64,
    /// Leeway for the `exp`, `nbf` and `iat` checks, in seconds.
    pub clock_skew_s: u64,
}

impl Default for GoogleSettings {
    fn default() -> Self {
        GoogleSettings {
            enabled: false,
            issuer: GOOGLE_ISSUER.into(),
            client_id: String::new(),
            client_secret: String::new(),
            redirect_url: "http://127.0.0.1:8080/api/auth/google/callback".into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            http_timeout_ms: 5_000,
            clock_skew_s: 60,
        }
    }
}

impl fmt::Debug for GoogleSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.client_secret.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        };
        f.debug_struct("GoogleSettings")
            .field("enabled", &self.enabled)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &secret)
            .field("redirect_url", &self.redirect_url)
            .field("scopes", &self.scopes)
            .field("http_timeout_ms", &self.http_timeout_ms)
            .field("clock_skew_s", &self.clock_skew_s)
            .finish()
    }
}

impl GoogleSettings {
    /// Checks the settings when sign-in is enabled. The message starts with the field's name
    /// within this section; the caller puts the section's own name in front.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let issuer =
            Url::parse(&self.issuer).map_err(|e| format!("issuer is not an absolute URL: {e}"))?;
        if !secure_or_loopback(&issuer) {
            return Err("issuer must use https (http only on a loopback host)".into());
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err("issuer must not have a query or a fragment".into());
        }
        if self.client_id.trim().is_empty() {
            return Err("client_id must not be empty".into());
        }
        if self.client_secret.is_empty() {
            return Err("client_secret must not be empty".into());
        }
        let redirect = Url::parse(&self.redirect_url)
            .map_err(|e| format!("redirect_url is not an absolute URL: {e}"))?;
        if !matches!(redirect.scheme(), "http" | "https") || redirect.fragment().is_some() {
            return Err("redirect_url must be an http(s) URL without a fragment".into());
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("scopes must include \"openid\"".into());
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            return Err("scopes must be single words".into());
        }
        if self.http_timeout_ms == 0 || self.http_timeout_ms > HTTP_TIMEOUT_MS_MAX {
            return Err(format!(
                "http_timeout_ms must be between 1 and {HTTP_TIMEOUT_MS_MAX}"
            ));
        }
        if self.clock_skew_s > CLOCK_SKEW_S_MAX {
            return Err(format!("clock_skew_s must be at most {CLOCK_SKEW_S_MAX}"));
        }
        Ok(())
    }

    /// The `iss` values an ID token may carry.
    fn accepted_issuers(&self) -> Vec<String> {
        let mut issuers = vec![self.issuer.clone()];
        if self.issuer == GOOGLE_ISSUER {
            issuers.push(GOOGLE_ISSUER_BARE.into());
        }
        issuers
    }
}

/// https anywhere; plain http only to this machine (a local provider in tests or development).
fn secure_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
        _ => false,
    }
}

/// The endpoints of the provider, from its discovery document.
#[derive(Debug, Clone)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub jwks_uri: Url,
}

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

/// The user, as a verified ID token describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleIdentity {
    /// The provider's stable id for the account (`sub`); the key to link on, never the email.
    pub subject: String,
    pub email: Option<String>,
    /// The provider vouches that `email` belongs to the account.
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Every way a Google sign-in fails. Messages never hold the client secret, the code or a token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The discovery document could not be read or does not describe the configured issuer.
    #[error("the OpenID provider's discovery document is unusable: {0}")]
    Discovery(String),
    /// The provider's key set could not be read or holds no usable RS256 key.
    #[error("the OpenID provider's key set is unusable: {0}")]
    Jwks(String),
    /// The token endpoint refused the code (expired, used, wrong PKCE verifier) or failed.
    #[error("the token endpoint answered {status}")]
    TokenEndpoint { status: u16 },
    /// The token endpoint answered without an ID token.
    #[error("the token response holds no ID token")]
    MissingIdToken,
    /// The ID token is not signed with RS256 by the key it names.
    #[error("the ID token's signature does not check out")]
    BadSignature,
    /// The ID token names a key the provider does not publish, even after reading its keys again.
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownKey,
    /// The ID token was issued by someone other than the configured issuer.
    #[error("the ID token comes from another issuer")]
    WrongIssuer,
    /// The ID token was issued to another client (`aud` or `azp`).
    #[error("the ID token was issued to another client")]
    WrongAudience,
    /// The ID token has expired.
    #[error("the ID token has expired")]
    Expired,
    /// The ID token's `nbf` or `iat` lies in the future.
    #[error("the ID token is not valid yet")]
    NotYetValid,
    /// The ID token's nonce is not the one this sign-in sent (a replayed or injected token).
    #[error("the ID token's nonce does not match this sign-in")]
    NonceMismatch,
    /// The ID token or the token response could not be decoded.
    #[error("malformed response from the OpenID provider: {0}")]
    Malformed(&'static str),
    /// The provider could not be reached, or did not answer in time.
    #[error("the OpenID provider could not be reached")]
    Http(#[source] reqwest::Error),
}

impl OidcError {
    /// A stable snake_case code for the HTTP error body and for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::Discovery(_) => "oidc_discovery_failed",
            OidcError::Jwks(_) => "oidc_jwks_failed",
            OidcError::TokenEndpoint { .. } => "oidc_token_refused",
            OidcError::MissingIdToken => "oidc_missing_id_token",
            OidcError::BadSignature => "oidc_bad_signature",
            OidcError::UnknownKey => "oidc_unknown_key",
            OidcError::WrongIssuer => "oidc_wrong_issuer",
            OidcError::WrongAudience => "oidc_wrong_audience",
            OidcError::Expired => "oidc_token_expired",
            OidcError::NotYetValid => "oidc_token_not_yet_valid",
            OidcError::NonceMismatch => "oidc_nonce_mismatch",
            OidcError::Malformed(_) => "oidc_malformed",
            OidcError::Http(_) => "oidc_provider_unreachable",
        }
    }

    /// The provider is down or misbehaving (answer 502/503), as opposed to this sign-in being
    /// refused (answer 401 and let the user start again).
    pub fn is_provider_failure(&self) -> bool {
        match self {
            OidcError::Discovery(_)
            | OidcError::Jwks(_)
            | OidcError::Http(_)
            | OidcError::MissingIdToken => true,
            OidcError::TokenEndpoint { status } => *status >= 500,
            _ => false,
        }
    }
}

/// The Google OpenID Connect client. Cheap to clone: clones share the cached metadata and keys.
/// Built without I/O; the provider is first contacted by `discover`, `begin` or `finish`.
#[derive(Clone)]
pub struct GoogleOidc {
    inner: Arc<Inner>,
}

struct Inner {
    settings: GoogleSettings,
    http: reqwest::Client,
    timeout: Duration,
    validation: Validation,
    /// The discovery document and when it was read. The lock is held while reading it, so
    /// concurrent sign-ins wait for one request instead of each sending their own.
    discovery: Mutex<Option<(Instant, Arc<ProviderMetadata>)>>,
    /// The signing keys; held across a read for the same reason.
    keys: Mutex<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<(Option<String>, DecodingKey)>,
    read_at: Option<Instant>,
    /// The last read caused by an unknown `kid`.
    refetched_at: Option<Instant>,
}

impl KeyCache {
    /// The key a token's `kid` names; without a `kid`, the only key if there is one.
    fn find(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(id, _)| id.as_deref() == Some(kid))
                .map(|(_, key)| key),
            None if self.keys.len() == 1 => self.keys.first().map(|(_, key)| key),
            None => None,
        }
    }
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

    /// Starts a sign-in: fresh `state`, `nonce` and PKCE verifier, and the URL that carries
    /// them (the verifier only as its S256 challenge).
    pub async fn begin(&self) -> Result<AuthorizationRequest, OidcError> {
        let provider = self.discover().await?;
        let state = random_token(STATE_BYTES);
        let nonce = random_token(STATE_BYTES);
        let pkce_verifier = random_token(PKCE_VERIFIER_BYTES);
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
            let body = read_limited(response, ERROR_BODY_BYTES_MAX)
                .await
                .ok()
                .flatten()
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
        let body = read_limited(response, RESPONSE_BYTES_MAX)
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

    /// Verifies an ID token: RS256 only, signed by a key in the provider's JWKS, from the
    /// configured issuer, for this client, not expired, not issued in the future, carrying
    /// `expected_nonce`, and, if it names an authorized party, naming this client.
    pub async fn verify_id_token(
        &self,
        id_token: &str,
        expected_nonce: &str,
    ) -> Result<GoogleIdentity, OidcError> {
        if id_token.len() > ID_TOKEN_BYTES_MAX {
            return Err(OidcError::Malformed("the ID token is too long"));
        }
        // The header is read by hand, before any request, so that `alg: none` and HS256
        // (an attacker "signing" with our public key as an HMAC secret) are refused outright.
        let header = token_header(id_token)?;
        if header.alg != "RS256" {
            return Err(OidcError::BadSignature);
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let claims = jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &self.inner.validation)
            .map_err(from_jwt)?
            .claims;
        self.check_claims(claims, expected_nonce)
    }

    /// The checks jsonwebtoken does not make: `iat`, `nonce`, `azp`, a non-empty `sub`.
    fn check_claims(
        &self,
        claims: IdTokenClaims,
        expected_nonce: &str,
    ) -> Result<GoogleIdentity, OidcError> {
        let settings = &self.inner.settings;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if claims.iat > now.saturating_add(settings.clock_skew_s) {
            return Err(OidcError::NotYetValid);
        }
        let nonce_matches = match claims.nonce.as_deref() {
            Some(nonce) => {
                !expected_nonce.is_empty()
                    && bool::from(nonce.as_bytes().ct_eq(expected_nonce.as_bytes()))
            }
            None => false,
        };
        if !nonce_matches {
            return Err(OidcError::NonceMismatch);
        }
        if let Some(azp) = claims.azp.as_deref() {
            if azp != settings.client_id {
                return Err(OidcError::WrongAudience);
            }
        }
        if claims.sub.is_empty() {
            return Err(OidcError::Malformed("the ID token has an empty subject"));
        }
        Ok(GoogleIdentity {
            subject: claims.sub,
            email: claims.email.filter(|e| !e.is_empty()),
            email_verified: claims.email_verified.as_ref().is_some_and(Flag::is_true),
            name: claims.name.filter(|n| !n.is_empty()),
        })
    }

    /// The key a token names: from the cache, else after one rate-limited read of the key set.
    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, OidcError> {
        let provider = self.discover().await?;
        let mut cache = self.inner.keys.lock().await;
        let now = Instant::now();
        let fresh = cache
            .read_at
            .is_some_and(|at| now.duration_since(at) < JWKS_MAX_AGE);
        if !fresh {
            cache.keys = self.read_keys(&provider.jwks_uri).await?;
            cache.read_at = Some(now);
        }
        if let Some(key) = cache.find(kid) {
            return Ok(key.clone());
        }
        let may_refetch = fresh
            && cache
                .refetched_at
                .is_none_or(|at| now.duration_since(at) >= JWKS_REFETCH_INTERVAL_MIN);
        if may_refetch {
            cache.refetched_at = Some(now);
            cache.keys = self.read_keys(&provider.jwks_uri).await?;
            cache.read_at = Some(now);
            if let Some(key) = cache.find(kid) {
                return Ok(key.clone());
            }
        }
        Err(OidcError::UnknownKey)
    }

    async fn read_discovery(&self) -> Result<ProviderMetadata, OidcError> {
        let settings = &self.inner.settings;
        let url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let response = self
            .inner
            .http
            .get(url)
            .timeout(self.inner.timeout)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(OidcError::Http)?;
        if !response.status().is_success() {
            return Err(OidcError::Discovery(format!(
                "answered {}",
                response.status().as_u16()
            )));
        }
        let body = read_limited(response, RESPONSE_BYTES_MAX)
            .await?
            .ok_or_else(|| OidcError::Discovery("larger than 64 KiB".into()))?;
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

    /// Reads the key set and keeps the RSA signature keys usable with RS256; keys of other
    /// types or uses are skipped rather than failing the whole set.
    async fn read_keys(
        &self,
        jwks_uri: &Url,
    ) -> Result<Vec<(Option<String>, DecodingKey)>, OidcError> {
        let response = self
            .inner
            .http
            .get(jwks_uri.clone())
            .timeout(self.inner.timeout)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(OidcError::Http)?;
        if !response.status().is_success() {
            return Err(OidcError::Jwks(format!(
                "answered {}",
                response.status().as_u16()
            )));
        }
        let body = read_limited(response, RESPONSE_BYTES_MAX)
            .await?
            .ok_or_else(|| OidcError::Jwks("larger than 64 KiB".into()))?;
        let set: RawKeySet = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Jwks(format!("not a JWK set: {e}")))?;
        let keys: Vec<_> = set
            .keys
            .into_iter()
            .take(JWKS_KEYS_MAX)
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| rs256_key(&jwk).map(|key| (jwk.common.key_id.clone(), key)))
            .collect();
        if keys.is_empty() {
            return Err(OidcError::Jwks("it holds no RSA signing key".into()));
        }
        Ok(keys)
    }
}

/// The verifying key of an RSA signature key usable with RS256.
fn rs256_key(jwk: &Jwk) -> Option<DecodingKey> {
    let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
        return None;
    };
    let for_signing = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let for_rs256 = matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256));
    if !(for_signing && for_rs256) {
        return None;
    }
    DecodingKey::from_rsa_components(&rsa.n, &rsa.e).ok()
}

fn from_jwt(err: jsonwebtoken::errors::Error) -> OidcError {
    match err.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => OidcError::BadSignature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::ImmatureSignature => OidcError::NotYetValid,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => OidcError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => {
            OidcError::Malformed("the ID token lacks a required claim")
        }
        _ => OidcError::Malformed("the ID token could not be decoded"),
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

/// `n` random bytes, base64url without padding: unguessable and safe in a URL.
fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 PKCE challenge of a verifier (RFC 7636 §4.2).
fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Reads a body of at most `max` bytes; `None` if it is larger.
async fn read_limited(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, OidcError> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(OidcError::Http)? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
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

/// The parts of a JOSE header we look at before verifying.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn token_header(token: &str) -> Result<TokenHeader, OidcError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed("the ID token is not a signed JWT"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| OidcError::Malformed("the ID token's header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| OidcError::Malformed("the ID token's header is not the expected JSON"))
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// The token endpoint's answer; the access token is not needed and not kept.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
}

/// The ID token claims read after jsonwebtoken has checked `exp`, `nbf`, `iss` and `aud`.
#[derive(Deserialize)]
struct IdTokenClaims {
    sub: String,
    iat: u64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Flag>,
    #[serde(default)]
    name: Option<String>,
}

/// Google has sent `email_verified` both as a boolean and as the string "true".
#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn is_true(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Text(t) => t == "true",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn enabled() -> GoogleSettings {
        GoogleSettings {
            enabled: true,
            client_id: "client-1.apps.example".into(),
            client_secret: "very-secret-value".into(),
            ..GoogleSettings::default()
        }
    }

    #[test]
    fn oidc_defaults_are_disabled_and_valid() {
        let settings = GoogleSettings::default();
        assert!(!settings.enabled);
        assert_eq!(settings.issuer, GOOGLE_ISSUER);
        assert_eq!(settings.scopes, ["openid", "email", "profile"]);
        assert!(settings.validate().is_ok());
        assert!(enabled().validate().is_ok());
    }

    #[test]
    fn oidc_enabled_settings_are_refused_naming_the_field() {
        type Spoil = fn(&mut GoogleSettings);
        let cases: [(&str, Spoil); 8] = [
            ("client_id", |s| s.client_id.clear()),
            ("client_secret", |s| s.client_secret.clear()),
            ("issuer", |s| s.issuer = "not a url".into()),
            ("issuer", |s| {
                s.issuer = "http://accounts.example.com".into()
            }),
            ("redirect_url", |s| s.redirect_url = "/callback".into()),
            ("scopes", |s| s.scopes = vec!["email".into()]),
            ("http_timeout_ms", |s| s.http_timeout_ms = 0),
            ("clock_skew_s", |s| s.clock_skew_s = 3_600),
        ];
        for (field, spoil) in cases {
            let mut settings = enabled();
            spoil(&mut settings);
            let err = settings.validate().expect_err("refused");
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn oidc_a_plain_http_issuer_is_allowed_only_on_loopback() {
        for issuer in [
            "http://127.0.0.1:4000",
            "http://localhost:4000",
            "http://[::1]:4000",
        ] {
            let settings = GoogleSettings {
                issuer: issuer.into(),
                ..enabled()
            };
            assert!(settings.validate().is_ok(), "{issuer}");
        }
    }

    #[test]
    fn oidc_debug_never_shows_the_client_secret_or_the_verifier() {
        let settings = enabled();
        let shown = format!("{settings:?}");
        assert!(!shown.contains("very-secret-value"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let request = AuthorizationRequest {
            url: "https://x".into(),
            state: "s".into(),
            nonce: "n".into(),
            pkce_verifier: "the-verifier".into(),
        };
        assert!(!format!("{request:?}").contains("the-verifier"));
        let client = GoogleOidc::new(settings, reqwest::Client::new());
        assert!(!format!("{client:?}").contains("very-secret-value"));
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
        let verifier = random_token(PKCE_VERIFIER_BYTES);
        assert!((43..=128).contains(&verifier.len()), "{}", verifier.len());
        assert!(verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(random_token(STATE_BYTES).len(), 43);
        assert_ne!(random_token(STATE_BYTES), random_token(STATE_BYTES));
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

    /// Nothing listens on the discard port: a token refused here was refused before any request.
    fn offline_client() -> GoogleOidc {
        let settings = GoogleSettings {
            issuer: "http://127.0.0.1:9".into(),
            http_timeout_ms: 200,
            ..enabled()
        };
        GoogleOidc::new(settings, reqwest::Client::new())
    }

    #[tokio::test]
    async fn oidc_tokens_not_signed_with_rs256_are_refused_before_any_request() {
        let client = offline_client();
        let claims = serde_json::json!({
            "iss": "http://127.0.0.1:9", "aud": "client-1.apps.example", "sub": "1",
            "exp": 4_000_000_000u64, "iat": 1, "nonce": "n"
        });
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"public key bytes used as a secret"),
        )
        .expect("encode");
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        for token in [hs256, none] {
            let err = client
                .verify_id_token(&token, "n")
                .await
                .expect_err("refused");
            assert!(matches!(err, OidcError::BadSignature), "{err:?}");
        }
        let err = client
            .verify_id_token("not-a-jwt", "n")
            .await
            .expect_err("refused");
        assert!(matches!(err, OidcError::Malformed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn oidc_an_unreachable_provider_is_a_provider_failure() {
        let err = offline_client().begin().await.expect_err("unreachable");
        assert!(matches!(err, OidcError::Http(_)), "{err:?}");
        assert!(err.is_provider_failure());
        assert_eq!(err.code(), "oidc_provider_unreachable");
    }

    #[test]
    fn oidc_claims_accept_email_verified_as_a_bool_or_a_string() {
        let client = offline_client();
        for (value, expected) in [
            (serde_json::json!(true), true),
            (serde_json::json!("true"), true),
            (serde_json::json!(false), false),
            (serde_json::json!("false"), false),
        ] {
            let claims: IdTokenClaims = serde_json::from_value(serde_json::json!({
                "sub": "42", "iat": 1, "nonce": "n", "email": "a@example.com",
                "email_verified": value,
            }))
            .expect("claims");
            let identity = client.check_claims(claims, "n").expect("valid");
            assert_eq!(identity.email_verified, expected);
        }
    }

    #[test]
    fn oidc_claims_are_refused_for_a_wrong_nonce_azp_or_future_iat() {
        let client = offline_client();
        let claims = |extra: serde_json::Value| -> IdTokenClaims {
            let mut base = serde_json::json!({ "sub": "42", "iat": 1, "nonce": "n" });
            if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
                base.extend(extra.clone());
            }
            serde_json::from_value(base).expect("claims")
        };
        let err = client
            .check_claims(claims(serde_json::json!({})), "other")
            .expect_err("nonce");
        assert!(matches!(err, OidcError::NonceMismatch));
        let err = client
            .check_claims(claims(serde_json::json!({ "nonce": null })), "")
            .expect_err("no nonce");
        assert!(matches!(err, OidcError::NonceMismatch));
        let err = client
            .check_claims(claims(serde_json::json!({ "azp": "someone-else" })), "n")
            .expect_err("azp");
        assert!(matches!(err, OidcError::WrongAudience));
        let err = client
            .check_claims(claims(serde_json::json!({ "iat": 4_000_000_000u64 })), "n")
            .expect_err("iat");
        assert!(matches!(err, OidcError::NotYetValid));
    }

    #[test]
    fn oidc_error_codes_are_distinct_and_messages_hold_no_secret() {
        let errors = [
            OidcError::Discovery("x".into()),
            OidcError::Jwks("x".into()),
            OidcError::TokenEndpoint { status: 400 },
            OidcError::MissingIdToken,
            OidcError::BadSignature,
            OidcError::UnknownKey,
            OidcError::WrongIssuer,
            OidcError::WrongAudience,
            OidcError::Expired,
            OidcError::NotYetValid,
            OidcError::NonceMismatch,
            OidcError::Malformed("x"),
        ];
        let codes: std::collections::HashSet<_> = errors.iter().map(OidcError::code).collect();
        assert_eq!(codes.len(), errors.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        assert!(!OidcError::TokenEndpoint { status: 400 }.is_provider_failure());
        assert!(OidcError::TokenEndpoint { status: 502 }.is_provider_failure());
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
