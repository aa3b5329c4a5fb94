use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use super::values::{
    ApiKeyName, ApiKeyPrefix, ApiKeyRateLimits, ApiKeyScope, DisplayName, Email, GoogleSubject,
    PasswordHash, Role, SecretHash, SuspensionReason,
};
use crate::ids::ApiKeyId;
use crate::money::Credits;

/// What happened to a user. Stored forever: never rename a variant or a field; add a new
/// version and an upcaster instead.
///
/// No event holds a secret in clear: passwords appear as argon2 PHC strings, codes, tokens
/// and API keys as SHA-256 digests. Events that change a set carry the set after them, so
/// read models copy, never recompute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    UserRegistered {
        email: Email,
        /// `None` for a user who signs in only with Google.
        password_hash: Option<PasswordHash>,
        display_name: Option<DisplayName>,
        /// Always holds [`Role::User`].
        roles: BTreeSet<Role>,
        registered_at: DateTime<Utc>,
    },
    VerificationCodeIssued {
        code_hash: SecretHash,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        attempts_allowed: u32,
    },
    /// A wrong code was submitted; at `attempts_left == 0` the code is dead.
    EmailVerificationFailed {
        attempts_left: u32,
    },
    EmailVerified {
        email: Email,
        verified_at: DateTime<Utc>,
    },
    PasswordChanged {
        password_hash: PasswordHash,
        changed_at: DateTime<Utc>,
    },
    PasswordResetRequested {
        token_hash: SecretHash,
        requested_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// The reset token `token_hash` was used (and is gone) to set a new password.
    PasswordReset {
        token_hash: SecretHash,
        password_hash: PasswordHash,
        reset_at: DateTime<Utc>,
    },
    RoleGranted {
        role: Role,
        granted_by: String,
        roles_after: BTreeSet<Role>,
    },
    RoleRevoked {
        role: Role,
        revoked_by: String,
        roles_after: BTreeSet<Role>,
    },
    GoogleAccountLinked {
        subject: GoogleSubject,
    },
    ApiKeyCreated {
        key_id: ApiKeyId,
        prefix: ApiKeyPrefix,
        key_hash: SecretHash,
        name: ApiKeyName,
        spending_limit: Option<Credits>,
        expires_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        /// What the key may be used for. Keys created before scopes existed carry none in
        /// their event and keep what every key could do then: inference and reads.
        #[serde(default = "ApiKeyScope::before_scopes")]
        scopes: BTreeSet<ApiKeyScope>,
        /// The key's own rate limits; absent in events of keys that have none (and of keys
        /// created before they existed).
        #[serde(default, skip_serializing_if = "ApiKeyRateLimits::is_unset")]
        rate_limits: ApiKeyRateLimits,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
        revoked_at: DateTime<Utc>,
    },
    /// An admin suspended the user: every credential of theirs (access tokens, refresh
    /// tokens, API keys, open sockets) is refused until the suspension is lifted.
    UserSuspended {
        reason: SuspensionReason,
        suspended_by: String,
        suspended_at: DateTime<Utc>,
    },
    /// An admin lifted the suspension. The user signs in again: nothing issued before the
    /// suspension comes back.
    UserUnsuspended {
        reason: SuspensionReason,
        unsuspended_by: String,
        unsuspended_at: DateTime<Utc>,
    },
    /// Every session of the user ended at once ("log out everywhere"): access tokens minted
    /// before it are refused.
    SessionsEnded {
        ended_by: String,
        ended_at: DateTime<Utc>,
    },
}

impl UserEvent {
    /// Whether this event ends the access tokens minted before it: it takes a privilege
    /// away (a suspension, a revoked role) or says the credentials may be in other hands
    /// (a password reset, "log out everywhere"). Each raises [`crate::User::session_version`].
    pub fn ends_sessions(&self) -> bool {
        matches!(
            self,
            Self::UserSuspended { .. }
                | Self::RoleRevoked { .. }
                | Self::PasswordReset { .. }
                | Self::SessionsEnded { .. }
        )
    }

    /// The key that makes this event unique within its user, if any. The event store keeps
    /// a unique index on it, so an API key id is created once and revoked once per user,
    /// ever, even after the user's state has forgotten a long-revoked key.
    pub fn idempotency_key(&self) -> Option<String> {
        match self {
            Self::ApiKeyCreated { key_id, .. } => Some(format!("api-key:{key_id}")),
            Self::ApiKeyRevoked { key_id, .. } => Some(format!("api-key-revoked:{key_id}")),
            _ => None,
        }
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::UserRegistered { .. } => "UserRegistered",
            Self::VerificationCodeIssued { .. } => "VerificationCodeIssued",
            Self::EmailVerificationFailed { .. } => "EmailVerificationFailed",
            Self::EmailVerified { .. } => "EmailVerified",
            Self::PasswordChanged { .. } => "PasswordChanged",
            Self::PasswordResetRequested { .. } => "PasswordResetRequested",
            Self::PasswordReset { .. } => "PasswordReset",
            Self::RoleGranted { .. } => "RoleGranted",
            Self::RoleRevoked { .. } => "RoleRevoked",
            Self::GoogleAccountLinked { .. } => "GoogleAccountLinked",
            Self::ApiKeyCreated { .. } => "ApiKeyCreated",
            Self::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            Self::UserSuspended { .. } => "UserSuspended",
            Self::UserUnsuspended { .. } => "UserUnsuspended",
            Self::SessionsEnded { .. } => "SessionsEnded",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
