//! One shape of a chat request inside the workers: the messages, the tools and the options a
//! worker hands to the router and each provider. Tokenizers, providers and the wire format all
//! use these, so they live apart from each of them.
//!
//! The shapes are OpenAI's chat completions shapes (serialized as OpenAI does, so a message
//! crosses NATS and reaches an OpenAI-compatible upstream in the form the client wrote it);
//! the Anthropic provider and the Anthropic Messages API translate from and to them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

/// Longest data URL of one image, in bytes (OpenAI takes images up to 20 MB).
pub const IMAGE_DATA_URL_BYTES_MAX: usize = 28 * 1024 * 1024;

/// Image media types a data URL may carry (what OpenAI and Anthropic both accept).
pub const IMAGE_MEDIA_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// One part of a message's content, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentPart {
    Text(String),
    /// An image by `https://` URL or `data:image/...;base64,` URL; `detail` is OpenAI's
    /// `low`, `high` or `auto`.
    Image {
        url: String,
        detail: Option<String>,
    },
}

/// An image's bytes as a data URL carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineImage<'a> {
    pub media_type: &'a str,
    /// Base64, as written.
    pub data: &'a str,
}

impl ContentPart {
    /// The media type and base64 data of an image given as a data URL; `None` for a text
    /// part or an image by URL.
    pub fn inline_image(&self) -> Option<InlineImage<'_>> {
        let ContentPart::Image { url, .. } = self else {
            return None;
        };
        let rest = url.strip_prefix("data:")?;
        let (media_type, data) = rest.split_once(";base64,")?;
        Some(InlineImage { media_type, data })
    }
}

/// A call of a tool the model made: `arguments` is the JSON text the model wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Most tool calls one answer carries; pieces of calls past it are dropped (an upstream that
/// numbers a call in the millions must not make the hub allocate millions).
pub const TOOL_CALLS_MAX: u32 = 128;

impl ToolCall {
    /// Adds a piece of call `index` (as streamed: the first piece names the call, later
    /// pieces carry more of its arguments) to `calls`, which are kept in index order.
    /// Returns `false` when the index is past [`TOOL_CALLS_MAX`] and the piece was dropped.
    pub fn merge(
        calls: &mut Vec<ToolCall>,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) -> bool {
        if index >= TOOL_CALLS_MAX {
            return false;
        }
        let index = index as usize;
        while calls.len() <= index {
            calls.push(ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut calls[index];
        if let Some(id) = id {
            call.id = id.to_owned();
        }
        if let Some(name) = name {
            call.name.push_str(name);
        }
        call.arguments.push_str(arguments);
        true
    }
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        })
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Function {
            name: String,
            #[serde(default)]
            arguments: String,
        }
        #[derive(Deserialize)]
        struct Wire {
            id: String,
            #[serde(rename = "type", default)]
            kind: Option<String>,
            function: Function,
        }
        let wire = Wire::deserialize(deserializer)?;
        if let Some(kind) = wire.kind.filter(|k| k != "function") {
            return Err(serde::de::Error::custom(format!(
                "only `function` tool calls are supported, got `{kind}`"
            )));
        }
        Ok(ToolCall {
            id: wire.id,
            name: wire.function.name,
            arguments: wire.function.arguments,
        })
    }
}

/// One message of a chat, in OpenAI's shape: `content` is a string, an array of parts
/// (`text`, and `image_url` for vision models), or `null`; an assistant message may carry
/// `tool_calls`, and a `tool` message answers one of them by `tool_call_id`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message's text: the string content, or its text parts joined.
    pub content: String,
    /// The content parts in order, when the message has an image; empty otherwise (then
    /// `content` is the whole content).
    pub parts: Vec<ContentPart>,
    /// The tools an assistant message called.
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
    /// A participant's name (OpenAI's `name`).
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
            ..ChatMessage::default()
        }
    }

    /// The images of the message, in order.
    pub fn images(&self) -> impl Iterator<Item = &ContentPart> {
        self.parts
            .iter()
            .filter(|p| matches!(p, ContentPart::Image { .. }))
    }

    /// The content parts in order: `parts`, or the text as one part.
    pub fn content_parts(&self) -> Vec<ContentPart> {
        if self.parts.is_empty() {
            if self.content.is_empty() {
                Vec::new()
            } else {
                vec![ContentPart::Text(self.content.clone())]
            }
        } else {
            self.parts.clone()
        }
    }

    /// The message's content as OpenAI writes it.
    pub fn content_json(&self) -> Value {
        if !self.parts.is_empty() {
            let parts = self
                .parts
                .iter()
                .map(|part| match part {
                    ContentPart::Text(text) => json!({"type": "text", "text": text}),
                    ContentPart::Image { url, detail } => {
                        let mut image = Map::new();
                        image.insert("url".into(), json!(url));
                        if let Some(detail) = detail {
                            image.insert("detail".into(), json!(detail));
                        }
                        json!({"type": "image_url", "image_url": image})
                    }
                })
                .collect();
            return Value::Array(parts);
        }
        if self.content.is_empty() && !self.tool_calls.is_empty() {
            return Value::Null;
        }
        Value::String(self.content.clone())
    }

    /// The message as OpenAI's JSON, with `role` in place of its own.
    pub fn to_openai(&self, role: &str) -> Value {
        let mut message = Map::new();
        message.insert("role".into(), json!(role));
        message.insert("content".into(), self.content_json());
        if !self.tool_calls.is_empty() {
            message.insert("tool_calls".into(), json!(self.tool_calls));
        }
        if let Some(id) = &self.tool_call_id {
            message.insert("tool_call_id".into(), json!(id));
        }
        if let Some(name) = &self.name {
            message.insert("name".into(), json!(name));
        }
        Value::Object(message)
    }
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_openai(&self.role).serialize(serializer)
    }
}

/// One content part as OpenAI writes it.
fn content_part(part: Value) -> Result<ContentPart, String> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => match part.get("text") {
            Some(Value::String(text)) => Ok(ContentPart::Text(text.clone())),
            _ => Err("a text content part needs a string `text`".into()),
        },
        "image_url" => {
            let image = part.get("image_url");
            // OpenAI takes `{"url": ...}`; some clients send the URL as a string.
            let url = image
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or("an image_url content part needs `image_url.url`")?;
            let detail = image
                .and_then(|i| i.get("detail"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(detail) = &detail {
                if !["low", "high", "auto"].contains(&detail.as_str()) {
                    return Err(format!(
                        "image_url.detail must be low, high or auto, got {detail:?}"
                    ));
                }
            }
            check_image_url(url)?;
            Ok(ContentPart::Image {
                url: url.to_owned(),
                detail,
            })
        }
        "" => Err("a content part needs a `type`".into()),
        other => Err(format!(
            "content parts of type `{other}` are not supported (only `text` and `image_url`)"
        )),
    }
}

/// An image URL the hub passes on: `https://` or `http://`, or a base64 data URL of a PNG,
/// JPEG, GIF or WebP image.
fn check_image_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("data:") {
        if url.len() > IMAGE_DATA_URL_BYTES_MAX {
            return Err(format!(
                "an image data URL may hold at most {IMAGE_DATA_URL_BYTES_MAX} bytes"
            ));
        }
        let Some((media_type, data)) = rest.split_once(";base64,") else {
            return Err("an image data URL must be `data:<media type>;base64,<data>`".into());
        };
        if !IMAGE_MEDIA_TYPES.contains(&media_type) {
            return Err(format!(
                "image media type {media_type:?} is not supported (png, jpeg, gif, webp)"
            ));
        }
        let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        if data.is_empty() || !data.bytes().all(base64) {
            return Err("an image data URL's data is not base64".into());
        }
        return Ok(());
    }
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.len() > 8192 {
        return Err("an image URL must be an http(s) URL or a base64 data URL".into());
    }
    Ok(())
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            role: String,
            #[serde(default)]
            content: Value,
            #[serde(default)]
            tool_calls: Option<Vec<ToolCall>>,
            #[serde(default)]
            tool_call_id: Option<String>,
            #[serde(default)]
            name: Option<String>,
        }
        let wire = Wire::deserialize(deserializer)?;
        let mut message = ChatMessage {
            role: wire.role,
            tool_calls: wire.tool_calls.unwrap_or_default(),
            tool_call_id: wire.tool_call_id,
            name: wire.name,
            ..ChatMessage::default()
        };
        match wire.content {
            Value::Null => {}
            Value::String(text) => message.content = text,
            Value::Array(parts) => {
                let mut ordered = Vec::with_capacity(parts.len());
                for part in parts {
                    let part = content_part(part).map_err(serde::de::Error::custom)?;
                    if let ContentPart::Text(text) = &part {
                        message.content.push_str(text);
                    }
                    ordered.push(part);
                }
                if ordered
                    .iter()
                    .any(|p| matches!(p, ContentPart::Image { .. }))
                {
                    message.parts = ordered;
                }
            }
            _ => {
                return Err(serde::de::Error::custom(
                    "`content` must be a string, an array of content parts or null",
                ))
            }
        }
        Ok(message)
    }
}

/// A tool the model may call: OpenAI's `{"type": "function", "function": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionDef,
}

/// The kinds of tool: functions only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Function,
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl Tool {
    /// A function tool.
    pub fn function(name: &str, description: Option<&str>, parameters: Option<Value>) -> Self {
        Tool {
            kind: ToolKind::Function,
            function: FunctionDef {
                name: name.to_owned(),
                description: description.map(str::to_owned),
                parameters,
                strict: None,
            },
        }
    }
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolMode),
    Named(NamedTool),
}

impl ToolChoice {
    /// The function the model must call, if one is named.
    pub fn named(&self) -> Option<&str> {
        match self {
            ToolChoice::Named(named) => Some(&named.function.name),
            ToolChoice::Mode(_) => None,
        }
    }
}

/// `none`, `auto` or `required`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolMode {
    None,
    Auto,
    Required,
}

/// `{"type": "function", "function": {"name": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedTool {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionName,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionName {
    pub name: String,
}

/// The answer's format: OpenAI's `response_format`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// A named JSON Schema the answer must follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ResponseFormat {
    /// The schema a JSON answer follows: the given one, `{"type": "object"}` for
    /// `json_object`, `None` for text.
    pub fn schema(&self) -> Option<Value> {
        match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(json!({"type": "object"})),
            ResponseFormat::JsonSchema { json_schema } => Some(
                json_schema
                    .schema
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object"})),
            ),
        }
    }
}

/// Everything of a request beyond its messages and the sampling basics: tools, the answer's
/// format and the parameters only some upstreams take. Absent fields are not sent upstream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatOptions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// `minimal`, `low`, `medium` or `high`, for reasoning models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
}

impl ChatOptions {
    /// Whether the model may call a tool (tools given, and `tool_choice` is not `none`).
    pub fn may_call_tools(&self) -> bool {
        !self.tools.is_empty() && self.tool_choice != Some(ToolChoice::Mode(ToolMode::None))
    }

    /// The JSON schema of a structured answer, if the request asks for one.
    pub fn answer_schema(&self) -> Option<Value> {
        self.response_format
            .as_ref()
            .and_then(ResponseFormat::schema)
    }
}

/// A chat request as the workers hand it on: built once from the wire command
/// ([`crate::wire::InferenceCommand::chat_request`]), given to
/// [`crate::router::ProviderRouter::open`] with the hub's model name, and to each provider
/// with that provider's upstream model id in its place ([`ChatRequest::for_upstream`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The hub's model name before routing; the upstream model id (a model's
    /// `upstream_model`, or its name) in a provider's hands.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate; the hub reserved credits for exactly this many.
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Sequences that end the answer.
    pub stop: Vec<String>,
    /// An end-user id passed upstream for abuse tracking.
    pub user: Option<String>,
    /// Tools, the answer's format and the other parameters.
    #[serde(default)]
    pub options: ChatOptions,
}

impl ChatRequest {
    /// The same request for the upstream model `upstream_model`.
    pub fn for_upstream(&self, upstream_model: &str) -> ChatRequest {
        ChatRequest {
            model: upstream_model.to_owned(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_in_openai_shape() {
        let text = json!({"role": "user", "content": [
            {"type": "text", "text": "What is "},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "text", "text": "this?"}]});
        let message: ChatMessage = serde_json::from_value(text.clone()).expect("a message");
        assert_eq!(message.content, "What is this?");
        assert_eq!(message.images().count(), 1);
        assert_eq!(
            message.parts[1].inline_image(),
            Some(InlineImage {
                media_type: "image/png",
                data: "iVBORw0KGgo="
            })
        );
        assert_eq!(serde_json::to_value(&message).expect("json"), text);

        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]});
        let message: ChatMessage = serde_json::from_value(call.clone()).expect("a call");
        assert_eq!(message.tool_calls[0].name, "f");
        assert_eq!(serde_json::to_value(&message).expect("json"), call);

        let result = json!({"role": "tool", "content": "42", "tool_call_id": "call_1"});
        let message: ChatMessage = serde_json::from_value(result.clone()).expect("a result");
        assert_eq!(serde_json::to_value(&message).expect("json"), result);
    }

    #[test]
    fn text_parts_alone_stay_plain_text() {
        let message: ChatMessage = serde_json::from_value(json!({"role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}))
        .expect("a message");
        assert_eq!(message, ChatMessage::new("user", "ab"));
    }

    #[test]
    fn unsupported_parts_and_bad_images_are_refused_by_name() {
        let refused = |content: Value| {
            serde_json::from_value::<ChatMessage>(json!({"role": "user", "content": content}))
                .expect_err("refused")
                .to_string()
        };
        assert!(
            refused(json!([{"type": "input_audio", "input_audio": {}}])).contains("input_audio")
        );
        assert!(refused(
            json!([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}])
        )
        .contains("http(s)"));
        assert!(refused(
            json!([{"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}])
        )
        .contains("svg"));
        assert!(refused(json!(7)).contains("content"));
    }

    #[test]
    fn options_take_openai_shapes() {
        let options: ChatOptions = serde_json::from_value(json!({
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "seed": 7
        }))
        .expect("options");
        assert_eq!(
            options.tool_choice.as_ref().and_then(ToolChoice::named),
            Some("get_weather")
        );
        assert!(options.may_call_tools());
        assert_eq!(options.answer_schema(), Some(json!({"type": "object"})));
        let none: ChatOptions =
            serde_json::from_value(json!({"tools": options.tools, "tool_choice": "none"}))
                .expect("options");
        assert!(!none.may_call_tools());
        assert!(
            serde_json::from_value::<ChatOptions>(json!({"tool_choice": "sometimes"})).is_err()
        );
    }
}
