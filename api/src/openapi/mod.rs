//! The contract: an OpenAPI 3.1 document derived from the handlers (`#[utoipa::path]` on
//! each) and the types they read and answer, served at `GET /openapi.json`, and the
//! reference page at `GET /docs`, which the hub serves from its own files (no CDN).
//!
//! Every route of [`crate::routes::table`] is in the document; `tests/tests/openapi.rs`
//! fails on one that is not, and schemathesis fuzzes the document against a live hub in the
//! test command (`tests/contract/run.sh`).

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes;

pub mod wire;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Smart AI Hub",
        description = "A credit-metered AI gateway. OpenAI-compatible (`/v1/chat/completions`, \
`/v1/embeddings`, `/v1/models`) and Anthropic-compatible (`/v1/messages`) inference, billed \
in credits; accounts, API keys, payments and promo codes; usage analytics for analysts; a \
read-only ledger, trial balance and tamper evidence for auditors. Amounts are integer \
micro-credits (1 credit = 1,000,000). Errors outside `/v1` are \
`{\"error\":{\"code\",\"message\"}}`; `/v1` answers errors in OpenAI's or Anthropic's shape."
    ),
    paths(
        routes::health::health,
        routes::health::ready,
        openapi_json,
        docs,
        crate::metrics::metrics_text,
        routes::auth::register,
        routes::auth::login,
        routes::auth::me,
        routes::auth::options,
        routes::auth::refresh,
        routes::auth::logout,
        routes::auth::logout_all,
        routes::ws::ticket,
        routes::ws::connect,
        routes::verification::verify_email,
        routes::verification::resend_verification,
        routes::verification::forgot_password,
        routes::verification::reset_password,
        routes::google::start,
        routes::google::callback,
        routes::openai::chat_completions,
        routes::openai::embeddings,
        routes::openai::models,
        routes::openai::providers_status,
        routes::anthropic::messages,
        routes::anthropic::count_tokens,
        routes::keys::create,
        routes::keys::list,
        routes::keys::revoke,
        routes::alerts::get_low_balance,
        routes::alerts::put_low_balance,
        routes::admin_users::list,
        routes::admin_users::grant_role,
        routes::admin_users::revoke_role,
        routes::admin_users::suspend,
        routes::admin_users::unsuspend,
        routes::credits::balance,
        routes::credits::transactions,
        routes::admin::grant,
        routes::payments::packages,
        routes::payments::checkout,
        routes::payments::webhook,
        routes::payments::history,
        routes::promos::redeem,
        routes::promos::create,
        routes::promos::list,
        routes::promos::disable,
        routes::promos::enable,
        routes::usage::list,
        routes::usage::summary,
        routes::usage::export,
        routes::usage::request,
        routes::usage::reprice,
        routes::analytics::events,
        routes::audit::ledger,
        routes::audit::account,
        routes::audit::trial_balance,
        routes::audit::reconciliation,
        routes::audit::admin_actions,
        routes::evidence::checkpoints,
        routes::evidence::public_key,
        routes::evidence::last_verification,
        routes::evidence::proof,
        crate::mcp::doc,
    ),
    components(schemas(wire::ErrorBody, wire::OpenAiErrorBody, wire::AnthropicErrorBody)),
    modifiers(&Security),
    tags(
        (name = "health", description = "Liveness, readiness and this document."),
        (name = "auth", description = "Registration, sign-in, sessions, email verification, password reset, Google sign-in."),
        (name = "inference", description = "OpenAI- and Anthropic-compatible inference, billed in credits."),
        (name = "keys", description = "API keys for programs."),
        (name = "credits", description = "Balances and ledgers."),
        (name = "payments", description = "Credit packages, Stripe Checkout and its webhook."),
        (name = "promos", description = "Promo codes."),
        (name = "usage", description = "Usage records, summaries, export and re-pricing."),
        (name = "admin", description = "Users, roles, suspensions and grants (admins)."),
        (name = "audit", description = "The ledger, trial balance, reconciliation and tamper evidence (auditors, admins)."),
        (name = "mcp", description = "The MCP server (Streamable HTTP)."),
    )
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// `GET /openapi.json`: the contract.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
}

/// `GET /docs`: the API reference, rendered in the browser from `/openapi.json`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "health",
    responses((status = 200, description = "The reference page", content_type = "text/html", body = String)),
)]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("../../assets/docs.html"))
}

/// The statuses any route may answer with the house error.
const ERRORS: [(u16, &str); 9] = [
    (400, "Invalid input"),
    (401, "No credentials, or credentials that do not check out"),
    (
        403,
        "No role the caller holds allows this, or the account is suspended",
    ),
    (404, "No such resource"),
    (409, "Conflicts with the resource's state"),
    (413, "The body is too large"),
    (422, "Well-formed, but refused by the rules"),
    (
        429,
        "Too many requests (`Retry-After` says when to come back)",
    ),
    (503, "A dependency is unavailable, or the request timed out"),
];

fn error_responses(schema: &str) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    ERRORS
        .iter()
        .chain(std::iter::once(&(500, "Internal error")))
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// The house errors, for `responses(...)` of a handler.
pub struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses("ErrorBody")
    }
}

/// OpenAI-shaped errors, for the `/v1` routes OpenAI's SDK calls.
pub struct OpenAiErrors;

impl utoipa::IntoResponses for OpenAiErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses("OpenAiErrorBody")
    }
}

/// Anthropic-shaped errors, for `/v1/messages`.
pub struct AnthropicErrors;

impl utoipa::IntoResponses for AnthropicErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        error_responses("AnthropicErrorBody")
    }
}

/// A user's role.
#[derive(ToSchema)]
#[schema(as = Role)]
#[allow(dead_code)] // a schema only: `hub_domain::Role` is the type
pub enum RoleName {
    #[schema(rename = "user")]
    User,
    #[schema(rename = "admin")]
    Admin,
    #[schema(rename = "analyst")]
    Analyst,
    #[schema(rename = "auditor")]
    Auditor,
}

/// The credentials: a bearer token (an access token or an API key), or an API key in
/// `x-api-key` (Anthropic's SDK).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from /api/auth/login, or an API key (`sk-hub-…`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}
