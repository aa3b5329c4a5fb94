//! API keys for programs. A key acts as its owner; it is shown once, stored as SHA-256 in
//! the owner's User aggregate, found by its prefix through `api_key_index`, and refused at
//! once when revoked or expired, or when its owner is suspended. Each key has scopes, chosen
//! at creation (inference by default), that say which routes it may call (the API enforces
//! them in one place, `hub_api::auth`).

use chrono::{DateTime, Utc};
use hub_adapters::secrets;
use hub_commands::{CommandError, StoreError};
use hub_domain::{
    ApiKey, ApiKeyId, ApiKeyName, ApiKeyPrefix, ApiKeyRateLimits, ApiKeyScope, Credits, Role,
    UserCommand, UserError, UserId,
};
use std::collections::BTreeSet;
use uuid::Uuid;

use crate::hub::Hub;

/// Why a key operation did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The owner does not exist (or is not registered yet).
    #[error("no user with this id")]
    OwnerNotFound,
    /// With `auth.require_verified_email`, keys are for owners who verified their email.
    #[error("verify your email address before creating API keys")]
    EmailNotVerified,
    /// The key is unknown, revoked or expired (the three answer alike).
    #[error("invalid, revoked or expired API key")]
    Refused,
    /// The key's owner is suspended.
    #[error("this account is suspended")]
    OwnerSuspended,
    /// A rule of the user aggregate refused the command.
    #[error(transparent)]
    User(#[from] CommandError<UserError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What a new key is.
#[derive(Debug)]
pub struct NewKey {
    pub name: ApiKeyName,
    /// Most this key may spend (none: the owner's balance is the limit).
    pub spending_limit: Option<Credits>,
    pub expires_at: Option<DateTime<Utc>>,
    /// What the key may be used for; [`ApiKeyScope::default_set`] when the creator names
    /// none.
    pub scopes: BTreeSet<ApiKeyScope>,
    /// The key's own rate limits (none: the hub's defaults for keys).
    pub rate_limits: ApiKeyRateLimits,
}

/// A key just created: the key itself (shown now and never again) and what is stored of it.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: String,
    pub stored: ApiKey,
}

/// Create a key for `owner`. Its prefix (59 random bits) is claimed in `api_key_index`; a
/// collision is retried with a fresh key.
pub async fn create(hub: &Hub, owner: UserId, new: NewKey) -> Result<CreatedKey, KeyError> {
    let user = hub.users.load(owner).await?;
    if !user.is_registered() {
        return Err(KeyError::OwnerNotFound);
    }
    if hub.settings.auth.require_verified_email && !user.email_verified() {
        return Err(KeyError::EmailNotVerified);
    }
    let key_id = ApiKeyId(Uuid::new_v4());
    let (key, prefix) = loop {
        let (key, prefix, _) = secrets::new_api_key();
        let claimed = sqlx::query(
            "INSERT INTO api_key_index (prefix, key_id, user_id) VALUES ($1, $2, $3)
             ON CONFLICT (prefix) DO NOTHING",
        )
        .bind(&prefix)
        .bind(key_id.0)
        .bind(owner.0)
        .execute(&hub.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            break (key, prefix);
        }
    };
    let command = UserCommand::CreateApiKey {
        key_id,
        prefix: ApiKeyPrefix::parse(prefix).map_err(anyhow::Error::new)?,
        key_hash: secrets::sha256_hash(&key),
        name: new.name,
        spending_limit: new.spending_limit,
        expires_at: new.expires_at,
        scopes: new.scopes,
        rate_limits: new.rate_limits,
        now: hub.clock.now(),
    };
    if let Err(err) = hub.users.execute(owner, command, &owner.to_string()).await {
        // The key was not created (refused, or the store failed): give its prefix back, so
        // that refused creations leave no rows behind.
        if let Err(cleanup) = sqlx::query("DELETE FROM api_key_index WHERE key_id = $1")
            .bind(key_id.0)
            .execute(&hub.pool)
            .await
        {
            tracing::warn!(key = %key_id, error = %cleanup, "could not release an unused key prefix");
        }
        return Err(err.into());
    }
    let user = hub.users.load(owner).await?;
    let stored = user
        .api_key(key_id)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the new key is missing"))?;
    tracing::info!(user = %owner, key = %key_id, "API key created");
    Ok(CreatedKey { key, stored })
}

/// The keys of `owner`, newest first (revoked ones too).
pub async fn list(hub: &Hub, owner: UserId) -> Result<Vec<ApiKey>, KeyError> {
    let user = hub.users.load(owner).await?;
    let mut keys: Vec<ApiKey> = user.api_keys().into_iter().cloned().collect();
    keys.reverse();
    Ok(keys)
}

/// Revoke a key of `owner`; it is refused from now on. Revoking twice is what the caller
/// wanted: done.
pub async fn revoke(hub: &Hub, owner: UserId, key_id: ApiKeyId) -> Result<(), KeyError> {
    let command = UserCommand::RevokeApiKey {
        key_id,
        now: hub.clock.now(),
    };
    match hub.users.execute(owner, command, &owner.to_string()).await {
        Ok(_) | Err(CommandError::Rejected(UserError::ApiKeyAlreadyRevoked(_))) => {}
        Err(err) => return Err(err.into()),
    }
    tracing::info!(user = %owner, key = %key_id, "API key revoked");
    Ok(())
}

/// Who a key acts for.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub user: UserId,
    /// The owner's roles now.
    pub roles: Vec<Role>,
    pub key_id: ApiKeyId,
    /// What the key may be used for.
    pub scopes: BTreeSet<ApiKeyScope>,
    /// The key's own rate limits.
    pub rate_limits: ApiKeyRateLimits,
    /// The owner as read for this check.
    pub state: crate::inference::CheckedUser,
}

/// Resolve a presented key to its owner, with the owner's roles now. A revoked or expired key,
/// and any key of a suspended owner, is refused at once: the owner is read from the event
/// store, never from a cache.
pub async fn authenticate(hub: &Hub, key: &str) -> Result<KeyOwner, KeyError> {
    let prefix = secrets::api_key_prefix(key).ok_or(KeyError::Refused)?;
    // The owner and the sequence of their last event in one round trip; the owner is
    // folded again only if that moved since this process last read them.
    let found: Option<(Uuid, Option<i64>)> = sqlx::query_as(
        "SELECT i.user_id,
                (SELECT max(e.sequence) FROM events e
                  WHERE e.aggregate_type = $2 AND e.aggregate_id = i.user_id::text)
           FROM api_key_index i
          WHERE i.prefix = $1",
    )
    .bind(prefix)
    .bind(<hub_domain::User as hub_domain::Decider>::TYPE)
    .fetch_optional(&hub.pool)
    .await?;
    let (owner, head) = found.ok_or(KeyError::Refused)?;
    let owner = UserId(owner);
    let head = head
        .and_then(|head| usize::try_from(head).ok())
        .unwrap_or(0);
    let user = hub.users.current_at(owner, head).await?;
    let hash = secrets::sha256_hash(key);
    let api_key = user.api_key_by_hash(&hash).ok_or(KeyError::Refused)?;
    if !api_key.is_usable_at(hub.clock.now()) {
        return Err(KeyError::Refused);
    }
    if user.is_suspended() {
        return Err(KeyError::OwnerSuspended);
    }
    Ok(KeyOwner {
        user: owner,
        roles: user.roles().iter().copied().collect(),
        key_id: api_key.id(),
        scopes: api_key.scopes().clone(),
        rate_limits: api_key.rate_limits(),
        state: crate::inference::CheckedUser(user),
    })
}
