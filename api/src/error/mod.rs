//! The one mapping from failures to HTTP: a status and `{"error":{"code","message"}}`.

mod alerts;
mod audit;
mod evidence;
mod identity;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hub_commands::CommandError;
use hub_commands::StoreError;
use hub_commands::{PaymentFlowError, RedeemError};
use hub_domain::{CreditError, PaymentError, PromoError, UserError};
use serde_json::json;
use std::borrow::Cow;
use std::time::Duration;

pub mod money;
mod usage;

/// Every error a handler returns: a status, a stable machine-readable `code`, and a message
/// for people. A 500 shows the client only "internal error"; its cause goes to the log.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// Sent as `Retry-After` (whole seconds, rounded up) with a 429.
    retry_after: Option<Duration>,
    /// The cause of a 500, logged with its whole chain.
    cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            cause: None,
        }
    }

    /// Malformed or invalid input (400).
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// No credentials, or credentials that do not check out (401 `unauthorized`).
    pub const fn unauthorized(message: &'static str) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: Cow::Borrowed(message),
            retry_after: None,
            cause: None,
        }
    }

    /// Credentials refused, with a code more precise than `unauthorized` (401).
    pub fn unauthorized_code(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// Authenticated, but no role the caller holds allows this (403); `roles` names those that would.
    pub fn forbidden(roles: impl Into<Cow<'static, str>>) -> Self {
        let roles = roles.into();
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this action needs one of the roles: {roles}"),
        )
    }

    /// No such route or resource (404 `not_found`).
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// No such resource, with a code more precise than `not_found` (404).
    pub fn not_found_code(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The request conflicts with the current state; retrying the same request may work (409).
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// Well-formed, but a business rule refuses it (422).
    pub fn unprocessable(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// Too many attempts: come back after `retry_after` (429 `too_many_attempts`).
    pub fn too_many_requests(message: &'static str, retry_after: Duration) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
        }
    }

    /// A rate limit has no room for the request (429 `rate_limited`); `retry_after`, when
    /// known, is sent as `Retry-After`.
    pub fn rate_limited(
        message: impl Into<Cow<'static, str>>,
        retry_after: Option<Duration>,
    ) -> Self {
        ApiError {
            retry_after,
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// An upstream service (an identity, payment or model provider) failed or answered badly (502).
    pub fn bad_gateway(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, code, message)
    }

    /// A dependency (Postgres, NATS) is down (503 `unavailable`).
    pub fn unavailable(message: &'static str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Too much work of one kind at once (password checks): come back in a second (503
    /// `busy` with `Retry-After: 1`).
    pub fn busy(message: impl Into<Cow<'static, str>>) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message);
        err.retry_after = Some(Duration::from_secs(1));
        err
    }

    /// A feature is off or its dependency is down, with a code that says which (503).
    pub fn unavailable_code(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// A bug (500): the client sees only "internal error"; the log has the cause chain.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|cause| cause.as_ref())
    }
}

impl ApiError {
    /// The `Retry-After` the response carries, in whole seconds rounded up.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after
            .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up: never tell a client to come back too early.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            set_retry_after(&mut response, Some(seconds.max(1)));
        }
        response
    }
}

/// Sets `Retry-After` to `seconds`, if given: the one place every error shape (the house's,
/// OpenAI's, Anthropic's) writes it.
pub fn set_retry_after(response: &mut Response, seconds: Option<u64>) {
    if let Some(seconds) = seconds {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(seconds),
        );
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
            ApiError::unavailable("the database is unavailable")
        } else {
            ApiError::internal(err)
        }
    }
}

/// A domain rule's refusal, as HTTP: each aggregate's error says what it refused and which
/// aggregate it speaks for, and [`CommandError`] converts once for all of them.
pub trait Refusal: std::error::Error + Sized {
    /// What the aggregate is called in "the … is busy; retry the request".
    const SUBJECT: &'static str;
    fn into_api_error(self) -> ApiError;
}

impl<E: Refusal> From<CommandError<E>> for ApiError {
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Rejected(rule) => rule.into_api_error(),
            CommandError::Contention { .. } => {
                ApiError::conflict(format!("the {} is busy; retry the request", E::SUBJECT))
            }
            CommandError::Unavailable(_) => ApiError::unavailable("the event store is unavailable"),
            CommandError::Internal(cause) => ApiError::internal(anyhow::anyhow!(cause)),
        }
    }
}

impl Refusal for CreditError {
    const SUBJECT: &'static str = "account";
    fn into_api_error(self) -> ApiError {
        credit_rule(self)
    }
}

impl Refusal for UserError {
    const SUBJECT: &'static str = "user";
    fn into_api_error(self) -> ApiError {
        user_rule(self)
    }
}

impl Refusal for PaymentError {
    const SUBJECT: &'static str = "payment";
    fn into_api_error(self) -> ApiError {
        payment_rule(self)
    }
}

impl Refusal for PromoError {
    const SUBJECT: &'static str = "promo code";
    fn into_api_error(self) -> ApiError {
        promo_rule(self)
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
        CreditError::KeySpendingLimit { .. } => "key_spending_limit",
        CreditError::ExpiryNotInFuture => "invalid_expiry",
        CreditError::TooManyReservations { .. } => "too_many_reservations",
        CreditError::ReservationNotFound(_) => "reservation_not_found",
        CreditError::ReservationReleased(_) => "reservation_released",
        CreditError::ReservationExpired(_) => "reservation_expired",
        CreditError::ReservationSettled(_) => "reservation_settled",
        CreditError::ChargeExceedsReservation { .. } => "charge_exceeds_reservation",
    };
    ApiError::unprocessable(code, message)
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => ApiError::conflict("changed concurrently; retry"),
            StoreError::Unavailable(_) => ApiError::unavailable("the event store is unavailable"),
            StoreError::Internal(cause) => ApiError::internal(anyhow::anyhow!(cause)),
        }
    }
}

fn user_rule(rule: UserError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        UserError::NotRegistered => return ApiError::not_found(message),
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
        UserError::VerificationLocked => {
            return ApiError::new(StatusCode::FORBIDDEN, "verification_locked", message)
        }
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
        UserError::ApiKeyIdTaken(_) => return ApiError::conflict(message),
        UserError::TooManyApiKeys { .. } => "too_many_api_keys",
        UserError::InvalidSpendingLimit(_) => {
            return ApiError::bad_request("invalid_spending_limit", message)
        }
        UserError::ApiKeyNotFound(_) => return ApiError::not_found(message),
        UserError::ApiKeyAlreadyRevoked(_) => "api_key_already_revoked",
        UserError::NoScopes => return ApiError::bad_request("invalid_scope", message),
    };
    ApiError::unprocessable(code, message)
}

/// A payment's refusals. Those a later delivery may cure (the webhook overtook the event
/// that makes the session known, or paid) are 409, so Stripe delivers the webhook again.
fn payment_rule(rule: PaymentError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        PaymentError::UnknownSession | PaymentError::NotPaid => return ApiError::conflict(message),
        PaymentError::CheckoutMismatch { .. } => "checkout_mismatch",
        PaymentError::InvalidCredits(_) => "invalid_credits",
        PaymentError::InvalidAmountCents(_) => "invalid_amount",
        PaymentError::NegativeRefund(_) => "invalid_refund",
        PaymentError::RefundExceedsPayment { .. } => "refund_exceeds_payment",
        PaymentError::InvalidCurrency => "invalid_currency",
        PaymentError::InvalidPackageId { .. } => "invalid_package",
    };
    ApiError::unprocessable(code, message)
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

/// A promo code's refusals: each refusal of a redemption has its own code.
fn promo_rule(rule: PromoError) -> ApiError {
    let message = rule.to_string();
    let code = match rule {
        PromoError::Unknown => return ApiError::not_found_code("promo_code_unknown", message),
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
    ApiError::unprocessable(code, message)
}

impl From<RedeemError> for ApiError {
    fn from(err: RedeemError) -> Self {
        match err {
            RedeemError::Promo(e) => e.into(),
            RedeemError::Credits(e) => e.into(),
        }
    }
}
