//! The audit routes' failures as HTTP.

use hub_app::audit::AuditError;
use hub_app::page::PageError;

use super::ApiError;

impl From<AuditError> for ApiError {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::Filter { .. } => ApiError::bad_request("invalid_filter", err.to_string()),
            AuditError::Page(PageError::InvalidLimit { .. }) => {
                ApiError::bad_request("invalid_limit", err.to_string())
            }
            AuditError::Page(PageError::InvalidCursor) => {
                ApiError::bad_request("invalid_cursor", err.to_string())
            }
            AuditError::UnknownAccount => {
                ApiError::not_found_code("account_not_found", err.to_string())
            }
            AuditError::Database(db) => db.into(),
            AuditError::UnreadableEvent { .. } | AuditError::OutOfRange(_) => {
                ApiError::internal(err)
            }
        }
    }
}
