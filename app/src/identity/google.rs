//! Google sign-in. [`begin`] makes the redirect to Google with PKCE, state and nonce, kept
//! server-side in `oidc_logins` for [`LOGIN_TTL_S`] and usable once, and a browser nonce
//! (256 random bits, stored as SHA-256) that the API gives the browser as a cookie. [`finish`]
//! checks the state and that the browser presenting it holds the matching cookie (so a
//! callback URL carrying someone else's sign-in cannot sign a victim's browser into the
//! attacker's account), exchanges the code and verifies the ID token
//! ([`hub_adapters::oidc`]), then:
//! - a Google account seen before signs its user in;
//! - otherwise a verified Google email that matches a user whose own email is verified
//!   links the Google account to that user (an unverified match is refused: whoever
//!   registered it may not own the address);
//! - otherwise a new user is registered, with a verified email and no password.

use hub_adapters::oidc::{GoogleOidc, OidcError};
use hub_commands::{RegisterError, Registration};
use hub_domain::{Credits, DisplayName, Email, GoogleSubject, Role, UserCommand};
use sqlx::Row;
use std::collections::BTreeSet;

use super::{start_session, IdentityError, Session};
use crate::hub::Hub;

/// How long a sign-in may take between the redirect and the callback, in seconds.
pub const LOGIN_TTL_S: i64 = 600;

/// The longest provider error code kept from a declined sign-in, in characters.
const PROVIDER_ERROR_LEN_MAX: usize = 64;

fn google(hub: &Hub) -> Result<&GoogleOidc, IdentityError> {
    hub.google
        .as_ref()
        .ok_or(IdentityError::GoogleNotConfigured)
}

/// A sign-in just started: where to send the browser, and the nonce the browser must hold
/// (as a cookie) when it comes back.
#[derive(Debug)]
pub struct Started {
    pub url: String,
    pub browser_nonce: String,
}

/// Start a sign-in: remember its state, nonce, PKCE verifier and the hash of a browser
/// nonce; answers the URL at Google to send the browser to, and the browser nonce.
pub async fn begin(hub: &Hub) -> Result<Started, IdentityError> {
    let google = google(hub)?;
    let request = google.begin().await?;
    let now = hub.clock.now();
    // Old, never-finished sign-ins go as new ones come, and no more than
    // `auth.oidc_pending_max` are kept at once: anonymous starts cannot grow the table.
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
        .bind(now)
        .execute(&hub.pool)
        .await?;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM oidc_logins")
        .fetch_one(&hub.pool)
        .await?;
    if u64::try_from(pending).unwrap_or(0) >= hub.settings.auth.oidc_pending_max {
        tracing::warn!(
            pending,
            "refused a Google sign-in: too many started and not finished"
        );
        return Err(IdentityError::Busy);
    }
    let browser_nonce = hub_adapters::secrets::opaque_token();
    sqlx::query(
        "INSERT INTO oidc_logins (state, nonce, pkce_verifier, expires_at, browser_hash)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&request.state)
    .bind(&request.nonce)
    .bind(&request.pkce_verifier)
    .bind(now + chrono::Duration::seconds(LOGIN_TTL_S))
    .bind(hub_adapters::secrets::sha256_hash(&browser_nonce).as_str())
    .execute(&hub.pool)
    .await?;
    Ok(Started {
        url: request.url,
        browser_nonce,
    })
}

/// What Google sent the browser back with.
#[derive(Debug)]
pub enum ProviderAnswer {
    /// Google's `error`: the user declined, or something failed there.
    Declined(String),
    /// A code to exchange, for the sign-in with this state.
    Code { code: String, state: String },
    /// Neither an error nor both `code` and `state`.
    Incomplete,
}

/// A finished Google sign-in.
#[derive(Debug)]
pub struct GoogleSignIn {
    pub session: Session,
    /// A new user was registered.
    pub registered: bool,
}

/// Finish a sign-in: sign in the Google account's user, link it to the user with its
/// verified email, or register a new user. `browser_nonce` is the cookie [`begin`]'s
/// browser was given, if the request carries it.
pub async fn finish(
    hub: &Hub,
    answer: ProviderAnswer,
    browser_nonce: Option<&str>,
) -> Result<GoogleSignIn, IdentityError> {
    let google = google(hub)?;
    let (code, login_state) = match answer {
        ProviderAnswer::Declined(error) => {
            let error = error
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(PROVIDER_ERROR_LEN_MAX)
                .collect();
            return Err(IdentityError::GoogleDeclined(error));
        }
        ProviderAnswer::Incomplete => return Err(IdentityError::GoogleCallbackIncomplete),
        ProviderAnswer::Code { code, state } => (code, state),
    };
    // Single use: the row goes whether or not the rest succeeds.
    let row = sqlx::query(
        "DELETE FROM oidc_logins WHERE state = $1 AND expires_at > $2
         RETURNING nonce, pkce_verifier, browser_hash",
    )
    .bind(&login_state)
    .bind(hub.clock.now())
    .fetch_optional(&hub.pool)
    .await?
    .ok_or(IdentityError::GoogleStateInvalid)?;
    // The browser that started this sign-in, and no other, may finish it.
    let expected: Option<String> = row.try_get("browser_hash")?;
    let presented = browser_nonce.map(hub_adapters::secrets::sha256_hash);
    let same_browser = match (expected, presented) {
        (Some(expected), Some(presented)) => {
            hub_domain::SecretHash::parse(expected).is_ok_and(|e| e.matches(&presented))
        }
        _ => false,
    };
    if !same_browser {
        return Err(IdentityError::GoogleOtherBrowser);
    }
    let nonce: String = row.try_get("nonce")?;
    let verifier: String = row.try_get("pkce_verifier")?;
    let identity = google.finish(&code, &verifier, &nonce).await?;
    let subject = GoogleSubject::parse(identity.subject.clone())
        .map_err(|_| OidcError::Malformed("the subject is not usable"))?;

    // 1. A Google account seen before.
    if let Some((id, user)) = hub.users.find_by_google(&subject).await? {
        return signed_in(hub, id, user, false).await;
    }
    let email = identity
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(|_| IdentityError::GoogleEmailInvalid)?
        .ok_or(IdentityError::GoogleEmailMissing)?;
    if !identity.email_verified {
        return Err(IdentityError::GoogleEmailUnverified);
    }

    // 2. An existing user with this address.
    if let Some((id, user)) = hub.users.find_by_email(&email).await? {
        if !user.email_verified() {
            return Err(IdentityError::EmailUnverifiedForLink);
        }
        if hub.users.claim_google(&subject, id).await? != Some(id) {
            return Err(IdentityError::OtherGoogleAccount);
        }
        let link = UserCommand::LinkGoogleAccount { subject };
        hub.users.execute(id, link, "google").await?;
        let user = hub.users.load(id).await?;
        tracing::info!(user = %id, "Google account linked");
        return signed_in(hub, id, user, false).await;
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
            now: hub.clock.now(),
        },
        signup_grant: Credits::from_micros(hub.settings.auth.signup_grant_micros),
    };
    match hub.users.register(&hub.credits, registration).await {
        Ok((id, user)) => {
            tracing::info!(user = %id, "user registered with Google");
            signed_in(hub, id, user, true).await
        }
        Err(RegisterError::Taken) => Err(IdentityError::JustRegistered),
        Err(err) => Err(err.into()),
    }
}

async fn signed_in(
    hub: &Hub,
    id: hub_domain::UserId,
    user: hub_domain::User,
    registered: bool,
) -> Result<GoogleSignIn, IdentityError> {
    Ok(GoogleSignIn {
        session: start_session(hub, id, user).await?,
        registered,
    })
}
