//! The alert settings' failures as HTTP.

use hub_app::alerts::AlertSettingsError;

use super::ApiError;

impl From<AlertSettingsError> for ApiError {
    fn from(err: AlertSettingsError) -> Self {
        match err {
            AlertSettingsError::InvalidThreshold => {
                ApiError::bad_request("invalid_threshold", err.to_string())
            }
            AlertSettingsError::InvalidWebhookUrl(_) => {
                ApiError::bad_request("invalid_webhook_url", err.to_string())
            }
            AlertSettingsError::Database(err) => err.into(),
        }
    }
}
