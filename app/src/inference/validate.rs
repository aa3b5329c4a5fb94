//! Step 1 of [`super::submit()`]: the request's shape, the model it names, and whether that
//! model can take every parameter given ([`hub_workers::Capabilities`]).

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
    if let Some((m, message)) = chat
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.role == "tool" && m.tool_call_id.is_none())
    {
        return Err(GatewayError::BadRequest(format!(
            "messages[{m}]: a tool message needs the tool_call_id it answers ({:?} has none)",
            message.content.chars().take(40).collect::<String>()
        )));
    }
    let model = router
        .model_info(&chat.model)
        .ok_or_else(|| GatewayError::UnknownModel(chat.model.clone()))?;
    model
        .capabilities
        .check(&chat.model, &chat.messages, &chat.options)?;
    Ok(model)
}
