//! OpenAI's chat completions, and any OpenAI-compatible server (vLLM, Ollama, llama.cpp) by
//! base URL.
//!
//! Requests always stream (`stream: true`, `stream_options.include_usage: true`). The stream is
//! `data: {chunk}` events ended by `data: [DONE]`; the finish reason comes in the last choice
//! chunk and the usage, when the server reports it, in a chunk with no choices after it. Both
//! are held back and yielded at `[DONE]` as `Usage` then `Finish`. A server that does not
//! report usage yields no `Usage`.
//!
//! Reasoning models' thinking comes as `delta.reasoning_content` (DeepSeek, vLLM, SGLang) or
//! `delta.reasoning` (OpenRouter, Ollama, newer vLLM), and `message.reasoning_content` /
//! `message.reasoning` in a whole answer: each becomes [`StreamEvent::Reasoning`]. A server
//! sending both fields in one delta sends the same text twice, so only the first is taken.
//! OpenAI's own reasoning models send no reasoning text; their `completion_tokens` already
//! count the reasoning tokens (`completion_tokens_details.reasoning_tokens` is a part of it,
//! never added to it).

use futures::future::BoxFuture;
use serde_json::{json, Map, Value};

use super::{
    count, is_json, json_error_message, json_stream, read_json, scrub, send, sse_stream,
    ChatRequest, Deadlines, Decoder, EmbedRequest, Embeddings, EventStream, Pending, Provider,
    ProviderError, StreamEvent, Timeouts, TokenUsage,
};
use crate::providers::sse::SseEvent;

/// The flavour of the OpenAI protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI itself: `max_completion_tokens` (the reasoning models refuse `max_tokens`).
    OpenAi,
    /// An OpenAI-compatible server: `max_tokens`, and `developer` messages sent as `system`
    /// (chat templates of open models know no `developer` role).
    Compatible,
}

/// A provider speaking OpenAI's chat completions.
pub struct OpenAiProvider {
    name: String,
    client: reqwest::Client,
    /// `{base_url}/chat/completions`.
    url: String,
    /// `{base_url}/embeddings`.
    embeddings_url: String,
    api_key: Option<String>,
    dialect: Dialect,
    timeouts: Timeouts,
}

impl OpenAiProvider {
    /// A provider named `name` at `base_url` (e.g. `https://api.openai.com/v1`, or
    /// `http://localhost:8000/v1` for vLLM), sending `api_key` as a bearer token if set.
    pub fn new(
        name: &str,
        client: reqwest::Client,
        base_url: &str,
        api_key: Option<String>,
        dialect: Dialect,
        timeouts: Timeouts,
    ) -> Self {
        OpenAiProvider {
            name: name.to_owned(),
            client,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            embeddings_url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            api_key,
            dialect,
            timeouts,
        }
    }

    /// The JSON body for `request`.
    pub fn body(&self, request: &ChatRequest) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let role = match (self.dialect, m.role.as_str()) {
                    (Dialect::Compatible, "developer") => "system",
                    (_, role) => role,
                };
                m.to_openai(role)
            })
            .collect();
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert("messages".into(), Value::Array(messages));
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        let max_field = match self.dialect {
            Dialect::OpenAi => "max_completion_tokens",
            Dialect::Compatible => "max_tokens",
        };
        body.insert(max_field.into(), json!(request.max_tokens));
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !request.stop.is_empty() {
            body.insert("stop".into(), json!(request.stop));
        }
        if let Some(user) = &request.user {
            body.insert("user".into(), json!(user));
        }
        // Each option as OpenAI names it; absent ones are not sent.
        if let Value::Object(options) = json!(request.options) {
            body.extend(options);
        }
        Value::Object(body)
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn embed(&self, request: EmbedRequest) -> BoxFuture<'_, Result<Embeddings, ProviderError>> {
        Box::pin(async move {
            let deadlines = Deadlines::start(&self.timeouts);
            let mut body = json!({"model": request.model, "input": request.inputs,
                "encoding_format": "float"});
            if let Some(dimensions) = request.dimensions {
                body["dimensions"] = json!(dimensions);
            }
            let mut builder = self.client.post(&self.embeddings_url).json(&body);
            if let Some(key) = &self.api_key {
                builder = builder.bearer_auth(key);
            }
            let response = send(builder, &deadlines, self.api_key.as_deref()).await?;
            let answer = read_json(response, &deadlines).await?;
            embeddings_of(&answer, request.inputs.len())
        })
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let deadlines = Deadlines::start(&self.timeouts);
            let mut builder = self.client.post(&self.url).json(&self.body(&request));
            if let Some(key) = &self.api_key {
                builder = builder.bearer_auth(key);
            }
            let response = send(builder, &deadlines, self.api_key.as_deref()).await?;
            if is_json(&response) {
                return Ok(json_stream(
                    response,
                    deadlines,
                    self.api_key.clone(),
                    whole_answer,
                ));
            }
            Ok(sse_stream(
                response,
                ChunkDecoder {
                    finish: None,
                    usage: None,
                    secret: self.api_key.clone(),
                },
                deadlines,
            ))
        })
    }
}

/// Decodes `chat.completion.chunk` events.
struct ChunkDecoder {
    /// The `finish_reason` seen, yielded at `[DONE]`.
    finish: Option<String>,
    /// The usage seen, yielded at `[DONE]`.
    usage: Option<TokenUsage>,
    /// Scrubbed from error messages.
    secret: Option<String>,
}

impl ChunkDecoder {
    fn complete(&mut self, out: &mut Pending) {
        if let Some(usage) = self.usage.take() {
            out.push_back(Ok(StreamEvent::Usage(usage)));
        }
        let reason = self.finish.take().unwrap_or_else(|| "stop".to_owned());
        out.push_back(Ok(StreamEvent::Finish { reason }));
    }
}

impl Decoder for ChunkDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Pending) -> bool {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.complete(out);
            return true;
        }
        if data.is_empty() {
            return false;
        }
        let chunk: Value = match serde_json::from_str(data) {
            Ok(chunk) => chunk,
            Err(error) => {
                out.push_back(Err(ProviderError::Protocol(format!(
                    "a stream chunk is not JSON ({error})"
                ))));
                return true;
            }
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            let message = json_error_message(&chunk).unwrap_or_default();
            out.push_back(Err(ProviderError::StreamBroken(scrub(
                &message,
                self.secret.as_deref(),
            ))));
            return true;
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(delta) = choice.get("delta") {
                if let Some(text) = reasoning_of(delta) {
                    out.push_back(Ok(StreamEvent::Reasoning {
                        text: text.to_owned(),
                    }));
                }
            }
            for call in choice
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push_back(Ok(tool_call_piece(call)));
            }
            let text = choice.pointer("/delta/content").and_then(Value::as_str);
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                out.push_back(Ok(StreamEvent::Delta {
                    text: text.to_owned(),
                }));
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(reason.to_owned());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_of(usage));
        }
        false
    }

    fn end(&mut self, out: &mut Pending) {
        // Some servers close without `[DONE]` once they sent the finish reason: that answer is
        // whole. Without a finish reason it was cut.
        if self.finish.is_some() {
            self.complete(out);
        } else {
            out.push_back(Err(ProviderError::StreamBroken(
                "the upstream closed the stream before it finished".into(),
            )));
        }
    }
}

/// The reasoning text of a `delta` or `message`: `reasoning_content`, else `reasoning`;
/// `None` when empty or absent (`null`, or an object some servers put there).
fn reasoning_of(part: &Value) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .into_iter()
        .find_map(|field| part.get(field).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
}

/// A piece of a tool call in a delta (`{"index", "id"?, "function": {"name"?,
/// "arguments"?}}`) or a whole call in a message (then without `index`: see
/// [`whole_answer`]).
fn tool_call_piece(call: &Value) -> StreamEvent {
    let text = |pointer: &str| call.pointer(pointer).and_then(Value::as_str);
    StreamEvent::ToolCall {
        index: u32::try_from(count(call.get("index"))).unwrap_or(u32::MAX),
        id: text("/id").filter(|id| !id.is_empty()).map(str::to_owned),
        name: text("/function/name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        arguments: text("/function/arguments").unwrap_or("").to_owned(),
    }
}

/// OpenAI's `usage`: `prompt_tokens` (cached included), `completion_tokens` (reasoning
/// included), `prompt_tokens_details.cached_tokens`,
/// `completion_tokens_details.reasoning_tokens`.
fn usage_of(usage: &Value) -> TokenUsage {
    TokenUsage {
        input_tokens: count(usage.get("prompt_tokens")),
        output_tokens: count(usage.get("completion_tokens")),
        cached_input_tokens: count(usage.pointer("/prompt_tokens_details/cached_tokens")),
        reasoning_tokens: count(usage.pointer("/completion_tokens_details/reasoning_tokens")),
    }
}

/// An `embeddings` answer: `data[].embedding` by `index`, one per input, and
/// `usage.prompt_tokens`.
fn embeddings_of(answer: &Value, inputs: usize) -> Result<Embeddings, ProviderError> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("the embeddings answer has no data".into()))?;
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (position, item) in data.iter().enumerate() {
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .map_or(position, |i| usize::try_from(i).unwrap_or(usize::MAX));
        let vector: Vec<f32> = item
            .get("embedding")
            .and_then(Value::as_array)
            .ok_or_else(|| ProviderError::Protocol("an embedding is not a list of numbers".into()))?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<_>>()
            .ok_or_else(|| ProviderError::Protocol("an embedding holds a non-number".into()))?;
        let slot = vectors.get_mut(index).ok_or_else(|| {
            ProviderError::Protocol(format!("an embedding for input {index}, past the last"))
        })?;
        *slot = Some(vector);
    }
    let vectors = vectors
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ProviderError::Protocol("an input got no embedding".into()))?;
    let usage = answer
        .get("usage")
        .filter(|u| u.is_object())
        .map(|usage| TokenUsage {
            input_tokens: count(usage.get("prompt_tokens")),
            ..TokenUsage::default()
        });
    Ok(Embeddings { vectors, usage })
}

/// A non-streamed `chat.completion`.
fn whole_answer(answer: &Value) -> Result<Vec<StreamEvent>, ProviderError> {
    let choice = answer
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| ProviderError::Protocol("the answer has no choices".into()))?;
    let mut events = Vec::new();
    if let Some(text) = choice.get("message").and_then(reasoning_of) {
        events.push(StreamEvent::Reasoning {
            text: text.to_owned(),
        });
    }
    if let Some(text) = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        events.push(StreamEvent::Delta {
            text: text.to_owned(),
        });
    }
    let calls = choice
        .pointer("/message/tool_calls")
        .and_then(Value::as_array);
    for (index, call) in calls.into_iter().flatten().enumerate() {
        if let StreamEvent::ToolCall {
            id,
            name,
            arguments,
            ..
        } = tool_call_piece(call)
        {
            events.push(StreamEvent::ToolCall {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                id,
                name,
                arguments,
            });
        }
    }
    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        events.push(StreamEvent::Usage(usage_of(usage)));
    }
    let reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    events.push(StreamEvent::Finish {
        reason: reason.to_owned(),
    });
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;
    use std::collections::VecDeque;

    fn decode(events: &[&str]) -> Vec<Result<StreamEvent, ProviderError>> {
        let mut decoder = ChunkDecoder {
            finish: None,
            usage: None,
            secret: Some("sk-secret".into()),
        };
        let mut out = VecDeque::new();
        for data in events {
            let event = SseEvent {
                event: None,
                data: (*data).to_owned(),
            };
            if decoder.event(event, &mut out) {
                return out.into_iter().collect();
            }
        }
        decoder.end(&mut out);
        out.into_iter().collect()
    }

    fn delta(text: &str) -> Result<StreamEvent, ProviderError> {
        Ok(StreamEvent::Delta { text: text.into() })
    }

    #[test]
    fn chunks_become_deltas_then_usage_then_finish() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            vec![
                delta("Hel"),
                delta("lo"),
                Ok(StreamEvent::Usage(TokenUsage {
                    input_tokens: 9,
                    output_tokens: 2,
                    cached_input_tokens: 4,
                    reasoning_tokens: 0,
                })),
                Ok(StreamEvent::Finish {
                    reason: "length".into()
                }),
            ]
        );
    }

    fn reasoning(text: &str) -> Result<StreamEvent, ProviderError> {
        Ok(StreamEvent::Reasoning { text: text.into() })
    }

    #[test]
    fn reasoning_content_deltas_become_reasoning_before_the_answer() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let me"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning":" think."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":" Twice.","reasoning":" Twice."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning":{"effort":"high"},"content":"42"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            vec![
                reasoning("Let me"),
                reasoning(" think."),
                reasoning(" Twice."),
                delta("42"),
                Ok(StreamEvent::Finish {
                    reason: "stop".into()
                }),
            ]
        );
    }

    #[test]
    fn reported_completion_tokens_already_count_the_reasoning_tokens() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"Hmm."}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Yes"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":300,"completion_tokens_details":{"reasoning_tokens":280}}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events.get(2),
            Some(&Ok(StreamEvent::Usage(TokenUsage {
                input_tokens: 9,
                output_tokens: 300,
                cached_input_tokens: 0,
                reasoning_tokens: 280,
            })))
        );
    }

    #[test]
    fn tool_call_deltas_keep_their_index_id_and_name() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| {
            Ok(StreamEvent::ToolCall {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: arguments.to_owned(),
            })
        };
        assert_eq!(
            events,
            vec![
                piece(0, Some("call_a"), Some("get_weather"), ""),
                piece(0, None, None, "{\"city\":"),
                piece(1, Some("call_b"), Some("get_time"), "{}"),
                piece(0, None, None, "\"Paris\"}"),
                Ok(StreamEvent::Finish {
                    reason: "tool_calls".into()
                }),
            ]
        );
        let whole = json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null, "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]});
        assert_eq!(
            whole_answer(&whole).ok().and_then(|e| e.first().cloned()),
            piece(0, Some("call_x"), Some("f"), "{}").ok()
        );
    }

    #[test]
    fn tools_history_and_options_go_upstream_as_openai_names_them() {
        let provider = OpenAiProvider::new(
            "p",
            reqwest::Client::new(),
            "http://x/v1",
            None,
            Dialect::OpenAi,
            Timeouts::default(),
        );
        let messages: Vec<ChatMessage> = serde_json::from_value(json!([
            {"role": "user", "content": [{"type": "text", "text": "weather?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]))
        .expect("messages");
        let options: crate::chat::ChatOptions = serde_json::from_value(json!({
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false, "seed": 3,
            "response_format": {"type": "json_object"}, "reasoning_effort": "low"
        }))
        .expect("options");
        let body = provider.body(&ChatRequest {
            model: "gpt-4o".into(),
            messages: messages.clone(),
            max_tokens: 10,
            options,
            ..ChatRequest::default()
        });
        assert_eq!(body["messages"], json!(messages));
        assert_eq!(body["messages"][1]["content"], Value::Null);
        assert_eq!(body["tools"][0]["function"]["name"], json!("get_weather"));
        assert_eq!(body["tool_choice"], json!("required"));
        assert_eq!(body["parallel_tool_calls"], json!(false));
        assert_eq!(body["seed"], json!(3));
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        assert_eq!(body["reasoning_effort"], json!("low"));
        assert!(body.get("frequency_penalty").is_none());
    }

    #[test]
    fn a_stream_cut_during_reasoning_yields_the_reasoning_then_breaks() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"Step one"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":", step two"}}]}"#,
        ]);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[..2],
            [reasoning("Step one"), reasoning(", step two")]
        );
        assert!(matches!(events[2], Err(ProviderError::StreamBroken(_))));
    }

    #[test]
    fn a_whole_answer_yields_its_reasoning_then_its_text() {
        let answer = json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "42", "reasoning_content": "Six times seven."}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 20}});
        assert_eq!(
            whole_answer(&answer),
            Ok(vec![
                StreamEvent::Reasoning {
                    text: "Six times seven.".into()
                },
                StreamEvent::Delta { text: "42".into() },
                StreamEvent::Usage(TokenUsage {
                    input_tokens: 5,
                    output_tokens: 20,
                    cached_input_tokens: 0,
                    reasoning_tokens: 0,
                }),
                StreamEvent::Finish {
                    reason: "stop".into()
                },
            ])
        );
    }

    #[test]
    fn a_stream_without_done_or_finish_reason_is_broken() {
        let events = decode(&[r#"{"choices":[{"delta":{"content":"Hi"}}]}"#]);
        assert_eq!(events.len(), 2);
        assert!(matches!(events[1], Err(ProviderError::StreamBroken(_))));
        let lenient =
            decode(&[r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#]);
        assert_eq!(
            lenient.last(),
            Some(&Ok(StreamEvent::Finish {
                reason: "stop".into()
            }))
        );
    }

    #[test]
    fn an_error_chunk_breaks_the_stream_without_the_key() {
        let events = decode(&[r#"{"error":{"message":"overloaded for sk-secret"}}"#]);
        match events.as_slice() {
            [Err(ProviderError::StreamBroken(message))] => {
                assert!(!message.contains("sk-secret"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_body_streams_with_usage_and_names_max_tokens_per_dialect() {
        let request = ChatRequest {
            model: "gpt-4o".into(),
            messages: vec![
                ChatMessage::new("developer", "be brief"),
                ChatMessage::new("user", "hi"),
            ],
            max_tokens: 7,
            temperature: Some(0.5),
            top_p: None,
            stop: vec!["END".into()],
            user: Some("u1".into()),
            ..ChatRequest::default()
        };
        let provider = |dialect| {
            OpenAiProvider::new(
                "p",
                reqwest::Client::new(),
                "http://x/v1/",
                None,
                dialect,
                Timeouts::default(),
            )
        };
        let openai = provider(Dialect::OpenAi).body(&request);
        assert_eq!(openai["stream"], json!(true));
        assert_eq!(openai["stream_options"]["include_usage"], json!(true));
        assert_eq!(openai["max_completion_tokens"], json!(7));
        assert_eq!(openai["messages"][0]["role"], json!("developer"));
        assert_eq!(openai["stop"], json!(["END"]));
        assert_eq!(openai["user"], json!("u1"));
        assert!(openai.get("top_p").is_none());
        let compatible = provider(Dialect::Compatible).body(&request);
        assert_eq!(compatible["max_tokens"], json!(7));
        assert_eq!(compatible["messages"][0]["role"], json!("system"));
        assert_eq!(
            provider(Dialect::OpenAi).url,
            "http://x/v1/chat/completions"
        );
    }
}
