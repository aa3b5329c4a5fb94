//! The ids that tie an event to what caused it, stored in every event's metadata:
//!
//! - `correlation_id`: the `x-request-id` of the HTTP request the work began with — the same
//!   on every event it leads to, in every process (a chat's reservation in the API, its
//!   settlement in the worker);
//! - `causation_id`: what directly caused the event — that HTTP request, or, for a worker's
//!   settlement, the inference command (its request id).
//!
//! They ride a task-local scope ([`scope`]) that the HTTP edge and the worker open around the
//! work they do; [`crate::store`] adds them to each event it appends. Work outside any scope
//! (the sweeper, the relay) writes events without them.

use std::future::Future;

/// The ids in scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

tokio::task_local! {
    static TRACE: Trace;
}

/// Runs `work` with `trace` in scope.
pub async fn scope<F: Future>(trace: Trace, work: F) -> F::Output {
    TRACE.scope(trace, work).await
}

/// The ids in scope, if any.
pub fn current() -> Option<Trace> {
    TRACE.try_with(Clone::clone).ok()
}

/// Adds the ids in scope to an event's metadata (never over a value already there).
pub(crate) fn annotate(metadata: &mut std::collections::HashMap<String, String>) {
    let Some(trace) = current() else {
        return;
    };
    for (key, value) in [
        ("correlation_id", trace.correlation_id),
        ("causation_id", trace.causation_id),
    ] {
        if let Some(value) = value {
            metadata.entry(key.to_string()).or_insert(value);
        }
    }
}
