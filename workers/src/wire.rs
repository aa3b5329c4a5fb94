//! What travels between the API and the workers.
//!
//! - [`InferenceCommand`]: JSON on the work-queue subject of `HUB_COMMANDS`
//!   (`Nats-Msg-Id` = request id, so a repeated publish is dropped by the server).
//! - [`WireChunk`]: JSON on the request's core NATS reply subject, worker → API: `started`,
//!   then `delta`s and `tool_call` pieces numbered from 1, then exactly one of `finished` or
//!   `failed`; or, for a command that asked for the whole answer at once, one `answered` (or
//!   `failed`); for an embeddings command, one `embedding` per input, then `embedded` (or
//!   `failed`).
//! - A cancellation is an empty message on the request's cancel subject, API → worker.

use chrono::{DateTime, Utc};
use hub_domain::pricing::Price;
use hub_domain::{ApiKeyId, Credits};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chat::{ChatMessage, ChatOptions, ChatRequest, ToolCall};
use crate::embed::EmbedRequest;

/// A chat request the API has accepted and reserved credits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferenceCommand {
    /// `req_<32 hex>`: one subject token, and the reservation's request id.
    pub request_id: String,
    /// The user (and credit account) paying.
    pub account: Uuid,
    pub api_key: Option<ApiKeyId>,
    /// The model the client asked for (a configured name).
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Already capped to what was reserved.
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Tools, the answer's format and the other parameters (absent in commands of older API
    /// processes: none).
    #[serde(default)]
    pub options: ChatOptions,
    /// An embeddings request instead of a chat (then `messages` is empty): answered with one
    /// [`WireChunk::Embedding`] per input, then [`WireChunk::Embedded`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<EmbedRequest>,
    /// The `x-request-id` of the HTTP request that submitted it (also in the message's
    /// `x-request-id` header): the worker's log lines for the request carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The prompt's tokens as the hub counted them (used when the provider reports none).
    pub prompt_tokens: u64,
    pub reserved_micros: i64,
    /// Prices in micro-credits per million tokens, as accepted.
    pub price: WirePrice,
    pub price_version: String,
    pub accepted_at: DateTime<Utc>,
    /// A worker that picks the command up later than this does not start it (its
    /// reservation is about to expire). Read by workers that predate `deadline`.
    pub start_by: DateTime<Utc>,
    /// The one wall-clock deadline of the request, fixed at acceptance (accepted + the
    /// total timeout): every upstream attempt, retry and fallback ends by then, and a worker
    /// that picks the command up later refuses it and releases the reservation, which
    /// expires a margin after it. Absent in commands from older API processes: then
    /// `start_by`, which they set to the same instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The caller wants the whole answer at once: the worker sends one [`WireChunk::Answered`]
    /// instead of `started`, the deltas and `finished`. Absent (false) in older commands.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub whole: bool,
    /// Where the answer goes: the accepting API process's inbox subject for this request.
    /// Absent in commands from older API processes: then the per-request reply subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_subject: Option<String>,
}

impl InferenceCommand {
    /// The instant the request must be answered by: `deadline`, or `start_by` in a command
    /// from an older API process.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.deadline.unwrap_or(self.start_by)
    }

    /// The request the router opens: the one conversion from the wire to the providers. No
    /// end-user id goes upstream.
    pub fn chat_request(&self) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages: self.messages.clone(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop.clone(),
            user: None,
            options: self.options.clone(),
        }
    }
}

/// A model's prices, in micro-credits per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePrice {
    pub input_per_million_micros: i64,
    pub output_per_million_micros: i64,
    pub cached_input_per_million_micros: i64,
}

impl From<Price> for WirePrice {
    fn from(p: Price) -> Self {
        WirePrice {
            input_per_million_micros: p.input_per_million.micros(),
            output_per_million_micros: p.output_per_million.micros(),
            cached_input_per_million_micros: p.cached_input_per_million.micros(),
        }
    }
}

impl From<WirePrice> for Price {
    fn from(p: WirePrice) -> Self {
        Price {
            input_per_million: Credits::from_micros(p.input_per_million_micros),
            output_per_million: Credits::from_micros(p.output_per_million_micros),
            cached_input_per_million: Credits::from_micros(p.cached_input_per_million_micros),
        }
    }
}

/// Token counts as reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    /// The part of `completion_tokens` spent reasoning (0 when not reported).
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// `provider` or `estimated`.
    pub source: hub_domain::TokenSource,
}

/// One message of a request's answer, worker → API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireChunk {
    /// A provider accepted the request.
    Started { provider: String },
    /// Text, in order; `seq` counts from 1 so a gap is visible.
    Delta { seq: u64, text: String },
    /// A piece of tool call `index` (see [`crate::providers::StreamEvent::ToolCall`]),
    /// numbered in the same sequence as the deltas.
    ToolCall {
        seq: u64,
        index: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        arguments: String,
    },
    /// The end: what it used and what was charged.
    Finished {
        finish_reason: String,
        usage: WireUsage,
        charged_micros: i64,
        /// `completed`, `cancelled` or `broken`.
        outcome: hub_domain::UsageOutcome,
    },
    /// The whole answer of a command with `whole` set, in place of `started`, the deltas
    /// and `finished`: one message instead of three or more.
    Answered {
        provider: String,
        text: String,
        /// The tools the model called (absent: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        finish_reason: String,
        usage: WireUsage,
        charged_micros: i64,
        outcome: hub_domain::UsageOutcome,
    },
    /// The vector of input `index` of an embeddings request (one message each: a vector
    /// of thousands of numbers is tens of kilobytes).
    Embedding { index: u32, vector: Vec<f32> },
    /// The end of an embeddings request, after its vectors.
    Embedded {
        provider: String,
        usage: WireUsage,
        charged_micros: i64,
    },
    /// The request failed. `charged_micros` is what was charged for what was delivered
    /// (zero when nothing was).
    Failed {
        /// A stable code: `upstream_rate_limited`, `upstream_unauthorized`,
        /// `upstream_timeout`, `upstream_error`, `upstream_stream_broken`, `expired`, ...
        code: String,
        message: String,
        /// The HTTP status the API answers with.
        status: u16,
        retry_after_s: Option<u64>,
        charged_micros: i64,
    },
}

impl WireChunk {
    /// Whether this is the last chunk of a request.
    pub fn is_last(&self) -> bool {
        matches!(
            self,
            WireChunk::Finished { .. }
                | WireChunk::Answered { .. }
                | WireChunk::Embedded { .. }
                | WireChunk::Failed { .. }
        )
    }
}
