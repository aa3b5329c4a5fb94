//! What a model can take: images, tools, reasoning effort, and the sampling parameters only
//! some upstreams know. A request is checked against its model's capabilities before any
//! credit is reserved, and a parameter the model cannot take is refused by name (HTTP 400
//! `unsupported_parameter`), never dropped on the way upstream.
//!
//! A model's capabilities are what its settings allow *and* what every one of its providers
//! can take, since a fallback may reach any of them:
//!
//! | parameter | openai | compatible | anthropic | mock |
//! |---|---|---|---|---|
//! | images (`vision = true`) | yes | yes | yes | yes |
//! | `tools`, `tool_choice`, `parallel_tool_calls` (`tools = true`) | yes | yes | yes | yes |
//! | `response_format` | yes | yes | yes, as a forced tool; not with `tools` | yes |
//! | `seed`, `presence_penalty`, `frequency_penalty` | yes | yes | no | ignored |
//! | `reasoning_effort` (`reasoning = true`) | yes | yes | no | ignored |

use serde::Serialize;

use crate::chat::{ChatMessage, ChatOptions, ResponseFormat};
use crate::config::ProviderKind;

/// What one model can take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Images in user messages.
    pub vision: bool,
    /// The most prompt tokens one image is reserved for (its providers count images; the hub
    /// cannot, so it reserves the worst case and charges what they report).
    pub image_tokens_max: u32,
    /// Tools and tool calls.
    pub tools: bool,
    /// `reasoning_effort`.
    pub reasoning: bool,
    /// An embedding model: the length of its vectors (it answers no chat).
    pub embedding_dimensions: Option<u32>,
    /// The kinds of its providers.
    #[serde(skip)]
    pub kinds: Vec<ProviderKind>,
}

/// A parameter a model cannot take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unsupported {
    /// The parameter, as the client wrote it (`seed`, `messages[1].content[0]`, ...).
    pub param: String,
    pub message: String,
}

impl Unsupported {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Unsupported {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl Capabilities {
    fn any(&self, kind: ProviderKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Checks a request for `model` (its name, for messages).
    pub fn check(
        &self,
        model: &str,
        messages: &[ChatMessage],
        options: &ChatOptions,
    ) -> Result<(), Unsupported> {
        if self.embedding_dimensions.is_some() {
            return Err(Unsupported::new(
                "model",
                format!("the model {model} makes embeddings (POST /v1/embeddings), not chats"),
            ));
        }
        for (m, message) in messages.iter().enumerate() {
            if let Some(j) = message
                .parts
                .iter()
                .position(|p| matches!(p, crate::chat::ContentPart::Image { .. }))
            {
                if !self.vision {
                    return Err(Unsupported::new(
                        format!("messages[{m}].content[{j}]"),
                        format!("the model {model} does not take images"),
                    ));
                }
                if message.role != "user" {
                    return Err(Unsupported::new(
                        format!("messages[{m}].content[{j}]"),
                        "images are taken in user messages only",
                    ));
                }
            }
            if !self.tools && (!message.tool_calls.is_empty() || message.role == "tool") {
                return Err(Unsupported::new(
                    format!("messages[{m}]"),
                    format!("the model {model} does not take tool calls"),
                ));
            }
        }
        if !options.tools.is_empty() && !self.tools {
            return Err(Unsupported::new(
                "tools",
                format!("the model {model} does not take tools"),
            ));
        }
        if options.tools.is_empty() && options.tool_choice.is_some() {
            return Err(Unsupported::new(
                "tool_choice",
                "tool_choice is only allowed when tools are given",
            ));
        }
        if let Some(name) = options.tool_choice.as_ref().and_then(|c| c.named()) {
            if !options.tools.iter().any(|t| t.function.name == name) {
                return Err(Unsupported::new(
                    "tool_choice",
                    format!("tool_choice names {name:?}, which is not among the tools"),
                ));
            }
        }
        if options.reasoning_effort.is_some()
            && (!self.reasoning || self.any(ProviderKind::Anthropic))
        {
            return Err(Unsupported::new(
                "reasoning_effort",
                format!("the model {model} does not take reasoning_effort"),
            ));
        }
        if self.any(ProviderKind::Anthropic) {
            let anthropic_lacks = [
                ("seed", options.seed.is_some()),
                ("presence_penalty", options.presence_penalty.is_some()),
                ("frequency_penalty", options.frequency_penalty.is_some()),
            ];
            if let Some((param, _)) = anthropic_lacks.iter().find(|(_, set)| *set) {
                return Err(Unsupported::new(
                    *param,
                    format!("the model {model} (Anthropic) does not take {param}"),
                ));
            }
            let structured = matches!(
                options.response_format,
                Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
            );
            if structured && !options.tools.is_empty() {
                return Err(Unsupported::new(
                    "response_format",
                    format!(
                        "the model {model} (Anthropic) takes response_format or tools, not both"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The number of images in `messages`.
    pub fn images(messages: &[ChatMessage]) -> u64 {
        messages.iter().map(|m| m.images().count() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{ContentPart, Tool, ToolChoice, ToolMode};

    fn caps(kinds: &[ProviderKind]) -> Capabilities {
        Capabilities {
            vision: false,
            image_tokens_max: 1600,
            tools: true,
            reasoning: false,
            embedding_dimensions: None,
            kinds: kinds.to_vec(),
        }
    }

    fn image_message() -> ChatMessage {
        ChatMessage {
            role: "user".into(),
            content: "see".into(),
            parts: vec![
                ContentPart::Text("see".into()),
                ContentPart::Image {
                    url: "https://example.com/a.png".into(),
                    detail: None,
                },
            ],
            ..ChatMessage::default()
        }
    }

    #[test]
    fn each_refusal_names_its_parameter() {
        let openai = caps(&[ProviderKind::Openai]);
        let anthropic = caps(&[ProviderKind::Openai, ProviderKind::Anthropic]);
        let none = ChatOptions::default();
        let param = |c: &Capabilities, m: &[ChatMessage], o: &ChatOptions| {
            c.check("m", m, o).err().map(|e| e.param)
        };
        let plain = [ChatMessage::new("user", "hi")];
        assert_eq!(param(&openai, &plain, &none), None);
        assert_eq!(
            param(
                &openai,
                &[ChatMessage::new("user", "a"), image_message()],
                &none
            ),
            Some("messages[1].content[1]".into())
        );
        let vision = Capabilities {
            vision: true,
            ..openai.clone()
        };
        assert_eq!(param(&vision, &[image_message()], &none), None);
        let seeded = ChatOptions {
            seed: Some(1),
            ..ChatOptions::default()
        };
        assert_eq!(param(&openai, &plain, &seeded), None);
        // A fallback to Anthropic could not honour the seed.
        assert_eq!(param(&anthropic, &plain, &seeded), Some("seed".into()));
        let effort = ChatOptions {
            reasoning_effort: Some("low".into()),
            ..ChatOptions::default()
        };
        assert_eq!(
            param(&openai, &plain, &effort),
            Some("reasoning_effort".into())
        );
        let no_tools = Capabilities {
            tools: false,
            ..openai.clone()
        };
        let with_tools = ChatOptions {
            tools: vec![Tool::function("f", None, None)],
            ..ChatOptions::default()
        };
        assert_eq!(param(&no_tools, &plain, &with_tools), Some("tools".into()));
        let choice_alone = ChatOptions {
            tool_choice: Some(ToolChoice::Mode(ToolMode::Auto)),
            ..ChatOptions::default()
        };
        assert_eq!(
            param(&openai, &plain, &choice_alone),
            Some("tool_choice".into())
        );
        let both = ChatOptions {
            response_format: Some(ResponseFormat::JsonObject),
            ..with_tools.clone()
        };
        assert_eq!(param(&openai, &plain, &both), None);
        assert_eq!(
            param(&anthropic, &plain, &both),
            Some("response_format".into())
        );
    }
}
