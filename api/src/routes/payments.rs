//! `/api/payments`: credit packages, Stripe Checkout, Stripe's webhooks, and a user's
//! payment history. See `docs/payments.md`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use hub_app::payments::{self, CheckoutStarted, PackageList};
use hub_app::queries::{self, payments::PaymentView};

/// `GET /api/payments/packages` — anyone.
#[utoipa::path(
    get,
    path = "/api/payments/packages",
    tag = "payments",
    responses((status = 200, description = "The credit packages on sale", body = PackageList)),
)]
pub async fn packages(State(state): State<Arc<AppState>>) -> Json<PackageList> {
    Json(payments::packages(&state))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    #[serde(alias = "packageId")]
    pub package_id: String,
}

/// `POST /api/payments/checkout {packageId}` — any signed-in caller, for their own account.
/// An optional `Idempotency-Key` header makes a retry return the same session (Stripe keeps
/// keys for 24 hours).
#[utoipa::path(
    post,
    path = "/api/payments/checkout",
    tag = "payments",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the same session")),
    request_body = CheckoutBody,
    responses((status = 201, description = "A Stripe Checkout session to redirect to", body = CheckoutStarted), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn checkout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<(StatusCode, Json<CheckoutStarted>), ApiError> {
    // A header that is not text is no valid key: the empty key is refused as invalid.
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or_default());
    let started = payments::checkout(&state, caller.user, &body.package_id, key).await?;
    Ok((StatusCode::CREATED, Json(started)))
}

/// `POST /api/payments/webhook` — Stripe, proven by the `Stripe-Signature` header over the
/// raw body. 200 for an event applied, repeated or not the hub's (unknown types included);
/// 400 for a bad signature or body; 409 for an event that overtook the one it depends on
/// (Stripe delivers it again later); 5xx when the hub failed (Stripe retries).
#[utoipa::path(
    post,
    path = "/api/payments/webhook",
    tag = "payments",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature over the raw body")),
    request_body = Object,
    responses((status = 200, description = "Applied, repeated, or not the hub's", body = WebhookReceived), crate::openapi::Errors),
)]
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceived>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|h| h.to_str().ok());
    let handled = payments::receive_webhook(&state, &body, signature).await?;
    Ok(Json(WebhookReceived {
        received: true,
        handled,
    }))
}

/// What the webhook answers Stripe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReceived {
    pub received: bool,
    /// Whether the event was one the hub acts on.
    pub handled: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Another user's payments: admins and auditors only.
    pub user_id: Option<Uuid>,
    /// 1..=100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub user_id: Uuid,
    pub data: Vec<PaymentView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/payments/history` — any signed-in caller (own payments; `user_id=` for admin,
/// auditor). Newest first, from the `payments` read model.
#[utoipa::path(
    get,
    path = "/api/payments/history",
    tag = "payments",
    params(HistoryQuery),
    responses((status = 200, description = "Payments, newest first", body = HistoryPage), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let user = queries::account_for(caller.user, &caller.roles, query.user_id)?;
    let page =
        queries::payments::history(&state.pool, user, query.limit, query.cursor.as_deref()).await?;
    Ok(Json(HistoryPage {
        user_id: user,
        data: page.items,
        next_cursor: page.next_cursor,
    }))
}
