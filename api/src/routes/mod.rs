//! HTTP routes. Handlers are thin: parse, check the role, call the command or read model.

pub mod admin;
pub mod credits;
pub mod health;

use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route, and the roles it allows:
///
/// | route | roles |
/// |---|---|
/// | `GET /health`, `GET /ready` | anyone |
/// | `GET /api/credits/balance` | any signed-in caller (own account; `user_id=` for admin, auditor) |
/// | `GET /api/credits/transactions` | same |
/// | `POST /api/admin/credits/grant` | admin |
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/api/credits/balance", get(credits::balance))
        .route("/api/credits/transactions", get(credits::transactions))
        .route("/api/admin/credits/grant", post(admin::grant))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
