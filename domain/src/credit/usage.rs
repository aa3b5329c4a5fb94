//! What an inference request used, recorded with the settlement that charges for it.

use serde::{Deserialize, Serialize};

use crate::ids::ApiKeyId;
use crate::money::Credits;

/// Where token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The provider reported them.
    Provider,
    /// The provider reported none; the hub counted with the model's tokenizer.
    Estimated,
}

/// How the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageOutcome {
    /// The answer was delivered whole.
    Completed,
    /// The client went away; the tokens produced until then are charged.
    Cancelled,
    /// The upstream stream broke; what was delivered is charged.
    Broken,
}

/// One request's usage: what analysts replay and what the charge is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The model the client asked for.
    pub model: String,
    /// The provider that served it.
    pub provider: String,
    /// The API key used, if a program called.
    pub api_key: Option<ApiKeyId>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The part of `input_tokens` billed at the cached price.
    pub cached_input_tokens: u64,
    pub token_source: TokenSource,
    /// From accepting the request to its end, in milliseconds.
    pub latency_ms: u64,
    /// To the first token, when there was one.
    pub first_token_ms: Option<u64>,
    /// The price table applied to the tokens; the charge is this, capped at the reservation.
    pub cost: Credits,
    /// Which price table: the model's prices as configured when the request was accepted.
    pub price_version: String,
    pub outcome: UsageOutcome,
}
