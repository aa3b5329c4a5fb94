//! HTTP routes. Handlers are thin: parse, check the role, call the command or read model.

pub mod admin;
pub mod admin_users;
pub mod alerts;
pub mod analytics;
pub mod anthropic;
pub mod audit;
pub mod auth;
pub mod credits;
pub mod evidence;
pub mod google;
pub mod health;
pub mod keys;
pub mod openai;
pub mod payments;
pub mod promos;
pub mod usage;
pub mod verification;
pub mod web;
pub mod ws;

use axum::routing::{delete, get, post};
use axum::Router;
use std::sync::Arc;

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
/// | `POST /api/auth/logout-all` | a signed-in user, not an API key (own sessions) |
/// | `POST /api/auth/forgot-password`, `POST /api/auth/reset-password` | anyone (reset: holding a link) |
/// | `GET /api/auth/google`, `GET /api/auth/google/callback` | anyone (503 unless `google.enabled`) |
/// | `GET /api/auth/me` | any signed-in caller (own profile) |
/// | `GET /api/auth/options` | anyone: `{google, require_verified_email}`, what the sign-in page may offer |
/// | `POST /v1/chat/completions`, `GET /v1/models`, `GET /api/ws` | any signed-in caller (JWT, WebSocket ticket or API key with the `inference` scope; charged to the caller) |
/// | `POST /v1/embeddings` | the same (an embedding model; billed by the inputs' tokens) |
/// | `POST /v1/messages`, `POST /v1/messages/count_tokens` | the same (Anthropic's Messages API; the key in `x-api-key` or as a bearer token) |
/// | `POST /mcp` (MCP, Streamable HTTP: tools `chat`, `balance`, `usage_summary`, `list_models`) | any signed-in caller (bearer token or API key; a chat is billed to the caller) |
/// | `POST /api/ws/ticket` | a signed-in user, not an API key |
/// | `GET /api/providers/status` | any signed-in caller |
/// | `POST /api/auth/verify-email`, `POST /api/auth/resend-verification` | any signed-in caller (own email) |
/// | `POST /api/keys`, `DELETE /api/keys/{id}` | a signed-in user, not an API key (own keys) |
/// | `GET /api/keys` | any signed-in caller (own keys) |
/// | `GET /api/alerts/low-balance`, `PUT /api/alerts/low-balance` | any signed-in caller (own alert: threshold, webhook; PUT not with an API key) |
/// | `GET /api/admin/users`, `POST /api/admin/users/{id}/roles`, `DELETE /api/admin/users/{id}/roles/{role}` | admin |
/// | `POST /api/admin/users/{id}/suspend`, `POST /api/admin/users/{id}/unsuspend` | admin |
///
/// Every authenticated route refuses a suspended user (403 `account_suspended`) and an
/// access token cut off by a later suspension, role revocation, password reset or "log out
/// everywhere" (401 `session_ended`). An API key reaches `/v1` and `/api/ws` with the
/// `inference` scope and other `GET` routes with the `read` scope (`auth::key_may_call`).
/// | `GET /api/payments/packages` | anyone |
/// | `POST /api/payments/checkout` | any signed-in caller (own account; 503 unless Stripe is configured) |
/// | `POST /api/payments/webhook` | Stripe (the `Stripe-Signature` header, no bearer token) |
/// | `GET /api/payments/history` | any signed-in caller (own payments; `user_id=` for admin, auditor) |
/// | `POST /api/promos/redeem` | any signed-in caller (own account) |
/// | `POST /api/admin/promos`, `GET /api/admin/promos`, `POST /api/admin/promos/{code}/disable`, `POST /api/admin/promos/{code}/enable` | admin |
/// | `GET /api/usage`, `/api/usage/summary`, `/api/usage/export`, `/api/usage/requests/{id}` | any signed-in caller (own usage; an API key its owner's); admin, analyst, auditor: everyone's |
/// | `GET /api/analytics/events` | admin, analyst, auditor |
/// | `POST /api/usage/reprice` | analyst, admin (a read: nothing is written) |
/// | `GET /api/audit/ledger` (every account's entries; `from`, `to`, `account`, `kind`, `cause_type`, `cause_id`, `actor`) | auditor, admin |
/// | `GET /api/audit/accounts/{id}?as_of=` (the account folded from the event store up to a time, with its ledger) | auditor, admin |
/// | `GET /api/audit/trial-balance?as_of=` (the double-entry journal summed per account) | auditor, admin |
/// | `GET /api/audit/payments/reconciliation?from&to` (each Stripe session beside the credits it moved) | auditor, admin |
/// | `GET /api/audit/admin-actions` (grants, role changes, suspensions, promo codes, keys revoked by an admin) | auditor, admin |
/// | `GET /api/audit/checkpoints`, `/api/audit/public-key`, `/api/audit/events/{aggregate_id}/{sequence}/proof` (tamper evidence: signed checkpoints and inclusion proofs), `/api/audit/verify` (the last `aihub audit verify`) | auditor, admin |
/// | `GET /` and any other path outside the API | anyone: the web app from `server.web_dir` (`index.html` for the app's own routes; hashed assets cached a year) |
///
/// The audit routes only read; an API key, which acts with its owner's `user` role only,
/// gets 403 on every one of them.
///
/// With `rate_limits.enabled`, `/v1` counts requests, tokens and concurrent chats per user
/// and per API key (429 `rate_limit_exceeded` with `Retry-After`, OpenAI's
/// `x-ratelimit-*` headers on every answer), and the anonymous auth routes count requests
/// per client address (429 `rate_limited`): [`crate::limits`].
///
/// Every route but inference answers within `server.request_timeout_ms` (503 after it).
/// Inference (`/v1/chat/completions`, `/v1/messages`, `/api/ws`) runs under its own deadline
/// (`models.total_timeout_ms`): a generic timeout there would answer 503 to a request the
/// worker still completes and charges, and SDKs retry a 503 by themselves.
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        std::time::Duration::from_millis(state.settings.server.request_timeout_ms),
    );
    // The MCP server: every request authenticated first (crate::mcp).
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::mcp::require_caller,
        ));
    let inference = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/api/ws", get(ws::connect));
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/me", get(auth::me))
        .route("/api/auth/options", get(auth::options))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/logout-all", post(auth::logout_all))
        .route("/api/ws/ticket", post(ws::ticket))
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
        .route("/v1/models", get(openai::models))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/providers/status", get(openai::providers_status))
        .route("/api/keys", post(keys::create).get(keys::list))
        .route("/api/keys/{id}", delete(keys::revoke))
        .route(
            "/api/alerts/low-balance",
            get(alerts::get_low_balance).put(alerts::put_low_balance),
        )
        .route("/api/admin/users", get(admin_users::list))
        .route("/api/admin/users/{id}/roles", post(admin_users::grant_role))
        .route(
            "/api/admin/users/{id}/roles/{role}",
            delete(admin_users::revoke_role),
        )
        .route("/api/admin/users/{id}/suspend", post(admin_users::suspend))
        .route(
            "/api/admin/users/{id}/unsuspend",
            post(admin_users::unsuspend),
        )
        .route("/api/credits/balance", get(credits::balance))
        .route("/api/credits/transactions", get(credits::transactions))
        .route("/api/admin/credits/grant", post(admin::grant))
        .route("/api/payments/packages", get(payments::packages))
        .route("/api/payments/checkout", post(payments::checkout))
        .route("/api/payments/webhook", post(payments::webhook))
        .route("/api/payments/history", get(payments::history))
        .route("/api/promos/redeem", post(promos::redeem))
        .route("/api/admin/promos", post(promos::create).get(promos::list))
        .route("/api/admin/promos/{code}/disable", post(promos::disable))
        .route("/api/admin/promos/{code}/enable", post(promos::enable))
        .route("/api/usage", get(usage::list))
        .route("/api/usage/summary", get(usage::summary))
        .route("/api/usage/requests/{request_id}", get(usage::request))
        .route("/api/usage/reprice", post(usage::reprice))
        .route("/api/audit/ledger", get(audit::ledger))
        .route("/api/audit/accounts/{id}", get(audit::account))
        .route("/api/audit/trial-balance", get(audit::trial_balance))
        .route(
            "/api/audit/payments/reconciliation",
            get(audit::reconciliation),
        )
        .route("/api/audit/admin-actions", get(audit::admin_actions))
        .route("/api/audit/checkpoints", get(evidence::checkpoints))
        .route("/api/audit/public-key", get(evidence::public_key))
        .route("/api/audit/verify", get(evidence::last_verification))
        .route(
            "/api/audit/events/{aggregate_id}/{sequence}/proof",
            get(evidence::proof),
        )
        .layer(timeout)
        // The exports stream for as long as the range takes: no request timeout.
        .route("/api/usage/export", get(usage::export))
        .route("/api/analytics/events", get(analytics::events))
        .merge(inference)
        .merge(mcp)
        .fallback(web::serve)
        // Rate limits: per caller on /v1, per address on the anonymous routes (crate::limits).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::enforce,
        ))
        .with_state(state)
}
