use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Names of the hub's streams and subjects. Tests give each run its own prefixes so runs
/// share a server without seeing each other.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Prepended to stream names: `""` in production, unique per test.
    pub stream_prefix: String,
    /// First subject token: `hub` in production, unique per test.
    pub subject_prefix: String,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a repeat.
    pub duplicate_window: Duration,
    /// Stream replicas: 1 on one server, 3 in a cluster.
    pub replicas: usize,
}

/// Why the streams could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("could not create stream {name}")]
    Create {
        name: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("{0:?} cannot be used in a subject")]
    BadToken(String),
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            stream_prefix: String::new(),
            subject_prefix: "hub".to_string(),
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
        }
    }
}

impl Topology {
    /// The immutable event log.
    pub fn events_stream(&self) -> String {
        format!("{}HUB_EVENTS", self.stream_prefix)
    }

    /// The signed ledger checkpoints (docs/audit.md), published for anyone to keep.
    pub fn checkpoints_stream(&self) -> String {
        format!("{}HUB_CHECKPOINTS", self.stream_prefix)
    }

    /// The subject checkpoints are published on.
    pub fn checkpoint_subject(&self) -> String {
        format!("{}.checkpoints", self.subject_prefix)
    }

    /// Core NATS subject on which the balances projection announces an account's new
    /// balance after each batch it commits (`<prefix>.balances.<account_id>`).
    pub fn balance_subject(&self, account_id: &str) -> String {
        format!("{}.balances.{account_id}", self.subject_prefix)
    }

    /// The work queue of commands for workers.
    pub fn commands_stream(&self) -> String {
        format!("{}HUB_COMMANDS", self.stream_prefix)
    }

    /// `hub.events.<aggregate_type>.<aggregate_id>`.
    pub fn event_subject(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<String, TopologyError> {
        for token in [aggregate_type, aggregate_id] {
            if token.is_empty()
                || token
                    .chars()
                    .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace())
            {
                return Err(TopologyError::BadToken(token.to_string()));
            }
        }
        Ok(format!(
            "{}.events.{aggregate_type}.{aggregate_id}",
            self.subject_prefix
        ))
    }

    /// Core NATS subject (no stream) on which writers tell the relay they committed events.
    pub fn outbox_wake_subject(&self) -> String {
        format!("{}.outbox.committed", self.subject_prefix)
    }

    /// The work-queue subject of inference commands (in `HUB_COMMANDS`).
    pub fn inference_command_subject(&self) -> String {
        format!("{}.cmd.inference", self.subject_prefix)
    }

    /// The work-queue subject (in `HUB_COMMANDS`) of one answered request's settlement,
    /// written before its answer is sent. `request_id` must be one subject token.
    pub fn settlement_subject(&self, request_id: &str) -> String {
        format!("{}.cmd.settle.{request_id}", self.subject_prefix)
    }

    /// Every settlement's subject, for the settlers' one consumer.
    pub fn settlement_subjects(&self) -> String {
        format!("{}.cmd.settle.*", self.subject_prefix)
    }

    /// Core NATS subject on which a worker streams one request's answer back to the API
    /// process waiting for it. `request_id` must be one subject token (request ids are
    /// `[A-Za-z0-9_-]`).
    pub fn inference_reply_subject(&self, request_id: &str) -> String {
        format!("{}.stream.{request_id}", self.subject_prefix)
    }

    /// Core NATS subject prefix under which one API process takes the answers to all of its
    /// requests with one subscription ([`Topology::inference_inbox_replies`]); a worker
    /// answers request `r` on [`Topology::inference_inbox_reply_subject`]. `inbox` must be one
    /// subject token.
    pub fn inference_reply_inbox(&self, inbox: &str) -> String {
        format!("{}.stream.{inbox}", self.subject_prefix)
    }

    /// Every answer sent to `inbox` (a [`Topology::inference_reply_inbox`]): `<inbox>.*`.
    pub fn inference_inbox_replies(&self, inbox: &str) -> String {
        format!("{inbox}.*")
    }

    /// Where a worker answers request `request_id` of the process listening on `inbox` (a
    /// [`Topology::inference_reply_inbox`]): `<inbox>.<request_id>`. `request_id` must be one
    /// subject token.
    pub fn inference_inbox_reply_subject(&self, inbox: &str, request_id: &str) -> String {
        format!("{inbox}.{request_id}")
    }

    /// The request an answer on an inbox subject is for: its last token.
    pub fn inference_inbox_request_id<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject.rsplit('.').next()
    }

    /// Core NATS subject on which the API asks the worker to stop one request (the client
    /// went away).
    pub fn inference_cancel_subject(&self, request_id: &str) -> String {
        format!("{}.cancel.{request_id}", self.subject_prefix)
    }

    /// Core NATS subject on which worker `worker` reports its providers' health.
    pub fn provider_status_subject(&self, worker: &str) -> String {
        format!("{}.status.providers.{worker}", self.subject_prefix)
    }

    /// Every worker's provider health reports, for an API process's one subscription.
    pub fn provider_status_all(&self) -> String {
        format!("{}.status.providers.*", self.subject_prefix)
    }

    /// Every cancellation, for a worker's one subscription.
    pub fn inference_cancel_all(&self) -> String {
        format!("{}.cancel.*", self.subject_prefix)
    }

    /// Every event of the aggregates with one id, whatever their type
    /// (`hub.events.*.<aggregate_id>`).
    pub fn events_of_aggregate_id(&self, aggregate_id: &str) -> Result<String, TopologyError> {
        // The same token rules as a subject the relay publishes on.
        self.event_subject("any", aggregate_id)?;
        Ok(format!("{}.events.*.{aggregate_id}", self.subject_prefix))
    }

    /// Every event in `HUB_EVENTS`.
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.subject_prefix)
    }

    /// Every event of one aggregate type.
    pub fn events_of_type(&self, aggregate_type: &str) -> String {
        format!("{}.events.{aggregate_type}.>", self.subject_prefix)
    }

    /// Create the streams if missing. Idempotent; an existing stream is left as it is.
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<(), TopologyError> {
        let events = stream::Config {
            name: self.events_stream(),
            subjects: vec![format!("{}.events.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            // Kept forever: the log is the history analysts and auditors replay.
            max_age: Duration::ZERO,
            max_messages: -1,
            max_bytes: -1,
            deny_delete: true,
            deny_purge: true,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            description: Some("Smart AI Hub events (immutable)".to_string()),
            ..Default::default()
        };
        let commands = stream::Config {
            name: self.commands_stream(),
            subjects: vec![format!("{}.cmd.>", self.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            description: Some("Smart AI Hub commands (work queue)".to_string()),
            ..Default::default()
        };
        let checkpoints = stream::Config {
            name: self.checkpoints_stream(),
            subjects: vec![self.checkpoint_subject()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            // Kept forever, like the events they sign.
            max_age: Duration::ZERO,
            max_messages: -1,
            max_bytes: -1,
            deny_delete: true,
            deny_purge: true,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            description: Some("Smart AI Hub signed ledger checkpoints".to_string()),
            ..Default::default()
        };
        for config in [events, commands, checkpoints] {
            let name = config.name.clone();
            js.get_or_create_stream(config)
                .await
                .map_err(|source| TopologyError::Create { name, source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_on_an_inbox_names_its_request_and_matches_the_inbox_subscription() {
        let topology = Topology::default();
        let inbox = topology.inference_reply_inbox("p1");
        let subject = topology.inference_inbox_reply_subject(&inbox, "req_1");
        assert_eq!(subject, "hub.stream.p1.req_1");
        assert_eq!(topology.inference_inbox_replies(&inbox), "hub.stream.p1.*");
        assert_eq!(topology.inference_inbox_request_id(&subject), Some("req_1"));
    }
}
