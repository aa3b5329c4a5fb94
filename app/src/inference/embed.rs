//! Embeddings (`POST /v1/embeddings`): the same pipeline as a chat, one step per line —
//! validate → policy → estimate → reserve (within the key's spending limit) → publish — with
//! the inputs counted as the prompt and nothing generated. The worker answers one vector per
//! input, then the usage and the charge ([`Submission::embeddings`]).

use hub_domain::Credits;
use hub_workers::embed::{EmbedRequest, INPUTS_MAX};
use hub_workers::wire::InferenceCommand;
use hub_workers::{ModelInfo, ProviderRouter, Unsupported};
use std::sync::Arc;

use super::limits::{key_limit, load_payer, require_verified_email};
use super::submit::{publish, reserve};
use super::{GatewayError, Payer, Submission};
use crate::hub::Hub;

/// The least a request reserves, however small.
const RESERVATION_MIN: Credits = Credits::from_micros(1);

/// What to embed, as the hub takes it from a client.
#[derive(Debug, Clone)]
pub struct Embed {
    /// A configured embedding model.
    pub model: String,
    /// The texts, one vector each.
    pub inputs: Vec<String>,
    /// Shorter vectors than the model's own, if asked.
    pub dimensions: Option<u32>,
}

/// Validate, check, estimate, reserve and publish an embeddings request; the vectors come
/// from the [`Submission`].
pub async fn submit_embeddings(
    hub: &Arc<Hub>,
    payer: &Payer,
    embed: Embed,
) -> Result<Submission, GatewayError> {
    let _admitted = hub
        .admission
        .try_acquire()
        .map_err(|_| GatewayError::Overloaded)?;
    let model = validate(&hub.router, &embed)?;
    let user = load_payer(hub, payer).await?;
    require_verified_email(hub, user.as_deref())?;
    let prompt_tokens = count_inputs(&model, &embed).await?;
    // The caller's tokens-per-minute budget, as a chat's.
    // Counted exactly: nothing to correct when it ends.
    crate::rate_limits::take_tokens(hub, payer, user.as_deref(), prompt_tokens).await?;
    let margin = u64::from(model.prompt_margin_percent);
    let reserved_tokens = prompt_tokens.saturating_add((prompt_tokens * margin).div_ceil(100));
    let max_cost = model
        .price
        .max_cost(reserved_tokens, 0)
        .map_err(|_| GatewayError::BadRequest("the request is too large to price".into()))?
        .max(RESERVATION_MIN);
    let key = key_limit(payer, user.as_deref());
    let reservation = reserve(hub, payer, key, max_cost).await?;
    let model_name = embed.model.clone();
    publish(
        hub,
        reservation,
        model_name,
        prompt_tokens,
        |reservation, registration| InferenceCommand {
            request_id: reservation.request_id.clone(),
            account: payer.user,
            api_key: payer.api_key,
            model: embed.model.clone(),
            messages: Vec::new(),
            max_tokens: 0,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            options: Default::default(),
            embed: Some(EmbedRequest {
                model: embed.model,
                inputs: embed.inputs,
                dimensions: embed.dimensions,
            }),
            correlation_id: super::correlation(),
            prompt_tokens,
            whole: true,
            reserved_micros: max_cost.micros(),
            price: model.price.into(),
            price_version: model.price_version.clone(),
            accepted_at: reservation.accepted_at,
            start_by: reservation.deadline,
            deadline: Some(reservation.deadline),
            reply_subject: Some(registration.subject.clone()),
        },
    )
    .await
}

/// The model `embed` names, once it is an embedding model and the inputs fit it.
fn validate(router: &ProviderRouter, embed: &Embed) -> Result<ModelInfo, GatewayError> {
    let model = router
        .model_info(&embed.model)
        .ok_or_else(|| GatewayError::UnknownModel(embed.model.clone()))?;
    let unsupported = |param: &str, message: String| {
        GatewayError::Unsupported(Unsupported {
            param: param.to_owned(),
            message,
        })
    };
    let Some(dimensions) = model.capabilities.embedding_dimensions else {
        return Err(unsupported(
            "model",
            format!(
                "the model {} answers chats (POST /v1/chat/completions), not embeddings",
                embed.model
            ),
        ));
    };
    if embed.inputs.is_empty() || embed.inputs.len() > INPUTS_MAX {
        return Err(GatewayError::BadRequest(format!(
            "input must hold 1 to {INPUTS_MAX} texts"
        )));
    }
    if let Some(i) = embed.inputs.iter().position(String::is_empty) {
        return Err(GatewayError::BadRequest(format!(
            "input[{i}] is empty; every input must hold text"
        )));
    }
    if let Some(asked) = embed.dimensions {
        if asked == 0 || asked > dimensions {
            return Err(unsupported(
                "dimensions",
                format!(
                    "the model {} makes vectors of at most {dimensions} dimensions",
                    embed.model
                ),
            ));
        }
    }
    Ok(model)
}

/// The inputs' tokens with the model's tokenizer; an input longer than the model's context
/// is refused.
async fn count_inputs(model: &ModelInfo, embed: &Embed) -> Result<u64, GatewayError> {
    let mut total = 0u64;
    for (i, input) in embed.inputs.iter().enumerate() {
        let tokens =
            hub_workers::tokens::count_text_tokens_off_runtime(model.tokenizer, input).await;
        if let Some(context) = model.context_tokens {
            if tokens > u64::from(context) {
                return Err(GatewayError::BadRequest(format!(
                    "input[{i}] has {tokens} tokens; the model takes at most {context}"
                )));
            }
        }
        total = total.saturating_add(tokens);
    }
    Ok(total)
}
