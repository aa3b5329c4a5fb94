//! `/health` (the process is up) and `/ready` (its dependencies answer).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::auth::Caller;
use crate::state::AppState;
use hub_app::readiness;

/// The process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The process is up", body = crate::routes::health::Health)),
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `{"status": "ok"}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Postgres and NATS reachable: 200 `{"status":"ready"}`, or 503 if a dependency is down.
/// Only an admin (by bearer token) gets the details: relay and projection lag, waiting
/// settlements, and the dependencies' errors, which name hosts and drivers.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    responses((status = 200, description = "Postgres and NATS answer (admins by bearer token see the details)", body = Object), (status = 503, description = "A dependency is down", body = Object)),
)]
pub async fn ready(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let readiness = readiness::check(&state).await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Not `Caller::from_headers`: with Postgres down it cannot read the user, and an admin
    // must still see why the hub is not ready.
    let admin = Caller::is_admin_for_readiness(&state, &headers).await;
    let body = if admin {
        serde_json::to_value(&readiness).unwrap_or_else(|_| json!({"status": readiness.status}))
    } else {
        json!({ "status": readiness.status })
    };
    (status, Json(body))
}
