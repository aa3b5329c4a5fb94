//! `/api/auth`: registration, sign-in, the caller's profile, refresh and logout.
//!
//! The flows live in [`hub_app::identity`]; this module parses requests and maps answers.
//! Access tokens are short-lived JWTs (`auth.access_token_ttl_s`). Refresh tokens are
//! opaque and rotate on every use. A browser (a request with an `Origin` header, which
//! browsers send on every POST) gets its refresh token as an `HttpOnly; SameSite=Strict`
//! cookie scoped to `/api/auth`, never in the body; other clients get it in the body as
//! `refresh_token`. `/refresh` and `/logout` take it from either place.

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{COOKIE, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use hub_app::identity::registration::{self, NewAccount};
use hub_app::identity::sign_in::{self, Credentials, Refresh};
use hub_app::identity::Session;
use hub_app::queries::balances::Balance;
use hub_domain::{Email, Role, User, UserId};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The refresh-token cookie.
pub const REFRESH_COOKIE: &str = "aihub_refresh";

/// A user as the API shows it: never a password hash, never a secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    #[schema(value_type = Vec<crate::openapi::RoleName>)]
    pub roles: Vec<Role>,
    /// The most privileged role, for clients that show one.
    #[schema(value_type = crate::openapi::RoleName)]
    pub role: Role,
    pub has_password: bool,
    pub google_linked: bool,
    pub created_at: Option<DateTime<Utc>>,
}

impl UserView {
    pub fn of(id: UserId, user: &User) -> Self {
        let roles: Vec<Role> = user.roles().iter().copied().collect();
        let role = [Role::Admin, Role::Auditor, Role::Analyst]
            .into_iter()
            .find(|r| user.has_role(*r))
            .unwrap_or(Role::User);
        UserView {
            id: id.0,
            email: user.email().map(|e| e.as_str().to_string()),
            email_verified: user.email_verified(),
            display_name: user.display_name().map(|n| n.as_str().to_string()),
            roles,
            role,
            has_password: user.has_password(),
            google_linked: user.google_subject().is_some(),
            created_at: user.registered_at(),
        }
    }
}

/// `{"user": …}`: a user after a change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserEnvelope {
    pub user: UserView,
}

/// What a sign-in answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedIn {
    pub user: UserView,
    /// The access token (a JWT), for `Authorization: Bearer`.
    pub token: String,
    pub token_type: &'static str,
    /// Seconds until `token` expires.
    pub expires_in: u64,
    /// For clients that are not browsers; browsers get a cookie instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The client's address, for throttling.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<Arc<AppState>> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let auth = &state.settings.auth;
        if !auth.trust_forwarded_for {
            return Ok(ClientIp(peer));
        }
        // Every X-Forwarded-For header, in order, as one list.
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        Ok(ClientIp(
            forwarded_client(&forwarded, auth.trusted_proxies).or(peer),
        ))
    }
}

/// The client's address in an `X-Forwarded-For` list behind `proxies` trusted proxies, each
/// of which appends the address it was reached from: the entry `proxies` from the right.
/// Entries further left were written by the client and prove nothing; a list shorter than
/// `proxies`, or an entry that is no address, gives `None`.
fn forwarded_client(entries: &[&str], proxies: u32) -> Option<IpAddr> {
    let from_right = usize::try_from(proxies).ok()?;
    let index = entries.len().checked_sub(from_right)?;
    entries.get(index)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    #[test]
    fn the_client_is_the_entry_the_trusted_proxies_appended() {
        let list = ["6.6.6.6", " 203.0.113.7", " 10.0.0.2"];
        assert_eq!(forwarded_client(&list, 1), "10.0.0.2".parse().ok());
        assert_eq!(forwarded_client(&list, 2), "203.0.113.7".parse().ok());
        assert_eq!(forwarded_client(&list, 4), None, "shorter than the proxies");
        assert_eq!(forwarded_client(&["not-an-ip"], 1), None);
        assert_eq!(forwarded_client(&[], 1), None);
    }
}

fn is_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
}

pub(crate) fn refresh_cookie(state: &AppState, token: &str, max_age_s: u64) -> Option<HeaderValue> {
    let secure = if state.settings.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={token}; Path=/api/auth; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A session as HTTP: the body, and for a browser the refresh token as a cookie instead.
pub(crate) fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    session: Session,
    status: StatusCode,
) -> Response {
    let browser = is_browser(headers);
    let cookie = browser
        .then(|| {
            refresh_cookie(
                state,
                &session.refresh_token,
                state.settings.auth.refresh_token_ttl_s,
            )
        })
        .flatten();
    let body = SignedIn {
        user: UserView::of(session.user_id, &session.user),
        token: session.access_token,
        token_type: "Bearer",
        expires_in: session.expires_in,
        refresh_token: (!browser).then_some(session.refresh_token),
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

fn required<'a>(value: &'a Option<String>, field: &'static str) -> Result<&'a str, ApiError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::bad_request(
            "missing_field",
            format!("{field} is required"),
        )),
    }
}

/// The password of a body: refused when missing or empty (its strength is the app's rule).
pub(crate) fn required_password(value: Option<String>) -> Result<String, ApiError> {
    value
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing_field", "password is required"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub email: Option<String>,
    pub password: Option<String>,
    #[serde(alias = "firstName")]
    pub first_name: Option<String>,
    #[serde(alias = "lastName")]
    pub last_name: Option<String>,
    #[serde(alias = "displayName")]
    pub display_name: Option<String>,
}

impl RegisterBody {
    /// `display_name`, or else the first and last names joined.
    fn name(&self) -> Option<String> {
        if let Some(name) = &self.display_name {
            return Some(name.trim().to_string());
        }
        let joined = [&self.first_name, &self.last_name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (!joined.is_empty()).then_some(joined)
    }
}

/// `POST /api/auth/register` — anyone.
#[utoipa::path(
    post,
    path = "/api/auth/register",
    tag = "auth",
    request_body = RegisterBody,
    responses((status = 201, description = "Registered and signed in", body = SignedIn), crate::openapi::Errors),
)]
pub async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let email = Email::parse(required(&body.email, "email")?)
        .map_err(|e| ApiError::bad_request("invalid_email", e.to_string()))?;
    let display_name = body.name();
    let password = required_password(body.password)?;
    let account = NewAccount {
        email,
        password,
        display_name,
    };
    let session = registration::register(&state, account).await?;
    Ok(signed_in(&state, &headers, session, StatusCode::CREATED))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: Option<String>,
    pub password: Option<String>,
}

/// `POST /api/auth/login` — anyone. Wrong password and unknown user answer alike.
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses((status = 200, description = "Signed in", body = SignedIn), crate::openapi::Errors),
)]
pub async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let credentials = Credentials {
        email: required(&body.email, "email")?.to_lowercase(),
        password: required_password(body.password)?,
        client,
    };
    let session = sign_in::log_in(&state, credentials).await?;
    Ok(signed_in(&state, &headers, session, StatusCode::OK))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: UserView,
    pub credits: Balance,
}

/// `GET /api/auth/me` — any signed-in caller (their own profile).
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    responses((status = 200, description = "The caller's profile and balance", body = Me), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn me(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let profile = sign_in::profile(&state, UserId(caller.user)).await?;
    Ok(Json(Me {
        user: UserView::of(profile.user_id, &profile.user),
        credits: profile.credits,
    }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    #[serde(alias = "refreshToken")]
    pub refresh_token: Option<String>,
}

/// The refresh token from the body, or else from the cookie. The body is optional (cookie
/// clients send none).
fn presented_refresh(headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, ApiError> {
    let body: Option<RefreshBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    Ok(body
        .and_then(|b| b.refresh_token)
        .or_else(|| cookie_value(headers, REFRESH_COOKIE).map(str::to_string))
        .filter(|t| !t.is_empty()))
}

/// A response that also clears the refresh cookie.
fn clearing_cookie(state: &AppState, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Some(cookie) = refresh_cookie(state, "", 0) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// `POST /api/auth/refresh` — anyone holding a refresh token.
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    request_body = Option<RefreshBody>,
    responses((status = 200, description = "A new access token; the refresh token rotated", body = SignedIn), crate::openapi::Errors),
)]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let presented = presented_refresh(&headers, &body)?
        .ok_or(ApiError::unauthorized("missing refresh token"))?;
    Ok(match sign_in::refresh(&state, &presented).await? {
        Refresh::Rotated(session) => signed_in(&state, &headers, *session, StatusCode::OK),
        Refresh::Reused => clearing_cookie(
            &state,
            ApiError::unauthorized(
                "this refresh token was already used; every session it started is signed out",
            ),
        ),
        Refresh::Invalid => clearing_cookie(
            &state,
            ApiError::unauthorized("invalid or expired refresh token"),
        ),
    })
}

/// `POST /api/auth/logout` — anyone holding a refresh token: ends that sign-in. Access
/// tokens already issued stay valid until they expire (`auth.access_token_ttl_s`).
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    request_body = Option<RefreshBody>,
    responses((status = 204, description = "Signed out"), crate::openapi::Errors),
)]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if let Some(token) = presented_refresh(&headers, &body)? {
        sign_in::log_out(&state, &token).await?;
    }
    Ok(clearing_cookie(&state, StatusCode::NO_CONTENT))
}

/// `POST /api/auth/logout-all` — a signed-in person (not an API key): ends every session of
/// theirs at once. Every access token minted before it is refused from the next request and
/// every refresh token is revoked. API keys are not sessions: they stay until revoked.
#[utoipa::path(
    post,
    path = "/api/auth/logout-all",
    tag = "auth",
    responses((status = 204, description = "Every session ended"), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn logout_all(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let user = UserId(caller.user);
    sign_in::log_out_everywhere(&state, user, &caller.user.to_string()).await?;
    Ok(clearing_cookie(&state, StatusCode::NO_CONTENT))
}

/// What the sign-in page may offer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthOptions {
    /// Google sign-in is configured (`google.enabled`).
    pub google: bool,
    /// An unverified email address cannot spend credits (`auth.require_verified_email`).
    pub require_verified_email: bool,
}

/// `GET /api/auth/options`: what the sign-in and registration pages may offer.
#[utoipa::path(
    get,
    path = "/api/auth/options",
    tag = "auth",
    responses((status = 200, description = "What the sign-in page may offer", body = AuthOptions)),
)]
pub async fn options(State(state): State<Arc<AppState>>) -> Json<AuthOptions> {
    Json(AuthOptions {
        google: state.google.is_some(),
        require_verified_email: state.settings.auth.require_verified_email,
    })
}
