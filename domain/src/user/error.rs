use super::values::Role;
use crate::ids::ApiKeyId;
use crate::money::MoneyError;

/// A command a user refuses. Each is a rule, not a fault: nothing was written. Messages
/// never hold a secret or a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The user has not registered.
    #[error("the user is not registered")]
    NotRegistered,
    /// The user registered already.
    #[error("the user is already registered")]
    AlreadyRegistered,
    /// A user needs a password or a Google account to log in with.
    #[error("a user needs a password or a Google account")]
    NoCredential,
    /// "By whom" must be given, and short.
    #[error("the actor of a role change must be 1 to {max} characters")]
    ActorInvalid { max: usize },
    /// The email address is verified already.
    #[error("the email address is already verified")]
    EmailAlreadyVerified,
    /// An expiry must be later than now.
    #[error("the expiry must be in the future")]
    ExpiryNotInFuture,
    /// A code or token may live at most this long.
    #[error("the expiry may be at most {max_s} seconds away")]
    ExpiryTooFar { max_s: i64 },
    /// A code allows between one and this many attempts.
    #[error("a verification code allows 1 to {max} attempts")]
    AttemptsOutOfRange { max: u32 },
    /// No verification code was issued since the last one was used.
    #[error("no verification code was issued")]
    NoVerificationCode,
    /// The verification code expired: a new one must be issued.
    #[error("the verification code expired")]
    VerificationCodeExpired,
    /// The verification code took its last wrong guess: a new one must be issued.
    #[error("the verification code allows no more attempts")]
    VerificationCodeExhausted,
    /// The address took [`super::VERIFICATION_FAILURES_MAX`] wrong codes over its life: no
    /// code is issued or checked for it any more.
    #[error("too many wrong verification codes for this address; ask the operator to verify it")]
    VerificationLocked,
    /// No password reset is pending (none was asked for, or its token was used).
    #[error("no password reset is pending")]
    NoPasswordResetPending,
    /// The reset token is not the pending one.
    #[error("the password reset token is invalid")]
    ResetTokenMismatch,
    /// The reset token expired.
    #[error("the password reset token expired")]
    ResetTokenExpired,
    /// Every user keeps the `user` role.
    #[error("the user role cannot be revoked")]
    CannotRevokeUserRole,
    /// The user does not hold this role.
    #[error("the user does not hold the {0} role")]
    RoleNotHeld(Role),
    /// Another Google account is linked already.
    #[error("a different Google account is already linked")]
    GoogleAccountAlreadyLinked,
    /// The user already has a key with this id.
    #[error("an API key with id {0} already exists")]
    ApiKeyIdTaken(ApiKeyId),
    /// A user holds at most this many unrevoked keys.
    #[error("too many API keys (at most {max} unrevoked)")]
    TooManyApiKeys { max: usize },
    /// A spending limit must be a positive amount.
    #[error("invalid spending limit: {0}")]
    InvalidSpendingLimit(MoneyError),
    /// The user has no key with this id (or revoked it longer ago than the user remembers).
    #[error("no API key with id {0}")]
    ApiKeyNotFound(ApiKeyId),
    /// An API key needs at least one scope.
    #[error("an API key needs at least one scope")]
    NoScopes,
    /// The key was revoked already.
    #[error("the API key {0} is already revoked")]
    ApiKeyAlreadyRevoked(ApiKeyId),
}
