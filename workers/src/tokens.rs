//! Token counting with OpenAI's real BPE tokenizers (`o200k_base`, `cl100k_base`), to estimate
//! what a prompt costs before a request is sent, and what an answer cost when the provider
//! reports no usage.
//!
//! Each encoder is built once per process (a few tens of milliseconds) and shared.
//!
//! Text is encoded as ordinary text: a prompt that contains `<|endoftext|>` counts it as the
//! characters it is, as the providers do with user content.
//!
//! Long texts are cut into pieces of at most [`PIECE_BYTES_MAX`] bytes before encoding, because
//! the BPE merge is superlinear in the length of one regex piece and the splitting regex can
//! exhaust its stack on a huge run of one character. The cut falls before a space that follows
//! a non-space, which is a token boundary for both tokenizers, so the count is exact; only a run
//! of more than [`PIECE_BYTES_MAX`] bytes without such a space is cut elsewhere, which may count
//! a token or two more than the provider will.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use crate::chat::{ChatMessage, ChatOptions};

/// Longest piece of text handed to the encoder at once, in bytes.
pub const PIECE_BYTES_MAX: usize = 4096;

/// Tokens every chat message costs on top of its role and content (OpenAI's accounting:
/// `<|start|>{role}\n{content}<|end|>\n`).
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Tokens that prime the reply (`<|start|>assistant<|message|>`), once per request.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// A tokenizer a model can be configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tokenizer {
    /// `o200k_base`: GPT-4o, GPT-4.1, o-series, GPT-5.
    O200k,
    /// `cl100k_base`: GPT-4, GPT-3.5.
    Cl100k,
}

impl Tokenizer {
    /// `o200k` or `cl100k` (also accepted with a `_base` suffix).
    pub fn parse(name: &str) -> Option<Tokenizer> {
        match name {
            "o200k" | "o200k_base" => Some(Tokenizer::O200k),
            "cl100k" | "cl100k_base" => Some(Tokenizer::Cl100k),
            _ => None,
        }
    }

    /// The name as written in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Tokenizer::O200k => "o200k",
            Tokenizer::Cl100k => "cl100k",
        }
    }

    /// The encoder, built on first use. `None` only if the tables embedded in `tiktoken-rs`
    /// failed to load, which would be a broken build.
    fn encoder(self) -> Option<&'static CoreBPE> {
        static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
        static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
        match self {
            Tokenizer::O200k => O200K.get_or_init(|| loaded(self, tiktoken_rs::o200k_base())),
            Tokenizer::Cl100k => CL100K.get_or_init(|| loaded(self, tiktoken_rs::cl100k_base())),
        }
        .as_ref()
    }

    /// Tokens in `text`.
    pub fn count(self, text: &str) -> u64 {
        let Some(bpe) = self.encoder() else {
            return estimate_without_encoder(text);
        };
        pieces(text)
            .map(|piece| bpe.encode_ordinary(piece).len() as u64)
            .sum()
    }
}

fn loaded<E: std::fmt::Display>(
    tokenizer: Tokenizer,
    built: Result<CoreBPE, E>,
) -> Option<CoreBPE> {
    match built {
        Ok(bpe) => Some(bpe),
        Err(error) => {
            tracing::error!(tokenizer = tokenizer.as_str(), %error, "the tokenizer did not load");
            None
        }
    }
}

/// The text of the token ids `tokens` for the tokenizer named `tokenizer` (embedding inputs
/// may be given as token ids); `None` when an id is not one of its tokens or the bytes they
/// make are not UTF-8.
pub fn decode(tokenizer: &str, tokens: &[u32]) -> Option<String> {
    let bpe = Tokenizer::parse(tokenizer)
        .unwrap_or(Tokenizer::O200k)
        .encoder()?;
    let bytes = bpe.decode_bytes(tokens).ok()?;
    String::from_utf8(bytes).ok()
}

/// Builds the encoder of `tokenizer` now rather than on the first request (it takes a moment).
pub fn preload(tokenizer: &str) {
    if let Some(tokenizer) = Tokenizer::parse(tokenizer) {
        let _ = tokenizer.encoder();
    }
}

/// Tokens in `text` for the tokenizer named `tokenizer` (`o200k` or `cl100k`; any other name
/// counts with `o200k`, since settings are validated at start-up).
pub fn count_text_tokens(tokenizer: &str, text: &str) -> u64 {
    Tokenizer::parse(tokenizer)
        .unwrap_or(Tokenizer::O200k)
        .count(text)
}

/// Prompt tokens of a chat request's messages, with OpenAI's accounting: per message
/// [`TOKENS_PER_MESSAGE`] + the role's tokens + the content's tokens (+ each tool call's name
/// and arguments), and [`REPLY_PRIMING_TOKENS`] once. Images are not counted here (only a
/// provider can: see [`crate::capabilities::Capabilities::image_tokens_max`]).
pub fn count_prompt_tokens(tokenizer: &str, messages: &[ChatMessage]) -> u64 {
    let tokenizer = Tokenizer::parse(tokenizer).unwrap_or(Tokenizer::O200k);
    messages
        .iter()
        .map(|m| {
            TOKENS_PER_MESSAGE
                + tokenizer.count(&m.role)
                + tokenizer.count(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| {
                        TOKENS_PER_MESSAGE
                            + tokenizer.count(&c.name)
                            + tokenizer.count(&c.arguments)
                    })
                    .sum::<u64>()
        })
        .sum::<u64>()
        + REPLY_PRIMING_TOKENS
}

/// Prompt tokens of the tool definitions and the answer's schema, which upstreams put in the
/// prompt: counted as their JSON text (a little more than OpenAI's own rendering).
pub fn count_options_tokens(tokenizer: &str, options: &ChatOptions) -> u64 {
    let tokenizer = Tokenizer::parse(tokenizer).unwrap_or(Tokenizer::O200k);
    let tools = if options.tools.is_empty() {
        0
    } else {
        serde_json::to_string(&options.tools).map_or(0, |json| tokenizer.count(&json))
    };
    let schema = options
        .answer_schema()
        .map_or(0, |schema| tokenizer.count(&schema.to_string()));
    tools + schema
}

/// Longest text (in bytes, over all messages) counted on the async runtime's own thread.
/// Encoding runs at a few MB/s, so this takes well under a millisecond; anything longer is
/// counted on tokio's blocking pool, where it cannot stall the other tasks of its thread
/// (and, on a runtime with one thread, every other request).
pub const INLINE_COUNT_BYTES_MAX: usize = 16 * 1024;

/// [`count_text_tokens`], on the blocking pool when `text` is longer than
/// [`INLINE_COUNT_BYTES_MAX`].
pub async fn count_text_tokens_off_runtime(tokenizer: &'static str, text: &str) -> u64 {
    if text.len() <= INLINE_COUNT_BYTES_MAX {
        return count_text_tokens(tokenizer, text);
    }
    let owned = text.to_owned();
    tokio::task::spawn_blocking(move || count_text_tokens(tokenizer, &owned))
        .await
        .unwrap_or_else(|_| estimate_without_encoder(text))
}

/// [`count_prompt_tokens`] plus [`count_options_tokens`], on the blocking pool when the
/// messages hold more than [`INLINE_COUNT_BYTES_MAX`] bytes of text.
pub async fn count_request_tokens_off_runtime(
    tokenizer: &'static str,
    messages: &[ChatMessage],
    options: &ChatOptions,
) -> u64 {
    let options_tokens = count_options_tokens(tokenizer, options);
    options_tokens + count_prompt_tokens_off_runtime(tokenizer, messages).await
}

/// [`count_prompt_tokens`], on the blocking pool when the messages hold more than
/// [`INLINE_COUNT_BYTES_MAX`] bytes of text.
pub async fn count_prompt_tokens_off_runtime(
    tokenizer: &'static str,
    messages: &[ChatMessage],
) -> u64 {
    let bytes: usize = messages
        .iter()
        .map(|m| {
            m.role.len()
                + m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.len())
                    .sum::<usize>()
        })
        .sum();
    if bytes <= INLINE_COUNT_BYTES_MAX {
        return count_prompt_tokens(tokenizer, messages);
    }
    let owned = messages.to_vec();
    tokio::task::spawn_blocking(move || count_prompt_tokens(tokenizer, &owned))
        .await
        .unwrap_or_else(|_| {
            messages
                .iter()
                .map(|m| TOKENS_PER_MESSAGE + estimate_without_encoder(&m.content))
                .sum::<u64>()
                + REPLY_PRIMING_TOKENS
        })
}

/// About four bytes a token: only used if the embedded tables failed to load.
fn estimate_without_encoder(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// `text` cut into pieces of at most [`PIECE_BYTES_MAX`] bytes, preferably before a space that
/// follows a non-space (a token boundary), else at a character boundary.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        if rest.len() <= PIECE_BYTES_MAX {
            let piece = rest;
            rest = "";
            return Some(piece);
        }
        let cut = token_boundary_before(rest, PIECE_BYTES_MAX)
            .unwrap_or_else(|| char_boundary_before(rest, PIECE_BYTES_MAX));
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// The last index `i` in `1..=limit` where `text[i]` is `' '` and the character before it is not
/// whitespace. The regexes of both tokenizers never match across such a position: a space
/// only starts a piece or belongs to a run of whitespace, and a punctuation piece takes only
/// `\r`, `\n` (and `/` for o200k) after it.
fn token_boundary_before(text: &str, limit: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = limit.min(bytes.len() - 1);
    while i > 0 {
        if bytes[i] == b' ' {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| !c.is_whitespace()) {
                return Some(i);
            }
        }
        i -= 1;
    }
    None
}

/// The last character boundary at or before `limit`, but never 0: a first character longer
/// than `limit` is taken whole.
fn char_boundary_before(text: &str, limit: usize) -> usize {
    let mut i = limit.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    if i == 0 {
        text.chars().next().map_or(text.len(), char::len_utf8)
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    #[test]
    fn hello_world_is_two_tokens_in_both_tokenizers() {
        assert_eq!(count_text_tokens("o200k", "hello world"), 2);
        assert_eq!(count_text_tokens("cl100k", "hello world"), 2);
        assert_eq!(count_text_tokens("o200k", ""), 0);
    }

    #[test]
    fn known_encodings_match_tiktoken() {
        // tiktoken's README: cl100k_base encodes "tiktoken is great!" as these six tokens.
        let bpe = Tokenizer::Cl100k.encoder();
        let ids = bpe.map(|b| b.encode_ordinary("tiktoken is great!"));
        assert_eq!(ids, Some(vec![83, 1609, 5963, 374, 2294, 0]));
        assert_eq!(count_text_tokens("cl100k", "tiktoken is great!"), 6);
    }

    #[test]
    fn special_tokens_count_as_ordinary_text() {
        assert!(count_text_tokens("cl100k", "<|endoftext|>") > 1);
    }

    #[test]
    fn a_prompt_counts_three_per_message_its_role_and_content_and_three_to_prime_the_reply() {
        let messages = [
            message("system", "Be brief."),
            message("user", "hello world"),
        ];
        let expected = 3
            + count_text_tokens("o200k", "system")
            + count_text_tokens("o200k", "Be brief.")
            + 3
            + count_text_tokens("o200k", "user")
            + 2
            + 3;
        assert_eq!(count_prompt_tokens("o200k", &messages), expected);
        // One token each for the roles: 3 + 1 + 2 (hello world) + 3 priming.
        assert_eq!(
            count_prompt_tokens("cl100k", &[message("user", "hello world")]),
            9
        );
        assert_eq!(count_prompt_tokens("cl100k", &[]), 3);
    }

    #[test]
    fn long_texts_cut_at_token_boundaries_count_exactly() {
        let sentence = "The quick brown fox jumps over the lazy dog, twice: 12345 times!\n";
        let text = sentence.repeat(400);
        assert!(text.len() > 4 * PIECE_BYTES_MAX);
        for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k] {
            let bpe = tokenizer.encoder();
            assert!(bpe.is_some());
            let whole = bpe.map_or(0, |b| b.encode_ordinary(&text).len() as u64);
            assert_eq!(tokenizer.count(&text), whole, "{tokenizer:?}");
        }
    }

    #[test]
    fn pathological_runs_are_counted_without_blowing_up() {
        let run = "^".repeat(200_000);
        let count = count_text_tokens("cl100k", &run);
        assert!(count > 0 && count <= 200_000, "{count}");
        let spaces = " ".repeat(100_000);
        assert!(count_text_tokens("o200k", &spaces) > 0);
        let multibyte = "é".repeat(10_000);
        assert!(count_text_tokens("o200k", &multibyte) > 0);
    }

    #[test]
    fn pieces_cover_the_text_and_respect_the_limit() {
        let text = format!("{}{}", "ü".repeat(5_000), " word".repeat(2_000));
        let parts: Vec<&str> = pieces(&text).collect();
        assert_eq!(parts.concat(), text);
        assert!(parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= PIECE_BYTES_MAX));
    }
}
