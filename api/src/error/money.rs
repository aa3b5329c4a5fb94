//! The HTTP answers of the money and read-side application errors: payments, promo codes,
//! credit grants, roles, and the listings' pages.

use hub_adapters::stripe::{SignatureError, StripeCallError};
use hub_app::credits::{GrantError, InvalidKey};
use hub_app::page::PageError;
use hub_app::payments::{CheckoutError, WebhookError};
use hub_app::promos::PromoFlowError;
use hub_app::queries::{NotAllowed, QueryError};
use hub_app::users::RoleChangeError;

use super::ApiError;

impl From<NotAllowed> for ApiError {
    fn from(err: NotAllowed) -> Self {
        ApiError::forbidden(
            err.needs
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

/// A listing of the caller's own records (ledger, payment history).
impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Page(PageError::InvalidLimit { max }) => ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {max}"),
            ),
            QueryError::Page(PageError::InvalidCursor) => {
                ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")
            }
            QueryError::Database(err) => err.into(),
        }
    }
}

/// An admin listing (users, promo codes): the same codes as [`From<QueryError>`], in the
/// admin routes' own wording.
pub fn admin_listing(err: QueryError) -> ApiError {
    match err {
        QueryError::Page(PageError::InvalidLimit { max }) => {
            ApiError::bad_request("invalid_limit", format!("limit must be 1 to {max}"))
        }
        QueryError::Page(PageError::InvalidCursor) => {
            ApiError::bad_request("invalid_cursor", "the cursor is not one this API gave")
        }
        QueryError::Database(err) => err.into(),
    }
}

impl From<InvalidKey> for ApiError {
    fn from(err: InvalidKey) -> Self {
        ApiError::bad_request("invalid_idempotency_key", err.to_string())
    }
}

impl From<GrantError> for ApiError {
    fn from(err: GrantError) -> Self {
        let message = err.to_string();
        match err {
            GrantError::MissingKey => ApiError::bad_request("missing_idempotency_key", message),
            GrantError::InvalidKey(err) => err.into(),
            GrantError::InvalidAmount(_) => ApiError::bad_request("invalid_amount", message),
            GrantError::EmptyReason => ApiError::bad_request("invalid_reason", message),
            GrantError::Command(err) => err.into(),
            GrantError::Database(err) => err.into(),
            GrantError::NoGrantEvent => ApiError::internal(err),
        }
    }
}

impl From<PromoFlowError> for ApiError {
    fn from(err: PromoFlowError) -> Self {
        match err {
            PromoFlowError::InvalidCode(message) => {
                ApiError::bad_request("invalid_promo_code", message)
            }
            PromoFlowError::UnknownCode => {
                ApiError::not_found_code("promo_code_unknown", "unknown promo code")
            }
            PromoFlowError::Command(err) => err.into(),
            PromoFlowError::Store(err) => err.into(),
            PromoFlowError::Redeem(err) => err.into(),
            PromoFlowError::Database(err) => err.into(),
        }
    }
}

impl From<RoleChangeError> for ApiError {
    fn from(err: RoleChangeError) -> Self {
        let message = err.to_string();
        match err {
            RoleChangeError::UnknownUser => ApiError::not_found(message),
            RoleChangeError::InvalidRole => ApiError::bad_request("invalid_role", message),
            RoleChangeError::Command(err) => err.into(),
            RoleChangeError::Store(err) => err.into(),
        }
    }
}

impl From<CheckoutError> for ApiError {
    fn from(err: CheckoutError) -> Self {
        let message = err.to_string();
        match err {
            CheckoutError::NotConfigured { .. } => {
                ApiError::unavailable_code("payments_not_configured", message)
            }
            CheckoutError::UnknownPackage { .. } => {
                ApiError::bad_request("invalid_package", message)
            }
            CheckoutError::InvalidKey(err) => err.into(),
            CheckoutError::EmailNotVerified => {
                ApiError::unprocessable("email_not_verified", message)
            }
            // Stripe's own message may name configuration: it went to the log, not here.
            CheckoutError::Stripe(StripeCallError::Refused { code, .. }) => ApiError::bad_gateway(
                "stripe_refused",
                format!("the payment provider refused the checkout ({code})"),
            ),
            CheckoutError::Stripe(StripeCallError::Unavailable(_)) => ApiError::bad_gateway(
                "stripe_unavailable",
                "the payment provider could not be reached; try again",
            ),
            CheckoutError::BadSessionId(_) => ApiError::bad_gateway("stripe_bad_response", message),
            CheckoutError::Command(err) => err.into(),
            CheckoutError::Store(err) => err.into(),
        }
    }
}

/// A webhook's refusals: 400 for a bad signature or body, 409 for an event that overtook
/// the one it depends on (Stripe delivers it again), 5xx when the hub failed (Stripe
/// retries).
impl From<WebhookError> for ApiError {
    fn from(err: WebhookError) -> Self {
        let message = err.to_string();
        match err {
            WebhookError::NotConfigured { .. } => {
                ApiError::unavailable_code("payments_not_configured", message)
            }
            WebhookError::MissingSignature => ApiError::bad_request("missing_signature", message),
            WebhookError::Signature(SignatureError::Stale { .. }) => {
                ApiError::bad_request("stale_signature", message)
            }
            WebhookError::Signature(SignatureError::Malformed | SignatureError::Mismatch) => {
                ApiError::bad_request("invalid_signature", message)
            }
            WebhookError::InvalidEvent(_) => ApiError::bad_request("invalid_event", message),
            WebhookError::InvalidMetadata { .. } => {
                ApiError::unprocessable("invalid_metadata", message)
            }
            WebhookError::UnknownCharge => ApiError::conflict(message),
            WebhookError::Command(err) => err.into(),
            WebhookError::Flow(err) => err.into(),
            WebhookError::Store(err) => err.into(),
        }
    }
}
