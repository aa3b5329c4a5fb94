//! `/api/keys`: API keys for programs. A key acts as its owner; it is shown once, stored as
//! SHA-256, listed by its prefix, and revoked at once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use hub_commands::CommandError;
use hub_domain::{
    ApiKey, ApiKeyId, ApiKeyName, ApiKeyPrefix, Credits, UserCommand, UserError, UserId,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use hub_adapters::secrets;

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: Uuid,
    /// The key's public beginning, to recognise it.
    pub prefix: String,
    pub name: String,
    pub spending_limit_micros: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyView {
    fn of(key: &ApiKey) -> Self {
        KeyView {
            id: key.id().0,
            prefix: key.prefix().as_str().to_string(),
            name: key.name().as_str().to_string(),
            spending_limit_micros: key.spending_limit().map(|c| c.micros()),
            expires_at: key.expires_at(),
            created_at: key.created_at(),
            revoked_at: key.revoked_at(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CreatedKey {
    /// The key itself: shown now and never again.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    pub name: Option<String>,
    /// Most this key may spend, in micro-credits (none: the owner's balance is the limit).
    pub spending_limit_micros: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Keys may manage keys only when a person signed in: a leaked key must not mint more.
fn person(caller: &Caller) -> Result<UserId, ApiError> {
    if caller.api_key.is_some() {
        return Err(ApiError::forbidden(
            "a signed-in user (API keys cannot manage keys)",
        ));
    }
    Ok(UserId(caller.user))
}

/// `POST /api/keys` — any signed-in user, for themselves.
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let owner = person(&caller)?;
    let name = ApiKeyName::parse(body.name.as_deref().unwrap_or("default"))
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    let spending_limit = body.spending_limit_micros.map(Credits::from_micros);
    if !state.users.load(owner).await?.is_registered() {
        return Err(ApiError::not_found("no user with this id"));
    }
    let key_id = ApiKeyId(Uuid::new_v4());
    // A prefix is 59 random bits; a collision is retried with a fresh key.
    let (key, prefix) = loop {
        let (key, prefix, _) = secrets::new_api_key();
        let claimed = sqlx::query(
            "INSERT INTO api_key_index (prefix, key_id, user_id) VALUES ($1, $2, $3)
             ON CONFLICT (prefix) DO NOTHING",
        )
        .bind(&prefix)
        .bind(key_id.0)
        .bind(owner.0)
        .execute(&state.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            break (key, prefix);
        }
    };
    let command = UserCommand::CreateApiKey {
        key_id,
        prefix: ApiKeyPrefix::parse(prefix).map_err(|e| ApiError::internal(e))?,
        key_hash: secrets::sha256_hash(&key),
        name,
        spending_limit,
        expires_at: body.expires_at,
        now: Utc::now(),
    };
    state
        .users
        .execute(owner, command, &owner.to_string())
        .await?;
    let user = state.users.load(owner).await?;
    let view = user
        .api_key(key_id)
        .map(KeyView::of)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("the new key is missing")))?;
    tracing::info!(user = %owner, key = %key_id, "API key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { key, view })).into_response())
}

/// `GET /api/keys` — any signed-in caller: their own keys, newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = state.users.load(UserId(caller.user)).await?;
    let mut keys: Vec<KeyView> = user.api_keys().into_iter().map(KeyView::of).collect();
    keys.reverse();
    Ok(Json(serde_json::json!({ "keys": keys })))
}

/// `DELETE /api/keys/{id}` — the owner, signed in. Takes effect at once.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = person(&caller)?;
    let key_id = Uuid::parse_str(&id)
        .map(ApiKeyId)
        .map_err(|_| ApiError::not_found("no API key with this id"))?;
    let command = UserCommand::RevokeApiKey {
        key_id,
        now: Utc::now(),
    };
    match state
        .users
        .execute(owner, command, &owner.to_string())
        .await
    {
        // Revoking twice is what the caller wanted: done.
        Ok(_) | Err(CommandError::Rejected(UserError::ApiKeyAlreadyRevoked(_))) => {}
        Err(err) => return Err(err.into()),
    }
    tracing::info!(user = %owner, key = %key_id, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
