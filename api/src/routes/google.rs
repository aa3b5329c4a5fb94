//! Google sign-in: `GET /api/auth/google` and `GET /api/auth/google/callback`. The flow
//! (state, PKCE, nonce; sign in, link or register) lives in [`hub_app::identity::google`];
//! this module parses requests and maps answers.

use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_app::identity::google::{self, ProviderAnswer};
use serde::Deserialize;
use std::sync::Arc;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::auth::{cookie_value, refresh_cookie, signed_in};
use crate::state::AppState;

/// The cookie that binds a Google sign-in to the browser that started it.
pub const OIDC_COOKIE: &str = "aihub_oidc";

/// The browser-binding cookie: `HttpOnly`, scoped to the Google routes, `SameSite=Lax` (the
/// callback is a top-level navigation from Google, which `Strict` would strip).
fn oidc_cookie(state: &AppState, value: &str, max_age_s: i64) -> Result<HeaderValue, ApiError> {
    let secure = if state.settings.auth.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{OIDC_COOKIE}={value}; Path=/api/auth/google; Max-Age={max_age_s}; HttpOnly; SameSite=Lax{secure}"
    ))
    .map_err(ApiError::internal)
}

/// `GET /api/auth/google` — anyone. Redirects (302) to Google, and sets the cookie the
/// callback must come back with.
#[utoipa::path(
    get,
    path = "/api/auth/google",
    tag = "auth",
    responses((status = 302, description = "To Google's sign-in page"), crate::openapi::Errors),
)]
pub async fn start(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let started = google::begin(&state).await?;
    let location = HeaderValue::from_str(&started.url).map_err(ApiError::internal)?;
    let cookie = oidc_cookie(&state, &started.browser_nonce, google::LOGIN_TTL_S)?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(LOCATION, location);
    response.headers_mut().append(SET_COOKIE, cookie);
    Ok(response)
}

/// Whether the request is a browser's top-level navigation (it followed Google's
/// redirect), not a program calling the API.
fn is_navigation(headers: &HeaderMap) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    header("sec-fetch-mode") == "navigate" || header("accept").contains("text/html")
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by Google when the user declined or something failed there.
    pub error: Option<String>,
}

impl CallbackQuery {
    fn answer(self) -> ProviderAnswer {
        match self {
            CallbackQuery {
                error: Some(error), ..
            } => ProviderAnswer::Declined(error),
            CallbackQuery {
                code: Some(code),
                state: Some(state),
                ..
            } => ProviderAnswer::Code { code, state },
            _ => ProviderAnswer::Incomplete,
        }
    }
}

/// `GET /api/auth/google/callback` — the browser, sent back by Google, with the cookie
/// [`start`] set (refused without it: 400 `oidc_browser_mismatch`). The cookie is cleared.
#[utoipa::path(
    get,
    path = "/api/auth/google/callback",
    tag = "auth",
    params(CallbackQuery),
    responses((status = 302, description = "Back to the web app, signed in"), crate::openapi::Errors),
)]
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let browser_nonce = cookie_value(&headers, OIDC_COOKIE);
    let clear = oidc_cookie(&state, "", 0)?;
    let finished = google::finish(&state, query.answer(), browser_nonce).await;
    if is_navigation(&headers) {
        // The browser itself followed Google's redirect: it gets the refresh cookie and
        // goes back to the app, which opens the session from that cookie.
        let (location, cookie) = match finished {
            Ok(done) => (
                "/".to_string(),
                refresh_cookie(
                    &state,
                    &done.session.refresh_token,
                    state.settings.auth.refresh_token_ttl_s,
                ),
            ),
            Err(err) => (
                format!("/signin?error={}", ApiError::from(err).code()),
                None,
            ),
        };
        let mut response = StatusCode::FOUND.into_response();
        response.headers_mut().insert(
            LOCATION,
            HeaderValue::from_str(&location).map_err(ApiError::internal)?,
        );
        if let Some(cookie) = cookie {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        response.headers_mut().append(SET_COOKIE, clear);
        return Ok(response);
    }
    let mut response = match finished {
        Ok(done) => {
            let status = if done.registered {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            signed_in(&state, &headers, done.session, status)
        }
        Err(err) => ApiError::from(err).into_response(),
    };
    response.headers_mut().append(SET_COOKIE, clear);
    Ok(response)
}
