//! Who may spend: the verified-email policy (step 2 of [`super::submit()`]) and an API key's
//! spending limit (step 4).

use hub_domain::{ApiKeyId, Credits, User, UserId};

use super::{GatewayError, Payer, EVENT_STORE_UNAVAILABLE};
use crate::hub::Hub;

/// The paying user, loaded once when a check below needs them: with
/// `auth.require_verified_email`, or for an API key (its spending limit).
pub async fn load_payer(hub: &Hub, payer: &Payer) -> Result<Option<User>, GatewayError> {
    if !hub.settings.auth.require_verified_email && payer.api_key.is_none() {
        return Ok(None);
    }
    hub.users
        .load(UserId(payer.user))
        .await
        .map(Some)
        .map_err(|_| EVENT_STORE_UNAVAILABLE)
}

/// With `auth.require_verified_email`, the owner of the account must have verified their
/// email address before spending credits on inference, whether they call in person or
/// through one of their API keys.
pub fn require_verified_email(hub: &Hub, user: Option<&User>) -> Result<(), GatewayError> {
    if !hub.settings.auth.require_verified_email {
        return Ok(());
    }
    if !user.is_some_and(User::email_verified) {
        return Err(GatewayError::EmailNotVerified);
    }
    Ok(())
}

/// An API key with a spending limit may not have charged plus reserved more than it.
pub async fn check_key_limit(
    hub: &Hub,
    payer: &Payer,
    user: Option<&User>,
    max_cost: Credits,
) -> Result<(), GatewayError> {
    let Some(key) = payer.api_key else {
        return Ok(());
    };
    let Some(limit) = user
        .and_then(|u| u.api_key(key))
        .and_then(|k| k.spending_limit())
    else {
        return Ok(());
    };
    let spent = charged_by_key(hub, key).await?;
    if spent.saturating_add(max_cost.micros()) > limit.micros() {
        return Err(GatewayError::KeySpendingLimit);
    }
    Ok(())
}

/// Micro-credits charged so far to requests made with `key` (the usage read model).
async fn charged_by_key(hub: &Hub, key: ApiKeyId) -> Result<i64, GatewayError> {
    let spent: Option<i64> = sqlx::query_scalar(
        "SELECT sum(charged_micros)::bigint FROM usage_records WHERE api_key_id = $1",
    )
    .bind(key.0)
    .fetch_one(&hub.pool)
    .await
    .map_err(|_| GatewayError::Unavailable("the database is unavailable"))?;
    Ok(spent.unwrap_or(0))
}
