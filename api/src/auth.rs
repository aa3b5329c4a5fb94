//! Who is calling: a bearer JWT or an API key, turned into a [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hub_domain::{ApiKeyId, UserId};
use std::sync::Arc;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

pub use hub_adapters::jwt::{Claims, Jwt};
/// What a caller may do (the domain's roles: user, admin, analyst, auditor).
pub use hub_domain::Role;

/// An authenticated caller: by an access token, or by an API key acting as its owner.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Uuid,
    pub roles: Vec<Role>,
    /// The API key used, if the caller is a program.
    pub api_key: Option<ApiKeyId>,
}

impl Caller {
    /// Who pays for what this caller runs.
    pub fn payer(&self) -> hub_app::inference::Payer {
        hub_app::inference::Payer {
            user: self.user,
            api_key: self.api_key,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Refuse unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has(*r)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(ApiError::unauthorized(
                "the Authorization header must be 'Bearer <token>'",
            ))?
            .trim();
        if let Some(prefix) = hub_adapters::secrets::api_key_prefix(token) {
            return api_key_caller(state, prefix, token).await;
        }
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        Ok(Caller {
            user: claims.sub,
            roles: claims.roles,
            api_key: None,
        })
    }
}

/// An API key acts as its owner, with the owner's roles now; a revoked or expired key is
/// refused at once (the owner is read from the event store, never from a cache).
async fn api_key_caller(state: &AppState, prefix: &str, key: &str) -> Result<Caller, ApiError> {
    const REFUSED: ApiError = ApiError::unauthorized("invalid, revoked or expired API key");
    let owner: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM api_key_index WHERE prefix = $1")
            .bind(prefix)
            .fetch_optional(&state.pool)
            .await
            .map_err(ApiError::from)?;
    let owner = owner.ok_or(REFUSED)?;
    let user = state.users.load(UserId(owner)).await?;
    let hash = hub_adapters::secrets::sha256_hash(key);
    let api_key = user.api_key_by_hash(&hash).ok_or(REFUSED)?;
    if !api_key.is_usable_at(chrono::Utc::now()) {
        return Err(REFUSED);
    }
    Ok(Caller {
        user: owner,
        roles: user.roles().iter().copied().collect(),
        api_key: Some(api_key.id()),
    })
}
