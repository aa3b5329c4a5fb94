//! What admins change about a user: roles (granted or revoked) and suspension.
//!
//! A granted role reaches the user's access tokens at their next refresh. A revoked role and
//! a suspension cut off the tokens already minted at once: each raises the user's session
//! version, which every request compares with its token's (see
//! [`crate::identity::access`]).

use hub_commands::{CommandError, StoreError};
use hub_domain::{Role, SuspensionReason, User, UserCommand, UserError, UserId};
use uuid::Uuid;

/// Why a role was not changed.
#[derive(Debug, thiserror::Error)]
pub enum RoleChangeError {
    /// The id is not a user's.
    #[error("no user with this id")]
    UnknownUser,
    #[error("role must be user, admin, analyst or auditor")]
    InvalidRole,
    #[error(transparent)]
    Command(CommandError<UserError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Grant or revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// Granting a held role changes nothing.
    Grant,
    /// The `user` role cannot be revoked.
    Revoke,
}

/// Grant or revoke `role` (as text) of user `id` (as text), as `admin`; answers the user
/// after the change.
pub async fn change_role(
    hub: &crate::Hub,
    admin: Uuid,
    id: &str,
    role: &str,
    change: RoleChange,
) -> Result<(UserId, User), RoleChangeError> {
    let user = Uuid::parse_str(id)
        .map(UserId)
        .map_err(|_| RoleChangeError::UnknownUser)?;
    let role: Role = role.parse().map_err(|_| RoleChangeError::InvalidRole)?;
    let by = admin.to_string();
    let command = match change {
        RoleChange::Grant => UserCommand::GrantRole {
            role,
            granted_by: by,
        },
        RoleChange::Revoke => UserCommand::RevokeRole {
            role,
            revoked_by: by,
        },
    };
    match hub
        .users
        .execute(user, command, &format!("user:{admin}"))
        .await
    {
        Ok(_) => {}
        Err(CommandError::Rejected(UserError::NotRegistered)) => {
            return Err(RoleChangeError::UnknownUser)
        }
        Err(err) => return Err(RoleChangeError::Command(err)),
    }
    Ok((user, hub.users.load(user).await?))
}

/// Why a suspension was not changed.
#[derive(Debug, thiserror::Error)]
pub enum SuspensionError {
    /// The id is not a user's.
    #[error("no user with this id")]
    UnknownUser,
    /// An admin cannot suspend themselves (nor lock out the last admin that way).
    #[error("an admin cannot suspend their own account")]
    OwnAccount,
    /// The reason is missing or not acceptable; the message says why.
    #[error("{0}")]
    InvalidReason(String),
    #[error(transparent)]
    Command(CommandError<UserError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Suspend or lift a suspension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspensionChange {
    /// Every credential of the user is refused from the next request; refresh tokens are
    /// revoked. Suspending a suspended user changes nothing.
    Suspend,
    /// The user may sign in again; nothing issued before the suspension comes back.
    Unsuspend,
}

/// Suspend user `id` (as text), or lift their suspension, as `admin`, for `reason`; answers
/// the user after the change.
pub async fn change_suspension(
    hub: &crate::Hub,
    admin: Uuid,
    id: &str,
    reason: &str,
    change: SuspensionChange,
) -> Result<(UserId, User), SuspensionError> {
    let user = Uuid::parse_str(id)
        .map(UserId)
        .map_err(|_| SuspensionError::UnknownUser)?;
    if change == SuspensionChange::Suspend && user.0 == admin {
        return Err(SuspensionError::OwnAccount);
    }
    let reason = SuspensionReason::parse(reason)
        .map_err(|e| SuspensionError::InvalidReason(e.to_string()))?;
    let by = admin.to_string();
    let now = hub.clock.now();
    let command = match change {
        SuspensionChange::Suspend => UserCommand::SuspendUser { reason, by, now },
        SuspensionChange::Unsuspend => UserCommand::UnsuspendUser { reason, by, now },
    };
    // Refresh tokens go before the event and again after it (see
    // `identity::sign_in::log_out_everywhere`); lifting a suspension revokes any family that
    // escaped a crash between a suspension and its revocation, so nothing from before comes
    // back.
    crate::sessions::end_all(&hub.pool, user.0, now).await?;
    match hub
        .users
        .execute(user, command, &format!("user:{admin}"))
        .await
    {
        Ok(_) => {}
        Err(CommandError::Rejected(UserError::NotRegistered)) => {
            return Err(SuspensionError::UnknownUser)
        }
        Err(err) => return Err(SuspensionError::Command(err)),
    }
    let ended = crate::sessions::end_all(&hub.pool, user.0, now).await?;
    tracing::info!(%user, %admin, ?change, sessions_ended = ended, "suspension changed");
    Ok((user, hub.users.load(user).await?))
}
