//! The `users` projection: one row per registered user, for admins' listings.
//!
//! User events are rare next to credit events, so each is applied with one statement,
//! guarded by the row's version so a message applied twice changes nothing.

use hub_domain::{Role, UserEvent};
use hub_nats::EventEnvelope;
use sqlx::PgConnection;
use std::collections::BTreeSet;
use uuid::Uuid;

fn role_names(roles: &BTreeSet<Role>) -> Vec<&'static str> {
    roles.iter().map(|r| r.as_str()).collect()
}

pub(crate) async fn apply(
    conn: &mut PgConnection,
    messages: Vec<(EventEnvelope, u64)>,
) -> anyhow::Result<()> {
    for (envelope, _) in messages {
        if envelope.aggregate_type != "User" {
            continue;
        }
        let user: Uuid = envelope.aggregate_id.parse()?;
        let version = i64::try_from(envelope.sequence)?;
        let at = envelope.recorded_at;
        let event: UserEvent = envelope.payload.decode()?;
        if let UserEvent::UserRegistered {
            email,
            password_hash,
            display_name,
            roles,
            registered_at,
        } = &event
        {
            sqlx::query(
                "INSERT INTO users (user_id, email, display_name, roles, has_password,
                                    registered_at, version, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(user)
            .bind(email.as_str())
            .bind(display_name.as_ref().map(|n| n.as_str()))
            .bind(role_names(roles))
            .bind(password_hash.is_some())
            .bind(registered_at)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            continue;
        }
        // Every other event changes some columns of an existing row.
        let set = match &event {
            UserEvent::EmailVerified { .. } => "email_verified = true",
            UserEvent::PasswordChanged { .. } | UserEvent::PasswordReset { .. } => {
                "has_password = true"
            }
            UserEvent::RoleGranted { .. } | UserEvent::RoleRevoked { .. } => "roles = $4",
            UserEvent::GoogleAccountLinked { .. } => "google_linked = true",
            UserEvent::ApiKeyCreated { .. } => "api_keys_live = api_keys_live + 1",
            UserEvent::ApiKeyRevoked { .. } => "api_keys_live = greatest(api_keys_live - 1, 0)",
            UserEvent::UserSuspended { .. } => "suspended_at = $5",
            UserEvent::UserUnsuspended { .. } => "suspended_at = NULL",
            UserEvent::UserRegistered { .. }
            | UserEvent::VerificationCodeIssued { .. }
            | UserEvent::EmailVerificationFailed { .. }
            | UserEvent::PasswordResetRequested { .. }
            | UserEvent::SessionsEnded { .. } => "email = email",
        };
        let roles_after = match &event {
            UserEvent::RoleGranted { roles_after, .. }
            | UserEvent::RoleRevoked { roles_after, .. } => role_names(roles_after),
            _ => Vec::new(),
        };
        let suspended_at = match &event {
            UserEvent::UserSuspended { suspended_at, .. } => Some(*suspended_at),
            _ => None,
        };
        // `set` is one of the fixed strings above, never input.
        sqlx::query(&format!(
            "UPDATE users SET {set}, version = $2, updated_at = $3
              WHERE user_id = $1 AND version < $2"
        ))
        .bind(user)
        .bind(version)
        .bind(at)
        .bind(roles_after)
        .bind(suspended_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
