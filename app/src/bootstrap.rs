//! `aihub admin create-user`: the first admin, before anyone can sign in to grant roles.

use anyhow::Context;
use hub_commands::{RegisterError, Registration};
use hub_domain::{Credits, Email, Role, UserCommand, UserId};
use std::collections::BTreeSet;

use crate::hub::Hub;

/// What `create_user` did.
#[derive(Debug, serde::Serialize)]
pub struct Bootstrapped {
    pub user_id: UserId,
    pub email: String,
    pub roles: Vec<Role>,
    /// False when the address already had a user, who was given the roles instead.
    pub created: bool,
    /// The password chosen for a new user when none was given; shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_password: Option<String>,
}

/// Register `email` with `roles` (and `user`), or give an existing user those roles.
/// Idempotent: running it twice changes nothing the second time.
pub async fn create_user(
    state: &Hub,
    email: &str,
    roles: &[Role],
    password: Option<String>,
) -> anyhow::Result<Bootstrapped> {
    let email = Email::parse(email).context("invalid --email")?;
    let generated = password.is_none().then(hub_adapters::secrets::opaque_token);
    let password = password.or_else(|| generated.clone()).unwrap_or_default();
    hub_adapters::secrets::check_strength(&password, email.as_str())
        .context("invalid --password")?;
    let mut wanted: BTreeSet<Role> = roles.iter().copied().collect();
    wanted.insert(Role::User);
    let registration = Registration {
        command: UserCommand::RegisterUser {
            email: email.clone(),
            password_hash: Some(state.passwords.hash(password).await?),
            display_name: None,
            roles: wanted.clone(),
            google_subject: None,
            // An operator vouches for the address.
            email_verified: true,
            now: state.clock.now(),
        },
        signup_grant: Credits::from_micros(state.settings.auth.signup_grant_micros),
    };
    let (id, created, generated) = match state.users.register(&state.credits, registration).await {
        Ok((id, _)) => (id, true, generated),
        Err(RegisterError::Taken) => {
            let (id, _) = state
                .users
                .find_by_email(&email)
                .await?
                .context("the address is claimed but its user is not registered yet; retry")?;
            for role in &wanted {
                let grant = UserCommand::GrantRole {
                    role: *role,
                    granted_by: "aihub admin create-user".into(),
                };
                state.users.execute(id, grant, "cli").await?;
            }
            (id, false, None)
        }
        Err(err) => return Err(err.into()),
    };
    let user = state.users.load(id).await?;
    Ok(Bootstrapped {
        user_id: id,
        email: email.as_str().to_string(),
        roles: user.roles().iter().copied().collect(),
        created,
        generated_password: generated,
    })
}
