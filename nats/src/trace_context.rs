//! W3C trace context (`traceparent`, `tracestate`) in NATS message headers: a span in one
//! process is the parent of a span in another (the API's `publish` of an inference command
//! and the worker's `process` of it; a worker's `settle` and the settler's).
//!
//! Without an OpenTelemetry layer in the process's subscriber (`traces.enabled` off) a span
//! has no trace context: [`inject`] adds no header and [`follow`] changes nothing.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The headers that carry `span`'s trace context (none when it has none), as name and value.
pub fn headers(span: &tracing::Span) -> Vec<(String, String)> {
    let context = span.context();
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.0
}

/// Adds `span`'s trace context to `headers`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    for (name, value) in self::headers(span) {
        headers.insert(name.as_str(), value.as_str());
    }
}

/// Makes the span whose context `headers` carry the parent of `span`, which must not have
/// been entered yet. Headers without a (valid) `traceparent` leave `span` as it is.
pub fn follow(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let Some(headers) = headers else {
        return;
    };
    if headers.get(TRACEPARENT).is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when no OpenTelemetry layer is installed or the span is disabled: then
    // there is nothing to link.
    let _ = span.set_parent(context);
}

/// The W3C header that names the parent span.
const TRACEPARENT: &str = "traceparent";

#[derive(Default)]
struct Carrier(Vec<(String, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct Headers<'h>(&'h HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}
