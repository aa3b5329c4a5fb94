//! The HTTP adapter of Smart AI Hub: routes, the WebSocket chat, who is calling, and the one
//! mapping of failures to HTTP. What the hub does lives in [`hub_app`]; this crate parses,
//! authorizes, calls it and maps the answer.
//!
//! # Layout
//!
//! - [`routes`]: handlers, each stating which roles it allows, and [`routes::router`].
//! - [`auth`]: bearer JWT or API key → [`auth::Caller`].
//! - [`edge`]: what wraps every route: the `x-request-id` (and its tracing span), and CORS.
//! - [`error`]: [`error::ApiError`], the one mapping of failures to HTTP.
//! - [`extract`]: JSON and query extractors whose rejections are [`error::ApiError`]s.
//! - [`limits`]: rate limits at the edge: per caller on `/v1` (with OpenAI's headers), per
//!   client address on the routes anyone may call.
//! - [`metrics`]: HTTP requests counted and timed by route template, and `GET /metrics`.
//! - [`mcp`]: the MCP server at `/mcp` (`rmcp`, Streamable HTTP): chat, balance, usage and
//!   models as tools.
//! - [`state`]: the state handlers receive.

pub mod auth;
pub mod edge;
pub mod error;
pub mod extract;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod shutdown;
pub mod state;
