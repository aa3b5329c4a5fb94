//! Identity: who a user is and how they prove it — registration, sign-in and sessions,
//! email verification, password reset, Google sign-in.
//!
//! Each flow is one function taking typed inputs and answering a typed result or an
//! [`IdentityError`]; the HTTP adapter maps those (status, body, cookies). Time is the hub's
//! clock (`hub.clock`), so tests move it instead of sleeping.
//!
//! - [`registration`]: a new user with a password, and the sign-up grant.
//! - [`sign_in`]: password login (throttled), refresh-token rotation, logout, the profile.
//! - [`verification`]: the six-digit email code: send, verify, resend.
//! - [`password_reset`]: the reset link: request (mailed after the answer), reset.
//! - [`google`]: Google sign-in: the redirect, and the callback that signs in, links or
//!   registers.
//! - [`access`]: whether a credential (access token or API key) still lets its holder in:
//!   suspension, session version, expiry, revocation.
//! - [`ws_ticket`]: one-use tickets that open the chat WebSocket without a token in the URL.

pub mod access;
pub mod google;
pub mod password_reset;
pub mod registration;
pub mod sign_in;
pub mod verification;
pub mod ws_ticket;

use hub_adapters::oidc::OidcError;
use hub_commands::{CommandError, RegisterError, StoreError};
use hub_domain::{CreditError, Role, User, UserError, UserId};
use std::time::Duration;

use crate::hub::Hub;
use crate::sessions;

/// Why an identity flow did not do what was asked. Each variant is one answer the client
/// can tell apart; the HTTP adapter maps each to a status and an error code.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The password fails the strength rule; the message says which part.
    #[error(transparent)]
    WeakPassword(#[from] hub_adapters::secrets::WeakPassword),
    /// The display name is not acceptable; the message says why.
    #[error("{0}")]
    InvalidName(String),
    /// Another user has this email address.
    #[error("a user with this email address already exists")]
    EmailTaken,
    /// Wrong password or unknown user: the two answer alike.
    #[error("invalid email or password")]
    BadCredentials,
    /// Too many password checks are running at once; try again in a moment.
    #[error("too many sign-ins at once; try again in a moment")]
    Busy,
    /// Too many failed sign-ins for this account or address; wait this long.
    #[error("too many failed sign-ins; try again later")]
    SignInLocked(Duration),
    /// The user does not exist (or is not registered yet).
    #[error("no user with this id")]
    UserNotFound,
    /// The user is suspended: no sign-in, no refresh.
    #[error("this account is suspended")]
    Suspended,
    /// A verification code that is not the pending one.
    #[error("the code is wrong; {attempts_left} attempts left")]
    WrongCode { attempts_left: u32 },
    /// A code was sent less than [`verification::RESEND_MIN_INTERVAL`] ago; wait this long.
    #[error("a code was sent less than a minute ago")]
    ResendTooSoon(Duration),
    /// The reset link is malformed, unknown, or already used.
    #[error("the reset link is invalid or was already used")]
    InvalidResetToken,
    /// Google sign-in is not configured on this hub.
    #[error("Google sign-in is not configured on this hub")]
    GoogleNotConfigured,
    /// Google said it did not sign the user in (the provider's error code, sanitised).
    #[error("Google did not sign the user in ({0})")]
    GoogleDeclined(String),
    /// The callback lacks `code` or `state`.
    #[error("code and state are required")]
    GoogleCallbackIncomplete,
    /// The callback came to a browser without the cookie of the sign-in it names: not the
    /// browser that started it.
    #[error("this sign-in was started in another browser; start again here")]
    GoogleOtherBrowser,
    /// The sign-in's state is unknown, expired or already used.
    #[error("this sign-in is unknown, expired or already used; start again")]
    GoogleStateInvalid,
    /// Google's answer or ID token failed a check, or Google could not be reached.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error("Google gave no usable email")]
    GoogleEmailInvalid,
    #[error("Google gave no email address")]
    GoogleEmailMissing,
    /// Google does not vouch for the account's email.
    #[error("a Google account whose email Google has verified")]
    GoogleEmailUnverified,
    /// A user has this email but has not verified it: linking could hand the account over.
    #[error(
        "a user with this email exists but has not verified it; sign in with the password and \
         verify the email first, then use Google"
    )]
    EmailUnverifiedForLink,
    /// The user with this email already has another Google account.
    #[error("this user already has a different Google account")]
    OtherGoogleAccount,
    /// The email or Google account was registered by a concurrent sign-in.
    #[error("this email address or Google account was just registered; sign in again")]
    JustRegistered,
    /// A rule of the user aggregate refused the command.
    #[error(transparent)]
    User(#[from] CommandError<UserError>),
    /// The credit account could not be opened.
    #[error(transparent)]
    Credits(#[from] CommandError<CreditError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Anything else (token signing, hashing, mail): a 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IdentityError {
    fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        IdentityError::Internal(anyhow::Error::new(err))
    }
}

impl From<hub_adapters::secrets::PasswordWorkError> for IdentityError {
    fn from(err: hub_adapters::secrets::PasswordWorkError) -> Self {
        match err {
            hub_adapters::secrets::PasswordWorkError::Busy => IdentityError::Busy,
            hub_adapters::secrets::PasswordWorkError::Failed(err) => IdentityError::internal(err),
        }
    }
}

impl From<RegisterError> for IdentityError {
    fn from(err: RegisterError) -> Self {
        match err {
            RegisterError::Taken => IdentityError::EmailTaken,
            RegisterError::Command(err) => IdentityError::User(err),
            RegisterError::Credits(err) => IdentityError::Credits(err),
        }
    }
}

/// A signed-in user: an access token and the first refresh token of a new sign-in.
#[derive(Debug)]
pub struct Session {
    pub user_id: UserId,
    pub user: User,
    /// The access token (a JWT), for `Authorization: Bearer`.
    pub access_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    /// The opaque refresh token (rotates on every use).
    pub refresh_token: String,
}

/// Issue an access token and start a refresh family for `user`; a suspended user gets
/// neither.
pub(crate) async fn start_session(
    hub: &Hub,
    user_id: UserId,
    user: User,
) -> Result<Session, IdentityError> {
    if user.is_suspended() {
        return Err(IdentityError::Suspended);
    }
    let auth = &hub.settings.auth;
    let now = hub.clock.now();
    let access_token = access_token(hub, user_id, &user)?;
    let refresh_token =
        sessions::start(&hub.pool, user_id.0, seconds(auth.refresh_token_ttl_s), now).await?;
    Ok(Session {
        user_id,
        user,
        access_token,
        expires_in: auth.access_token_ttl_s,
        refresh_token,
    })
}

/// An access token carrying the user's roles and session version now.
fn access_token(hub: &Hub, user_id: UserId, user: &User) -> Result<String, IdentityError> {
    let roles: Vec<Role> = user.roles().iter().copied().collect();
    hub.jwt
        .mint_session_at(
            user_id.0,
            &roles,
            user.session_version(),
            hub.settings.auth.access_token_ttl_s,
            hub.clock.now(),
        )
        .map_err(IdentityError::internal)
}

/// A lifetime from settings (whole seconds), saturating rather than overflowing.
pub(crate) fn seconds(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1_000))
}

/// "15 minutes", "1 minute", "30 seconds": a lifetime as a mail says it.
pub(crate) fn duration_words(seconds: u64) -> String {
    let (n, unit) = if seconds >= 60 {
        (seconds.div_ceil(60), "minute")
    } else {
        (seconds, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_written_in_words_rounded_up_to_minutes() {
        assert_eq!(duration_words(30), "30 seconds");
        assert_eq!(duration_words(1), "1 second");
        assert_eq!(duration_words(60), "1 minute");
        assert_eq!(duration_words(61), "2 minutes");
        assert_eq!(duration_words(900), "15 minutes");
    }
}
