//! `/api/auth`: registration, sign-in, the caller's profile, refresh and logout.
//!
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
use hub_commands::{RegisterError, Registration};
use hub_domain::{Credits, DisplayName, Email, Role, User, UserCommand, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::credits::{read_balance, Balance};
use crate::state::AppState;
use hub_adapters::secrets;
use hub_app::sessions::{self, Refreshed, ThrottlePolicy, ThrottleScope};

/// The refresh-token cookie.
pub const REFRESH_COOKIE: &str = "aihub_refresh";

/// A user as the API shows it: never a password hash, never a secret.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub email: Option<String>,
    pub email_verified: bool,
    pub display_name: Option<String>,
    pub roles: Vec<Role>,
    /// The most privileged role, for clients that show one.
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

/// What a sign-in answers.
#[derive(Debug, Serialize)]
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
        if state.settings.auth.trust_forwarded_for {
            let forwarded = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
            if forwarded.is_some() {
                return Ok(ClientIp(forwarded));
            }
        }
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

fn is_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(ORIGIN)
}

fn refresh_cookie(state: &AppState, token: &str, max_age_s: u64) -> Option<HeaderValue> {
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

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Issue an access token and start a refresh family for `user`.
pub(crate) async fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    id: UserId,
    user: &User,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let auth = &state.settings.auth;
    let roles: Vec<Role> = user.roles().iter().copied().collect();
    let token = state
        .jwt
        .mint(id.0, &roles, auth.access_token_ttl_s)
        .map_err(|e| ApiError::internal(e))?;
    let refresh = sessions::start(&state.pool, id.0, ttl(auth.refresh_token_ttl_s)).await?;
    let browser = is_browser(headers);
    let body = SignedIn {
        user: UserView::of(id, user),
        token,
        token_type: "Bearer",
        expires_in: auth.access_token_ttl_s,
        refresh_token: (!browser).then(|| refresh.clone()),
    };
    let mut response = (status, Json(body)).into_response();
    if browser {
        if let Some(cookie) = refresh_cookie(state, &refresh, auth.refresh_token_ttl_s) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    Ok(response)
}

fn ttl(seconds: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000))
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

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|e| ApiError::bad_request("invalid_email", e.to_string()))
}

#[derive(Debug, Deserialize)]
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

/// `POST /api/auth/register` — anyone.
pub async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, ApiError> {
    let email = parse_email(required(&body.email, "email")?)?;
    let password = body.password.clone().unwrap_or_default();
    if password.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "password is required",
        ));
    }
    secrets::check_strength(&password, email.as_str())
        .map_err(|e| ApiError::bad_request("weak_password", e.to_string()))?;
    let name = match &body.display_name {
        Some(name) => Some(name.trim().to_string()),
        None => {
            let joined = [&body.first_name, &body.last_name]
                .into_iter()
                .flatten()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (!joined.is_empty()).then_some(joined)
        }
    };
    let display_name = name
        .filter(|n| !n.is_empty())
        .map(DisplayName::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let password_hash = secrets::hash_password(password)
        .await
        .map_err(|e| ApiError::internal(e))?;
    let registration = Registration {
        command: UserCommand::RegisterUser {
            email,
            password_hash: Some(password_hash),
            display_name,
            roles: BTreeSet::from([Role::User]),
            google_subject: None,
            email_verified: false,
            now: Utc::now(),
        },
        signup_grant: Credits::from_micros(state.settings.auth.signup_grant_micros),
    };
    let (id, user) = match state.users.register(&state.credits, registration).await {
        Ok(registered) => registered,
        Err(RegisterError::Taken) => {
            return Err(ApiError::bad_request(
                "email_taken",
                "a user with this email address already exists",
            ))
        }
        Err(RegisterError::Command(err)) => return Err(err.into()),
        Err(RegisterError::Credits(err)) => return Err(err.into()),
    };
    tracing::info!(user = %id, "user registered");
    crate::routes::verification::send_code(&state, id, &user).await;
    sign_in(&state, &headers, id, &user, StatusCode::CREATED).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: Option<String>,
    pub password: Option<String>,
}

const BAD_CREDENTIALS: ApiError = ApiError::unauthorized("invalid email or password");

/// `POST /api/auth/login` — anyone. Wrong password and unknown user answer alike.
pub async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let raw_email = required(&body.email, "email")?.to_lowercase();
    let password = body.password.clone().unwrap_or_default();
    if password.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "password is required",
        ));
    }
    let auth = &state.settings.auth;
    let ip_key = ip.map(|ip| ip.to_string());
    let mut keys = vec![(
        ThrottleScope::Account,
        raw_email.clone(),
        auth.login_free_failures_account,
    )];
    if let Some(ip) = &ip_key {
        keys.push((ThrottleScope::Ip, ip.clone(), auth.login_free_failures_ip));
    }
    for (scope, key, _) in &keys {
        if let Some(wait) = sessions::locked_for(&state.pool, *scope, key).await? {
            return Err(ApiError::too_many_requests(
                "too many failed sign-ins; try again later",
                wait,
            ));
        }
    }
    let found = match Email::parse(&raw_email) {
        Ok(email) => state.users.find_by_email(&email).await?,
        Err(_) => None,
    };
    let hash = found
        .as_ref()
        .and_then(|(_, user)| user.password_hash().cloned());
    if !secrets::verify_password(password, hash).await {
        for (scope, key, free) in &keys {
            let policy = ThrottlePolicy {
                free_failures: *free,
                window: ttl(auth.login_window_s),
                lock_max: ttl(auth.login_lock_max_s),
            };
            sessions::failed(&state.pool, *scope, key, policy).await?;
        }
        return Err(BAD_CREDENTIALS);
    }
    let Some((id, user)) = found else {
        return Err(BAD_CREDENTIALS);
    };
    sessions::succeeded(&state.pool, ThrottleScope::Account, &raw_email).await?;
    sign_in(&state, &headers, id, &user, StatusCode::OK).await
}

#[derive(Debug, Serialize)]
pub struct Me {
    pub user: UserView,
    pub credits: Balance,
}

/// `GET /api/auth/me` — any signed-in caller (their own profile).
pub async fn me(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let id = UserId(caller.user);
    let user = state.users.load(id).await?;
    if !user.is_registered() {
        return Err(ApiError::not_found("no user with this id"));
    }
    Ok(Json(Me {
        user: UserView::of(id, &user),
        credits: read_balance(&state.pool, caller.user).await?,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    #[serde(alias = "refreshToken")]
    pub refresh_token: Option<String>,
}

fn presented_refresh(headers: &HeaderMap, body: Option<&RefreshBody>) -> Option<String> {
    body.and_then(|b| b.refresh_token.clone())
        .or_else(|| cookie_value(headers, REFRESH_COOKIE).map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// A JSON body that may be absent (cookie clients send none).
fn optional_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
}

fn clear_cookie(state: &AppState, response: &mut Response) {
    if let Some(cookie) = refresh_cookie(state, "", 0) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
}

/// `POST /api/auth/refresh` — anyone holding a refresh token.
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = optional_json::<RefreshBody>(&body)?;
    let presented = presented_refresh(&headers, body.as_ref())
        .ok_or(ApiError::unauthorized("missing refresh token"))?;
    let auth = &state.settings.auth;
    let (user_id, next) =
        match sessions::rotate(&state.pool, &presented, ttl(auth.refresh_token_ttl_s)).await? {
            Refreshed::Rotated { user, token } => (UserId(user), token),
            Refreshed::Reused => {
                let mut response = ApiError::unauthorized(
                    "this refresh token was already used; every session it started is signed out",
                )
                .into_response();
                clear_cookie(&state, &mut response);
                return Ok(response);
            }
            Refreshed::Invalid => {
                let mut response =
                    ApiError::unauthorized("invalid or expired refresh token").into_response();
                clear_cookie(&state, &mut response);
                return Ok(response);
            }
        };
    let user = state.users.load(user_id).await?;
    let roles: Vec<Role> = user.roles().iter().copied().collect();
    let token = state
        .jwt
        .mint(user_id.0, &roles, auth.access_token_ttl_s)
        .map_err(|e| ApiError::internal(e))?;
    let browser = is_browser(&headers);
    let mut response = Json(SignedIn {
        user: UserView::of(user_id, &user),
        token,
        token_type: "Bearer",
        expires_in: auth.access_token_ttl_s,
        refresh_token: (!browser).then(|| next.clone()),
    })
    .into_response();
    if browser {
        if let Some(cookie) = refresh_cookie(&state, &next, auth.refresh_token_ttl_s) {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
    }
    Ok(response)
}

/// `POST /api/auth/logout` — anyone holding a refresh token: ends that sign-in. Access
/// tokens already issued stay valid until they expire (`auth.access_token_ttl_s`).
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = optional_json::<RefreshBody>(&body)?;
    if let Some(token) = presented_refresh(&headers, body.as_ref()) {
        sessions::end(&state.pool, &token).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    clear_cookie(&state, &mut response);
    Ok(response)
}
