//! Who is calling: a bearer JWT (checked against the hub's clock) or an API key (resolved
//! to its owner by [`hub_app::keys::authenticate`]), turned into a [`Caller`].
//!
//! Every request checks its credential against the user as the event store has it now
//! ([`hub_app::identity::access`]): a suspended user is refused on every route (403
//! `account_suspended`), and an access token minted before a suspension, a revoked role, a
//! password reset or "log out everywhere" is refused (401 `session_ended`) though it has not
//! expired. An API key may call only what its scopes reach ([`key_may_call`]).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hub_app::identity::access::{self, Credential};
use hub_domain::{ApiKeyId, ApiKeyScope, UserId};
use std::collections::BTreeSet;
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
    /// What the caller's API key may be used for; empty for a person (an access token is
    /// limited by its roles only).
    pub scopes: BTreeSet<ApiKeyScope>,
    /// The credential presented, to check again later (an open WebSocket does on every chat
    /// it starts).
    pub credential: Credential,
    /// The user as the check of this request's credential read them.
    checked: hub_app::inference::CheckedUser,
}

impl Caller {
    /// Who pays for what this caller runs, over a connection that outlives the request
    /// it was authenticated on (a WebSocket, an MCP session): each chat reads the user afresh.
    pub fn payer(&self) -> hub_app::inference::Payer {
        hub_app::inference::Payer {
            user: self.user,
            api_key: self.api_key,
            checked: None,
        }
    }

    /// Who pays for the one request this caller was authenticated on: the user as its
    /// credential check read them goes with it, so the submit pipeline does not read them
    /// again (one round trip to the event store less for a program's chat).
    pub fn payer_of_this_request(&self) -> hub_app::inference::Payer {
        hub_app::inference::Payer {
            checked: Some(self.checked.clone()),
            ..self.payer()
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
        // Already authenticated by the rate limits in front of the handler
        // (`crate::limits`): not twice.
        let caller = match parts.extensions.get::<Caller>() {
            Some(caller) => caller.clone(),
            None => Caller::from_headers(state, &parts.headers).await?,
        };
        if caller.api_key.is_some() {
            key_may_call(&parts.method, parts.uri.path(), &caller.scopes)?;
        }
        Ok(caller)
    }
}

/// What a program holding an API key may call, the one place keys are limited: inference
/// (`/v1` and the chat WebSocket) with the `inference` scope, other `GET`/`HEAD` routes (the
/// owner's reads) with the `read` scope. Everything else (grants, roles, keys, payments,
/// promo codes) needs a person signed in, so a leaked key cannot spend its owner's
/// privileges.
pub(crate) fn key_may_call(
    method: &axum::http::Method,
    path: &str,
    scopes: &BTreeSet<ApiKeyScope>,
) -> Result<(), ApiError> {
    let needs = if path.starts_with("/v1/") || path == "/api/ws" {
        ApiKeyScope::Inference
    } else if matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD) {
        ApiKeyScope::Read
    } else {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "api_key_not_allowed",
            "an API key may call /v1 and read routes only; sign in to do this",
        ));
    };
    if scopes.contains(&needs) {
        return Ok(());
    }
    Err(ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "insufficient_scope",
        match needs {
            ApiKeyScope::Inference => "this API key lacks the inference scope",
            ApiKeyScope::Read => "this API key lacks the read scope",
        },
    ))
}

/// The roles an API key acts with: its owner's `user` role only. An admin's, analyst's or
/// auditor's key is still an inference key.
fn key_roles(owner_roles: &[Role]) -> Vec<Role> {
    owner_roles
        .iter()
        .copied()
        .filter(|role| *role == Role::User)
        .collect()
}

/// An access token's claims, its signature and expiry checked (its user not yet).
fn verified(state: &AppState, token: &str) -> Result<(Claims, Credential), ApiError> {
    let claims = state
        .jwt
        .verify_at(token, state.clock.now())
        .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
    let credential = Credential::of_token(&claims);
    Ok((claims, credential))
}

/// The caller an access token's checked claims name.
fn of_claims(claims: Claims, credential: Credential, user: Arc<hub_domain::User>) -> Caller {
    Caller {
        user: claims.sub,
        roles: claims.roles,
        api_key: None,
        scopes: BTreeSet::new(),
        credential,
        checked: hub_app::inference::CheckedUser(user),
    }
}

impl Caller {
    /// The caller a request's `Authorization: Bearer` names (an access token or an API key).
    pub async fn from_headers(
        state: &AppState,
        headers: &axum::http::HeaderMap,
    ) -> Result<Self, ApiError> {
        let token = bearer(headers)?;
        if hub_adapters::secrets::api_key_prefix(token).is_some() {
            let owner = hub_app::keys::authenticate(state, token).await?;
            return Ok(Caller::of_key(owner));
        }
        Caller::of_token(state, token).await
    }

    /// The caller; who its requests count against for rate limits (the user with the roles
    /// they hold and, for a program, its API key with the key's own limits); and, when
    /// `admission` asks for it, the request admitted by the rate limits (`Some(true)`: a place
    /// among the caller's concurrent requests taken too). `None` leaves the admission to the
    /// submit pipeline, which takes the request with its tokens in one call.
    ///
    /// For an access token the subject is in the signed claims, so the store's round trip
    /// runs beside the check of the user in the event store instead of after it: under load
    /// each is a wait for another process, and the edge then costs one of them, not both
    /// (docs/benchmarks.md, "Where the edge's time goes"). A request whose user does not
    /// check out is refused as before, and gives back what its admission took (the request
    /// and the lease). An API key's limits are read with the key, so its
    /// admission waits for the lookup.
    pub async fn admitted(
        state: &AppState,
        headers: &axum::http::HeaderMap,
        admission: Option<bool>,
    ) -> Result<
        (
            Self,
            hub_app::rate_limits::Subject,
            Option<hub_app::rate_limits::Verdict>,
        ),
        ApiError,
    > {
        let token = bearer(headers)?;
        if hub_adapters::secrets::api_key_prefix(token).is_some() {
            let owner = hub_app::keys::authenticate(state, token).await?;
            let overrides = hub_app::rate_limits::KeyOverrides::from_limits(owner.rate_limits);
            let subject = state.rate_limits.subject(
                owner.user.0,
                &owner.roles,
                Some((owner.key_id, overrides)),
            );
            let verdict = match admission {
                Some(lease) => Some(state.rate_limits.admit_request(&subject, lease).await),
                None => None,
            };
            return Ok((Caller::of_key(owner), subject, verdict));
        }
        let (claims, credential) = verified(state, token)?;
        let subject = state.rate_limits.subject(claims.sub, &claims.roles, None);
        let Some(lease) = admission else {
            let user = access::check(state, UserId(claims.sub), &credential).await?;
            return Ok((of_claims(claims, credential, user), subject, None));
        };
        let (checked, verdict) = tokio::join!(
            access::check(state, UserId(claims.sub), &credential),
            state.rate_limits.admit_request(&subject, lease)
        );
        let user = match checked {
            Ok(user) => user,
            Err(refused) => {
                if matches!(verdict, hub_app::rate_limits::Verdict::Admitted { .. }) {
                    state.rate_limits.refund_request(&subject).await;
                }
                return Err(refused.into());
            }
        };
        Ok((of_claims(claims, credential, user), subject, Some(verdict)))
    }

    /// A person's caller from a credential held elsewhere (a redeemed WebSocket ticket),
    /// checked against the user now.
    pub async fn of_credential(
        state: &AppState,
        user: Uuid,
        roles: Vec<Role>,
        credential: Credential,
    ) -> Result<Self, ApiError> {
        let checked = access::check(state, UserId(user), &credential).await?;
        Ok(Caller {
            user,
            roles,
            api_key: None,
            scopes: BTreeSet::new(),
            credential,
            checked: hub_app::inference::CheckedUser(checked),
        })
    }

    fn of_key(owner: hub_app::keys::KeyOwner) -> Self {
        Caller {
            user: owner.user.0,
            roles: key_roles(&owner.roles),
            api_key: Some(owner.key_id),
            scopes: owner.scopes,
            credential: Credential::ApiKey(owner.key_id),
            checked: owner.state,
        }
    }

    /// The caller an access token names, its user checked in the event store (suspended, or
    /// signed out since the token was made: refused).
    async fn of_token(state: &AppState, token: &str) -> Result<Self, ApiError> {
        let (claims, credential) = verified(state, token)?;
        let user = access::check(state, UserId(claims.sub), &credential).await?;
        Ok(of_claims(claims, credential, user))
    }

    /// Whether the request's access token names an admin, for `/ready` only: when the user
    /// cannot be read (Postgres is what is down, and then the details matter most), the
    /// token's own word decides, its signature and expiry checked. The details are
    /// read-only; nothing that changes anything trusts a token without its user.
    pub async fn is_admin_for_readiness(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
        let Ok(token) = bearer(headers) else {
            return false;
        };
        if hub_adapters::secrets::api_key_prefix(token).is_some() {
            return false;
        }
        let Ok(claims) = state.jwt.verify_at(token, state.clock.now()) else {
            return false;
        };
        if !claims.roles.contains(&Role::Admin) {
            return false;
        }
        let credential = Credential::of_token(&claims);
        match access::check(state, UserId(claims.sub), &credential).await {
            Ok(_) | Err(access::AccessError::Store(_)) => true,
            Err(access::AccessError::Refused(_)) => false,
        }
    }

    /// Check the caller's credential again, against the user as they are now: what a
    /// long-lived connection does before each thing it starts.
    pub async fn recheck(&self, state: &AppState) -> Result<(), access::AccessError> {
        access::check(state, UserId(self.user), &self.credential)
            .await
            .map(|_| ())
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let Some(header) = headers.get(axum::http::header::AUTHORIZATION) else {
        // Anthropic's SDKs send their key in `x-api-key`.
        return match headers.get("x-api-key") {
            Some(key) => key
                .to_str()
                .map(str::trim)
                .map_err(|_| ApiError::unauthorized("the x-api-key header is not a valid key")),
            None => Err(ApiError::unauthorized("missing bearer token")),
        };
    };
    Ok(header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(ApiError::unauthorized(
            "the Authorization header must be 'Bearer <token>'",
        ))?
        .trim())
}
