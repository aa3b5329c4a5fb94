//! Raw history for analysts: the events `HUB_EVENTS` stored in a time range, as NDJSON,
//! encoded while they are read (`aihub events` and `GET /api/analytics/events`).
//!
//! The read itself is [`hub_nats::history`]'s: an ephemeral ordered consumer from `from`,
//! ending at `to` or at the stream's last sequence when the read began. Here: the filters as
//! text, and the chunked encoding, with the bounds of the usage export
//! ([`super::export::CHUNK_BYTES`], [`super::export::CHUNKS_IN_FLIGHT`]).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
pub use hub_nats::history::{History, HistoryError, HistoryRange, StoredEvent};
use hub_nats::Topology;

use super::export::{Chunks, CHUNKS_IN_FLIGHT};
use crate::queries::usage::{parse_time, FilterError};

/// The longest range the HTTP route reads in one request (the command line has no cap).
pub const HTTP_RANGE_MAX: chrono::TimeDelta = chrono::TimeDelta::days(31);

/// The longest event type a filter takes.
const TYPE_FILTER_MAX: usize = 100;

/// A filter of the raw history that cannot be read: the field and why, for a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsFilterError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error(transparent)]
    Time(#[from] FilterError),
    #[error("from must be before to")]
    Range,
    #[error("the range may cover at most {} days", HTTP_RANGE_MAX.num_days())]
    TooLong,
    #[error("type must be an event type such as CreditsGranted (letters and digits)")]
    Type,
    #[error("account must be an aggregate id (no dots, wildcards or spaces)")]
    Account,
}

/// The filters as a client sent them (text), before they are read.
#[derive(Debug, Clone, Default)]
pub struct RawEventsFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub event_type: Option<String>,
    pub account: Option<String>,
}

impl RawEventsFilter {
    /// Read the filters; `range_max` caps `to - from` when set.
    pub fn parse(
        self,
        range_max: Option<chrono::TimeDelta>,
    ) -> Result<HistoryRange, EventsFilterError> {
        let time = |field: &'static str, raw: Option<String>| -> Result<DateTime<Utc>, _> {
            let raw = raw.ok_or(EventsFilterError::Missing(field))?;
            Ok::<_, EventsFilterError>(parse_time(field, &raw)?)
        };
        let from = time("from", self.from)?;
        let to = time("to", self.to)?;
        if from >= to {
            return Err(EventsFilterError::Range);
        }
        if range_max.is_some_and(|max| to - from > max) {
            return Err(EventsFilterError::TooLong);
        }
        let event_type = self.event_type.map(parse_type).transpose()?;
        let aggregate_id = self.account.map(parse_account).transpose()?;
        Ok(HistoryRange {
            from,
            to,
            event_type,
            aggregate_id,
        })
    }
}

fn parse_type(raw: String) -> Result<String, EventsFilterError> {
    let ok = !raw.is_empty()
        && raw.len() <= TYPE_FILTER_MAX
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(raw).ok_or(EventsFilterError::Type)
}

fn parse_account(raw: String) -> Result<String, EventsFilterError> {
    Topology::default()
        .events_of_aggregate_id(&raw)
        .map(|_| raw)
        .map_err(|_| EventsFilterError::Account)
}

/// A failure after the read began: the stream ends with it (the body is cut short).
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("could not read the event history")]
    History(#[from] HistoryError),
    #[error("could not encode an event")]
    Encode(#[from] serde_json::Error),
}

/// The events of an opened read, one JSON object per line, in chunks of about
/// [`super::export::CHUNK_BYTES`], at most [`CHUNKS_IN_FLIGHT`] ahead of the reader; a reader that goes
/// away stops the read.
pub fn ndjson(history: History) -> impl Stream<Item = Result<Bytes, EventsError>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        if let Err(err) = produce(history, &tx).await {
            tracing::warn!(error = %err, "an event history read stopped");
            let _ = tx.send(Err(err)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

async fn produce(
    mut history: History,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, EventsError>>,
) -> Result<(), EventsError> {
    let mut chunks = Chunks::new(tx.clone());
    while let Some(event) = history.next().await? {
        serde_json::to_writer(chunks.buf(), &event)?;
        chunks.buf().push(b'\n');
        if !chunks.flush_if_full().await {
            return Ok(()); // The reader went away.
        }
    }
    chunks.finish().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(from: &str, to: &str) -> RawEventsFilter {
        RawEventsFilter {
            from: Some(from.into()),
            to: Some(to.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_range_needs_both_ends_in_order_and_within_the_cap() {
        let cap = Some(HTTP_RANGE_MAX);
        assert!(raw("2026-12-01", "2026-12-02").parse(cap).is_ok());
        assert_eq!(
            RawEventsFilter::default().parse(cap),
            Err(EventsFilterError::Missing("from"))
        );
        assert_eq!(
            raw("2026-12-02", "2026-12-01").parse(cap),
            Err(EventsFilterError::Range)
        );
        assert_eq!(
            raw("2026-01-01", "2026-03-01").parse(cap),
            Err(EventsFilterError::TooLong)
        );
        assert!(raw("2026-01-01", "2026-03-01").parse(None).is_ok());
    }

    #[test]
    fn an_account_or_type_that_could_widen_the_subject_is_refused() {
        for account in ["a.b", "*", ">", "a b", ""] {
            let filter = RawEventsFilter {
                account: Some(account.into()),
                ..raw("2026-12-01", "2026-12-02")
            };
            assert_eq!(filter.parse(None), Err(EventsFilterError::Account));
        }
        let filter = RawEventsFilter {
            event_type: Some("Credits Granted".into()),
            ..raw("2026-12-01", "2026-12-02")
        };
        assert_eq!(filter.parse(None), Err(EventsFilterError::Type));
    }
}
