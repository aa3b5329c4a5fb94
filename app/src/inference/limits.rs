//! Who may spend: the verified-email policy (step 2 of [`super::submit()`]) and the API key
//! whose spending limit the reservation (step 4) is checked against.

use hub_domain::{KeyLimit, User, UserId};
use std::sync::Arc;

use super::{GatewayError, Payer, EVENT_STORE_UNAVAILABLE};
use crate::hub::Hub;

/// The paying user, loaded once when a check below needs them: with
/// `auth.require_verified_email`, or for an API key (its spending limit).
pub async fn load_payer(hub: &Hub, payer: &Payer) -> Result<Option<Arc<User>>, GatewayError> {
    if !hub.settings.auth.require_verified_email && payer.api_key.is_none() {
        return Ok(None);
    }
    if let Some(checked) = &payer.checked {
        return Ok(Some(Arc::clone(&checked.0)));
    }
    hub.users
        .current(UserId(payer.user))
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
    if !user.is_some_and(|user| user.email_verified()) {
        return Err(GatewayError::EmailNotVerified);
    }
    Ok(())
}

/// The API key a request is made with, and its spending limit, for the reservation: the
/// credit account refuses it there, in the same decision as the hold, when the key's
/// charges and holds would pass the limit (so concurrent requests cannot all slip under).
pub fn key_limit(payer: &Payer, user: Option<&User>) -> Option<KeyLimit> {
    let id = payer.api_key?;
    let limit = user
        .and_then(|u| u.api_key(id))
        .and_then(|k| k.spending_limit());
    Some(KeyLimit { id, limit })
}
