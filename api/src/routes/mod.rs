//! HTTP routes. Handlers are thin: parse, check the role, call the command or read model.

pub mod admin;
pub mod admin_users;
pub mod auth;
pub mod credits;
pub mod google;
pub mod health;
pub mod keys;
pub mod verification;

use axum::routing::{delete, get, post};
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
/// | `POST /api/auth/register`, `POST /api/auth/login` | anyone |
/// | `POST /api/auth/refresh`, `POST /api/auth/logout` | anyone holding a refresh token |
/// | `POST /api/auth/forgot-password`, `POST /api/auth/reset-password` | anyone (reset: holding a link) |
/// | `GET /api/auth/google`, `GET /api/auth/google/callback` | anyone (503 unless `google.enabled`) |
/// | `GET /api/auth/me` | any signed-in caller (own profile) |
/// | `POST /api/auth/verify-email`, `POST /api/auth/resend-verification` | any signed-in caller (own email) |
/// | `POST /api/keys`, `DELETE /api/keys/{id}` | a signed-in user, not an API key (own keys) |
/// | `GET /api/keys` | any signed-in caller (own keys) |
/// | `GET /api/admin/users`, `POST /api/admin/users/{id}/roles`, `DELETE /api/admin/users/{id}/roles/{role}` | admin |
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/me", get(auth::me))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/verify-email", post(verification::verify_email))
        .route(
            "/api/auth/resend-verification",
            post(verification::resend_verification),
        )
        .route(
            "/api/auth/forgot-password",
            post(verification::forgot_password),
        )
        .route(
            "/api/auth/reset-password",
            post(verification::reset_password),
        )
        .route("/api/auth/google", get(google::start))
        .route("/api/auth/google/callback", get(google::callback))
        .route("/api/keys", post(keys::create).get(keys::list))
        .route("/api/keys/{id}", delete(keys::revoke))
        .route("/api/admin/users", get(admin_users::list))
        .route("/api/admin/users/{id}/roles", post(admin_users::grant_role))
        .route(
            "/api/admin/users/{id}/roles/{role}",
            delete(admin_users::revoke_role),
        )
        .route("/api/credits/balance", get(credits::balance))
        .route("/api/credits/transactions", get(credits::transactions))
        .route("/api/admin/credits/grant", post(admin::grant))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
