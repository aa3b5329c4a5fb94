//! Email verification: a six-digit code, stored as an HMAC (see [`hub_adapters::secrets`]),
//! expiring after `auth.verification_code_ttl_s` and allowing `auth.verification_attempts`
//! wrong guesses; a new code replaces the old one, at most once a minute.

use chrono::Duration;
use hub_adapters::mail::OutgoingMail;
use hub_adapters::secrets;
use hub_commands::CommandError;
use hub_domain::{User, UserCommand, UserError, UserEvent, UserId};

use super::{duration_words, seconds, IdentityError};
use crate::hub::Hub;

/// A new code is not sent more often than this.
pub const RESEND_MIN_INTERVAL: Duration = Duration::seconds(60);

/// A code as the user typed it: six ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationCode(String);

impl VerificationCode {
    /// The code, trimmed, if it is six digits.
    pub fn parse(raw: &str) -> Option<VerificationCode> {
        let code = raw.trim();
        (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()))
            .then(|| VerificationCode(code.to_string()))
    }
}

/// Issue a new verification code and mail it. Failures are logged, not returned: the user
/// can ask again (`resend-verification`).
pub async fn send_code(hub: &Hub, id: UserId, user: &User) {
    if let Err(err) = try_send_code(hub, id, user).await {
        tracing::warn!(user = %id, error = %err, "could not send the verification code");
    }
}

async fn try_send_code(hub: &Hub, id: UserId, user: &User) -> Result<(), IdentityError> {
    let Some(email) = user.email() else {
        return Ok(());
    };
    if user.email_verified() {
        return Ok(());
    }
    let auth = &hub.settings.auth;
    let code = secrets::six_digit_code();
    let now = hub.clock.now();
    let command = UserCommand::IssueVerificationCode {
        code_hash: secrets::code_hash(&auth.jwt_secret, id.0, &code),
        expires_at: now + seconds(auth.verification_code_ttl_s),
        attempts_allowed: auth.verification_attempts,
        now,
    };
    hub.users.execute(id, command, "system").await?;
    let within = duration_words(auth.verification_code_ttl_s);
    hub.mailer
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
        .map_err(IdentityError::internal)?;
    Ok(())
}

/// Verify the user's email with `code`; answers the user as they now are. A wrong code
/// counts an attempt ([`IdentityError::WrongCode`]).
pub async fn verify_email(
    hub: &Hub,
    id: UserId,
    code: &VerificationCode,
) -> Result<User, IdentityError> {
    let command = UserCommand::VerifyEmail {
        code_hash: secrets::code_hash(&hub.settings.auth.jwt_secret, id.0, &code.0),
        now: hub.clock.now(),
    };
    let committed = hub.users.execute(id, command, &id.to_string()).await?;
    if let Some(UserEvent::EmailVerificationFailed { attempts_left }) = committed.events.last() {
        return Err(IdentityError::WrongCode {
            attempts_left: *attempts_left,
        });
    }
    Ok(hub.users.load(id).await?)
}

/// Send a new code, replacing the pending one, unless the email is verified or the last code
/// went less than [`RESEND_MIN_INTERVAL`] ago.
pub async fn resend(hub: &Hub, id: UserId) -> Result<(), IdentityError> {
    let user = hub.users.load(id).await?;
    if !user.is_registered() {
        return Err(IdentityError::UserNotFound);
    }
    if user.email_verified() {
        return Err(CommandError::Rejected(UserError::EmailAlreadyVerified).into());
    }
    if let Some(pending) = user.pending_verification() {
        let next = pending.issued_at() + RESEND_MIN_INTERVAL;
        let now = hub.clock.now();
        if next > now {
            return Err(IdentityError::ResendTooSoon(
                (next - now).to_std().unwrap_or_default(),
            ));
        }
    }
    try_send_code(hub, id, &user).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_six_digits_once_trimmed() {
        assert!(VerificationCode::parse(" 012345 ").is_some());
        for bad in ["12ab56", "12345", "1234567", "", "١٢٣٤٥٦"] {
            assert!(VerificationCode::parse(bad).is_none(), "{bad:?}");
        }
    }
}
