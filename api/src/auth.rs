//! Who is calling: a bearer JWT (checked against the hub's clock) or an API key (resolved
//! to its owner by [`hub_app::keys::authenticate`]), turned into a [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hub_domain::ApiKeyId;
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
        if hub_adapters::secrets::api_key_prefix(token).is_some() {
            let owner = hub_app::keys::authenticate(state, token).await?;
            return Ok(Caller {
                user: owner.user.0,
                roles: owner.roles,
                api_key: Some(owner.key_id),
            });
        }
        let claims = state
            .jwt
            .verify_at(token, state.clock.now())
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        Ok(Caller {
            user: claims.sub,
            roles: claims.roles,
            api_key: None,
        })
    }
}
