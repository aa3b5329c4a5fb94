//! Everything that names a NATS stream or subject, and the relay that carries committed
//! events from the Postgres event store to JetStream.
//!
//! # Layout
//!
//! - [`topology`]: stream and subject names (with per-test prefixes) and their idempotent
//!   creation at start-up.
//! - [`envelope`]: the JSON an event travels in, and its `Nats-Msg-Id`.
//! - [`history`]: the stored events of a time range, in stream order (raw history for
//!   analysts).
//! - [`relay`]: the outbox relay; exactly once in the stream, in order per aggregate.
//! - [`leader`]: Postgres advisory locks as leader election for single-writer roles.
//! - [`wake`]: writers wake the relay after a commit, over core NATS.
//! - [`trace_context`]: W3C trace context in message headers, so that a trace crosses a
//!   NATS hop.

pub mod envelope;
pub mod history;
pub mod leader;
pub mod relay;
pub mod topology;
pub mod trace_context;
pub mod wake;

pub use envelope::{EventEnvelope, RawJson};
pub use relay::{Relay, RelayConfig, RelayLag};
pub use topology::Topology;
pub use wake::CommitSignal;

/// Connect to NATS with explicit timeouts and a name that shows in server monitoring.
pub async fn connect(
    url: &str,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(std::time::Duration::from_secs(5))
        .request_timeout(Some(std::time::Duration::from_secs(10)))
        .retry_on_initial_connect()
        .connect(url)
        .await
}
