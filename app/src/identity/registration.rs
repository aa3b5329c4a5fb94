//! Registration with a password: check the password and that the email is free, hash it,
//! claim the email, register the user with the sign-up grant, mail a verification code, and
//! sign the user in.

use hub_adapters::secrets;
use hub_commands::Registration;
use hub_domain::{Credits, DisplayName, Email, Role, UserCommand};
use std::collections::BTreeSet;

use super::{start_session, verification, IdentityError, Session};
use crate::hub::Hub;

/// What a new user gives.
#[derive(Debug)]
pub struct NewAccount {
    pub email: Email,
    /// Not empty (the adapter refuses a missing one); its strength is checked here.
    pub password: String,
    /// As typed (trimmed); checked here. `None` or empty: no name.
    pub display_name: Option<String>,
}

/// Register a user with a password and sign them in. The verification code is mailed before
/// the answer; a mail failure is logged, not returned (the user can ask again).
pub async fn register(hub: &Hub, account: NewAccount) -> Result<Session, IdentityError> {
    let NewAccount {
        email,
        password,
        display_name,
    } = account;
    secrets::check_strength(&password, email.as_str())?;
    let display_name = display_name
        .filter(|n| !n.is_empty())
        .map(DisplayName::parse)
        .transpose()
        .map_err(|e| IdentityError::InvalidName(e.to_string()))?;
    // Anyone may call this: answer a taken address before spending a hash on it. (The
    // claim when registering still decides a race between two new users.)
    if hub.users.find_by_email(&email).await?.is_some() {
        return Err(IdentityError::EmailTaken);
    }
    let password_hash = hub.passwords.hash(password).await?;
    let registration = Registration {
        command: UserCommand::RegisterUser {
            email,
            password_hash: Some(password_hash),
            display_name,
            roles: BTreeSet::from([Role::User]),
            google_subject: None,
            email_verified: false,
            now: hub.clock.now(),
        },
        signup_grant: Credits::from_micros(hub.settings.auth.signup_grant_micros),
    };
    let (id, user) = hub.users.register(&hub.credits, registration).await?;
    tracing::info!(user = %id, "user registered");
    verification::send_code(hub, id, &user).await;
    start_session(hub, id, user).await
}
