//! The MCP server at `/mcp` (Model Context Protocol, Streamable HTTP, with the official Rust
//! SDK `rmcp`): the hub's chat and its read side as tools an agent can call.
//!
//! | tool | what it does |
//! |---|---|
//! | `chat` | asks a model; reserved, run by a worker and billed like any chat request |
//! | `balance` | the caller's credit balance |
//! | `usage_summary` | the caller's usage, grouped (`GET /api/usage/summary`) |
//! | `list_models` | the models, their prices and what they take |
//!
//! Every request is authenticated before it reaches the MCP server (`require_caller`: a
//! bearer token or an API key, in `Authorization` or `x-api-key`; 401 otherwise) and the
//! caller travels in the request's extensions, where each tool finds it. A tool that fails
//! (no credits, an unknown model, a refused parameter) answers an MCP tool error
//! (`isError: true` with the reason), never a protocol error. The server is stateless (no
//! MCP session), so any API process answers any request.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hub_app::analytics::summary;
use hub_app::inference::{self, Chat, GatewayError, Unanswered};
use hub_app::queries::usage::RawFilter;
use hub_workers::providers::ChatMessage;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The MCP service mounted at `/mcp`.
pub type McpService = StreamableHttpService<HubMcp, LocalSessionManager>;

/// Builds the service: stateless, JSON answers where the protocol allows, any host (the
/// hub authenticates every request; the loopback-only default guards unauthenticated local
/// servers against DNS rebinding).
/// `POST /mcp` in the OpenAPI document (the route is rmcp's service, not a handler).
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    request_body = crate::openapi::wire::JsonRpc,
    responses(
        (status = 200, description = "The JSON-RPC answer", body = crate::openapi::wire::JsonRpc),
        (status = 202, description = "A notification or response, accepted"),
        crate::openapi::Errors,
    ),
    security(("bearer" = []), ("api_key" = [])),
)]
#[allow(dead_code)] // the document's, never called
fn doc() {}

pub fn service(state: Arc<AppState>) -> McpService {
    let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
    config.legacy_session_mode = false;
    config.json_response = true;
    StreamableHttpService::new(
        move || Ok(HubMcp::new(Arc::clone(&state))),
        LocalSessionManager::default().into(),
        config,
    )
}

/// Authenticates a request to `/mcp` and puts the [`Caller`] in its extensions; 401 (in the
/// house shape) without a valid credential.
pub async fn require_caller(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match request.extensions().get::<Caller>() {
        Some(caller) => Ok(caller.clone()),
        None => Caller::from_headers(&state, request.headers()).await,
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// The tools, with the hub's state.
#[derive(Clone)]
pub struct HubMcp {
    state: Arc<AppState>,
    tool_router: ToolRouter<HubMcp>,
}

/// `chat`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ChatArgs {
    /// What to ask.
    pub prompt: String,
    /// A configured chat model (`list_models`); the first one when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Instructions for the model.
    #[serde(default)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

/// `usage_summary`'s arguments.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct UsageArgs {
    /// `hour`, `day`, `week` or `month`, and any of `user`, `api_key`, `model`, `provider`,
    /// comma-separated (default `day`).
    #[serde(default)]
    pub group_by: Option<String>,
    /// From this time (RFC 3339), included.
    #[serde(default)]
    pub from: Option<String>,
    /// Up to this time (RFC 3339), excluded.
    #[serde(default)]
    pub to: Option<String>,
    /// Only this model.
    #[serde(default)]
    pub model: Option<String>,
}

/// A tool error: the reason, with its stable code, for the model to read.
fn tool_error(code: &str, message: &str) -> CallToolResult {
    CallToolResult::structured_error(json!({"error": {"code": code, "message": message}}))
}

fn api_error(err: ApiError) -> CallToolResult {
    let result = tool_error(err.code(), err.message());
    // Rendering logs a 500's cause the way every route does.
    drop(err.into_response());
    result
}

fn gateway_error(err: GatewayError) -> CallToolResult {
    let (_, code) = err.status_and_code();
    if let GatewayError::Internal(cause) = &err {
        tracing::error!(error = format!("{cause:#}"), "an MCP chat failed");
    }
    tool_error(code, &err.to_string())
}

/// The caller `require_caller` placed on the HTTP request.
fn caller(context: &RequestContext<RoleServer>) -> Result<Caller, CallToolResult> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| tool_error("unauthorized", "sign in with a bearer token or an API key"))
}

#[tool_router]
impl HubMcp {
    pub fn new(state: Arc<AppState>) -> Self {
        HubMcp {
            state,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Ask a model a question. Paid from the caller's credits like any chat request; the answer says what it cost."
    )]
    async fn chat(
        &self,
        Parameters(args): Parameters<ChatArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = match caller(&context) {
            Ok(caller) => caller,
            Err(refused) => return Ok(refused),
        };
        let model = args.model.or_else(|| {
            self.state
                .router
                .models()
                .into_iter()
                .find(|m| m.capabilities.embedding_dimensions.is_none())
                .map(|m| m.name)
        });
        let Some(model) = model else {
            return Ok(tool_error("model_not_found", "no chat model is configured"));
        };
        let mut messages = Vec::new();
        if let Some(system) = args.system.filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new("system", &system));
        }
        messages.push(ChatMessage::new("user", &args.prompt));
        let chat = Chat {
            model,
            messages,
            max_tokens: args.max_tokens,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            options: Default::default(),
            whole: true,
        };
        let mut submission = match inference::submit(&self.state, &caller.payer(), chat).await {
            Ok(submission) => submission,
            Err(err) => return Ok(gateway_error(err)),
        };
        match submission.answer().await {
            Ok(answer) => {
                let usage = &answer.finished.usage;
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(answer.text.clone())]);
                result.structured_content = Some(json!({
                    "text": answer.text,
                    "model": submission.model,
                    "request_id": submission.request_id,
                    "finish_reason": answer.finished.finish_reason,
                    "usage": {"prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens},
                    "charged_micros": answer.finished.charged_micros,
                }));
                Ok(result)
            }
            Err(Unanswered::Failed(failure)) => Ok(tool_error(&failure.code, &failure.message)),
            Err(Unanswered::Lost) => Ok(tool_error(
                "upstream_timeout",
                "no answer from the inference worker in time",
            )),
        }
    }

    #[tool(description = "The caller's credit balance, in micro-credits (1 credit = 1,000,000).")]
    async fn balance(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = match caller(&context) {
            Ok(caller) => caller,
            Err(refused) => return Ok(refused),
        };
        let account = hub_app::queries::account_for(caller.user, &caller.roles, None);
        let balance = match account {
            Ok(account) => hub_app::queries::balances::balance(&self.state.pool, account).await,
            Err(err) => return Ok(api_error(err.into())),
        };
        Ok(match balance {
            Ok(balance) => match serde_json::to_value(&balance) {
                Ok(value) => CallToolResult::structured(value),
                Err(err) => tool_error("internal", &err.to_string()),
            },
            Err(err) => api_error(err.into()),
        })
    }

    #[tool(
        description = "The caller's usage: requests, tokens, cost and latency, grouped by time (hour, day, week, month) and optionally by user, api_key, model or provider."
    )]
    async fn usage_summary(
        &self,
        Parameters(args): Parameters<UsageArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = match caller(&context) {
            Ok(caller) => caller,
            Err(refused) => return Ok(refused),
        };
        let filter = RawFilter {
            from: args.from,
            to: args.to,
            user_id: None,
            api_key_id: None,
            model: args.model,
            provider: None,
            outcome: None,
        }
        .parse(caller.user, &caller.roles);
        let filter = match filter {
            Ok(filter) => filter,
            Err(err) => return Ok(api_error(err.into())),
        };
        let group = match summary::GroupBy::parse(args.group_by.as_deref()) {
            Ok(group) => group,
            Err(err) => return Ok(api_error(err.into())),
        };
        Ok(
            match summary::summary(&self.state.pool, &filter, &group).await {
                Ok(found) => match serde_json::to_value(&found) {
                    Ok(value) => CallToolResult::structured(value),
                    Err(err) => tool_error("internal", &err.to_string()),
                },
                Err(err) => api_error(err.into()),
            },
        )
    }

    #[tool(
        description = "The models the hub serves, their prices (micro-credits per million tokens) and what they take."
    )]
    async fn list_models(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Err(refused) = caller(&context) {
            return Ok(refused);
        }
        let models: Vec<Value> = self
            .state
            .router
            .models()
            .into_iter()
            .map(|m| {
                json!({
                    "id": m.name,
                    "kind": if m.capabilities.embedding_dimensions.is_some() { "embedding" } else { "chat" },
                    "input_per_million_micros": m.price.input_per_million.micros(),
                    "output_per_million_micros": m.price.output_per_million.micros(),
                    "cached_input_per_million_micros": m.price.cached_input_per_million.micros(),
                    "max_output_tokens": m.max_output_tokens,
                    "vision": m.capabilities.vision,
                    "tools": m.capabilities.tools,
                })
            })
            .collect();
        Ok(CallToolResult::structured(json!({"models": models})))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for HubMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("aihub", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Smart AI Hub: chat with any configured model (billed in credits), read your balance, usage and the models.",
            )
    }
}
