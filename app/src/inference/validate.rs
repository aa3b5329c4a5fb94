//! Step 1 of [`super::submit()`]: the request's shape, and the model it names.

use hub_workers::ModelInfo;
use hub_workers::ProviderRouter;

use super::{Chat, GatewayError};

/// Roles a message may have.
const ROLES: [&str; 5] = ["system", "user", "assistant", "developer", "tool"];

/// The model `chat` names, once its messages are known to be usable.
pub fn validate(router: &ProviderRouter, chat: &Chat) -> Result<ModelInfo, GatewayError> {
    if chat.messages.is_empty() {
        return Err(GatewayError::BadRequest(
            "messages must not be empty".into(),
        ));
    }
    if let Some(bad) = chat
        .messages
        .iter()
        .find(|m| !ROLES.contains(&m.role.as_str()))
    {
        return Err(GatewayError::BadRequest(format!(
            "unknown message role {:?}",
            bad.role
        )));
    }
    router
        .model_info(&chat.model)
        .ok_or_else(|| GatewayError::UnknownModel(chat.model.clone()))
}
