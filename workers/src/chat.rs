//! One shape of a chat request inside the workers: the messages and the request a worker
//! hands to the router and each provider. Tokenizers, providers and the wire format all use
//! these, so they live apart from each of them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One message of a chat. Deserializes from OpenAI's shape, where `content` is a string, an
/// array of text parts (`[{"type": "text", "text": "..."}]`, concatenated), or `null` (empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            role: String,
            #[serde(default)]
            content: Value,
        }
        let wire = Wire::deserialize(deserializer)?;
        let content = match wire.content {
            Value::Null => String::new(),
            Value::String(text) => text,
            Value::Array(parts) => {
                let mut text = String::new();
                for part in parts {
                    match (part.get("type").and_then(Value::as_str), part.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        (Some(other), _) if other != "text" => {
                            return Err(serde::de::Error::custom(format!(
                                "only text content parts are supported, got `{other}`"
                            )))
                        }
                        _ => {
                            return Err(serde::de::Error::custom(
                                "a content part needs a `type` and, for text, a string `text`",
                            ))
                        }
                    }
                }
                text
            }
            _ => {
                return Err(serde::de::Error::custom(
                    "`content` must be a string or an array of text parts",
                ))
            }
        };
        Ok(ChatMessage {
            role: wire.role,
            content,
        })
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
