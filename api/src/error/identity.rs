//! Identity and API-key failures as HTTP: each [`IdentityError`] and [`KeyError`] variant to
//! its status and error code (the messages are the errors' own).

use hub_adapters::oidc::OidcError;
use hub_app::identity::access::{AccessError, AccessRefused};
use hub_app::identity::IdentityError;
use hub_app::keys::KeyError;
use hub_app::users::SuspensionError;

use super::ApiError;

impl From<IdentityError> for ApiError {
    fn from(err: IdentityError) -> Self {
        let message = err.to_string();
        match err {
            IdentityError::WeakPassword(_) => ApiError::bad_request("weak_password", message),
            IdentityError::InvalidName(_) => ApiError::bad_request("invalid_name", message),
            IdentityError::EmailTaken => ApiError::bad_request("email_taken", message),
            IdentityError::BadCredentials => ApiError::unauthorized("invalid email or password"),
            IdentityError::Busy => ApiError::busy(message),
            IdentityError::SignInLocked(wait) => {
                ApiError::too_many_requests("too many failed sign-ins; try again later", wait)
            }
            IdentityError::UserNotFound => ApiError::not_found(message),
            IdentityError::Suspended => suspended(),
            IdentityError::WrongCode { .. } => ApiError::bad_request("wrong_code", message),
            IdentityError::ResendTooSoon(wait) => {
                ApiError::too_many_requests("a code was sent less than a minute ago", wait)
            }
            IdentityError::InvalidResetToken => {
                ApiError::bad_request("invalid_reset_token", message)
            }
            IdentityError::GoogleNotConfigured => {
                ApiError::unavailable("Google sign-in is not configured on this hub")
            }
            IdentityError::GoogleDeclined(_) => {
                ApiError::unauthorized_code("google_sign_in_declined", message)
            }
            IdentityError::GoogleCallbackIncomplete => {
                ApiError::bad_request("missing_field", message)
            }
            IdentityError::GoogleStateInvalid => ApiError::bad_request("invalid_state", message),
            IdentityError::GoogleOtherBrowser => {
                ApiError::bad_request("oidc_browser_mismatch", message)
            }
            IdentityError::Oidc(err) => oidc_error(err),
            IdentityError::GoogleEmailInvalid => {
                ApiError::bad_request("google_email_invalid", message)
            }
            IdentityError::GoogleEmailMissing => {
                ApiError::bad_request("google_email_missing", message)
            }
            IdentityError::GoogleEmailUnverified => ApiError::forbidden(message),
            IdentityError::EmailUnverifiedForLink
            | IdentityError::OtherGoogleAccount
            | IdentityError::JustRegistered => ApiError::conflict(message),
            IdentityError::User(err) => err.into(),
            IdentityError::Credits(err) => err.into(),
            IdentityError::Store(err) => err.into(),
            IdentityError::Database(err) => err.into(),
            IdentityError::Internal(err) => ApiError::internal(err),
        }
    }
}

/// A provider failure is a 502 (try again); a refused answer or token is a 401. The details
/// go to the log only.
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

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::OwnerNotFound => ApiError::not_found("no user with this id"),
            KeyError::EmailNotVerified => ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "email_not_verified",
                "verify your email address before creating API keys",
            ),
            KeyError::Refused => ApiError::unauthorized("invalid, revoked or expired API key"),
            KeyError::OwnerSuspended => suspended(),
            KeyError::User(err) => err.into(),
            KeyError::Store(err) => err.into(),
            KeyError::Database(err) => err.into(),
            KeyError::Internal(err) => ApiError::internal(err),
        }
    }
}

/// A suspended user's credential, whichever it is: 403, so that clients do not refresh and
/// retry as they would after a 401.
pub(crate) fn suspended() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "account_suspended",
        "this account is suspended; contact an administrator",
    )
}

impl From<AccessError> for ApiError {
    fn from(err: AccessError) -> Self {
        match err {
            AccessError::Refused(refused) => refused.into(),
            AccessError::Store(err) => err.into(),
        }
    }
}

impl From<AccessRefused> for ApiError {
    fn from(refused: AccessRefused) -> Self {
        let message = refused.to_string();
        match refused {
            AccessRefused::Suspended => suspended(),
            AccessRefused::Expired => ApiError::unauthorized("invalid or expired token"),
            AccessRefused::SessionEnded => ApiError::unauthorized_code("session_ended", message),
            AccessRefused::KeyRefused => {
                ApiError::unauthorized("invalid, revoked or expired API key")
            }
        }
    }
}

impl From<SuspensionError> for ApiError {
    fn from(err: SuspensionError) -> Self {
        let message = err.to_string();
        match err {
            SuspensionError::UnknownUser => ApiError::not_found(message),
            SuspensionError::OwnAccount => ApiError::bad_request("own_account", message),
            SuspensionError::InvalidReason(_) => ApiError::bad_request("invalid_reason", message),
            SuspensionError::Command(err) => err.into(),
            SuspensionError::Store(err) => err.into(),
            SuspensionError::Database(err) => err.into(),
        }
    }
}
