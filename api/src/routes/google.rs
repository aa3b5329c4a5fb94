//! Google sign-in: `GET /api/auth/google` and `GET /api/auth/google/callback`.
//!
//! The first redirects to Google with PKCE, state and nonce, kept server-side in
//! `oidc_logins` for ten minutes and usable once. The callback checks the state, exchanges
//! the code and verifies the ID token ([`hub_adapters::oidc`]), then:
//! - a Google account seen before signs its user in;
//! - otherwise a verified Google email that matches a user whose own email is verified
//!   links the Google account to that user (an unverified match is refused: whoever
//!   registered it may not own the address);
//! - otherwise a new user is registered, with a verified email and no password.

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hub_commands::{RegisterError, Registration};
use hub_domain::{Credits, DisplayName, Email, GoogleSubject, Role, UserCommand};
use serde::Deserialize;
use sqlx::Row;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::auth::sign_in;
use crate::state::AppState;
use hub_adapters::oidc::{GoogleOidc, OidcError};

/// How long a sign-in may take between the redirect and the callback.
const LOGIN_TTL_S: i64 = 600;

fn google(state: &AppState) -> Result<&GoogleOidc, ApiError> {
    state.google.as_ref().ok_or(ApiError::unavailable(
        "Google sign-in is not configured on this hub",
    ))
}

fn oidc_error(err: OidcError) -> ApiError {
    if err.is_provider_failure() {
        tracing::warn!(error = %err, "Google sign-in failed at the provider");
        return ApiError::bad_gateway(
            err.code(),
            "Google could not be reached or answered badly; try again",
        );
    }
    tracing::info!(error = %err, "Google sign-in refused");
    ApiError::unauthorized_code(err.code(), "the Google sign-in could not be verified")
}

/// `GET /api/auth/google` — anyone. Redirects (302) to Google.
pub async fn start(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let google = google(&state)?;
    let request = google.begin().await.map_err(oidc_error)?;
    // Old, never-finished sign-ins go as new ones come.
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at < clock_timestamp()")
        .execute(&state.pool)
        .await?;
    sqlx::query(
        "INSERT INTO oidc_logins (state, nonce, pkce_verifier, expires_at)
         VALUES ($1, $2, $3, clock_timestamp() + $4 * interval '1 second')",
    )
    .bind(&request.state)
    .bind(&request.nonce)
    .bind(&request.pkce_verifier)
    .bind(LOGIN_TTL_S)
    .execute(&state.pool)
    .await?;
    let mut response = StatusCode::FOUND.into_response();
    let location =
        axum::http::HeaderValue::from_str(&request.url).map_err(|e| ApiError::internal(e))?;
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by Google when the user declined or something failed there.
    pub error: Option<String>,
}

/// `GET /api/auth/google/callback` — the browser, sent back by Google.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let google = google(&state)?;
    if let Some(error) = &query.error {
        let error: String = error
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        return Err(ApiError::unauthorized_code(
            "google_sign_in_declined",
            format!("Google did not sign the user in ({error})"),
        ));
    }
    let (Some(code), Some(login_state)) = (&query.code, &query.state) else {
        return Err(ApiError::bad_request(
            "missing_field",
            "code and state are required",
        ));
    };
    // Single use: the row goes whether or not the rest succeeds.
    let row = sqlx::query(
        "DELETE FROM oidc_logins WHERE state = $1 AND expires_at > clock_timestamp()
         RETURNING nonce, pkce_verifier",
    )
    .bind(login_state)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(|| {
        ApiError::bad_request(
            "invalid_state",
            "this sign-in is unknown, expired or already used; start again",
        )
    })?;
    let nonce: String = row.try_get("nonce")?;
    let verifier: String = row.try_get("pkce_verifier")?;
    let identity = google
        .finish(code, &verifier, &nonce)
        .await
        .map_err(oidc_error)?;
    let subject = GoogleSubject::parse(identity.subject.clone())
        .map_err(|_| oidc_error(OidcError::Malformed("the subject is not usable")))?;

    // 1. A Google account seen before.
    if let Some((id, user)) = state.users.find_by_google(&subject).await? {
        return sign_in(&state, &headers, id, &user, StatusCode::OK).await;
    }
    let email = identity
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(|_| ApiError::bad_request("google_email_invalid", "Google gave no usable email"))?
        .ok_or_else(|| {
            ApiError::bad_request("google_email_missing", "Google gave no email address")
        })?;
    if !identity.email_verified {
        return Err(ApiError::forbidden(
            "a Google account whose email Google has verified",
        ));
    }

    // 2. An existing user with this address.
    if let Some((id, user)) = state.users.find_by_email(&email).await? {
        if !user.email_verified() {
            return Err(ApiError::conflict(
                "a user with this email exists but has not verified it; sign in with the \
                 password and verify the email first, then use Google",
            ));
        }
        if state.users.claim_google(&subject, id).await? != Some(id) {
            return Err(ApiError::conflict(
                "this user already has a different Google account",
            ));
        }
        let link = UserCommand::LinkGoogleAccount { subject };
        state.users.execute(id, link, "google").await?;
        let user = state.users.load(id).await?;
        tracing::info!(user = %id, "Google account linked");
        return sign_in(&state, &headers, id, &user, StatusCode::OK).await;
    }

    // 3. A new user.
    let display_name = identity
        .name
        .as_deref()
        .and_then(|n| DisplayName::parse(n).ok());
    let registration = Registration {
        command: UserCommand::RegisterUser {
            email,
            password_hash: None,
            display_name,
            roles: BTreeSet::from([Role::User]),
            google_subject: Some(subject),
            email_verified: true,
            now: Utc::now(),
        },
        signup_grant: Credits::from_micros(state.settings.auth.signup_grant_micros),
    };
    match state.users.register(&state.credits, registration).await {
        Ok((id, user)) => {
            tracing::info!(user = %id, "user registered with Google");
            sign_in(&state, &headers, id, &user, StatusCode::CREATED).await
        }
        Err(RegisterError::Taken) => Err(ApiError::conflict(
            "this email address or Google account was just registered; sign in again",
        )),
        Err(RegisterError::Command(err)) => Err(err.into()),
        Err(RegisterError::Credits(err)) => Err(err.into()),
    }
}
