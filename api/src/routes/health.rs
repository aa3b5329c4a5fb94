//! `/health` (the process is up) and `/ready` (its dependencies answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::state::AppState;
use hub_app::readiness::{self, Readiness};

/// The process is up.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Postgres and NATS reachable, with relay and projection lag. 503 if a dependency is down.
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let readiness = readiness::check(&state).await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness))
}
