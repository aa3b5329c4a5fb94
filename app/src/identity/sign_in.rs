//! Signing in with a password (throttled per account and per client address), refresh-token
//! rotation, logout, and the signed-in user's profile.

use hub_domain::{Email, User, UserCommand, UserId};
use std::net::IpAddr;

use super::{access_token, seconds, start_session, IdentityError, Session};
use crate::hub::Hub;
use crate::sessions::{self, ThrottlePolicy, ThrottleScope};

/// Longest email a sign-in considers, in characters (RFC 5321 allows 254).
pub const EMAIL_INPUT_LEN_MAX: usize = 254;

/// A password sign-in attempt.
#[derive(Debug)]
pub struct Credentials {
    /// The email as typed, trimmed and lower-cased: the throttle's account key, whether or
    /// not it is a valid address or has a user.
    pub email: String,
    /// Not empty (the adapter refuses a missing one).
    pub password: String,
    /// The client's address, throttled too when known.
    pub client: Option<IpAddr>,
}

/// Sign in with a password. A wrong password and an unknown user answer alike
/// ([`IdentityError::BadCredentials`]) and both count against the throttle.
pub async fn log_in(hub: &Hub, credentials: Credentials) -> Result<Session, IdentityError> {
    let Credentials {
        email: raw_email,
        password,
        client,
    } = credentials;
    // Longer than any address can be: no account's key, and never worth a password check.
    if raw_email.chars().count() > EMAIL_INPUT_LEN_MAX {
        return Err(IdentityError::BadCredentials);
    }
    let auth = &hub.settings.auth;
    let mut keys = vec![(
        ThrottleScope::Account,
        raw_email.clone(),
        auth.login_free_failures_account,
    )];
    if let Some(ip) = client {
        keys.push((
            ThrottleScope::Ip,
            ip.to_string(),
            auth.login_free_failures_ip,
        ));
    }
    let now = hub.clock.now();
    // Each key counts this attempt before the password is checked, in the same statement
    // that checks its lock.
    for (scope, key, free) in &keys {
        let policy = ThrottlePolicy {
            free_failures: *free,
            window: seconds(auth.login_window_s),
            lock_max: seconds(auth.login_lock_max_s),
        };
        if let Some(wait) = sessions::attempt(&hub.pool, *scope, key, policy, now).await? {
            return Err(IdentityError::SignInLocked(wait));
        }
    }
    let found = match Email::parse(&raw_email) {
        Ok(email) => hub.users.find_by_email(&email).await?,
        Err(_) => None,
    };
    let hash = found
        .as_ref()
        .and_then(|(_, user)| user.password_hash().cloned());
    if !hub.passwords.verify(password, hash).await? {
        return Err(IdentityError::BadCredentials);
    }
    let Some((id, user)) = found else {
        return Err(IdentityError::BadCredentials);
    };
    for (scope, key, _) in &keys {
        sessions::forgive(&hub.pool, *scope, key).await?;
    }
    start_session(hub, id, user).await
}

/// What presenting a refresh token gave.
#[derive(Debug)]
pub enum Refresh {
    /// A new access token and the refresh token's successor (same sign-in).
    Rotated(Box<Session>),
    /// The token had already been used: every session it started is now signed out.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// Exchange a refresh token for a new access token and its successor.
pub async fn refresh(hub: &Hub, presented: &str) -> Result<Refresh, IdentityError> {
    let ttl = seconds(hub.settings.auth.refresh_token_ttl_s);
    let (user_id, next) = match sessions::rotate(&hub.pool, presented, ttl, hub.clock.now()).await?
    {
        sessions::Refreshed::Rotated { user, token } => (UserId(user), token),
        sessions::Refreshed::Reused => return Ok(Refresh::Reused),
        sessions::Refreshed::Invalid => return Ok(Refresh::Invalid),
    };
    let user = hub.users.load(user_id).await?;
    if user.is_suspended() {
        // Suspending revoked every family; one that escaped (a crash in between) ends now.
        sessions::end_all(&hub.pool, user_id.0, hub.clock.now()).await?;
        return Err(IdentityError::Suspended);
    }
    Ok(Refresh::Rotated(Box::new(Session {
        access_token: access_token(hub, user_id, &user)?,
        expires_in: hub.settings.auth.access_token_ttl_s,
        user_id,
        user,
        refresh_token: next,
    })))
}

/// End the sign-in `presented` belongs to. Unknown tokens are ignored. Access tokens already
/// issued stay valid until they expire ([`log_out_everywhere`] ends those too).
pub async fn log_out(hub: &Hub, presented: &str) -> Result<(), IdentityError> {
    sessions::end(&hub.pool, presented, hub.clock.now()).await?;
    Ok(())
}

/// End every session of `user` at once: their access tokens are refused from the next
/// request (the event raises their session version) and every refresh token is revoked.
/// `by` is who asked (the user's own id, or an admin's). API keys are not sessions: they
/// stay until revoked.
pub async fn log_out_everywhere(hub: &Hub, user: UserId, by: &str) -> Result<u64, IdentityError> {
    let now = hub.clock.now();
    // Refresh tokens are revoked before the event and again after it: a refresh racing the
    // event either finds its token revoked or is revoked with the rest, and a crash after the
    // event leaves no family behind that the event did not end.
    sessions::end_all(&hub.pool, user.0, now).await?;
    let command = UserCommand::EndSessions {
        by: by.to_string(),
        now,
    };
    match hub.users.execute(user, command, by).await {
        Ok(_) => {}
        Err(hub_commands::CommandError::Rejected(hub_domain::UserError::NotRegistered)) => {
            return Err(IdentityError::UserNotFound)
        }
        Err(err) => return Err(err.into()),
    }
    let ended = sessions::end_all(&hub.pool, user.0, now).await?;
    tracing::info!(%user, sessions_ended = ended, "every session ended");
    Ok(ended)
}

/// The signed-in user's own profile.
#[derive(Debug)]
pub struct Profile {
    pub user_id: UserId,
    pub user: User,
    pub credits: crate::queries::balances::Balance,
}

/// The profile of `user_id`, with their balance.
pub async fn profile(hub: &Hub, user_id: UserId) -> Result<Profile, IdentityError> {
    let user = hub.users.load(user_id).await?;
    if !user.is_registered() {
        return Err(IdentityError::UserNotFound);
    }
    Ok(Profile {
        user_id,
        user,
        credits: crate::queries::balances::balance(&hub.pool, user_id.0).await?,
    })
}
