//! Email verification and password reset, under `/api/auth`.
//!
//! - A verification code is six digits, stored as an HMAC (see [`hub_adapters::secrets`]), expiring
//!   after `auth.verification_code_ttl_s` and allowing `auth.verification_attempts` wrong
//!   guesses; a new code replaces the old one.
//! - A reset link carries `<user id>.<256-bit token>`; the token is stored as SHA-256, used
//!   once, expires after `auth.reset_token_ttl_s`, and a reset ends every session of the
//!   user. `forgot-password` answers the same whether or not the address has a user.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Duration, Utc};
use hub_commands::CommandError;
use hub_domain::{Email, User, UserCommand, UserError, UserEvent, UserId};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::auth::UserView;
use crate::state::AppState;
use hub_adapters::mail::OutgoingMail;
use hub_adapters::secrets;
use hub_app::sessions;

/// A new code is not sent more often than this.
const RESEND_MIN_INTERVAL: Duration = Duration::seconds(60);

/// Issue a new verification code and mail it. Failures are logged, not returned: the user
/// can ask again (`resend-verification`).
pub async fn send_code(state: &AppState, id: UserId, user: &User) {
    if let Err(err) = try_send_code(state, id, user).await {
        tracing::warn!(user = %id, error = %err, "could not send the verification code");
    }
}

async fn try_send_code(state: &AppState, id: UserId, user: &User) -> Result<(), ApiError> {
    let Some(email) = user.email() else {
        return Ok(());
    };
    if user.email_verified() {
        return Ok(());
    }
    let auth = &state.settings.auth;
    let code = secrets::six_digit_code();
    let now = Utc::now();
    let command = UserCommand::IssueVerificationCode {
        code_hash: secrets::code_hash(&auth.jwt_secret, id.0, &code),
        expires_at: now + seconds(auth.verification_code_ttl_s),
        attempts_allowed: auth.verification_attempts,
        now,
    };
    state.users.execute(id, command, "system").await?;
    let within = duration_words(auth.verification_code_ttl_s);
    state
        .mailer
        .send(OutgoingMail {
            to: email.as_str().to_string(),
            subject: "Your Smart AI Hub verification code".into(),
            text: format!(
                "Your verification code is {code}\n\n\
                 Enter it in Smart AI Hub within {within} to verify this address.\n\
                 If you did not create an account, ignore this message.\n"
            ),
        })
        .await
        .map_err(|e| ApiError::internal(e))?;
    Ok(())
}

/// "15 minutes", "1 minute", "30 seconds".
fn duration_words(seconds: u64) -> String {
    let (n, unit) = if seconds >= 60 {
        (seconds.div_ceil(60), "minute")
    } else {
        (seconds, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn seconds(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub code: Option<String>,
}

/// `POST /api/auth/verify-email` — the signed-in user, with the code from the email.
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Response, ApiError> {
    let code = body.code.unwrap_or_default();
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_code",
            "the code is six digits",
        ));
    }
    let id = UserId(caller.user);
    let command = UserCommand::VerifyEmail {
        code_hash: secrets::code_hash(&state.settings.auth.jwt_secret, id.0, code),
        now: Utc::now(),
    };
    let committed = state.users.execute(id, command, &id.to_string()).await?;
    if let Some(UserEvent::EmailVerificationFailed { attempts_left }) = committed.events.last() {
        return Err(ApiError::bad_request(
            "wrong_code",
            format!("the code is wrong; {attempts_left} attempts left"),
        ));
    }
    let user = state.users.load(id).await?;
    Ok(Json(json!({ "user": UserView::of(id, &user) })).into_response())
}

/// `POST /api/auth/resend-verification` — the signed-in user whose email is not verified.
pub async fn resend_verification(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = UserId(caller.user);
    let user = state.users.load(id).await?;
    if !user.is_registered() {
        return Err(ApiError::not_found("no user with this id"));
    }
    if user.email_verified() {
        return Err(ApiError::from(CommandError::Rejected(
            UserError::EmailAlreadyVerified,
        )));
    }
    if let Some(pending) = user.pending_verification() {
        let next = pending.issued_at() + RESEND_MIN_INTERVAL;
        let now = Utc::now();
        if next > now {
            return Err(ApiError::too_many_requests(
                "a code was sent less than a minute ago",
                (next - now).to_std().unwrap_or_default(),
            ));
        }
    }
    try_send_code(&state, id, &user).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "sent": true }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgotBody {
    pub email: Option<String>,
}

/// `POST /api/auth/forgot-password` — anyone. The same answer, at about the same time,
/// whether or not a user has the address: the work happens after the answer.
pub async fn forgot_password(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<ForgotBody>,
) -> Result<Response, ApiError> {
    let raw = body.email.unwrap_or_default();
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request("missing_field", "email is required"));
    }
    if let Ok(email) = Email::parse(&raw) {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = send_reset_link(&state, &email).await {
                tracing::warn!(error = %err, "could not send a password-reset link");
            }
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message": "if an account uses this address, a reset link is on its way"
        })),
    )
        .into_response())
}

async fn send_reset_link(state: &AppState, email: &Email) -> Result<(), ApiError> {
    let Some((id, user)) = state.users.find_by_email(email).await? else {
        return Ok(());
    };
    let now = Utc::now();
    if user
        .pending_password_reset()
        .is_some_and(|p| p.requested_at() + RESEND_MIN_INTERVAL > now)
    {
        return Ok(()); // One link a minute is plenty; the answer stays the same.
    }
    let auth = &state.settings.auth;
    let secret = secrets::opaque_token();
    let command = UserCommand::RequestPasswordReset {
        token_hash: secrets::sha256_hash(&secret),
        expires_at: now + seconds(auth.reset_token_ttl_s),
        now,
    };
    state.users.execute(id, command, "system").await?;
    let token = format!("{}.{secret}", id.0.simple());
    let link = format!(
        "{}/reset-password?token={token}",
        auth.public_url.trim_end_matches('/')
    );
    let within = duration_words(auth.reset_token_ttl_s);
    state
        .mailer
        .send(OutgoingMail {
            to: email.as_str().to_string(),
            subject: "Reset your Smart AI Hub password".into(),
            text: format!(
                "Someone asked to reset the password of this Smart AI Hub account.\n\n\
                 To choose a new password, open this link within {within}:\n{link}\n\n\
                 The link works once. If you did not ask, ignore this message: \
                 your password stays as it is.\n"
            ),
        })
        .await
        .map_err(|e| ApiError::internal(e))?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    pub token: Option<String>,
    pub password: Option<String>,
}

const BAD_RESET: &str = "the reset link is invalid or was already used";

/// `POST /api/auth/reset-password` — anyone holding a reset link. Ends every session.
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<ResetBody>,
) -> Result<Response, ApiError> {
    let token = body.token.unwrap_or_default();
    let (user_part, secret) = token
        .trim()
        .split_once('.')
        .ok_or_else(|| ApiError::bad_request("invalid_reset_token", BAD_RESET))?;
    let id = Uuid::parse_str(user_part)
        .map(UserId)
        .map_err(|_| ApiError::bad_request("invalid_reset_token", BAD_RESET))?;
    let password = body.password.unwrap_or_default();
    if password.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "password is required",
        ));
    }
    let user = state.users.load(id).await?;
    let Some(email) = user.email() else {
        return Err(ApiError::bad_request("invalid_reset_token", BAD_RESET));
    };
    secrets::check_strength(&password, email.as_str())
        .map_err(|e| ApiError::bad_request("weak_password", e.to_string()))?;
    let password_hash = secrets::hash_password(password)
        .await
        .map_err(|e| ApiError::internal(e))?;
    let command = UserCommand::ResetPassword {
        token_hash: secrets::sha256_hash(secret),
        password_hash,
        now: Utc::now(),
    };
    state.users.execute(id, command, "password-reset").await?;
    let ended = sessions::end_all(&state.pool, id.0).await?;
    tracing::info!(user = %id, sessions_ended = ended, "password reset");
    Ok(Json(json!({
        "message": "your password is changed; sign in again on every device"
    }))
    .into_response())
}
