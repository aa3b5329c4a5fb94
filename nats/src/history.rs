//! Raw history: the events of `HUB_EVENTS` stored in a time range, read in stream order.
//!
//! An ephemeral ordered consumer starts at the first message stored at or after `from`
//! (`DeliverPolicy::ByStartTime`). The read ends at the first message stored at or after
//! `to`, or at the stream's last sequence as it was when the read began, whichever comes
//! first: it never waits for events that arrive later. Time is the message's JetStream
//! timestamp (when the stream stored it), which grows with the stream sequence.
//!
//! An aggregate id narrows the consumer's subject (`<prefix>.events.*.<id>`), so the server
//! skips other aggregates' messages; an event type is matched on the envelope here.

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::time::Duration;

use crate::{EventEnvelope, RawJson, Topology};

/// How long a read waits for the next message it knows is there before it gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Which stored events a read returns: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only events of this type (`CreditsGranted`, `ReservationSettled`, ...).
    pub event_type: Option<String>,
    /// Only events of aggregates with this id (a user's account and profile share it).
    pub aggregate_id: Option<String>,
}

/// One stored event, as analysts read it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Its position in `HUB_EVENTS`.
    pub stream_sequence: u64,
    pub subject: String,
    /// When JetStream stored it.
    pub time: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Its position within its aggregate, from 1.
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    /// When the event store wrote it (before the relay published it).
    pub recorded_at: DateTime<Utc>,
    /// The event's JSON, as the event store holds it.
    pub payload: RawJson,
    pub metadata: RawJson,
}

/// Why a read of the history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0:?} is not an aggregate id")]
    BadAggregateId(String),
    #[error("{0} is outside the range JetStream timestamps take")]
    BadTime(DateTime<Utc>),
    #[error("could not open the event stream")]
    Stream(#[source] anyhow::Error),
    #[error("could not read the event stream")]
    Read(#[source] anyhow::Error),
    #[error("no message arrived for {}s while more were pending", STALL_TIMEOUT.as_secs())]
    Stalled,
    #[error("message {sequence} is not an event envelope")]
    Decode {
        sequence: u64,
        #[source]
        source: serde_json::Error,
    },
}

type Messages = jetstream::consumer::pull::Ordered;

/// A read in progress: call [`History::next`] until it answers `None`.
pub struct History {
    /// `None` once nothing more is to be read.
    messages: Option<Messages>,
    /// The stream's last sequence when the read began: nothing after it is read.
    last: u64,
    to: DateTime<Utc>,
    event_type: Option<String>,
}

impl History {
    /// Start reading `range`: the consumer is created here, so a stream that cannot be
    /// reached fails now, before anything is returned.
    pub async fn open(
        js: &jetstream::Context,
        topology: &Topology,
        range: HistoryRange,
    ) -> Result<History, HistoryError> {
        let filter_subject = match &range.aggregate_id {
            Some(id) => topology
                .events_of_aggregate_id(id)
                .map_err(|_| HistoryError::BadAggregateId(id.clone()))?,
            None => topology.all_events(),
        };
        let start_time = to_offset(range.from)?;
        let mut stream = js
            .get_stream(topology.events_stream())
            .await
            .map_err(|e| HistoryError::Stream(e.into()))?;
        let last = stream
            .info()
            .await
            .map_err(|e| HistoryError::Stream(e.into()))?
            .state
            .last_sequence;
        let mut history = History {
            messages: None,
            last,
            to: range.to,
            event_type: range.event_type,
        };
        if last == 0 || range.from >= range.to {
            return Ok(history);
        }
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject,
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            })
            .await
            .map_err(|e| HistoryError::Stream(e.into()))?;
        // Every matching message up to `last` existed when the consumer was made: none
        // pending means none to read (and an ordered consumer would wait for more).
        if consumer.cached_info().num_pending == 0 {
            return Ok(history);
        }
        history.messages = Some(
            consumer
                .messages()
                .await
                .map_err(|e| HistoryError::Stream(e.into()))?,
        );
        Ok(history)
    }

    /// The next event of the range, in stream order; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<StoredEvent>, HistoryError> {
        while let Some(messages) = self.messages.as_mut() {
            let message = match tokio::time::timeout(STALL_TIMEOUT, messages.next()).await {
                Err(_) => return Err(HistoryError::Stalled),
                Ok(None) => {
                    self.messages = None;
                    return Ok(None);
                }
                Ok(Some(message)) => message.map_err(|e| HistoryError::Read(e.into()))?,
            };
            let info = message.info().map_err(|e| HistoryError::Read(anyhow(e)))?;
            let sequence = info.stream_sequence;
            let time = from_offset(info.published);
            if sequence > self.last || time >= self.to {
                self.messages = None;
                return Ok(None);
            }
            if info.pending == 0 || sequence == self.last {
                // The last message of the range: nothing is left to wait for.
                self.messages = None;
            }
            let envelope: EventEnvelope = serde_json::from_slice(&message.payload)
                .map_err(|source| HistoryError::Decode { sequence, source })?;
            if self
                .event_type
                .as_ref()
                .is_some_and(|t| *t != envelope.event_type)
            {
                continue;
            }
            return Ok(Some(StoredEvent {
                stream_sequence: sequence,
                subject: message.subject.to_string(),
                time,
                aggregate_type: envelope.aggregate_type,
                aggregate_id: envelope.aggregate_id,
                sequence: envelope.sequence,
                event_type: envelope.event_type,
                event_version: envelope.event_version,
                recorded_at: envelope.recorded_at,
                payload: envelope.payload,
                metadata: envelope.metadata,
            }));
        }
        Ok(None)
    }
}

fn anyhow(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

fn to_offset(at: DateTime<Utc>) -> Result<time::OffsetDateTime, HistoryError> {
    at.timestamp_nanos_opt()
        .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).ok())
        .ok_or(HistoryError::BadTime(at))
}

fn from_offset(at: time::OffsetDateTime) -> DateTime<Utc> {
    let nanos = at.unix_timestamp_nanos();
    // JetStream timestamps are well within i64 nanoseconds (years 1677 to 2262).
    DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_trip_through_jetstream_timestamps() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00.123456789Z")
            .expect("a time")
            .with_timezone(&Utc);
        assert_eq!(from_offset(to_offset(at).expect("in range")), at);
    }
}
