//! Google sign-in: `GET /api/auth/google` and `GET /api/auth/google/callback`. The flow
//! (state, PKCE, nonce; sign in, link or register) lives in [`hub_app::identity::google`];
//! this module parses requests and maps answers.

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hub_app::identity::google::{self, ProviderAnswer};
use serde::Deserialize;
use std::sync::Arc;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::auth::signed_in;
use crate::state::AppState;

/// `GET /api/auth/google` — anyone. Redirects (302) to Google.
pub async fn start(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let url = google::begin(&state).await?;
    let location = HeaderValue::from_str(&url).map_err(ApiError::internal)?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by Google when the user declined or something failed there.
    pub error: Option<String>,
}

impl CallbackQuery {
    fn answer(self) -> ProviderAnswer {
        match self {
            CallbackQuery {
                error: Some(error), ..
            } => ProviderAnswer::Declined(error),
            CallbackQuery {
                code: Some(code),
                state: Some(state),
                ..
            } => ProviderAnswer::Code { code, state },
            _ => ProviderAnswer::Incomplete,
        }
    }
}

/// `GET /api/auth/google/callback` — the browser, sent back by Google.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let done = google::finish(&state, query.answer()).await?;
    let status = if done.registered {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(signed_in(&state, &headers, done.session, status))
}
