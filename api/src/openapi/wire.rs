//! The `/v1` wire shapes, for the document only. Those handlers read their bodies field by
//! field (so that a parameter the hub cannot honour is refused by name) and build their
//! answers as OpenAI and Anthropic do; these types describe the same shapes to clients and
//! to the contract fuzzing, which checks every answer against them.

#![allow(dead_code)] // read by the derive only

use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The house error: `{"error":{"code","message"}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `insufficient_credits`.
    code: String,
    /// For people.
    message: String,
}

/// OpenAI's error shape, on `/v1/chat/completions`, `/v1/embeddings` and `/v1/models`.
#[derive(ToSchema)]
pub struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(ToSchema)]
pub struct OpenAiErrorDetail {
    message: String,
    #[schema(rename = "type")]
    kind: String,
    /// The parameter at fault, when one is.
    param: Option<String>,
    code: Option<String>,
}

/// Anthropic's error shape, on `/v1/messages`.
#[derive(ToSchema)]
pub struct AnthropicErrorBody {
    /// Always `error`.
    #[schema(rename = "type")]
    kind: String,
    error: AnthropicErrorDetail,
}

#[derive(ToSchema)]
pub struct AnthropicErrorDetail {
    #[schema(rename = "type")]
    kind: String,
    message: String,
}

/// A text or several (`stop`, …).
#[derive(ToSchema, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// OpenAI's chat completions request. A parameter the model cannot take is a 400
/// `unsupported_parameter` naming it; so is an unknown one.
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    /// A configured model (`GET /v1/models`).
    #[schema(example = "mock-1")]
    model: String,
    #[schema(min_items = 1)]
    messages: Vec<ChatMessageParam>,
    #[schema(minimum = 1)]
    max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    max_completion_tokens: Option<u32>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    temperature: Option<f32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    top_p: Option<f32>,
    /// Up to 4 sequences.
    stop: Option<OneOrMany>,
    /// Answer as server-sent `chat.completion.chunk` events, ending with `data: [DONE]`.
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// Only 1.
    #[schema(minimum = 1, maximum = 1)]
    n: Option<u32>,
    user: Option<String>,
    /// Up to 128 functions.
    tools: Option<Vec<ToolParam>>,
    /// `none`, `auto`, `required`, or `{"type":"function","function":{"name"}}`.
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    /// `{"type":"text"}`, `{"type":"json_object"}` or
    /// `{"type":"json_schema","json_schema":{"name","schema","strict"}}`.
    response_format: Option<Value>,
    seed: Option<i64>,
    #[schema(minimum = -2.0, maximum = 2.0)]
    presence_penalty: Option<f32>,
    #[schema(minimum = -2.0, maximum = 2.0)]
    frequency_penalty: Option<f32>,
    /// For reasoning models.
    reasoning_effort: Option<ReasoningEffort>,
    /// Up to 16 pairs.
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(ToSchema)]
pub struct StreamOptions {
    /// A last chunk with empty `choices` and the usage.
    include_usage: Option<bool>,
}

/// A message of the conversation.
#[derive(ToSchema)]
pub struct ChatMessageParam {
    role: ChatRole,
    /// A text, or parts (`{"type":"text","text"}`, `{"type":"image_url","image_url":{"url","detail"}}`
    /// for vision models); `null` for an assistant message that only called tools.
    content: Option<Value>,
    name: Option<String>,
    /// An assistant message's tool calls.
    tool_calls: Option<Vec<ToolCall>>,
    /// A `tool` message: the call it answers.
    tool_call_id: Option<String>,
}

#[derive(ToSchema, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

#[derive(ToSchema, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Minimal,
    Low,
    Medium,
    High,
}

#[derive(ToSchema, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

#[derive(ToSchema, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnthropicRole {
    User,
    Assistant,
}

#[derive(ToSchema)]
pub struct ToolParam {
    /// `function`.
    #[schema(rename = "type")]
    kind: String,
    function: FunctionParam,
}

#[derive(ToSchema)]
pub struct FunctionParam {
    name: String,
    description: Option<String>,
    /// A JSON Schema for the arguments.
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(ToSchema)]
pub struct ToolCall {
    id: String,
    /// `function`.
    #[schema(rename = "type")]
    kind: String,
    function: FunctionCall,
}

#[derive(ToSchema)]
pub struct FunctionCall {
    name: String,
    /// JSON text.
    arguments: String,
}

/// OpenAI's `chat.completion`.
#[derive(ToSchema)]
pub struct ChatCompletion {
    id: String,
    /// `chat.completion`.
    object: String,
    created: i64,
    model: String,
    choices: Vec<Choice>,
    usage: ChatUsage,
    x_aihub: Hub,
}

#[derive(ToSchema)]
pub struct Choice {
    index: u32,
    message: AssistantMessage,
    logprobs: Option<Value>,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    finish_reason: String,
}

#[derive(ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    role: String,
    /// `null` when the answer only calls tools.
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(ToSchema)]
pub struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(ToSchema)]
pub struct PromptTokensDetails {
    /// Billed at the model's cached-input price.
    cached_tokens: u64,
}

#[derive(ToSchema)]
pub struct CompletionTokensDetails {
    /// Billed as output.
    reasoning_tokens: u64,
}

/// The hub's own fields in an answer (SDKs ignore them).
#[derive(ToSchema)]
#[schema(as = HubFields)]
pub struct Hub {
    request_id: String,
    /// The provider that answered.
    provider: String,
    /// What was taken from the balance, in micro-credits.
    charged_micros: i64,
    /// `provider` (reported upstream) or `estimated` (counted by the hub).
    token_source: String,
}

/// OpenAI's embeddings request.
#[derive(ToSchema)]
pub struct EmbeddingsRequest {
    /// An embedding model (`capabilities.embedding_dimensions` in `GET /v1/models`).
    #[schema(example = "mock-embed-1")]
    model: String,
    /// A text, texts, token ids, or lists of token ids.
    input: Value,
    /// `float` (the default) or `base64` (little-endian `f32`s).
    encoding_format: Option<EncodingFormat>,
    #[schema(minimum = 1)]
    dimensions: Option<u32>,
    user: Option<String>,
}

#[derive(ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    object: String,
    data: Vec<Embedding>,
    model: String,
    usage: EmbeddingUsage,
    x_aihub: Hub,
}

#[derive(ToSchema)]
pub struct Embedding {
    /// `embedding`.
    object: String,
    index: u32,
    /// Numbers, or base64 text with `encoding_format: base64`.
    embedding: Value,
}

#[derive(ToSchema)]
pub struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// `GET /v1/models`.
#[derive(ToSchema)]
pub struct ModelList {
    /// `list`.
    object: String,
    data: Vec<Model>,
}

#[derive(ToSchema)]
pub struct Model {
    id: String,
    /// `model`.
    object: String,
    created: i64,
    owned_by: String,
    pricing: ModelPricing,
    /// Null: the provider's own limit.
    max_output_tokens: Option<u32>,
    context_window: u32,
    capabilities: ModelCapabilities,
}

#[derive(ToSchema)]
pub struct ModelPricing {
    /// `micro-credits per million tokens`.
    unit: String,
    input: i64,
    output: i64,
    cached_input: i64,
}

#[derive(ToSchema)]
pub struct ModelCapabilities {
    /// Set for embedding models.
    embedding_dimensions: Option<u32>,
    vision: bool,
    tools: bool,
    reasoning: bool,
    image_tokens_max: u32,
}

/// Anthropic's Messages request. Parameters the hub cannot honour (`top_k`, `thinking`,
/// server tools, …) are refused by name.
#[derive(ToSchema)]
pub struct MessagesRequest {
    #[schema(example = "mock-1")]
    model: String,
    /// Required by `/v1/messages`, not taken by `count_tokens`.
    #[schema(minimum = 1)]
    max_tokens: Option<u32>,
    #[schema(min_items = 1)]
    messages: Vec<MessageParam>,
    /// A text or text blocks.
    system: Option<Value>,
    stop_sequences: Option<Vec<String>>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    temperature: Option<f32>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    top_p: Option<f32>,
    /// Answer as server-sent events (`message_start` … `message_stop`).
    stream: Option<bool>,
    tools: Option<Vec<AnthropicTool>>,
    /// `{"type": "auto"|"any"|"tool"|"none", "name"?}`.
    tool_choice: Option<Value>,
    /// `{"user_id"}`.
    metadata: Option<Value>,
}

#[derive(ToSchema)]
pub struct MessageParam {
    role: AnthropicRole,
    /// A text, or blocks (`text`, `image`, `tool_use`, `tool_result`).
    content: Value,
}

#[derive(ToSchema)]
pub struct AnthropicTool {
    name: String,
    description: Option<String>,
    /// A JSON Schema for the tool's input.
    input_schema: Value,
}

/// Anthropic's `message`.
#[derive(ToSchema)]
pub struct Message {
    id: String,
    /// `message`.
    #[schema(rename = "type")]
    kind: String,
    /// `assistant`.
    role: String,
    model: String,
    /// `text` and `tool_use` blocks.
    content: Vec<Value>,
    /// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`.
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: MessageUsage,
    x_aihub: Hub,
}

#[derive(ToSchema)]
pub struct MessageUsage {
    /// Without the cached tokens.
    input_tokens: u64,
    output_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
}

/// `POST /v1/messages/count_tokens`.
#[derive(ToSchema)]
pub struct TokenCount {
    input_tokens: u64,
}

/// A JSON-RPC 2.0 message of the Model Context Protocol.
#[derive(ToSchema)]
pub struct JsonRpc {
    /// `2.0`.
    jsonrpc: String,
    id: Option<Value>,
    /// `initialize`, `tools/list`, `tools/call`, …
    method: Option<String>,
    params: Option<Value>,
    result: Option<Value>,
    error: Option<Value>,
}
