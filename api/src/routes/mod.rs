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

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use std::sync::Arc;

use crate::state::AppState;

/// Every route, and the roles it allows:
///
/// | route | roles |
/// |---|---|
/// | `GET /health`, `GET /ready` | anyone |
/// | `GET /openapi.json` (the OpenAPI 3.1 contract), `GET /docs` (its reference page) | anyone |
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
    Router::new()
        .merge(timed().router.layer(timeout))
        // The exports stream for as long as the range takes: no request timeout.
        .merge(streamed().router)
        .merge(inference().router)
        .merge(mcp)
        .fallback(web::serve)
        // Rate limits: per caller on /v1, per address on the anonymous routes (crate::limits).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::limits::enforce,
        ))
        .with_state(state)
}

/// Every `(method, path)` the API serves: what the OpenAPI document must describe, one
/// operation each (`tests/tests/openapi.rs`). The web app's fallback is not an API route.
pub fn table() -> Vec<(Method, &'static str)> {
    let mut all = timed().entries;
    all.extend(streamed().entries);
    all.extend(inference().entries);
    // Nested as a service (rmcp): JSON-RPC over POST, stateless.
    all.push((Method::POST, "/mcp"));
    // Merged by the server when `metrics.api_route` (crate::metrics::router).
    all.push((Method::GET, "/metrics"));
    all
}

/// A router that writes down each route it is given, so the router and [`table`] cannot
/// disagree.
struct Table {
    router: Router<Arc<AppState>>,
    entries: Vec<(Method, &'static str)>,
}

impl Table {
    fn new() -> Self {
        Table {
            router: Router::new(),
            entries: Vec::new(),
        }
    }

    fn at(
        mut self,
        method: Method,
        path: &'static str,
        route: MethodRouter<Arc<AppState>>,
    ) -> Self {
        // Routes on one path merge their methods (axum panics on a method given twice).
        self.router = self.router.route(path, route);
        self.entries.push((method, path));
        self
    }

    fn get<H: Handler<T, Arc<AppState>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.at(Method::GET, path, get(h))
    }

    fn post<H: Handler<T, Arc<AppState>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.at(Method::POST, path, post(h))
    }

    fn put<H: Handler<T, Arc<AppState>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.at(Method::PUT, path, put(h))
    }

    fn delete<H: Handler<T, Arc<AppState>>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.at(Method::DELETE, path, delete(h))
    }
}

/// The routes that answer within `server.request_timeout_ms`.
fn timed() -> Table {
    Table::new()
        .get("/health", health::health)
        .get("/ready", health::ready)
        .get("/openapi.json", crate::openapi::openapi_json)
        .get("/docs", crate::openapi::docs)
        .post("/api/auth/register", auth::register)
        .post("/api/auth/login", auth::login)
        .get("/api/auth/me", auth::me)
        .get("/api/auth/options", auth::options)
        .post("/api/auth/refresh", auth::refresh)
        .post("/api/auth/logout", auth::logout)
        .post("/api/auth/logout-all", auth::logout_all)
        .post("/api/ws/ticket", ws::ticket)
        .post("/api/auth/verify-email", verification::verify_email)
        .post(
            "/api/auth/resend-verification",
            verification::resend_verification,
        )
        .post("/api/auth/forgot-password", verification::forgot_password)
        .post("/api/auth/reset-password", verification::reset_password)
        .get("/api/auth/google", google::start)
        .get("/api/auth/google/callback", google::callback)
        .get("/v1/models", openai::models)
        .post("/v1/messages/count_tokens", anthropic::count_tokens)
        .get("/api/providers/status", openai::providers_status)
        .post("/api/keys", keys::create)
        .get("/api/keys", keys::list)
        .delete("/api/keys/{id}", keys::revoke)
        .get("/api/alerts/low-balance", alerts::get_low_balance)
        .put("/api/alerts/low-balance", alerts::put_low_balance)
        .get("/api/admin/users", admin_users::list)
        .post("/api/admin/users/{id}/roles", admin_users::grant_role)
        .delete(
            "/api/admin/users/{id}/roles/{role}",
            admin_users::revoke_role,
        )
        .post("/api/admin/users/{id}/suspend", admin_users::suspend)
        .post("/api/admin/users/{id}/unsuspend", admin_users::unsuspend)
        .get("/api/credits/balance", credits::balance)
        .get("/api/credits/transactions", credits::transactions)
        .post("/api/admin/credits/grant", admin::grant)
        .get("/api/payments/packages", payments::packages)
        .post("/api/payments/checkout", payments::checkout)
        .post("/api/payments/webhook", payments::webhook)
        .get("/api/payments/history", payments::history)
        .post("/api/promos/redeem", promos::redeem)
        .post("/api/admin/promos", promos::create)
        .get("/api/admin/promos", promos::list)
        .post("/api/admin/promos/{code}/disable", promos::disable)
        .post("/api/admin/promos/{code}/enable", promos::enable)
        .get("/api/usage", usage::list)
        .get("/api/usage/summary", usage::summary)
        .get("/api/usage/requests/{request_id}", usage::request)
        .post("/api/usage/reprice", usage::reprice)
        .get("/api/audit/ledger", audit::ledger)
        .get("/api/audit/accounts/{id}", audit::account)
        .get("/api/audit/trial-balance", audit::trial_balance)
        .get("/api/audit/payments/reconciliation", audit::reconciliation)
        .get("/api/audit/admin-actions", audit::admin_actions)
        .get("/api/audit/checkpoints", evidence::checkpoints)
        .get("/api/audit/public-key", evidence::public_key)
        .get("/api/audit/verify", evidence::last_verification)
        .get(
            "/api/audit/events/{aggregate_id}/{sequence}/proof",
            evidence::proof,
        )
}

/// The exports: they stream for as long as the range takes, so no request timeout.
fn streamed() -> Table {
    Table::new()
        .get("/api/usage/export", usage::export)
        .get("/api/analytics/events", analytics::events)
}

/// Inference runs under its own deadline (`models.total_timeout_ms`).
fn inference() -> Table {
    Table::new()
        .post("/v1/chat/completions", openai::chat_completions)
        .post("/v1/messages", anthropic::messages)
        .post("/v1/embeddings", openai::embeddings)
        .get("/api/ws", ws::connect)
}
