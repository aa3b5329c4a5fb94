//! Roles: an admin grants a user a role or revokes one. The user's access tokens carry the
//! new roles from their next refresh.

use hub_commands::{CommandError, StoreError};
use hub_domain::{Role, User, UserCommand, UserError, UserId};
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
