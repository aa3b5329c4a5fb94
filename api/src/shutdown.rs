//! Graceful shutdown at the edge. When a process is told to stop, the server stops accepting
//! connections and waits for the requests in flight (axum's graceful shutdown); a response
//! still streaming when the grace period ends is cut here ([`cut_at_deadline`]): its body
//! ends, which drops the request's submission, whose drop tells the worker to stop; the
//! worker then settles the request for what it delivered.

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::watch;

/// Set to `true` when the grace period is over.
pub type Deadline = watch::Receiver<bool>;

/// The middleware: a response whose length is not known in advance (a stream) ends when the
/// deadline passes; whole bodies are left as they are.
pub async fn cut_at_deadline(
    State(deadline): State<Deadline>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let mut deadline = deadline.clone();
    let passed = async move {
        let _ = deadline.wait_for(|passed| *passed).await;
    };
    let body = Body::from_stream(body.into_data_stream().take_until(passed));
    Response::from_parts(parts, body)
}
