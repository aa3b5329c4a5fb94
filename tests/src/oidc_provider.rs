//! A small local OpenID provider for tests: discovery, JWKS, `/authorize` and `/token`, with
//! RS256-signed ID tokens, PKCE checks and switches to misbehave.
//!
//! It listens on `127.0.0.1:0`, so tests run in parallel, each with a provider of its own. Two
//! ways to get a code:
//! - [`OidcProvider::issue_code`]: the test takes `nonce` and `code_challenge` from the URL the
//!   client built and says exactly what the ID token holds (wrong audience, expired, ...);
//! - `GET /authorize` (what a browser does): signs in the user set by
//!   [`OidcProvider::set_authorize_user`] at once and redirects to `redirect_uri` with `code`
//!   and `state`, so a test of the app's routes can follow the whole flow with redirects off.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hub_adapters::oidc::GoogleSettings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::JoinHandle;

/// RSA modulus size of every key, in bits (what Google uses).
const RSA_BITS: usize = 2048;

/// How the provider signs the ID tokens it issues from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// With the active published key, under its `kid` (the default).
    Published,
    /// With a key that is not in the JWKS, under the active key's `kid`: a forged signature.
    UnpublishedKeyUnderPublishedKid,
    /// With a key that is not in the JWKS, under a `kid` the JWKS does not have either.
    UnpublishedKeyAndKid,
}

/// What an issued ID token holds. `None` in `aud` and `iss` means the right value.
#[derive(Debug, Clone)]
pub struct IdTokenClaims {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// The nonce to put in the token; `None` leaves the claim out.
    pub nonce: Option<String>,
    /// `aud`; `None` is the provider's client id.
    pub aud: Option<String>,
    /// `iss`; `None` is the provider's issuer.
    pub iss: Option<String>,
    /// `azp`; `None` leaves the claim out.
    pub azp: Option<String>,
    /// `exp` relative to now, in seconds; negative for a token that has expired.
    pub exp_offset_s: i64,
    /// `iat` relative to now, in seconds.
    pub iat_offset_s: i64,
}

impl IdTokenClaims {
    /// A valid token for `sub` carrying `nonce`, with a verified email, valid for 10 minutes.
    pub fn new(sub: &str, nonce: &str) -> Self {
        IdTokenClaims {
            sub: sub.into(),
            email: Some(format!("{sub}@example.com")),
            email_verified: true,
            name: Some(format!("User {sub}")),
            nonce: Some(nonce.into()),
            aud: None,
            iss: None,
            azp: None,
            exp_offset_s: 600,
            iat_offset_s: 0,
        }
    }

    /// For another client.
    pub fn for_audience(mut self, aud: &str) -> Self {
        self.aud = Some(aud.into());
        self
    }

    /// Issued an hour ago and expired ten minutes ago: well past any clock-skew leeway.
    pub fn expired(mut self) -> Self {
        self.iat_offset_s = -3_600;
        self.exp_offset_s = -600;
        self
    }

    /// Claiming another issuer.
    pub fn from_issuer(mut self, iss: &str) -> Self {
        self.iss = Some(iss.into());
        self
    }
}

/// A running provider; stopped when dropped.
pub struct OidcProvider {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    issuer: String,
    client_id: String,
    client_secret: String,
    jwks_reads: AtomicUsize,
    state: Mutex<ProviderState>,
}

struct ProviderState {
    /// The keys the JWKS lists; the first one signs.
    published: Vec<SigningKey>,
    /// A key that is never listed, made on first use.
    unpublished: Option<SigningKey>,
    signing: Signing,
    codes: HashMap<String, IssuedCode>,
    /// When set, `/token` answers this status whatever the request.
    token_failure: Option<StatusCode>,
    /// Who `/authorize` signs in (its nonce is replaced by the request's).
    authorize_user: IdTokenClaims,
    keys_made: usize,
}

#[derive(Clone)]
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    /// Modulus and exponent, base64url big-endian, as a JWK carries them.
    n: String,
    e: String,
}

struct IssuedCode {
    id_token: String,
    code_challenge: String,
    redirect_uri: String,
}

impl OidcProvider {
    /// Starts a provider for one registered client, with one fresh RSA key.
    pub async fn start(client_id: &str, client_secret: &str) -> OidcProvider {
        let key = generate_key("key-1").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OpenID provider");
        let address = listener.local_addr().expect("a local address");
        let shared = Arc::new(Shared {
            issuer: format!("http://{address}"),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            jwks_reads: AtomicUsize::new(0),
            state: Mutex::new(ProviderState {
                published: vec![key],
                unpublished: None,
                signing: Signing::Published,
                codes: HashMap::new(),
                token_failure: None,
                authorize_user: IdTokenClaims::new("google-user-1", ""),
                keys_made: 1,
            }),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OidcProvider { shared, task }
    }

    /// The issuer, `http://127.0.0.1:<port>` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Google sign-in settings for this provider's client, enabled, with a short timeout.
    pub fn google_settings(&self, redirect_url: &str) -> GoogleSettings {
        GoogleSettings {
            enabled: true,
            issuer: self.shared.issuer.clone(),
            client_id: self.shared.client_id.clone(),
            client_secret: self.shared.client_secret.clone(),
            redirect_url: redirect_url.into(),
            http_timeout_ms: 2_000,
            ..GoogleSettings::default()
        }
    }

    /// Issues a code for an ID token holding `claims`, signed now (under the current
    /// [`Signing`]); `/token` gives it out once, for `redirect_uri` and the verifier whose
    /// S256 is `code_challenge`.
    pub fn issue_code(
        &self,
        claims: IdTokenClaims,
        code_challenge: &str,
        redirect_uri: &str,
    ) -> String {
        let mut state = self.shared.lock();
        let id_token = self.shared.sign(&state, &claims);
        let code = random_token();
        state.codes.insert(
            code.clone(),
            IssuedCode {
                id_token,
                code_challenge: code_challenge.into(),
                redirect_uri: redirect_uri.into(),
            },
        );
        code
    }

    /// Chooses how later ID tokens are signed; makes the unpublished key on first need.
    pub async fn set_signing(&self, signing: Signing) {
        let needs_key = signing != Signing::Published && self.shared.lock().unpublished.is_none();
        if needs_key {
            let key = generate_key("unpublished").await;
            self.shared.lock().unpublished.get_or_insert(key);
        }
        self.shared.lock().signing = signing;
    }

    /// Replaces the signing key by a new one under a new `kid`; the old key leaves the JWKS.
    /// Returns the new `kid`.
    pub async fn rotate_keys(&self) -> String {
        let number = {
            let mut state = self.shared.lock();
            state.keys_made += 1;
            state.keys_made
        };
        let key = generate_key(&format!("key-{number}")).await;
        let kid = key.kid.clone();
        self.shared.lock().published = vec![key];
        kid
    }

    /// Makes `/token` answer `status` (400 and 500 are the useful ones) until called with `None`.
    pub fn fail_token_endpoint(&self, status: Option<u16>) {
        self.shared.lock().token_failure =
            status.map(|s| StatusCode::from_u16(s).expect("a valid HTTP status"));
    }

    /// Who `GET /authorize` signs in from now on.
    pub fn set_authorize_user(&self, claims: IdTokenClaims) {
        self.shared.lock().authorize_user = claims;
    }

    /// How many times the JWKS has been read.
    pub fn jwks_reads(&self) -> usize {
        self.shared.jwks_reads.load(Ordering::SeqCst)
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ProviderState> {
        // A test that panicked while holding the lock has failed already; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sign(&self, state: &ProviderState, claims: &IdTokenClaims) -> String {
        let active = state.published.first().expect("a published key");
        let (key, kid) = match (state.signing, state.unpublished.as_ref()) {
            (Signing::Published, _) | (_, None) => (&active.encoding, active.kid.clone()),
            (Signing::UnpublishedKeyUnderPublishedKid, Some(other)) => {
                (&other.encoding, active.kid.clone())
            }
            (Signing::UnpublishedKeyAndKid, Some(other)) => (&other.encoding, other.kid.clone()),
        };
        let now = chrono::Utc::now().timestamp();
        let mut body = json!({
            "iss": claims.iss.clone().unwrap_or_else(|| self.issuer.clone()),
            "aud": claims.aud.clone().unwrap_or_else(|| self.client_id.clone()),
            "sub": claims.sub,
            "iat": now + claims.iat_offset_s,
            "exp": now + claims.exp_offset_s,
            "email_verified": claims.email_verified,
        });
        let optional = [
            ("nonce", &claims.nonce),
            ("email", &claims.email),
            ("name", &claims.name),
            ("azp", &claims.azp),
        ];
        for (name, value) in optional {
            if let (Some(value), Some(object)) = (value, body.as_object_mut()) {
                object.insert(name.into(), Value::String(value.clone()));
            }
        }
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, &body, key).expect("sign an ID token")
    }
}

/// A fresh RSA key, made off the async threads (it takes a moment).
async fn generate_key(kid: &str) -> SigningKey {
    let kid = kid.to_owned();
    tokio::task::spawn_blocking(move || {
        let private =
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS).expect("generate an RSA key");
        let der = private.to_pkcs1_der().expect("encode the RSA key");
        SigningKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            n: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
            kid,
        }
    })
    .await
    .expect("key generation finishes")
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let issuer = &shared.issuer;
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "name", "sub"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    shared.jwks_reads.fetch_add(1, Ordering::SeqCst);
    let state = shared.lock();
    let keys: Vec<Value> = state
        .published
        .iter()
        .map(|k| json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid, "n": k.n, "e": k.e }))
        .collect();
    Json(json!({ "keys": keys }))
}

/// Signs in the configured user at once and sends the browser back with `code` and `state`.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != shared.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    if field("response_type") != "code" || field("code_challenge_method") != "S256" {
        return (
            StatusCode::BAD_REQUEST,
            "response_type=code and code_challenge_method=S256 are required",
        )
            .into_response();
    }
    let Ok(mut redirect) = url::Url::parse(field("redirect_uri")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    let (challenge, state_param) = (field("code_challenge"), field("state"));
    if challenge.is_empty() || state_param.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "code_challenge and state are required",
        )
            .into_response();
    }
    let code = {
        let mut state = shared.lock();
        let mut claims = state.authorize_user.clone();
        claims.nonce = query.get("nonce").cloned();
        let id_token = shared.sign(&state, &claims);
        let code = random_token();
        state.codes.insert(
            code.clone(),
            IssuedCode {
                id_token,
                code_challenge: challenge.into(),
                redirect_uri: redirect.to_string(),
            },
        );
        code
    };
    redirect
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state_param);
    (
        StatusCode::FOUND,
        [(header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// The token endpoint: `client_secret_post` authentication, single-use codes, PKCE S256.
async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let mut state = shared.lock();
    if let Some(status) = state.token_failure {
        let error = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request"
        };
        return oauth_error(status, error, "told to fail");
    }
    if field("grant_type") != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    if field("client_id") != shared.client_id || field("client_secret") != shared.client_secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "bad client credentials",
        );
    }
    // A code is spent by any attempt, good or bad, as a real provider does.
    let Some(issued) = state.codes.remove(field("code")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if field("redirect_uri") != issued.redirect_uri {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs",
        );
    }
    if s256(field("code_verifier")) != issued.code_challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    Json(json!({
        "access_token": random_token(),
        "token_type": "Bearer",
        "expires_in": 3_600,
        "scope": "openid email profile",
        "id_token": issued.id_token,
    }))
    .into_response()
}
