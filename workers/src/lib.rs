//! The inference side of Smart AI Hub: the providers that answer chat requests (OpenAI,
//! Anthropic, any OpenAI-compatible server, and a built-in mock), the router that picks one
//! with retries, fallback and cooldown, token counting, and the `[models]` settings.
//!
//! A caller (the worker loop, the HTTP API) builds one [`ProviderRouter`] from
//! [`ModelsSettings`], counts the prompt with [`tokens::count_prompt_tokens`], reserves
//! [`hub_domain::Price::max_cost`] for the model's price, then calls
//! [`ProviderRouter::open`] and reads the [`StreamEvent`]s of the [`Opened`] stream:
//! `Delta* Usage? Finish`, or an error item last. When no `Usage` came, it estimates the
//! output with [`tokens::count_text_tokens`] over the deltas it delivered.
//!
//! # Layout
//!
//! - [`capabilities`]: what a model can take (images, tools, reasoning effort, the
//!   parameters only some upstreams know); a request is refused by the parameter it cannot.
//! - [`chat`]: [`ChatMessage`] and [`ChatRequest`], the one shape of a chat request inside the
//!   workers (tokenizers, providers and the wire format all use it).
//! - [`embed`]: an embeddings request and its answer.
//! - [`metrics`]: what inference counts, by model and provider (requests, tokens, cost, time
//!   to first token, upstream errors, fallbacks, cooldowns).
//! - [`config`]: [`ModelsSettings`] — models, prices, providers, timeouts, retries, cooldown.
//! - [`providers`]: the [`Provider`] trait, the shared request and event types, and one file
//!   per upstream ([`providers::openai`], [`providers::anthropic`], [`providers::mock`]), over
//!   a server-sent events parser ([`providers::sse`]).
//! - [`router`]: [`ProviderRouter`] — per-model provider lists, retries before the first
//!   token, fallback, circuit breakers, model and status listings.
//! - [`settlement`]: answered requests' settlements that Postgres did not take, handed to
//!   JetStream before the answer is sent and applied to the accounts by
//!   [`settlement::Settler`]s, retried until Postgres takes them.
//! - [`status`]: provider health as the workers see it, reported over NATS to the API
//!   processes (`GET /api/providers/status`).
//! - [`sweeper`]: expires reservations nobody settled, applying a waiting settlement instead.
//! - [`tokens`]: token counting with OpenAI's tokenizers (`o200k`, `cl100k`).
//! - [`wire`]: the inference command (API → worker, on `HUB_COMMANDS`) and the answer's
//!   chunks (worker → API, on core NATS).
//! - [`worker`]: the worker loop — at most once per request, streaming back, settling the
//!   reservation from the usage.
//!
//! **Invariant:** no error message, log line or `Debug` output contains a provider API key.

pub mod capabilities;
pub mod chat;
pub mod config;
pub mod embed;
pub mod metrics;
pub mod providers;
pub mod router;
pub mod settlement;
pub mod status;
pub mod sweeper;
pub mod tokens;
pub mod wire;
pub mod worker;

pub use capabilities::{Capabilities, Unsupported};
pub use config::{
    ModelSettings, ModelsSettings, PriceSettings, PromptMargins, ProviderKind, ProviderSettings,
};
pub use providers::{
    ChatMessage, ChatRequest, EventStream, Provider, ProviderError, StreamEvent, Timeouts,
    TokenUsage,
};
pub use router::{
    HealthState, InFlight, ModelInfo, Opened, ProviderRouter, ProviderStatus, RouteError,
};
