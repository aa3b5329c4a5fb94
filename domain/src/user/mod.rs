//! The `User` aggregate: one per person or program owner, with the same id as their credit
//! account.
//!
//! A user registers with an email and a password hash, a Google account, or both; proves
//! the email with a code; changes or resets the password; holds roles; and owns API keys.
//! Secrets never reach it in clear: the API hashes passwords (argon2id) and codes, tokens
//! and keys (SHA-256) and passes hashes and `now` in commands, so the rules stay pure.
//!
//! Rules kept here, for every sequence of commands:
//! - a registered user always holds the `user` role; granting a held role writes nothing,
//!   revoking one not held is refused;
//! - at most one verification code is pending; it verifies only before its expiry and
//!   while it has attempts left, each wrong guess counts one, and verifying clears it;
//! - a reset token is used at most once, before its expiry; a new password kills it;
//! - a Google account links once and is never replaced by another;
//! - API key ids are unique per user, a revoked key stays revoked, and a user holds at most
//!   [`API_KEYS_LIVE_MAX`] unrevoked keys;
//! - no event holds a secret in clear, only its hash;
//! - an API key has at least one scope;
//! - every event that takes a privilege away (a suspension, a revoked role, a password
//!   reset, "log out everywhere") raises the user's session version, so access tokens
//!   minted before it stop working (see [`User::session_version`]).
//!
//! Cross-user rules (an email or a Google account belongs to one user) need more than one
//! aggregate and are kept by the command layer.

mod aggregate;
mod commands;
mod error;
mod events;
mod values;

#[cfg(test)]
mod tests;

pub use aggregate::{
    ApiKey, PendingCode, PendingReset, Suspension, User, API_KEYS_LIVE_MAX,
    PASSWORD_RESET_TTL_MAX_S, REVOKED_API_KEYS_KEPT, VERIFICATION_ATTEMPTS_MAX,
    VERIFICATION_CODE_TTL_MAX_S, VERIFICATION_FAILURES_MAX,
};
pub use commands::{UserCommand, ACTOR_LEN_MAX};
pub use error::UserError;
pub use events::UserEvent;
pub use values::{
    ApiKeyName, ApiKeyPrefix, ApiKeyRateLimits, ApiKeyScope, DisplayName, Email, GoogleSubject,
    PasswordHash, Role, SecretHash, SuspensionReason, UserValueError, API_KEY_NAME_LEN_MAX,
    API_KEY_PREFIX_LEN_MAX, DISPLAY_NAME_LEN_MAX, EMAIL_LEN_MAX, EMAIL_LOCAL_LEN_MAX,
    GOOGLE_SUBJECT_LEN_MAX, PASSWORD_HASH_LEN_MAX, SUSPENSION_REASON_LEN_MAX,
};
