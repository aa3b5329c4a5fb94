//! Embeddings: the request a worker hands to a provider and what comes back.
//!
//! An embedding model is a configured model with `embedding_dimensions` set; its providers
//! are OpenAI, OpenAI-compatible servers or the mock (Anthropic makes none). A request is
//! paid for like a chat: its inputs are counted and reserved at the input price, the worker
//! calls the provider, and the account is charged the prompt tokens the provider reports.

use serde::{Deserialize, Serialize};

use crate::providers::TokenUsage;

/// Most inputs in one request (OpenAI's limit).
pub const INPUTS_MAX: usize = 2048;

/// What to embed, as the workers hand it on (the upstream model id in a provider's hands).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    /// The texts, each embedded on its own, answered in this order.
    pub inputs: Vec<String>,
    /// Fewer dimensions than the model's own, for models that can shorten their vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

impl EmbedRequest {
    /// The same request for the upstream model `upstream_model`.
    pub fn for_upstream(&self, upstream_model: &str) -> EmbedRequest {
        EmbedRequest {
            model: upstream_model.to_owned(),
            ..self.clone()
        }
    }
}

/// A provider's answer: one vector per input, in order, and the usage it reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// `None` when the provider reported none (the hub's count is charged).
    pub usage: Option<TokenUsage>,
}
