//! Graceful shutdown at the edge. When a process is told to stop, the server stops accepting
//! connections and waits for the requests in flight (axum's graceful shutdown); a response
//! still streaming when the grace period ends is cut here ([`cut_at_deadline`]): its body
//! ends, which drops the request's submission, whose drop tells the worker to stop; the
//! worker then settles the request for what it delivered.
//!
//! A WebSocket outlives its HTTP request, so axum does not wait for it: [`Sockets`] does.
//! Once the process drains, a socket starts no new chat, lets the running ones finish, then
//! closes (`1001`, going away); at the end of the grace it cuts those still running, each
//! settled for what it delivered, and closes.

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use std::future::Future;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

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

/// The WebSocket sessions of one process, and the two moments of its shutdown they heed:
/// the drain (no new chat) and the deadline (cut what still runs). Shutdown waits for every
/// session to end ([`Sockets::drained`]). Cloned into the router as an extension.
#[derive(Clone)]
pub struct Sockets {
    draining: watch::Receiver<bool>,
    deadline: Deadline,
    open: TaskTracker,
}

impl Sockets {
    /// `draining` is set when the process stops taking work; `deadline` when its grace ends.
    pub fn new(draining: watch::Receiver<bool>, deadline: Deadline) -> Self {
        Sockets {
            draining,
            deadline,
            open: TaskTracker::new(),
        }
    }

    /// Runs `session` as one that shutdown waits for.
    pub fn track<F: Future>(&self, session: F) -> impl Future<Output = F::Output> {
        self.open.track_future(session)
    }

    /// Whether the process is draining (read now, without waiting).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the process drains.
    pub fn draining(&self) -> impl Future<Output = ()> + Send + 'static {
        raised(self.draining.clone())
    }

    /// Resolves once the grace has ended.
    pub fn deadline(&self) -> impl Future<Output = ()> + Send + 'static {
        raised(self.deadline.clone())
    }

    /// Resolves once the process drains and every session has ended.
    pub async fn drained(self) {
        self.draining().await;
        self.open.close();
        self.open.wait().await;
    }
}

/// Resolves once `flag` is set (or its sender is gone).
async fn raised(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
