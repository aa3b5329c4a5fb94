//! The built-in provider: no network, deterministic, with real token counts.
//!
//! The answer is lorem-ipsum-like text drawn from a fixed vocabulary by a generator seeded with
//! a hash of the last user (or tool) message, so the same prompt always gets the same answer.
//! Its natural length is 12 to 48 words; it is cut before the word that would take it past
//! `max_tokens` (finish reason `length`). It streams one word per delta, paced at
//! `tokens_per_second` (0: no pause), and ends with the usage counted by the model's
//! tokenizer: the prompt with OpenAI's chat accounting (tool definitions and the answer's
//! schema as their JSON, each image as [`IMAGE_TOKENS_LOW`] or [`IMAGE_TOKENS_HIGH`]), the
//! answer as the text of its deltas. `temperature`, `top_p`, `stop`, `seed`, the penalties
//! and `reasoning_effort` are ignored.
//!
//! Tools: when the request has tools the model may call and the last message is not a tool's
//! result (or `tool_choice` requires a call), the answer is one call of the named tool, or
//! the first, with arguments made up from its parameters' JSON Schema (finish reason
//! `tool_calls`). A `response_format` answer is a JSON value made up from its schema
//! (`{"answer": "..."}` for `json_object`).

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;

use serde_json::{json, Value};

use super::{
    ChatRequest, EmbedRequest, Embeddings, EventStream, Provider, ProviderError, StreamEvent,
    TokenUsage,
};
use crate::chat::{ContentPart, ToolChoice, ToolMode};
use crate::tokens::{count_request_tokens_off_runtime, Tokenizer};

/// Words the mock answers with.
const WORDS: [&str; 48] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
];

/// Fewest words in a natural answer.
const ANSWER_WORDS_MIN: u64 = 12;
/// Most words in a natural answer.
const ANSWER_WORDS_MAX: u64 = 48;

/// Prompt tokens of an image with `detail: low` (OpenAI's base charge).
pub const IMAGE_TOKENS_LOW: u64 = 85;
/// Prompt tokens of any other image (OpenAI's charge for a 512 × 512 image at high detail:
/// 85 + 4 tiles of 170).
pub const IMAGE_TOKENS_HIGH: u64 = 765;

/// A tool call the mock makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockCall {
    pub id: String,
    pub name: String,
    /// The arguments' JSON text in pieces, with their token counts.
    pub pieces: Vec<(String, u64)>,
    /// `tool_calls`, or `length` when the arguments were cut at `max_tokens`.
    pub reason: &'static str,
}

/// The mock provider.
#[derive(Clone, Debug)]
pub struct MockProvider {
    name: String,
    tokenizer: Tokenizer,
    /// 0: no pause between words.
    tokens_per_second: u32,
}

impl MockProvider {
    /// A mock named `name`, counting with `tokenizer` (`o200k` or `cl100k`; another name counts
    /// with `o200k`), streaming `tokens_per_second` tokens a second (0: as fast as it can).
    pub fn new(name: &str, tokenizer: &str, tokens_per_second: u32) -> Self {
        MockProvider {
            name: name.to_owned(),
            tokenizer: Tokenizer::parse(tokenizer).unwrap_or(Tokenizer::O200k),
            tokens_per_second,
        }
    }

    /// The answer to `request`: its deltas with their token counts, and its finish reason.
    pub fn answer(&self, request: &ChatRequest) -> (Vec<(String, u64)>, &'static str) {
        let prompt = last_prompt(request);
        if let Some(schema) = request.options.answer_schema() {
            let value = match &request.options.response_format {
                Some(crate::chat::ResponseFormat::JsonObject) => {
                    let (words, _) = self.words(prompt, u64::MAX);
                    let text: String = words.into_iter().map(|(w, _)| w).collect();
                    json!({"answer": text})
                }
                _ => example_of(&schema, &schema, 0),
            };
            return self.pieces_of(&value.to_string(), u64::from(request.max_tokens));
        }
        self.words(prompt, u64::from(request.max_tokens))
    }

    /// The call of a tool `request` makes, if it makes one.
    pub fn tool_call(&self, request: &ChatRequest) -> Option<MockCall> {
        let options = &request.options;
        if !options.may_call_tools() {
            return None;
        }
        let answered = request.messages.last().is_some_and(|m| m.role == "tool");
        let forced = matches!(
            options.tool_choice,
            Some(ToolChoice::Named(_) | ToolChoice::Mode(ToolMode::Required))
        );
        if answered && !forced {
            return None;
        }
        let tool = match options.tool_choice.as_ref().and_then(ToolChoice::named) {
            Some(name) => options.tools.iter().find(|t| t.function.name == name)?,
            None => options.tools.first()?,
        };
        let schema = tool
            .function
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        let arguments = example_of(&schema, &schema, 0).to_string();
        let name = tool.function.name.clone();
        let budget = u64::from(request.max_tokens).saturating_sub(self.tokenizer.count(&name));
        let (pieces, reason) = self.pieces_of(&arguments, budget);
        let id = format!(
            "call_{:016x}",
            fnv1a(format!("{prompt}\u{0}{name}", prompt = last_prompt(request)).as_bytes())
        );
        let reason = if reason == "length" {
            "length"
        } else {
            "tool_calls"
        };
        Some(MockCall {
            id,
            name,
            pieces,
            reason,
        })
    }

    /// `text` in pieces of a few characters with their token counts, cut before the piece
    /// that would take it past `budget` tokens (then `length`).
    fn pieces_of(&self, text: &str, budget: u64) -> (Vec<(String, u64)>, &'static str) {
        let mut pieces = Vec::new();
        let mut used = 0u64;
        let mut rest = text;
        while !rest.is_empty() {
            // Cut after a comma, a colon or a space: JSON falls apart into a few pieces.
            let cut = rest
                .char_indices()
                .skip(1)
                .find(|(_, c)| matches!(c, ',' | ':' | ' '))
                .map_or(rest.len(), |(i, c)| i + c.len_utf8());
            let (piece, after) = rest.split_at(cut);
            let tokens = self.tokenizer.count(piece);
            if used + tokens > budget {
                return (pieces, "length");
            }
            used += tokens;
            pieces.push((piece.to_owned(), tokens));
            rest = after;
        }
        (pieces, "stop")
    }

    /// The lorem-ipsum answer to `prompt` within `budget` tokens.
    fn words(&self, prompt: &str, budget: u64) -> (Vec<(String, u64)>, &'static str) {
        let mut random = SplitMix64(fnv1a(prompt.as_bytes()));
        let words = ANSWER_WORDS_MIN + random.next() % (ANSWER_WORDS_MAX - ANSWER_WORDS_MIN + 1);
        let mut pieces = Vec::new();
        let mut used = 0u64;
        let mut sentence_left = 0u64;
        for index in 0..words {
            let word = WORDS[(random.next() % WORDS.len() as u64) as usize];
            let starts_sentence = sentence_left == 0;
            if starts_sentence {
                sentence_left = 5 + random.next() % 8;
            }
            sentence_left -= 1;
            let ends = sentence_left == 0 || index + 1 == words;
            let mut piece = String::with_capacity(word.len() + 2);
            if index > 0 {
                piece.push(' ');
            }
            if starts_sentence {
                let mut chars = word.chars();
                piece.extend(chars.next().map(|c| c.to_ascii_uppercase()));
                piece.push_str(chars.as_str());
            } else {
                piece.push_str(word);
            }
            if ends {
                piece.push('.');
            }
            // Every piece after the first starts with a space after a non-space: a token
            // boundary, so the pieces' counts add up to the count of the whole text.
            let tokens = self.tokenizer.count(&piece);
            if used + tokens > budget {
                return (pieces, "length");
            }
            used += tokens;
            pieces.push((piece, tokens));
        }
        (pieces, "stop")
    }
}

impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn embed(&self, request: EmbedRequest) -> BoxFuture<'_, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            let dimensions = request
                .dimensions
                .map_or(MOCK_EMBEDDING_DIMENSIONS, |d| d as usize);
            let vectors = request
                .inputs
                .iter()
                .map(|input| embedding_of(input, dimensions))
                .collect();
            let tokens = request
                .inputs
                .iter()
                .map(|input| self.tokenizer.count(input))
                .sum();
            Ok(Embeddings {
                vectors,
                usage: Some(TokenUsage {
                    input_tokens: tokens,
                    ..TokenUsage::default()
                }),
            })
        })
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            // A long prompt is counted on the blocking pool, as the gateway counts it.
            let images: u64 = request
                .messages
                .iter()
                .flat_map(|m| m.images())
                .map(|image| match image {
                    ContentPart::Image { detail, .. } if detail.as_deref() == Some("low") => {
                        IMAGE_TOKENS_LOW
                    }
                    _ => IMAGE_TOKENS_HIGH,
                })
                .sum();
            let input_tokens = count_request_tokens_off_runtime(
                self.tokenizer.as_str(),
                &request.messages,
                &request.options,
            )
            .await
                + images;
            // Each piece is a delta, or (for a tool call) a piece of the call's arguments.
            let (pieces, reason, call) = match self.tool_call(&request) {
                Some(MockCall {
                    id,
                    name,
                    pieces,
                    reason,
                }) => {
                    let name_tokens = self.tokenizer.count(&name);
                    (pieces, reason, Some((id, name, name_tokens)))
                }
                None => {
                    let (pieces, reason) = self.answer(&request);
                    (pieces, reason, None)
                }
            };
            // The whole output counted at once: pieces cut inside JSON are not token
            // boundaries, so their counts add up to a little more than the text's.
            let text: String = pieces.iter().map(|(piece, _)| piece.as_str()).collect();
            let output_tokens =
                self.tokenizer.count(&text) + call.as_ref().map_or(0, |(_, _, tokens)| *tokens);
            let usage = TokenUsage {
                input_tokens,
                output_tokens,
                cached_input_tokens: 0,
                reasoning_tokens: 0,
            };
            let tokens_per_second = self.tokens_per_second;
            let is_call = call.is_some();
            let start = call.map(|(id, name, _)| {
                Ok(StreamEvent::ToolCall {
                    index: 0,
                    id: Some(id),
                    name: Some(name),
                    arguments: String::new(),
                })
            });
            let pieces = futures::stream::iter(pieces).then(move |(text, tokens)| async move {
                if tokens_per_second > 0 {
                    let pause =
                        Duration::from_micros(tokens * 1_000_000 / u64::from(tokens_per_second));
                    tokio::time::sleep(pause).await;
                }
                Ok(if is_call {
                    StreamEvent::ToolCall {
                        index: 0,
                        id: None,
                        name: None,
                        arguments: text,
                    }
                } else {
                    StreamEvent::Delta { text }
                })
            });
            let deltas = futures::stream::iter(start).chain(pieces);
            let end = futures::stream::iter([
                Ok(StreamEvent::Usage(usage)),
                Ok(StreamEvent::Finish {
                    reason: reason.to_owned(),
                }),
            ]);
            let stream: EventStream = Box::pin(deltas.chain(end));
            Ok(stream)
        })
    }
}

/// The mock's vectors' length when the request names none.
pub const MOCK_EMBEDDING_DIMENSIONS: usize = 256;

/// A unit vector of `dimensions` numbers drawn from a generator seeded with `input`: the same
/// text always gets the same vector, different texts nearly orthogonal ones.
pub fn embedding_of(input: &str, dimensions: usize) -> Vec<f32> {
    let mut random = SplitMix64(fnv1a(input.as_bytes()));
    let raw: Vec<f64> = (0..dimensions)
        .map(|_| (random.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// The text the answer is seeded with: the last user or tool message.
fn last_prompt(request: &ChatRequest) -> &str {
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user" || m.role == "tool")
        .map_or("", |m| m.content.as_str())
}

/// Deepest nesting [`example_of`] follows (a recursive schema ends in `null`).
const EXAMPLE_DEPTH_MAX: usize = 8;

/// A value that follows `schema` (a JSON Schema, `$ref`s resolved against `root`), made up
/// the same way every time: the first of an `enum`, `anyOf` or `oneOf`, every property of an
/// object, one item of an array, bounds respected for numbers and lengths.
pub fn example_of(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > EXAMPLE_DEPTH_MAX {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer));
        return target.map_or(Value::Null, |t| example_of(t, root, depth + 1));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema.get(key).and_then(|e| e.get(0)) {
            return example_of(first, root, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // `["string", "null"]`: the first that is not null.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "object",
    };
    let number = |name: &str| schema.get(name).and_then(Value::as_f64);
    match kind {
        "object" => {
            let mut object = serde_json::Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    object.insert(name.clone(), example_of(property, root, depth + 1));
                }
            }
            Value::Object(object)
        }
        "array" => {
            let item = schema
                .get("items")
                .map_or(Value::Null, |items| example_of(items, root, depth + 1));
            let least = number("minItems").unwrap_or(1.0).max(1.0) as usize;
            Value::Array(vec![item; least.min(16)])
        }
        "string" => {
            let least = number("minLength").unwrap_or(0.0) as usize;
            let mut text = String::from("lorem");
            while text.len() < least.min(4096) {
                text.push_str(" ipsum");
            }
            if let Some(most) = number("maxLength") {
                text.truncate(most as usize);
            }
            json!(text)
        }
        "integer" => json!(number("minimum").map_or(42, |m| m.ceil() as i64)),
        "number" => json!(number("minimum").unwrap_or(4.2)),
        "boolean" => json!(true),
        _ => Value::Null,
    }
}

/// FNV-1a, 64 bits: a stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64: a tiny, stable pseudo-random sequence.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;
    use crate::tokens::{count_prompt_tokens, count_text_tokens};

    fn request(prompt: &str, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: "mock".into(),
            messages: vec![ChatMessage::new("user", prompt)],
            max_tokens,
            ..ChatRequest::default()
        }
    }

    async fn collect(provider: &MockProvider, request: ChatRequest) -> Vec<StreamEvent> {
        let Ok(stream) = provider.stream(request).await else {
            panic!("the mock always accepts");
        };
        stream.filter_map(|e| async move { e.ok() }).collect().await
    }

    #[tokio::test]
    async fn the_same_prompt_gets_the_same_answer_and_real_token_counts() {
        let mock = MockProvider::new("mock", "o200k", 0);
        let first = collect(&mock, request("Tell me a story", 1000)).await;
        let second = collect(&mock, request("Tell me a story", 1000)).await;
        assert_eq!(first, second);
        let other = collect(&mock, request("Something else", 1000)).await;
        assert_ne!(first, other);

        let text: String = first
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let usage = first.iter().find_map(|e| match e {
            StreamEvent::Usage(u) => Some(*u),
            _ => None,
        });
        let messages = [ChatMessage::new("user", "Tell me a story")];
        assert_eq!(
            usage,
            Some(TokenUsage {
                input_tokens: count_prompt_tokens("o200k", &messages),
                output_tokens: count_text_tokens("o200k", &text),
                cached_input_tokens: 0,
                reasoning_tokens: 0,
            })
        );
        assert_eq!(
            first.last(),
            Some(&StreamEvent::Finish {
                reason: "stop".into()
            })
        );
    }

    #[tokio::test]
    async fn the_answer_is_cut_at_max_tokens() {
        let mock = MockProvider::new("mock", "cl100k", 0);
        for max_tokens in [0, 1, 5, 10] {
            let events = collect(&mock, request("Tell me a story", max_tokens)).await;
            let text: String = events
                .iter()
                .filter_map(|e| match e {
                    StreamEvent::Delta { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            assert!(count_text_tokens("cl100k", &text) <= u64::from(max_tokens));
            assert_eq!(
                events.last(),
                Some(&StreamEvent::Finish {
                    reason: "length".into()
                })
            );
        }
    }

    #[tokio::test]
    async fn a_paced_mock_takes_its_time() {
        let mock = MockProvider::new("mock", "o200k", 1000);
        let started = std::time::Instant::now();
        let events = collect(&mock, request("pace", 20)).await;
        let tokens = events.iter().find_map(|e| match e {
            StreamEvent::Usage(u) => Some(u.output_tokens),
            _ => None,
        });
        let tokens = tokens.unwrap_or(0);
        assert!(started.elapsed() >= Duration::from_millis(tokens));
    }

    fn with_options(prompt: &str, options: Value) -> ChatRequest {
        ChatRequest {
            options: serde_json::from_value(options).expect("options"),
            ..request(prompt, 1000)
        }
    }

    #[tokio::test]
    async fn a_request_with_tools_gets_a_call_with_schema_shaped_arguments() {
        let mock = MockProvider::new("mock", "o200k", 0);
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1},
            "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]);
        let events = collect(
            &mock,
            with_options("Weather in Paris?", json!({"tools": tools})),
        )
        .await;
        let mut arguments = String::new();
        let mut id = None;
        for event in &events {
            if let StreamEvent::ToolCall {
                index,
                id: first,
                name,
                arguments: more,
            } = event
            {
                assert_eq!(*index, 0);
                if first.is_some() {
                    id = first.clone();
                    assert_eq!(name.as_deref(), Some("get_weather"));
                }
                arguments.push_str(more);
            }
        }
        assert!(id.is_some_and(|id| id.starts_with("call_")));
        let parsed: Value = serde_json::from_str(&arguments).expect("the arguments are JSON");
        assert_eq!(parsed, json!({"city": "lorem", "days": 1, "unit": "c"}));
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Finish {
                reason: "tool_calls".into()
            })
        );
        let usage = events.iter().find_map(|e| match e {
            StreamEvent::Usage(u) => Some(*u),
            _ => None,
        });
        let output =
            count_text_tokens("o200k", "get_weather") + count_text_tokens("o200k", &arguments);
        assert_eq!(usage.map(|u| u.output_tokens), Some(output));

        // After the tool's result, an ordinary answer.
        let mut answered = with_options("Weather in Paris?", json!({"tools": tools}));
        answered.messages.push(ChatMessage {
            role: "tool".into(),
            content: "sunny".into(),
            tool_call_id: Some("call_1".into()),
            ..ChatMessage::default()
        });
        let events = collect(&mock, answered).await;
        assert!(events
            .iter()
            .any(|e| matches!(e, StreamEvent::Delta { .. })));
        assert!(!events
            .iter()
            .any(|e| matches!(e, StreamEvent::ToolCall { .. })));
        // `tool_choice: none` never calls.
        let none = collect(
            &mock,
            with_options("x", json!({"tools": tools, "tool_choice": "none"})),
        )
        .await;
        assert!(!none
            .iter()
            .any(|e| matches!(e, StreamEvent::ToolCall { .. })));
    }

    #[tokio::test]
    async fn a_json_schema_answer_follows_the_schema_and_refs() {
        let mock = MockProvider::new("mock", "o200k", 0);
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
            "home": {"$ref": "#/$defs/City"}, "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "$defs": {"City": {"type": "object", "properties": {"zip": {"type": "integer"}}}}});
        let events = collect(
            &mock,
            with_options(
                "Describe",
                json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": true}}}),
            ),
        )
        .await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            value,
            json!({"name": "lorem", "tags": ["lorem"], "home": {"zip": 42}, "note": "lorem"})
        );
        let object = collect(
            &mock,
            with_options(
                "Describe",
                json!({"response_format": {"type": "json_object"}}),
            ),
        )
        .await;
        let text: String = object
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert!(value["answer"].is_string());
    }

    #[tokio::test]
    async fn images_count_as_openai_counts_them() {
        let mock = MockProvider::new("mock", "o200k", 0);
        let text_only = collect(&mock, request("see", 10)).await;
        let message: ChatMessage = serde_json::from_value(json!({"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]}))
        .expect("message");
        let with_images = collect(
            &mock,
            ChatRequest {
                messages: vec![message],
                ..request("see", 10)
            },
        )
        .await;
        let input = |events: &[StreamEvent]| {
            events.iter().find_map(|e| match e {
                StreamEvent::Usage(u) => Some(u.input_tokens),
                _ => None,
            })
        };
        assert_eq!(
            input(&with_images),
            input(&text_only).map(|t| t + IMAGE_TOKENS_LOW + IMAGE_TOKENS_HIGH)
        );
    }
}
