//! Checkpoint and proof failures as HTTP.

use axum::http::StatusCode;
use hub_app::evidence::checkpoints::{EvidenceError, ProofLookupError};

use super::ApiError;

impl From<EvidenceError> for ApiError {
    fn from(err: EvidenceError) -> Self {
        match err {
            EvidenceError::Database(err) => err.into(),
            EvidenceError::Corrupt(_) | EvidenceError::Publish(_) => ApiError::internal(err),
        }
    }
}

impl From<ProofLookupError> for ApiError {
    fn from(err: ProofLookupError) -> Self {
        match err {
            ProofLookupError::NoSuchEvent => {
                ApiError::not_found_code("event_not_found", err.to_string())
            }
            // Retrying later works: the next checkpoint covers it.
            ProofLookupError::NotYetCheckpointed(_) => ApiError::new(
                StatusCode::CONFLICT,
                "not_checkpointed_yet",
                err.to_string(),
            ),
            ProofLookupError::Evidence(err) => err.into(),
        }
    }
}
