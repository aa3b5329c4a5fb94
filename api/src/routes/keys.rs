//! `/api/keys`: API keys for programs. A key acts as its owner; it is shown once, stored as
//! SHA-256, listed by its prefix, and revoked at once. The flows live in [`hub_app::keys`];
//! this module parses requests and maps answers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use hub_app::keys::{self, CreatedKey, NewKey};
use hub_domain::{ApiKey, ApiKeyId, ApiKeyName, ApiKeyRateLimits, ApiKeyScope, Credits, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    /// The key's public beginning, to recognise it.
    pub prefix: String,
    pub name: String,
    pub spending_limit_micros: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// What the key may be used for: `inference` (`/v1`, the chat WebSocket), `read` (the
    /// owner's `GET` routes).
    pub scopes: Vec<&'static str>,
    /// The key's own rate limits; a field absent here takes the hub's default for keys.
    pub rate_limits: RateLimitsBody,
}

/// An API key's own rate limits (each at least 1; absent: the hub's default for keys).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u32>,
}

impl RateLimitsBody {
    fn parse(self) -> Result<ApiKeyRateLimits, ApiError> {
        if [
            self.requests_per_minute,
            self.tokens_per_minute,
            self.concurrent_requests,
        ]
        .contains(&Some(0))
        {
            return Err(ApiError::bad_request(
                "invalid_rate_limits",
                "each rate limit of a key must be at least 1 (leave it out for the default)",
            ));
        }
        Ok(ApiKeyRateLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            concurrent_requests: self.concurrent_requests,
        })
    }
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
            scopes: key.scopes().iter().map(|s| s.as_str()).collect(),
            rate_limits: {
                let limits = key.rate_limits();
                RateLimitsBody {
                    requests_per_minute: limits.requests_per_minute,
                    tokens_per_minute: limits.tokens_per_minute,
                    concurrent_requests: limits.concurrent_requests,
                }
            },
        }
    }
}

/// The caller's keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKeyView {
    /// The key itself: shown now and never again.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    pub name: Option<String>,
    /// Most this key may spend, in micro-credits (none: the owner's balance is the limit).
    pub spending_limit_micros: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    /// `["inference"]` (the default), `["read"]`, or both.
    pub scopes: Option<Vec<String>>,
    /// The key's own rate limits (`requests_per_minute`, `tokens_per_minute`,
    /// `concurrent_requests`), each overriding the hub's default for keys.
    pub rate_limits: Option<RateLimitsBody>,
}

/// The scopes a body asks for: [`ApiKeyScope::default_set`] when it names none.
fn scopes(asked: Option<Vec<String>>) -> Result<BTreeSet<ApiKeyScope>, ApiError> {
    let Some(asked) = asked else {
        return Ok(ApiKeyScope::default_set());
    };
    let scopes = asked
        .iter()
        .map(|s| s.parse::<ApiKeyScope>())
        .collect::<Result<BTreeSet<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_scope", e.to_string()))?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "an API key needs at least one scope: inference or read",
        ));
    }
    Ok(scopes)
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
#[utoipa::path(
    post,
    path = "/api/keys",
    tag = "keys",
    request_body = CreateKeyBody,
    responses((status = 201, description = "The key, shown once", body = CreatedKeyView), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let owner = person(&caller)?;
    let new = NewKey {
        name: ApiKeyName::parse(body.name.as_deref().unwrap_or("default"))
            .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?,
        spending_limit: body.spending_limit_micros.map(Credits::from_micros),
        expires_at: body.expires_at,
        scopes: scopes(body.scopes)?,
        rate_limits: body.rate_limits.unwrap_or_default().parse()?,
    };
    let CreatedKey { key, stored } = keys::create(&state, owner, new).await?;
    let view = KeyView::of(&stored);
    Ok((StatusCode::CREATED, Json(CreatedKeyView { key, view })).into_response())
}

/// `GET /api/keys` — any signed-in caller: their own keys, newest first.
#[utoipa::path(
    get,
    path = "/api/keys",
    tag = "keys",
    responses((status = 200, description = "The caller's keys, newest first", body = KeyList), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    let keys: Vec<KeyView> = keys::list(&state, UserId(caller.user))
        .await?
        .iter()
        .map(KeyView::of)
        .collect();
    Ok(Json(KeyList { keys }))
}

/// `DELETE /api/keys/{id}` — the owner, signed in. Takes effect at once.
#[utoipa::path(
    delete,
    path = "/api/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = person(&caller)?;
    let key_id = Uuid::parse_str(&id)
        .map(ApiKeyId)
        .map_err(|_| ApiError::not_found("no API key with this id"))?;
    keys::revoke(&state, owner, key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
