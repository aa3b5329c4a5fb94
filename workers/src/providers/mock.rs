//! The built-in provider: no network, deterministic, with real token counts.
//!
//! The answer is lorem-ipsum-like text drawn from a fixed vocabulary by a generator seeded with
//! a hash of the last user message, so the same prompt always gets the same answer. Its natural
//! length is 12 to 48 words; it is cut before the word that would take it past `max_tokens`
//! (finish reason `length`). It streams one word per delta, paced at `tokens_per_second` (0: no
//! pause), and ends with the usage counted by the model's tokenizer: the prompt with OpenAI's
//! chat accounting, the answer as the text of its deltas. `temperature`, `top_p` and `stop`
//! are ignored.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;

use super::{ChatRequest, EventStream, Provider, ProviderError, StreamEvent, TokenUsage};
use crate::tokens::{count_prompt_tokens_off_runtime, Tokenizer};

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
        let prompt = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.content.as_str());
        let mut random = SplitMix64(fnv1a(prompt.as_bytes()));
        let words = ANSWER_WORDS_MIN + random.next() % (ANSWER_WORDS_MAX - ANSWER_WORDS_MIN + 1);
        let budget = u64::from(request.max_tokens);
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

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let (pieces, reason) = self.answer(&request);
            // A long prompt is counted on the blocking pool, as the gateway counts it.
            let input_tokens =
                count_prompt_tokens_off_runtime(self.tokenizer.as_str(), &request.messages).await;
            let usage = TokenUsage {
                input_tokens,
                output_tokens: pieces.iter().map(|(_, tokens)| tokens).sum(),
                cached_input_tokens: 0,
            };
            let tokens_per_second = self.tokens_per_second;
            let deltas = futures::stream::iter(pieces).then(move |(text, tokens)| async move {
                if tokens_per_second > 0 {
                    let pause =
                        Duration::from_micros(tokens * 1_000_000 / u64::from(tokens_per_second));
                    tokio::time::sleep(pause).await;
                }
                Ok(StreamEvent::Delta { text })
            });
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
            temperature: None,
            top_p: None,
            stop: vec![],
            user: None,
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
}
