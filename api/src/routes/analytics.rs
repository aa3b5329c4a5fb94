//! `/api/analytics`: raw history for analysts. `GET /api/analytics/events` streams the
//! events `HUB_EVENTS` stored in a time range as NDJSON (admin, analyst, auditor only).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use hub_app::analytics::events::{self, History, RawEventsFilter, HTTP_RANGE_MAX};
use hub_app::queries::usage::READ_ALL_USAGE;

/// `from` and `to` (required; at most [`HTTP_RANGE_MAX`] apart), `type`, `account`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub account: Option<String>,
}

/// `GET /api/analytics/events`: the stored events of a range, in stream order, streamed.
#[utoipa::path(
    get,
    path = "/api/analytics/events",
    tag = "usage",
    params(EventsQuery),
    responses((status = 200, description = "The events of the range in stream order, one JSON object per line", content_type = "application/x-ndjson", body = String), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(&READ_ALL_USAGE)?;
    let range = RawEventsFilter {
        from: query.from,
        to: query.to,
        event_type: query.event_type,
        account: query.account,
    }
    .parse(Some(HTTP_RANGE_MAX))?;
    let history = History::open(&state.js, &state.topology, range).await?;
    let body = Body::from_stream(events::ndjson(history));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
