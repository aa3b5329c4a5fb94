//! Rate limits at the HTTP edge: one middleware in front of every route
//! ([`enforce`]), which acts on two kinds of path and lets every other through untouched.
//!
//! - **`/v1/…`** (the OpenAI- and Anthropic-compatible API): the caller is authenticated here
//!   (and handed to the handler, which does not authenticate again). A request to a route
//!   that runs the submit pipeline ([`PIPELINED`]: chats, messages, embeddings) is admitted
//!   there, in one call to the store that takes the request from its per-minute budgets,
//!   its tokens, and a place among its concurrent requests, held until the answer's body
//!   ends; one the pipeline refused before it got that far (a malformed request) is counted
//!   here afterwards. Any other `/v1` request is admitted here before its handler runs.
//!   Every answer carries OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`
//!   headers; a refusal is a 429 with `Retry-After`, in OpenAI's error shape
//!   (`{"error":{"message","type":"rate_limit_error","param","code":"rate_limit_exceeded"}}`),
//!   or Anthropic's on `/v1/messages`.
//! - **The routes anyone may call** ([`ANONYMOUS`]): requests per minute per client address,
//!   refused with 429 `rate_limited` and `Retry-After` in the house shape. A `/v1` request
//!   whose credentials do not check out counts there too (each costs a key lookup).
//!
//! What the limits are and where they are kept: [`hub_app::rate_limits`].

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use hub_adapters::rate_store::BucketState;
use hub_app::rate_limits::{Lease, Report, RequestLimits, Verdict};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::auth::ClientIp;
use crate::state::AppState;

/// The routes anyone may call that make the hub work (a password hash, an email, a row): each
/// client address gets `rate_limits.anonymous_requests_per_minute_per_ip` of them a minute,
/// together.
pub const ANONYMOUS: [&str; 6] = [
    "/api/auth/register",
    "/api/auth/login",
    "/api/auth/forgot-password",
    "/api/auth/reset-password",
    "/api/auth/resend-verification",
    "/api/auth/google",
];

/// The middleware: rate limits for `/v1` and for the anonymous routes; anything else passes.
pub async fn enforce(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if !state.rate_limits.enabled() || request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let path = request.uri().path();
    if path.starts_with("/v1/") {
        return v1(state, request, next).await;
    }
    if ANONYMOUS.contains(&path) {
        return anonymous(state, request, next).await;
    }
    next.run(request).await
}

async fn anonymous(state: Arc<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let Ok(ClientIp(Some(address))) = ClientIp::from_request_parts(&mut parts, &state).await else {
        // No address to count against (not over TCP): nothing to key the limit on.
        return next.run(Request::from_parts(parts, body)).await;
    };
    match state.rate_limits.admit_address(address).await {
        Verdict::Admitted { .. } | Verdict::Unchecked => {
            next.run(Request::from_parts(parts, body)).await
        }
        Verdict::Refused {
            limited,
            retry_after,
            ..
        } => ApiError::rate_limited(limited.message(), retry_after).into_response(),
        Verdict::Unavailable => ApiError::unavailable_code(
            "rate_limits_unavailable",
            "the rate-limit store is unavailable; retry in a moment",
        )
        .into_response(),
    }
}

/// The `/v1` routes that run the submit pipeline: their request is admitted there, with its
/// tokens and its place among the caller's concurrent requests, in one call to the store.
pub const PIPELINED: [&str; 3] = ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"];

async fn v1(state: Arc<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let anthropic = path == "/v1/messages";
    let pipelined = request.method() == Method::POST && PIPELINED.contains(&path);
    let admission = (!pipelined).then_some(false);
    let Ok((caller, subject, verdict)) =
        Caller::admitted(&state, request.headers(), admission).await
    else {
        return unauthenticated(state, request, next, anthropic).await;
    };
    request.extensions_mut().insert(caller);
    let (mut report, mut lease) = match verdict {
        // Admitted in the submit pipeline.
        None => (Report::default(), None),
        Some(Verdict::Admitted { report, lease }) => (report, lease),
        Some(Verdict::Unchecked) => return next.run(request).await,
        Some(Verdict::Refused {
            limited,
            retry_after,
            report,
        }) => return refused(anthropic, limited, retry_after, &report),
        Some(Verdict::Unavailable) => return unavailable(anthropic),
    };
    let limits = RequestLimits::new(subject, !pipelined);
    let mut response = hub_app::rate_limits::with_request(limits.clone(), next.run(request)).await;
    match limits.take_verdict() {
        Some(Verdict::Admitted {
            report: taken,
            lease: held,
        }) => {
            report = taken.or(report);
            lease = lease.or(held);
        }
        Some(Verdict::Refused {
            report: taken,
            retry_after,
            ..
        }) => {
            report = taken.or(report);
            if response.status() == StatusCode::TOO_MANY_REQUESTS
                && !response
                    .headers()
                    .contains_key(axum::http::header::RETRY_AFTER)
            {
                set_retry_after(response.headers_mut(), retry_after);
            }
        }
        Some(Verdict::Unchecked | Verdict::Unavailable) => {}
        // Refused before the pipeline reached the limits (a malformed or unpriceable
        // request, an unverified email): it counts all the same, and a caller out of
        // requests hears that first.
        None if pipelined => match state
            .rate_limits
            .admit_request(&limits.subject, false)
            .await
        {
            Verdict::Admitted { report: taken, .. } => report = taken,
            Verdict::Refused {
                limited,
                retry_after,
                report,
            } => return refused(anthropic, limited, retry_after, &report),
            Verdict::Unavailable => return unavailable(anthropic),
            Verdict::Unchecked => {}
        },
        None => {}
    }
    set_headers(response.headers_mut(), &report);
    match lease {
        Some(lease) => hold_until_sent(response, lease),
        None => response,
    }
}

/// A 429 on `/v1`, with what is left and when to come back.
fn refused(
    anthropic: bool,
    limited: hub_app::rate_limits::Limited,
    retry_after: Option<Duration>,
    report: &Report,
) -> Response {
    let mut response = refusal(anthropic, StatusCode::TOO_MANY_REQUESTS, limited.message());
    set_headers(response.headers_mut(), report);
    set_retry_after(response.headers_mut(), retry_after);
    response
}

fn unavailable(anthropic: bool) -> Response {
    refusal(
        anthropic,
        StatusCode::SERVICE_UNAVAILABLE,
        "the rate-limit store is unavailable; retry in a moment",
    )
}

/// A `/v1` caller whose credentials do not check out: the handler refuses it in its own
/// words, but each try costs a key lookup, so tries count against the client address's
/// budget of the anonymous routes.
async fn unauthenticated(
    state: Arc<AppState>,
    request: Request,
    next: Next,
    anthropic: bool,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let address = match ClientIp::from_request_parts(&mut parts, &state).await {
        Ok(ClientIp(Some(address))) => address,
        _ => return next.run(Request::from_parts(parts, body)).await,
    };
    match state.rate_limits.admit_address(address).await {
        Verdict::Refused {
            limited,
            retry_after,
            ..
        } => {
            let mut response = refusal(anthropic, StatusCode::TOO_MANY_REQUESTS, limited.message());
            set_retry_after(response.headers_mut(), retry_after);
            response
        }
        Verdict::Unavailable => unavailable(anthropic),
        Verdict::Admitted { .. } | Verdict::Unchecked => {
            next.run(Request::from_parts(parts, body)).await
        }
    }
}

/// The answer, keeping `lease` until its body has been sent (or dropped: the client left).
fn hold_until_sent(response: Response, lease: Lease) -> Response {
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &lease;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// A refusal on `/v1`, in the shape the client's SDK reads.
fn refusal(anthropic: bool, status: StatusCode, message: &str) -> Response {
    let (kind, code) = if status == StatusCode::TOO_MANY_REQUESTS {
        ("rate_limit_error", "rate_limit_exceeded")
    } else {
        ("api_error", "rate_limits_unavailable")
    };
    let body = if anthropic {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
    };
    (status, Json(body)).into_response()
}

fn set_retry_after(headers: &mut HeaderMap, retry_after: Option<Duration>) {
    if let Some(after) = retry_after {
        // Whole seconds, rounded up: never tell a client to come back too early.
        let seconds = (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1);
        headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
}

/// OpenAI's rate-limit headers, for the budgets the caller has.
fn set_headers(headers: &mut HeaderMap, report: &Report) {
    for (state, kind) in [(report.requests, "requests"), (report.tokens, "tokens")] {
        let Some(state) = state else { continue };
        put(
            headers,
            &format!("x-ratelimit-limit-{kind}"),
            state.limit.to_string(),
        );
        put(
            headers,
            &format!("x-ratelimit-remaining-{kind}"),
            state.remaining.to_string(),
        );
        put(headers, &format!("x-ratelimit-reset-{kind}"), reset(&state));
    }
}

fn put(headers: &mut HeaderMap, name: &str, value: String) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(&value),
    ) {
        headers.insert(name, value);
    }
}

/// Until the budget is full again, as OpenAI writes it: `250ms`, `12s`, `6m0s`.
fn reset(state: &BucketState) -> String {
    duration_text(state.reset)
}

fn duration_text(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let seconds = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if seconds < 60 {
        format!("{seconds}s")
    } else {
        format!("{}m{}s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::duration_text;
    use std::time::Duration;

    #[test]
    fn resets_read_like_openais() {
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_millis(11_200)), "12s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(duration_text(Duration::from_millis(60_500)), "1m1s");
    }
}
