//! `/api/usage`: settled requests, summaries from the hourly rollups, the streamed export
//! and one request's story. A user reads their own usage (an API key its owner's); admins,
//! analysts and auditors read everyone's (`user_id=` narrows). Re-pricing is for analysts
//! and admins.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use hub_app::analytics::{export, reprice as repricing, summary};
use hub_app::queries::usage::{
    self, parse_time, RawFilter, RequestStory, UsageFilter, UsageRecord,
};

/// The filters every usage route takes, as text (read by [`RawFilter::parse`]).
macro_rules! usage_query {
    ($name:ident { $($extra:ident: $ty:ty),* }) => {
        #[derive(Debug, Deserialize, utoipa::IntoParams)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// RFC 3339 time or date; the range's start (inclusive).
            pub from: Option<String>,
            /// RFC 3339 time or date; the range's end (exclusive).
            pub to: Option<String>,
            pub user_id: Option<String>,
            pub api_key_id: Option<String>,
            pub model: Option<String>,
            pub provider: Option<String>,
            pub outcome: Option<String>,
            $(pub $extra: $ty,)*
        }

        impl $name {
            fn filter(&self, caller: &Caller) -> Result<UsageFilter, ApiError> {
                Ok(RawFilter {
                    from: self.from.clone(),
                    to: self.to.clone(),
                    user_id: self.user_id.clone(),
                    api_key_id: self.api_key_id.clone(),
                    model: self.model.clone(),
                    provider: self.provider.clone(),
                    outcome: self.outcome.clone(),
                }
                .parse(caller.user, &caller.roles)?)
            }
        }
    };
}

usage_query!(ListQuery { limit: Option<i64>, cursor: Option<String> });
usage_query!(SummaryQuery { group_by: Option<String> });
usage_query!(ExportQuery { format: Option<String> });

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsagePage {
    pub data: Vec<UsageRecord>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/usage`: settled requests, newest first.
#[utoipa::path(
    get,
    path = "/api/usage",
    tag = "usage",
    params(ListQuery),
    responses((status = 200, description = "Settled requests, newest first", body = UsagePage), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UsagePage>, ApiError> {
    let filter = query.filter(&caller)?;
    let page = usage::page(&state.pool, &filter, query.limit, query.cursor.as_deref()).await?;
    Ok(Json(UsagePage {
        data: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/usage/summary`: totals and series from the hourly rollups.
#[utoipa::path(
    get,
    path = "/api/usage/summary",
    tag = "usage",
    params(SummaryQuery),
    responses((status = 200, description = "Totals and series from the hourly rollups", body = summary::Summary), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn summary(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SummaryQuery>,
) -> Result<Json<summary::Summary>, ApiError> {
    let filter = query.filter(&caller)?;
    let group = summary::GroupBy::parse(query.group_by.as_deref())?;
    Ok(Json(summary::summary(&state.pool, &filter, &group).await?))
}

/// `GET /api/usage/export?format=csv|ndjson`: the records of a range, oldest first,
/// streamed as they are read.
#[utoipa::path(
    get,
    path = "/api/usage/export",
    tag = "usage",
    params(ExportQuery),
    responses((status = 200, description = "The records of the range, oldest first, streamed: CSV with a header row (RFC 4180) or one JSON object per line", content((String = "text/csv"), (UsageRecord = "application/x-ndjson"))), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn export(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter(&caller)?;
    let format = export::Format::parse(query.format.as_deref())?;
    let body = Body::from_stream(export::export(state.pool.clone(), filter, format));
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}

/// `GET /api/usage/requests/{request_id}`: its usage record, ledger entries and events.
#[utoipa::path(
    get,
    path = "/api/usage/requests/{request_id}",
    tag = "usage",
    params(("request_id" = String, Path, description = "The request's id")),
    responses((status = 200, description = "Its usage record, ledger entries and events", body = RequestStory), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> Result<Json<RequestStory>, ApiError> {
    let id = hub_domain::RequestId::parse(&request_id)
        .map_err(|e| ApiError::bad_request("invalid_request_id", e.to_string()))?;
    usage::request_story(&state.pool, caller.user, &caller.roles, id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found_code("request_not_found", "no such request"))
}

/// `POST /api/usage/reprice`'s body: a range and a price table in the shape of the
/// configured models' prices (model name → `price`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepriceBody {
    pub from: String,
    pub to: String,
    pub prices: repricing::PriceTable,
}

/// `POST /api/usage/reprice`: what the usage of a range would have cost under `prices`, per
/// model and per user. Nothing is written.
#[utoipa::path(
    post,
    path = "/api/usage/reprice",
    tag = "usage",
    request_body = RepriceBody,
    responses((status = 200, description = "What the range was charged and would be under `prices`", body = repricing::Repricing), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn reprice(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<RepriceBody>,
) -> Result<Json<repricing::Repricing>, ApiError> {
    caller.require(&[Role::Analyst, Role::Admin])?;
    let from = parse_time("from", &body.from)?;
    let to = parse_time("to", &body.to)?;
    let prices = repricing::price_table(&body.prices)?;
    Ok(Json(
        repricing::reprice(&state.pool, from, to, &prices).await?,
    ))
}
