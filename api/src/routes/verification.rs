//! Email verification and password reset, under `/api/auth`. The flows (codes, links,
//! lifetimes) live in [`hub_app::identity::verification`] and
//! [`hub_app::identity::password_reset`]; this module parses requests and maps answers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hub_app::identity::password_reset::{self, ResetToken};
use hub_app::identity::verification::{self, VerificationCode};
use hub_domain::{Email, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::auth::{required_password, UserEnvelope, UserView};
use crate::state::AppState;

/// `{"sent": true}`: a new code is on its way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Sent {
    pub sent: bool,
}

/// A message for people, when there is nothing else to say.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Notice {
    pub message: &'static str,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub code: Option<String>,
}

/// `POST /api/auth/verify-email` — the signed-in user, with the code from the email.
#[utoipa::path(
    post,
    path = "/api/auth/verify-email",
    tag = "auth",
    request_body = VerifyBody,
    responses((status = 200, description = "The address is verified", body = UserEnvelope), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Response, ApiError> {
    let code = VerificationCode::parse(body.code.as_deref().unwrap_or_default())
        .ok_or_else(|| ApiError::bad_request("invalid_code", "the code is six digits"))?;
    let id = UserId(caller.user);
    let user = verification::verify_email(&state, id, &code).await?;
    Ok(Json(UserEnvelope {
        user: UserView::of(id, &user),
    })
    .into_response())
}

/// `POST /api/auth/resend-verification` — the signed-in user whose email is not verified.
#[utoipa::path(
    post,
    path = "/api/auth/resend-verification",
    tag = "auth",
    responses((status = 202, description = "A new code is on its way", body = Sent), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn resend_verification(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    verification::resend(&state, UserId(caller.user)).await?;
    Ok((StatusCode::ACCEPTED, Json(Sent { sent: true })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotBody {
    pub email: Option<String>,
}

/// `POST /api/auth/forgot-password` — anyone. The same answer, at about the same time,
/// whether or not a user has the address (or it is an address at all): the work happens
/// after the answer.
#[utoipa::path(
    post,
    path = "/api/auth/forgot-password",
    tag = "auth",
    request_body = ForgotBody,
    responses((status = 202, description = "The same answer whether or not the address is known", body = Notice), crate::openapi::Errors),
)]
pub async fn forgot_password(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<ForgotBody>,
) -> Result<Response, ApiError> {
    let raw = body.email.unwrap_or_default();
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request("missing_field", "email is required"));
    }
    if let Ok(email) = Email::parse(&raw) {
        password_reset::request_link(state.clone(), email);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Notice {
            message: "if an account uses this address, a reset link is on its way",
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    pub token: Option<String>,
    pub password: Option<String>,
}

/// `POST /api/auth/reset-password` — anyone holding a reset link. Ends every session.
#[utoipa::path(
    post,
    path = "/api/auth/reset-password",
    tag = "auth",
    request_body = ResetBody,
    responses((status = 200, description = "The password is changed; every session ended", body = Notice), crate::openapi::Errors),
)]
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<ResetBody>,
) -> Result<Response, ApiError> {
    let token = ResetToken::parse(body.token.as_deref().unwrap_or_default())?;
    let password = required_password(body.password)?;
    password_reset::reset(&state, &token, password).await?;
    Ok(Json(Notice {
        message: "your password is changed; sign in again on every device",
    })
    .into_response())
}
