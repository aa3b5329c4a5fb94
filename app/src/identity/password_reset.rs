//! Password reset: a link carrying `<user id>.<256-bit token>`; the token is stored as
//! SHA-256, used once, expires after `auth.reset_token_ttl_s`, and a reset ends every
//! session of the user. Asking for a link answers the same whether or not the address has a
//! user: the work happens after the answer.

use hub_adapters::mail::OutgoingMail;
use hub_adapters::secrets;
use hub_domain::{Email, UserCommand, UserId};
use std::sync::Arc;
use uuid::Uuid;

use super::verification::RESEND_MIN_INTERVAL;
use super::{duration_words, seconds, IdentityError};
use crate::hub::Hub;
use crate::sessions;

/// The token of a reset link: whose it is, and the secret.
#[derive(Debug, Clone)]
pub struct ResetToken {
    pub user: UserId,
    secret: String,
}

impl ResetToken {
    /// Read a token as the link carries it (`<user id>.<secret>`).
    pub fn parse(raw: &str) -> Result<ResetToken, IdentityError> {
        let (user_part, secret) = raw
            .trim()
            .split_once('.')
            .ok_or(IdentityError::InvalidResetToken)?;
        let user = Uuid::parse_str(user_part)
            .map(UserId)
            .map_err(|_| IdentityError::InvalidResetToken)?;
        Ok(ResetToken {
            user,
            secret: secret.to_string(),
        })
    }

    fn format(user: UserId, secret: &str) -> String {
        format!("{}.{secret}", user.0.simple())
    }
}

/// What asking for a link did, for logs and tests; the client is told the same in every case.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkRequest {
    Sent,
    /// No user has the address.
    NoUser,
    /// A link went less than a minute ago: one a minute is plenty.
    TooSoon,
}

/// Mail a reset link to `email` if a user has it, after the caller has answered: the work
/// runs on its own task, so the answer takes the same time whether or not a user exists.
pub fn request_link(hub: Arc<Hub>, email: Email) {
    tokio::spawn(async move {
        if let Err(err) = send_link(&hub, &email).await {
            tracing::warn!(error = %err, "could not send a password-reset link");
        }
    });
}

/// Mail a reset link to `email` if a user has it (the work [`request_link`] starts).
pub async fn send_link(hub: &Hub, email: &Email) -> Result<LinkRequest, IdentityError> {
    let Some((id, user)) = hub.users.find_by_email(email).await? else {
        return Ok(LinkRequest::NoUser);
    };
    let now = hub.clock.now();
    if user
        .pending_password_reset()
        .is_some_and(|p| p.requested_at() + RESEND_MIN_INTERVAL > now)
    {
        return Ok(LinkRequest::TooSoon);
    }
    let auth = &hub.settings.auth;
    let secret = secrets::opaque_token();
    let command = UserCommand::RequestPasswordReset {
        token_hash: secrets::sha256_hash(&secret),
        expires_at: now + seconds(auth.reset_token_ttl_s),
        now,
    };
    hub.users.execute(id, command, "system").await?;
    let link = format!(
        "{}/reset-password?token={}",
        auth.public_url.trim_end_matches('/'),
        ResetToken::format(id, &secret)
    );
    let within = duration_words(auth.reset_token_ttl_s);
    hub.mailer
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
        .map_err(IdentityError::internal)?;
    Ok(LinkRequest::Sent)
}

/// Set a new password with a reset link's token, and end every session of the user.
/// `password` is not empty (the adapter refuses a missing one); its strength is checked here.
pub async fn reset(hub: &Hub, token: &ResetToken, password: String) -> Result<(), IdentityError> {
    let id = token.user;
    let user = hub.users.load(id).await?;
    let Some(email) = user.email() else {
        return Err(IdentityError::InvalidResetToken);
    };
    secrets::check_strength(&password, email.as_str())?;
    // Anyone holding a link may call this: check the token before spending a hash on it.
    let now = hub.clock.now();
    let token_hash = secrets::sha256_hash(&token.secret);
    user.check_reset_token(&token_hash, now)
        .map_err(|refusal| IdentityError::User(hub_commands::CommandError::Rejected(refusal)))?;
    let password_hash = hub.passwords.hash(password).await?;
    let command = UserCommand::ResetPassword {
        token_hash,
        password_hash,
        now,
    };
    hub.users.execute(id, command, "password-reset").await?;
    let ended = sessions::end_all(&hub.pool, id.0, now).await?;
    tracing::info!(user = %id, sessions_ended = ended, "password reset");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_token_reads_back_what_the_link_carries() {
        let user = UserId(Uuid::new_v4());
        let parsed = ResetToken::parse(&ResetToken::format(user, "s3cret")).expect("parsed");
        assert_eq!(parsed.user, user);
        assert_eq!(parsed.secret, "s3cret");
        for bad in ["garbage", "", "not-a-uuid.secret"] {
            assert!(ResetToken::parse(bad).is_err(), "{bad:?}");
        }
    }
}
