//! Step 3 of [`super::submit()`]: what the request can cost at most, so that much is reserved.
//!
//! The prompt (its messages, tool calls, tool definitions and answer schema) is counted with
//! the model's tokenizer (on tokio's blocking pool when it is long:
//! [`hub_workers::tokens::INLINE_COUNT_BYTES_MAX`]), each image reserved as the model's
//! `image_tokens_max` (only the provider can count an image), all reserved with the model's
//! prompt margin (its providers may count more than OpenAI's tokenizers do), and `max_tokens` capped
//! to the model's limit (or its default when the client named none).

use hub_domain::pricing::Price;
use hub_domain::Credits;
use hub_workers::{ModelInfo, ProviderRouter};

use super::{Chat, GatewayError};

/// The least a request reserves, however small: a reservation of nothing is refused.
const RESERVATION_MIN: Credits = Credits::from_micros(1);

/// The most a request can cost, and what that was computed from.
#[derive(Debug, Clone)]
pub struct Estimate {
    /// The prompt's tokens as the hub counted them.
    pub prompt_tokens: u64,
    /// The tokens the request may generate (what the worker sends upstream).
    pub max_tokens: u32,
    /// The model's price as accepted.
    pub price: Price,
    pub price_version: String,
    /// The prompt with the model's margin plus `max_tokens`, at `price`: what is reserved.
    pub max_cost: Credits,
}

/// Counts, caps and prices `chat` for `model`.
pub async fn estimate(
    router: &ProviderRouter,
    model: &ModelInfo,
    chat: &Chat,
) -> Result<Estimate, GatewayError> {
    let prompt_tokens = prompt_tokens(model, chat).await;
    if let Some(context) = model.context_tokens {
        if prompt_tokens >= u64::from(context) {
            return Err(GatewayError::BadRequest(format!(
                "the prompt has {prompt_tokens} tokens; the model's context holds {context}"
            )));
        }
    }
    let max_tokens = router
        .effective_max_tokens(&chat.model, chat.max_tokens)
        .unwrap_or(model.default_max_tokens)
        .max(1);
    let max_cost = model
        .price
        .max_cost(
            with_margin(prompt_tokens, model.prompt_margin_percent),
            u64::from(max_tokens),
        )
        .map_err(|_| GatewayError::BadRequest("the request is too large to price".into()))?
        .max(RESERVATION_MIN);
    Ok(Estimate {
        prompt_tokens,
        max_tokens,
        price: model.price,
        price_version: model.price_version.clone(),
        max_cost,
    })
}

/// The prompt tokens of `chat` as the hub counts them: messages, tool calls, tool definitions
/// and the answer's schema, and each image as the most it may count (the model's
/// `image_tokens_max`), without the providers' margin.
pub async fn prompt_tokens(model: &ModelInfo, chat: &Chat) -> u64 {
    // Images only the provider can count: each is reserved as the most it may count.
    let images = hub_workers::Capabilities::images(&chat.messages);
    let image_tokens = images.saturating_mul(u64::from(model.capabilities.image_tokens_max));
    hub_workers::tokens::count_request_tokens_off_runtime(
        model.tokenizer,
        &chat.messages,
        &chat.options,
    )
    .await
    .saturating_add(image_tokens)
}

/// What `POST /v1/messages/count_tokens` answers: the request checked as a submission would
/// be (the model, its capabilities), then its [`prompt_tokens`]. Nothing is reserved.
pub async fn count_tokens(router: &ProviderRouter, chat: &Chat) -> Result<u64, GatewayError> {
    let model = super::validate::validate(router, chat)?;
    Ok(prompt_tokens(&model, chat).await)
}

/// `tokens` plus `percent` % of them, rounded up.
fn with_margin(tokens: u64, percent: u32) -> u64 {
    let margin = (u128::from(tokens) * u128::from(percent)).div_ceil(100);
    tokens.saturating_add(u64::try_from(margin).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_workers::providers::ChatMessage;
    use hub_workers::ModelsSettings;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_margin_rounds_up_and_never_overflows() {
        assert_eq!(with_margin(100, 30), 130);
        assert_eq!(with_margin(7, 30), 10);
        assert_eq!(with_margin(7, 0), 7);
        assert_eq!(with_margin(u64::MAX, 30), u64::MAX);
    }

    /// Tokenizing a prompt of megabytes takes a second or more of CPU: on the runtime's own
    /// thread it would stop every other task of that thread (on a one-thread runtime, every
    /// other request) until it is done.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_prompt_is_counted_without_stalling_other_tasks_on_its_thread() {
        let router = ProviderRouter::new(&ModelsSettings::default()).expect("default settings");
        let mut model = router.model_info("mock-1").expect("the default model");
        model.context_tokens = None;
        let sentence = "The quick brown fox jumps over the lazy dog, 12345 times! ";
        let chat = Chat {
            model: "mock-1".into(),
            messages: vec![ChatMessage::new("user", &sentence.repeat(40_000))],
            max_tokens: Some(16),
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            options: Default::default(),
            whole: false,
        };
        // Another task of this thread: it ticks whenever the thread lets it run.
        let ticks = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let ticks = Arc::clone(&ticks);
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        let estimate = estimate(&router, &model, &chat).await;
        let during = ticks.load(Ordering::Relaxed) - before;
        ticker.abort();
        let estimate = estimate.expect("an estimate");
        assert!(
            estimate.prompt_tokens > 400_000,
            "{}",
            estimate.prompt_tokens
        );
        assert!(
            during > 100,
            "the other task ran {during} times while the prompt was counted"
        );
    }
}
