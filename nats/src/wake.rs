//! Waking the relay after a commit, without `pg_notify`.
//!
//! A `NOTIFY` in the committing transaction takes a global lock from pre-commit until the
//! commit is durable, so every writer waits for the previous one's WAL flush. Instead the
//! writer signals after its commit: [`CommitSignal::committed`] is a non-blocking call, and
//! [`CommitSignal::forward`] turns any number of signals into at most one core NATS message
//! in flight on [`Topology::outbox_wake_subject`](crate::Topology::outbox_wake_subject),
//! which every relay, in any process, subscribes to, and at most one per
//! [`CommitSignal::GAP`]: a relay starts a round at most every 10 ms anyway, so a wake-up
//! per commit (a thousand a second at 500 chat requests a second) would mostly be
//! discarded. A lost message costs at most the relay's idle poll.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::Notify;

/// The writer's side: cheap to clone, cheap to call after every commit.
#[derive(Debug, Clone, Default)]
pub struct CommitSignal {
    notify: Arc<Notify>,
}

impl CommitSignal {
    /// After a wake-up is published, signals fold for this long into the next one.
    pub const GAP: std::time::Duration = std::time::Duration::from_millis(5);

    pub fn new() -> Self {
        CommitSignal::default()
    }

    /// Events were committed. Never blocks; signals between two forwards fold into one.
    pub fn committed(&self) {
        self.notify.notify_one();
    }

    /// Publish one wake-up on `subject` per burst of signals, until `shutdown` resolves.
    pub async fn forward(
        self,
        client: async_nats::Client,
        subject: String,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = self.notify.notified() => {}
            }
            // Best effort: the relay polls anyway, so a failed wake-up only delays it.
            if let Err(err) = client.publish(subject.clone(), bytes::Bytes::new()).await {
                tracing::debug!(error = %err, "could not publish the outbox wake-up");
            }
            // A signal that comes meanwhile is kept by `Notify` (one permit) and answered
            // when the gap ends: none is lost, several cost one message.
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Self::GAP) => {}
            }
        }
    }
}
