use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An event as it travels on JetStream: the event store row, self-describing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Position within its aggregate, from 1.
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    /// The event itself, as cqrs-es serialized it.
    pub payload: Value,
    pub metadata: Value,
    /// When the event store wrote it.
    pub recorded_at: DateTime<Utc>,
}

impl EventEnvelope {
    /// `Nats-Msg-Id`: `<aggregate_type>/<aggregate_id>/<sequence>`, unique forever.
    pub fn message_id(&self) -> String {
        message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }
}

pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: u64) -> String {
    format!("{aggregate_type}/{aggregate_id}/{sequence}")
}

/// The aggregate sequence at the end of a message id.
pub fn sequence_of_message_id(id: &str) -> Option<u64> {
    id.rsplit('/').next()?.parse().ok()
}
