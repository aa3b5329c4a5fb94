//! The one mapping from failures to HTTP: a status and `{"error":{"code","message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hub_commands::CommandError;
use hub_domain::CreditError;
use serde_json::json;

/// Every error a handler returns. The doc comment of each variant is its meaning.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No credentials, or credentials that do not check out.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Authenticated, but the role does not allow this.
    #[error("this action needs one of the roles: {0}")]
    Forbidden(String),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state; retrying the same request may work.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but a business rule refuses it.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// A dependency (Postgres, NATS) is down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A bug. The client sees only "internal error"; the log has the cause chain.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable("the database is unavailable"),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<CommandError<CreditError>> for ApiError {
    fn from(err: CommandError<CreditError>) -> Self {
        match err {
            CommandError::Rejected(rule) => credit_rule(rule),
            CommandError::Contention { .. } => {
                ApiError::Conflict("the account is busy; retry the request".into())
            }
            CommandError::Unavailable(_) => ApiError::Unavailable("the event store is unavailable"),
            CommandError::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

fn credit_rule(rule: CreditError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        CreditError::InvalidAmount(_) => return ApiError::bad_request("invalid_amount", message),
        CreditError::ReasonTooLong { .. } => {
            return ApiError::bad_request("invalid_reason", message)
        }
        CreditError::AccountNotOpen => "account_not_open",
        CreditError::BalanceOverflow => "balance_overflow",
        CreditError::InsufficientCredits { .. } => "insufficient_credits",
        CreditError::ExpiryNotInFuture => "invalid_expiry",
        CreditError::TooManyReservations { .. } => "too_many_reservations",
        CreditError::ReservationNotFound(_) => "reservation_not_found",
        CreditError::ReservationReleased(_) => "reservation_released",
        CreditError::ReservationExpired(_) => "reservation_expired",
        CreditError::ReservationSettled(_) => "reservation_settled",
        CreditError::ChargeExceedsReservation { .. } => "charge_exceeds_reservation",
    };
    ApiError::Unprocessable { code, message }
}
