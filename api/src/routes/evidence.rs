//! Tamper evidence for auditors (docs/audit.md): the signed checkpoints, the key that signs
//! them, and a proof that one event is in a signed checkpoint (auditor, admin only).

use axum::extract::{Path, State};
use axum::Json;
use hub_app::audit::AUDIT_ROLES;
use hub_app::evidence::checkpoints;
use hub_app::evidence::{Proof, SignedCheckpoint};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// Checkpoints per page at most.
const PAGE_MAX: i64 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsQuery {
    pub limit: Option<i64>,
    /// A checkpoint id: those before it.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointsPage {
    pub data: Vec<SignedCheckpoint>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/audit/checkpoints`: signed checkpoints, newest first.
#[utoipa::path(
    get,
    path = "/api/audit/checkpoints",
    tag = "audit",
    params(CheckpointsQuery),
    responses((status = 200, description = "Signed checkpoints, newest first", body = CheckpointsPage), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn checkpoints(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CheckpointsQuery>,
) -> Result<Json<CheckpointsPage>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {PAGE_MAX}"),
        ));
    }
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is not one we gave"))
        })
        .transpose()?;
    let data = checkpoints::list(&state.pool, before, limit).await?;
    let next_cursor = (data.len() as i64 == limit)
        .then(|| data.last().map(|c| c.id.to_string()))
        .flatten();
    Ok(Json(CheckpointsPage { data, next_cursor }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    pub algorithm: &'static str,
    /// The Ed25519 public key, hex.
    pub public_key: String,
    /// SHA-256 of the key, hex: checkpoints name their key by it.
    pub key_id: String,
}

/// `GET /api/audit/public-key`: the key checkpoints are signed with.
#[utoipa::path(
    get,
    path = "/api/audit/public-key",
    tag = "audit",
    responses((status = 200, description = "OK", body = PublicKey), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn public_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<PublicKey>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    Ok(Json(PublicKey {
        algorithm: "Ed25519",
        public_key: state.checkpoint_key.public_key_hex(),
        key_id: state.checkpoint_key.key_id(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProofQuery {
    /// The aggregate's type: `CreditAccount` (the ledger; the default), `User`, `Payment`
    /// or `PromoCode`. A user's id is also their credit account's.
    pub aggregate_type: Option<String>,
}

/// `GET /api/audit/events/{aggregate_id}/{sequence}/proof`: the event as stored, its chain
/// to the head a signed checkpoint saw, and that head's inclusion proof. Checked offline
/// by `aihub audit verify-proof FILE --public-key KEY`.
#[utoipa::path(
    get,
    path = "/api/audit/events/{aggregate_id}/{sequence}/proof",
    tag = "audit",
    params(("aggregate_id" = String, Path), ("sequence" = String, Path, description = "The event's sequence in its aggregate, from 1"), ProofQuery),
    responses((status = 200, description = "OK", body = Proof), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn proof(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((aggregate_id, sequence)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<ProofQuery>,
) -> Result<Json<Proof>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    let sequence: i64 = sequence.parse().ok().filter(|s| *s >= 1).ok_or_else(|| {
        ApiError::bad_request("invalid_sequence", "sequence must be a whole number from 1")
    })?;
    let aggregate_type = query.aggregate_type.as_deref().unwrap_or("CreditAccount");
    if !["CreditAccount", "User", "Payment", "PromoCode"].contains(&aggregate_type) {
        return Err(ApiError::bad_request(
            "invalid_aggregate_type",
            "aggregate_type must be CreditAccount, User, Payment or PromoCode",
        ));
    }
    let proof = checkpoints::proof(
        &state.pool,
        &state.checkpoint_trees,
        aggregate_type,
        &aggregate_id,
        sequence,
        Duration::from_millis(state.settings.audit.checkpoint_interval_ms),
    )
    .await?;
    Ok(Json(proof))
}

/// `GET /api/audit/verify`: the report of the last `aihub audit verify` (404
/// `no_verification` before the first).
#[utoipa::path(
    get,
    path = "/api/audit/verify",
    tag = "audit",
    responses((status = 200, description = "The last `aihub audit verify`", body = hub_app::audit::verify::Report), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn last_verification(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<hub_app::audit::verify::Report>, ApiError> {
    caller.require(&AUDIT_ROLES)?;
    hub_app::audit::verify::last(&state.pool)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found_code(
                "no_verification",
                "no verification has run yet: run `aihub audit verify`",
            )
        })
}
