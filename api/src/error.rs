//! The one mapping from failures to HTTP: a status and `{"error":{"code","message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hub_commands::CommandError;
use hub_commands::StoreError;
use hub_commands::{PaymentFlowError, RedeemError};
use hub_domain::{CreditError, PaymentError, PromoError, UserError};
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
    /// Credentials refused, with a code more precise than `unauthorized`.
    #[error("{message}")]
    UnauthorizedCode { code: &'static str, message: String },
    /// Authenticated, but the role does not allow this.
    #[error("this action needs one of the roles: {0}")]
    Forbidden(String),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// No such resource, with a code more precise than `not_found`.
    #[error("{message}")]
    NotFoundCode { code: &'static str, message: String },
    /// The request conflicts with the current state; retrying the same request may work.
    #[error("{0}")]
    Conflict(String),
    /// Well-formed, but a business rule refuses it.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// Too many attempts: wait `retry_after` (sent as `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        message: &'static str,
        retry_after: std::time::Duration,
    },
    /// An upstream service (an identity or model provider) failed or answered badly.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    /// A dependency (Postgres, NATS) is down.
    #[error("{0}")]
    Unavailable(&'static str),
    /// A feature is off or its dependency is down, with a code that says which.
    #[error("{message}")]
    UnavailableCode { code: &'static str, message: String },
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
            ApiError::UnauthorizedCode { code, .. } => (StatusCode::UNAUTHORIZED, code),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::NotFoundCode { code, .. } => (StatusCode::NOT_FOUND, code),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
            }
            ApiError::BadGateway { code, .. } => (StatusCode::BAD_GATEWAY, code),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::UnavailableCode { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
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
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            // Whole seconds, rounded up: never tell a client to come back too early.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.max(1).to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        hub_commands::db::note_connection_lost(&err);
        let unavailable = matches!(
            err,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
        ) || hub_commands::db::connection_lost(&err);
        if unavailable {
            ApiError::Unavailable("the database is unavailable")
        } else {
            ApiError::Internal(err.into())
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

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => ApiError::Conflict("changed concurrently; retry".into()),
            StoreError::Unavailable(_) => ApiError::Unavailable("the event store is unavailable"),
            StoreError::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

impl From<CommandError<UserError>> for ApiError {
    fn from(err: CommandError<UserError>) -> Self {
        match err {
            CommandError::Rejected(rule) => user_rule(rule),
            CommandError::Contention { .. } => {
                ApiError::Conflict("the user is busy; retry the request".into())
            }
            CommandError::Unavailable(_) => ApiError::Unavailable("the event store is unavailable"),
            CommandError::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

fn user_rule(rule: UserError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        UserError::NotRegistered => return ApiError::NotFound(message),
        UserError::AlreadyRegistered => return ApiError::bad_request("email_taken", message),
        UserError::NoCredential => "no_credential",
        UserError::ActorInvalid { .. } => return ApiError::bad_request("invalid_actor", message),
        UserError::EmailAlreadyVerified => "email_already_verified",
        UserError::ExpiryNotInFuture | UserError::ExpiryTooFar { .. } => {
            return ApiError::bad_request("invalid_expiry", message)
        }
        UserError::AttemptsOutOfRange { .. } => "invalid_attempts",
        UserError::NoVerificationCode => "no_verification_code",
        UserError::VerificationCodeExpired => "verification_code_expired",
        UserError::VerificationCodeExhausted => "verification_code_exhausted",
        UserError::NoPasswordResetPending | UserError::ResetTokenMismatch => {
            return ApiError::bad_request(
                "invalid_reset_token",
                "the reset link is invalid or was already used",
            )
        }
        UserError::ResetTokenExpired => {
            return ApiError::bad_request("reset_token_expired", message)
        }
        UserError::CannotRevokeUserRole => "cannot_revoke_user_role",
        UserError::RoleNotHeld(_) => "role_not_held",
        UserError::GoogleAccountAlreadyLinked => "google_account_already_linked",
        UserError::ApiKeyIdTaken(_) => return ApiError::Conflict(message),
        UserError::TooManyApiKeys { .. } => "too_many_api_keys",
        UserError::InvalidSpendingLimit(_) => {
            return ApiError::bad_request("invalid_spending_limit", message)
        }
        UserError::ApiKeyNotFound(_) => return ApiError::NotFound(message),
        UserError::ApiKeyAlreadyRevoked(_) => "api_key_already_revoked",
    };
    ApiError::Unprocessable { code, message }
}

impl From<CommandError<PaymentError>> for ApiError {
    fn from(err: CommandError<PaymentError>) -> Self {
        match err {
            CommandError::Rejected(rule) => payment_rule(rule),
            CommandError::Contention { .. } => {
                ApiError::Conflict("the payment is busy; retry the request".into())
            }
            CommandError::Unavailable(_) => ApiError::Unavailable("the event store is unavailable"),
            CommandError::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

/// A payment's refusals. Those a later delivery may cure (the webhook overtook the event
/// that makes the session known, or paid) are 409, so Stripe delivers the webhook again.
fn payment_rule(rule: PaymentError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        PaymentError::UnknownSession | PaymentError::NotPaid => return ApiError::Conflict(message),
        PaymentError::CheckoutMismatch { .. } => "checkout_mismatch",
        PaymentError::InvalidCredits(_) => "invalid_credits",
        PaymentError::InvalidAmountCents(_) => "invalid_amount",
        PaymentError::NegativeRefund(_) => "invalid_refund",
        PaymentError::RefundExceedsPayment { .. } => "refund_exceeds_payment",
        PaymentError::InvalidCurrency => "invalid_currency",
        PaymentError::InvalidPackageId { .. } => "invalid_package",
    };
    ApiError::Unprocessable { code, message }
}

impl From<PaymentFlowError> for ApiError {
    fn from(err: PaymentFlowError) -> Self {
        match err {
            PaymentFlowError::Payment(e) => e.into(),
            PaymentFlowError::Credits(e) => e.into(),
            PaymentFlowError::Store(e) => e.into(),
        }
    }
}

impl From<CommandError<PromoError>> for ApiError {
    fn from(err: CommandError<PromoError>) -> Self {
        match err {
            CommandError::Rejected(rule) => promo_rule(rule),
            CommandError::Contention { .. } => {
                ApiError::Conflict("the promo code is busy; retry the request".into())
            }
            CommandError::Unavailable(_) => ApiError::Unavailable("the event store is unavailable"),
            CommandError::Internal(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

/// A promo code's refusals: each refusal of a redemption has its own code.
fn promo_rule(rule: PromoError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        PromoError::Unknown => {
            return ApiError::NotFoundCode {
                code: "promo_code_unknown",
                message,
            }
        }
        PromoError::InvalidCredits(_) => return ApiError::bad_request("invalid_credits", message),
        PromoError::MaxRedemptionsOutOfRange { .. } => {
            return ApiError::bad_request("invalid_max_redemptions", message)
        }
        PromoError::ValidityWindowEmpty | PromoError::ValidUntilNotInFuture => {
            return ApiError::bad_request("invalid_validity", message)
        }
        PromoError::ActorInvalid { .. } => return ApiError::bad_request("invalid_actor", message),
        PromoError::AlreadyExists => "promo_code_exists",
        PromoError::NotYetValid { .. } => "promo_code_not_yet_valid",
        PromoError::Expired { .. } => "promo_code_expired",
        PromoError::Disabled => "promo_code_disabled",
        PromoError::Exhausted { .. } => "promo_code_exhausted",
        PromoError::AlreadyRedeemed { .. } => "promo_code_already_redeemed",
    };
    ApiError::Unprocessable { code, message }
}

impl From<RedeemError> for ApiError {
    fn from(err: RedeemError) -> Self {
        match err {
            RedeemError::Promo(e) => e.into(),
            RedeemError::Credits(e) => e.into(),
        }
    }
}
