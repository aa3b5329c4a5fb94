//! Whether a credential still lets its holder in: checked on every authenticated request
//! and again on every chat an open WebSocket starts.
//!
//! A credential is an access token (a JWT, already verified for its signature) or an API
//! key (already found and matched by [`crate::keys::authenticate`]). Either is refused once
//! its user is suspended. An access token is also refused once it has expired or once its
//! user's session version has moved past the one it carries (a suspension, a revoked role, a
//! password reset or "log out everywhere" since it was minted); a key once it is revoked or
//! expired.
//!
//! The user is as the event store has it at every check, never a cached guess: a change
//! made by any process counts at the next request. The check looks up the sequence of the
//! user's last event (one index probe) and folds the user again only when it moved
//! ([`hub_commands::Users::current`]).

use chrono::{DateTime, Utc};
use hub_adapters::jwt::{Claims, EXP_LEEWAY_S};
use hub_commands::StoreError;
use hub_domain::{ApiKeyId, User, UserId};

use crate::hub::Hub;
use std::sync::Arc;

/// A credential that was accepted once and may be checked again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An access token: when it expires, and the session version it was minted at.
    AccessToken {
        expires_at: DateTime<Utc>,
        session_version: u32,
    },
    /// An API key of the user.
    ApiKey(ApiKeyId),
}

impl Credential {
    /// The credential an access token's claims describe.
    pub fn of_token(claims: &Claims) -> Credential {
        Credential::AccessToken {
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(DateTime::<Utc>::MIN_UTC),
            session_version: claims.sv,
        }
    }

    /// When the credential stops working by itself (an access token's expiry with the
    /// leeway the HTTP check allows); `None` for an API key, whose expiry is the owner's to
    /// change and is checked with the rest.
    pub fn ends_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Credential::AccessToken { expires_at, .. } => {
                Some(*expires_at + chrono::Duration::seconds(EXP_LEEWAY_S))
            }
            Credential::ApiKey(_) => None,
        }
    }
}

/// Why a credential that worked no longer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefused {
    /// The access token expired.
    #[error("the access token expired; refresh it or sign in again")]
    Expired,
    /// A suspension, a revoked role, a password reset or "log out everywhere" came after
    /// the access token was minted.
    #[error("this session was ended; refresh the token or sign in again")]
    SessionEnded,
    /// The API key was revoked or expired.
    #[error("the API key was revoked or expired")]
    KeyRefused,
    /// The user is suspended.
    #[error("this account is suspended")]
    Suspended,
}

/// Why a check could not be answered or refused the credential.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Refused(#[from] AccessRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `credential` of `user` lets them in now, against the user as the event store has
/// them now; the user as read, when they do.
pub async fn check(
    hub: &Hub,
    user: UserId,
    credential: &Credential,
) -> Result<Arc<User>, AccessError> {
    let now = hub.clock.now();
    // An expired token is refused without a read.
    if credential.ends_at().is_some_and(|end| end < now) {
        return Err(AccessRefused::Expired.into());
    }
    let current = hub.users.current(user).await?;
    judge(&current, credential, now)?;
    Ok(current)
}

/// The rule [`check`] applies to the user as loaded.
pub fn judge(
    user: &User,
    credential: &Credential,
    now: DateTime<Utc>,
) -> Result<(), AccessRefused> {
    if user.is_suspended() {
        return Err(AccessRefused::Suspended);
    }
    match credential {
        Credential::AccessToken {
            session_version, ..
        } => {
            if credential.ends_at().is_some_and(|end| end < now) {
                return Err(AccessRefused::Expired);
            }
            // A token minted for a user not registered yet (an admin's bootstrap token, a
            // test's) carries version 0, and so does that user: it passes.
            if *session_version < user.session_version() {
                return Err(AccessRefused::SessionEnded);
            }
        }
        Credential::ApiKey(key_id) => {
            let usable = user
                .api_key(*key_id)
                .is_some_and(|key| key.is_usable_at(now));
            if !usable {
                return Err(AccessRefused::KeyRefused);
            }
        }
    }
    Ok(())
}
