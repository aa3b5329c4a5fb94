//! What wraps every route at the edge: the request id and cross-origin access (CORS).
//!
//! - **`x-request-id`**: taken from the client when it is a safe token
//!   ([`REQUEST_ID_LEN_MAX`] characters at most of letters, digits, `-`, `_`, `.`, `:`),
//!   otherwise generated (a UUID); set on the request before anything else sees it, recorded
//!   in the request's tracing span (so every log line of the request carries it), and sent
//!   back on every response ([`request_id`], [`span`]); with traces on, the span is the
//!   trace's root and follows OpenTelemetry's HTTP conventions ([`traced_span`],
//!   [`OnResponse`]).
//! - **CORS** ([`cors`]): the origins in `server.cors.allowed_origins` may call the API from
//!   a browser, with credentials if `allow_credentials`, their preflights cached
//!   `max_age_s`; an origin not on the list gets no CORS header at all ([`strip_cors`]).

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ORIGIN, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use hub_app::config::CorsSettings;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The header that names a request, end to end.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from a client; a longer one is replaced.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// Whether a client's request id may be used as it is: short, and only characters that are
/// safe in a log line, a header and a NATS subject token's neighbourhood.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= REQUEST_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The middleware: the client's request id when valid, else a new one, on the request and on
/// its response.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_valid_request_id(id))
        .and_then(|id| HeaderValue::from_str(id).ok());
    let id = match given {
        Some(id) => id,
        None => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
    };
    request.headers_mut().insert(REQUEST_ID, id.clone());
    // Inference commands carry it to the worker (`hub_app::inference::correlation`).
    let correlation = id.to_str().ok().map(str::to_owned);
    let mut response = hub_app::inference::with_correlation(correlation, next.run(request)).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// The tracing span of one request (for `TraceLayer::make_span_with`): at `info`, so the
/// default log filter keeps it and every line logged while serving the request names it.
pub fn span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// The request's span when traces are exported (`traces.enabled`): [`span`]'s fields, and
/// what OpenTelemetry's HTTP conventions name, for the trace's root span: its name
/// `{method} {route}` (`POST /v1/chat/completions`; the method alone where no route
/// matched), kind `server`, `http.request.method`, `http.route`, `url.path`, and
/// `http.response.status_code` once answered ([`OnResponse`]). Only the route's template is
/// in the name, never a raw path. Probes and scrapes ([`UNTRACED`]) are left out of the
/// traces: their span is at `debug`.
pub fn traced_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let method = request.method().as_str();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if route.is_some_and(|route| UNTRACED.contains(&route)) {
        return tracing::debug_span!(
            "request",
            request_id = %id,
            method = %method,
            path = %request.uri().path(),
        );
    }
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %request.uri().path(),
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// The routes a load balancer, an orchestrator or Prometheus calls every few seconds: a
/// trace each would bury the requests'.
pub const UNTRACED: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Records the answer's status on the request's span (for `TraceLayer::on_response`; a
/// field [`span`] does not declare is ignored): `http.response.status_code`, and an error
/// status for a 5xx. Then logs it as tower-http does by default (at `debug`).
#[derive(Clone, Copy, Debug, Default)]
pub struct OnResponse;

impl<B> tower_http::trace::OnResponse<B> for OnResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &tracing::Span) {
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        tower_http::trace::DefaultOnResponse::default().on_response(response, latency, span);
    }
}

/// The headers a page may read from an answer: the request id and the rate limits.
const EXPOSED: [&str; 7] = [
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// The CORS layer of `settings`, or `None` when no origin is allowed (then no CORS header is
/// ever sent). The origins were checked when the settings were loaded; one that still does
/// not make a header value is left out.
pub fn cors(settings: &CorsSettings) -> Option<CorsLayer> {
    if settings.allowed_origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = settings
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let exposed: Vec<HeaderName> = EXPOSED
        .iter()
        .map(|h| HeaderName::from_static(h))
        .chain(std::iter::once(RETRY_AFTER))
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(settings.allow_credentials)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                REQUEST_ID,
            ])
            .expose_headers(exposed)
            .max_age(Duration::from_secs(settings.max_age_s)),
    )
}

/// Around the CORS layer: a request from an origin that is not allowed (or from no origin)
/// gets no `access-control-*` header, where tower-http would still describe the methods,
/// headers and max age to anyone who asks.
pub async fn strip_cors(
    State(allowed): State<std::sync::Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed_origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| allowed.iter().any(|a| a == o));
    let mut response = next.run(request).await;
    if !allowed_origin {
        let names: Vec<HeaderName> = response
            .headers()
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in names {
            response.headers_mut().remove(name);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_valid_request_id;

    #[test]
    fn a_request_id_is_a_short_safe_token() {
        assert!(is_valid_request_id("req_0123-abc.DEF:9"));
        assert!(is_valid_request_id(&"a".repeat(128)));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id("new\nline"));
        assert!(!is_valid_request_id("quote\"d"));
    }
}
