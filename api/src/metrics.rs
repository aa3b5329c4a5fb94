//! HTTP metrics and `GET /metrics`.
//!
//! [`track`] counts every request by method, route and status class, and times it to its
//! response's head (a stream's first byte; the rest of a stream is timed by the inference
//! metrics). The route is the template the router matched (`/api/keys/{id}`), never the
//! path as sent, so a caller cannot grow the number of series: anything no route matched
//! is `unmatched`, and the web app's pages are `web`. [`router`] answers `GET /metrics`
//! with everything the process records, in the Prometheus text format.

use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::Label;
use std::sync::Arc;
use std::time::Instant;

/// Requests answered, by `method`, `route` and `status` (`2xx`, `4xx`, ...).
pub const HTTP_REQUESTS: &str = "aihub_http_requests_total";
/// Time to the response's head, by `method`, `route` and `status`.
pub const HTTP_DURATION: &str = "aihub_http_request_duration_seconds";
/// Requests being served now, until their response's head.
pub const HTTP_IN_FLIGHT: &str = "aihub_http_requests_in_flight";

/// The middleware (outside the routes, inside the request id): one count, one timing.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // One allocation for the route; the two series share it.
    let route: Arc<str> = match request.extensions().get::<MatchedPath>() {
        Some(matched) => Arc::from(matched.as_str()),
        // The web app's fallback serves every other GET; anything else matched nothing.
        None if request.method() == Method::GET => Arc::from("web"),
        None => Arc::from("unmatched"),
    };
    let in_flight = InFlight::enter();
    let response = next.run(request).await;
    drop(in_flight);
    let labels = [
        Label::new("method", method),
        Label::new("route", route),
        Label::new("status", status_label(response.status())),
    ];
    metrics::histogram!(HTTP_DURATION, labels.iter()).record(started.elapsed().as_secs_f64());
    metrics::counter!(HTTP_REQUESTS, labels.iter()).increment(1);
    response
}

/// Counts a request in [`HTTP_IN_FLIGHT`] until dropped (also when the client leaves and
/// the request's future is dropped unfinished).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter() -> InFlight {
        let gauge = metrics::gauge!(HTTP_IN_FLIGHT);
        gauge.increment(1.0);
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A fixed label per method: a made-up method is `other`, not a new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `GET /metrics`: what this process records, as Prometheus text (404 when it records
/// nothing: `metrics.enabled = false`).
pub fn router() -> Router {
    Router::new().route("/metrics", get(metrics_text))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "The metrics, in the Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are off (`metrics.enabled = false`)"),
    ),
)]
pub async fn metrics_text() -> Response {
    match hub_app::metrics::render() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_fixed_set_whatever_the_request() {
        assert_eq!(status_label(StatusCode::OK), "2xx");
        assert_eq!(status_label(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_label(StatusCode::BAD_GATEWAY), "5xx");
        let odd = Method::from_bytes(b"BREW").expect("a method");
        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
