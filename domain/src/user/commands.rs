use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::values::{
    ApiKeyName, ApiKeyPrefix, ApiKeyRateLimits, ApiKeyScope, DisplayName, Email, GoogleSubject,
    PasswordHash, Role, SecretHash, SuspensionReason,
};
use crate::ids::ApiKeyId;
use crate::money::Credits;

/// Longest "by whom" of a role change (a user id, or `cli` for the bootstrap command).
pub const ACTOR_LEN_MAX: usize = 128;

/// What may be asked of a user. Secrets arrive hashed; every time a rule needs arrives as
/// `now`, read by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UserCommand {
    /// Create the user. At least one way to log in is required: a password hash or a Google
    /// subject. `roles` may be empty: [`Role::User`] is always added.
    ///
    /// With a Google subject the account is linked in the same decision, and with
    /// `email_verified` (the ID token's `email_verified` claim, or an admin creating the
    /// user) the email is verified too, so no half-made user is ever written.
    RegisterUser {
        email: Email,
        password_hash: Option<PasswordHash>,
        display_name: Option<DisplayName>,
        roles: BTreeSet<Role>,
        google_subject: Option<GoogleSubject>,
        email_verified: bool,
        now: DateTime<Utc>,
    },
    /// Send a new verification code (its hash here): it replaces any earlier one, and dies
    /// after `attempts_allowed` wrong guesses or at `expires_at`.
    IssueVerificationCode {
        code_hash: SecretHash,
        expires_at: DateTime<Utc>,
        attempts_allowed: u32,
        now: DateTime<Utc>,
    },
    /// Check a submitted code (its hash). A wrong code is not refused: it writes
    /// `EmailVerificationFailed`, which counts the attempt, and the caller answers "wrong
    /// code" when it sees that event.
    VerifyEmail {
        code_hash: SecretHash,
        now: DateTime<Utc>,
    },
    /// Set a new password. The caller has checked the current one (or the user has none
    /// yet). Any pending reset token dies with the old password.
    ChangePassword {
        password_hash: PasswordHash,
        now: DateTime<Utc>,
    },
    /// Send a password reset link (its token's hash here): it replaces any earlier one.
    RequestPasswordReset {
        token_hash: SecretHash,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// Set a new password with a reset token, which is then used up.
    ResetPassword {
        token_hash: SecretHash,
        password_hash: PasswordHash,
        now: DateTime<Utc>,
    },
    /// Give a role. Giving a role already held changes nothing.
    GrantRole { role: Role, granted_by: String },
    /// Take a role away. [`Role::User`] cannot be taken.
    RevokeRole { role: Role, revoked_by: String },
    /// Link a Google account. Linking the same one again changes nothing; another is refused.
    LinkGoogleAccount { subject: GoogleSubject },
    /// Create an API key. The caller made the key, shows it once, and passes its hash and
    /// visible prefix here.
    CreateApiKey {
        key_id: ApiKeyId,
        prefix: ApiKeyPrefix,
        key_hash: SecretHash,
        name: ApiKeyName,
        /// The most the key may spend; `None` for the owner's whole balance.
        spending_limit: Option<Credits>,
        /// When the key stops working; `None` for never.
        expires_at: Option<DateTime<Utc>>,
        /// What the key may be used for; at least one.
        scopes: BTreeSet<ApiKeyScope>,
        /// The key's own rate limits (none: the hub's defaults for keys).
        rate_limits: ApiKeyRateLimits,
        now: DateTime<Utc>,
    },
    /// Revoke an API key at once, for good.
    RevokeApiKey {
        key_id: ApiKeyId,
        now: DateTime<Utc>,
    },
    /// Suspend the user: every credential is refused until [`UserCommand::UnsuspendUser`].
    /// Suspending a suspended user changes nothing.
    SuspendUser {
        reason: SuspensionReason,
        by: String,
        now: DateTime<Utc>,
    },
    /// Lift a suspension. Reinstating a user who is not suspended changes nothing.
    UnsuspendUser {
        reason: SuspensionReason,
        by: String,
        now: DateTime<Utc>,
    },
    /// End every session at once ("log out everywhere"), by the user or an admin.
    EndSessions { by: String, now: DateTime<Utc> },
}

impl UserCommand {
    /// The key under which this command's event is unique within the user, if it has one
    /// (see `UserEvent::idempotency_key`).
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Self::CreateApiKey { key_id, .. } => Some(format!("api-key:{key_id}")),
            Self::RevokeApiKey { key_id, .. } => Some(format!("api-key-revoked:{key_id}")),
            _ => None,
        }
    }

    /// Keys whose events decide this command when the user has forgotten them: a revoke of
    /// a key revoked long ago must learn that the key existed and was revoked.
    pub fn related_keys(&self) -> Vec<String> {
        match self {
            Self::RevokeApiKey { key_id, .. } => vec![
                format!("api-key:{key_id}"),
                format!("api-key-revoked:{key_id}"),
            ],
            other => other.idempotency_key().into_iter().collect(),
        }
    }
}
