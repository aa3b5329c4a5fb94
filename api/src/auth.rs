//! Bearer JWTs (HS256, `exp` required) and roles.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hub_domain::{ApiKeyId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// What a caller may do (the domain's roles: user, admin, analyst, auditor).
pub use hub_domain::Role;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// Every role the user held when the token was issued.
    pub roles: Vec<Role>,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks tokens with one fixed algorithm.
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Jwt {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Jwt {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn mint(
        &self,
        user: Uuid,
        roles: &[Role],
        ttl_s: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let claims = Claims {
            sub: user,
            roles,
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl_s).unwrap_or(i64::MAX)),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims)
    }
}

/// An authenticated caller: by an access token, or by an API key acting as its owner.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: Uuid,
    pub roles: Vec<Role>,
    /// The API key used, if the caller is a program.
    pub api_key: Option<ApiKeyId>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Refuse unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has(*r)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
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
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be 'Bearer <token>'",
            ))?
            .trim();
        if let Some(prefix) = crate::secrets::api_key_prefix(token) {
            return api_key_caller(state, prefix, token).await;
        }
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
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
    const REFUSED: ApiError = ApiError::Unauthorized("invalid, revoked or expired API key");
    let owner: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM api_key_index WHERE prefix = $1")
            .bind(prefix)
            .fetch_optional(&state.pool)
            .await
            .map_err(ApiError::from)?;
    let owner = owner.ok_or(REFUSED)?;
    let user = state.users.load(UserId(owner)).await?;
    let hash = crate::secrets::sha256_hash(key);
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
