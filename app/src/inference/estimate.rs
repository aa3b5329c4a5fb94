//! Step 3 of [`super::submit()`]: what the request can cost at most, so that much is reserved.
//!
//! The prompt is counted with the model's tokenizer and `max_tokens` capped to the model's
//! limit (or its default when the client named none).

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
    /// Prompt plus `max_tokens` at `price`: what is reserved.
    pub max_cost: Credits,
}

/// Counts, caps and prices `chat` for `model`.
pub fn estimate(
    router: &ProviderRouter,
    model: &ModelInfo,
    chat: &Chat,
) -> Result<Estimate, GatewayError> {
    let prompt_tokens = hub_workers::tokens::count_prompt_tokens(model.tokenizer, &chat.messages);
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
        .max_cost(prompt_tokens, u64::from(max_tokens))
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
