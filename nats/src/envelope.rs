use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// An event as it travels on JetStream: the event store row, self-describing.
///
/// `payload` and `metadata` are the JSON text the event store holds, byte for byte (the
/// relay publishes `payload::text`), so a reader can recompute the event's chain digest
/// from the message alone, and a consumer decodes its event type straight from the text.
/// Messages published before they were carried verbatim hold the same JSON with its keys
/// in another order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Position within its aggregate, from 1.
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    /// The event itself, as cqrs-es serialized it.
    pub payload: RawJson,
    pub metadata: RawJson,
    /// When the event store wrote it.
    pub recorded_at: DateTime<Utc>,
}

impl EventEnvelope {
    /// `Nats-Msg-Id`: `<aggregate_type>/<aggregate_id>/<sequence>`, unique forever.
    pub fn message_id(&self) -> String {
        message_id(&self.aggregate_type, &self.aggregate_id, self.sequence)
    }

    /// The `correlation_id` in the event's metadata (the `x-request-id` of the request that
    /// led to it; `hub_commands::trace`), if any.
    pub fn correlation_id(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Ids {
            correlation_id: Option<String>,
        }
        self.metadata
            .decode::<Ids>()
            .ok()
            .and_then(|ids| ids.correlation_id)
    }
}

/// The NATS header that carries an event's correlation id (the client's `x-request-id`),
/// as it carries an inference command's.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub fn message_id(aggregate_type: &str, aggregate_id: &str, sequence: u64) -> String {
    format!("{aggregate_type}/{aggregate_id}/{sequence}")
}

/// The aggregate sequence at the end of a message id.
pub fn sequence_of_message_id(id: &str) -> Option<u64> {
    id.rsplit('/').next()?.parse().ok()
}

/// A JSON document kept as its text: decoded only by whoever needs it, serialized as it
/// came. Two are equal when their texts are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Text that must be one JSON document (checked; whitespace around it is an error).
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(RawJson)
    }

    /// The compact text of a value.
    pub fn from_value(value: &Value) -> Self {
        // A `Value` always serializes, and its compact text is one JSON document.
        let text = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
        RawValue::from_string(text)
            .map(RawJson)
            .unwrap_or_else(|_| RawJson(RawValue::NULL.to_owned()))
    }

    /// The text, exactly as held.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// Decode as `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The document as a `Value` (its keys sorted).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        self.decode()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_carries_its_payload_text_byte_for_byte() {
        let payload = r#"{"b":1,"a":{"z":[1,2],"y":"x"}}"#;
        let envelope = EventEnvelope {
            aggregate_type: "CreditAccount".into(),
            aggregate_id: "a".into(),
            sequence: 1,
            event_type: "CreditsGranted".into(),
            event_version: "1".into(),
            payload: RawJson::from_text(payload.into()).expect("json"),
            metadata: RawJson::from_text("{}".into()).expect("json"),
            recorded_at: Utc::now(),
        };
        let wire = serde_json::to_vec(&envelope).expect("serializes");
        let back: EventEnvelope = serde_json::from_slice(&wire).expect("deserializes");
        assert_eq!(back.payload.text(), payload);
        assert_eq!(back, envelope);
        assert_eq!(
            back.payload.to_value().expect("value")["a"]["y"],
            Value::from("x")
        );
    }

    #[test]
    fn text_that_is_not_one_json_document_is_refused() {
        assert!(RawJson::from_text("{".into()).is_err());
        assert!(RawJson::from_text("1 2".into()).is_err());
    }
}
