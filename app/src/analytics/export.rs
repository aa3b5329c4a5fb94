//! Usage records of a range, oldest first, as CSV or NDJSON, encoded while they are read.
//!
//! A task reads the rows with one streaming query (`fetch`, no `fetch_all`), encodes them
//! into chunks of about [`CHUNK_BYTES`], and hands the chunks over a channel of
//! [`CHUNKS_IN_FLIGHT`]: memory stays bounded whatever the size of the range, and a reader
//! that goes away stops the query.
//!
//! CSV follows RFC 4180: a header row, CRLF line ends, and a field quoted (its quotes
//! doubled) when it holds a comma, a quote, CR or LF. NDJSON is one JSON object per line,
//! with the field names of [`crate::queries::usage::UsageRecord`] (the same as the CSV
//! header). Times are RFC 3339 in UTC with microseconds; an absent value is an empty CSV
//! field or a JSON `null`.

use bytes::Bytes;
use chrono::SecondsFormat;
use futures::{Stream, StreamExt};
use sqlx::{PgPool, QueryBuilder};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::queries::usage::{FilterError, UsageFilter, UsageRecord, RECORD_COLUMNS};

/// A chunk is handed on once it holds this many bytes.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks encoded ahead of the reader, at most.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// The CSV header, in the order of the fields of every row.
pub const CSV_HEADER: [&str; 17] = [
    "request_id",
    "user_id",
    "api_key_id",
    "model",
    "provider",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "token_source",
    "latency_ms",
    "first_token_ms",
    "cost_micros",
    "charged_micros",
    "price_version",
    "stream_sequence",
    "recorded_at",
];

/// An export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn parse(raw: Option<&str>) -> Result<Self, FilterError> {
        match raw {
            Some("csv") => Ok(Format::Csv),
            Some("ndjson") => Ok(Format::Ndjson),
            _ => Err(FilterError::Format),
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// A failure after the export began: the stream ends with it (the body is cut short).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("could not read the usage records")]
    Database(#[from] sqlx::Error),
    #[error("could not encode a usage record")]
    Encode(#[from] serde_json::Error),
}

/// The records under `filter`, oldest first (by time, then stream sequence), encoded.
pub fn export(
    pool: PgPool,
    filter: UsageFilter,
    format: Format,
) -> impl Stream<Item = Result<Bytes, ExportError>> + Send + 'static {
    export_counted(pool, filter, format, Arc::default())
}

/// [`export`], adding one to `rows` for each record encoded (for a progress bar).
pub fn export_counted(
    pool: PgPool,
    filter: UsageFilter,
    format: Format,
    rows: Arc<AtomicU64>,
) -> impl Stream<Item = Result<Bytes, ExportError>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        if let Err(err) = produce(&pool, &filter, format, &tx, &rows).await {
            tracing::warn!(error = %err, "a usage export stopped");
            let _ = tx.send(Err(err)).await;
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}

type Sender = tokio::sync::mpsc::Sender<Result<Bytes, ExportError>>;

async fn produce(
    pool: &PgPool,
    filter: &UsageFilter,
    format: Format,
    tx: &Sender,
    rows_encoded: &AtomicU64,
) -> Result<(), ExportError> {
    let mut sql = QueryBuilder::new(format!(
        "SELECT {RECORD_COLUMNS} FROM usage_records WHERE true"
    ));
    filter.push_where(&mut sql, "recorded_at");
    sql.push(" ORDER BY recorded_at, stream_sequence");
    let mut rows = sql.build().fetch(pool);
    let mut chunks = Chunks::new(tx.clone());
    if format == Format::Csv {
        csv_line(chunks.buf(), CSV_HEADER.iter().map(|h| (*h).to_string()));
    }
    while let Some(row) = rows.next().await {
        let record = UsageRecord::from_row(&row?)?;
        match format {
            Format::Csv => csv_line(chunks.buf(), csv_fields(&record)),
            Format::Ndjson => {
                serde_json::to_writer(chunks.buf(), &record)?;
                chunks.buf().push(b'\n');
            }
        }
        rows_encoded.fetch_add(1, Ordering::Relaxed);
        if !chunks.flush_if_full().await {
            return Ok(()); // The reader went away.
        }
    }
    chunks.finish().await;
    Ok(())
}

/// Lines gathered into chunks of about [`CHUNK_BYTES`] and handed to a channel's reader:
/// the one encoder loop of every streamed export.
pub(crate) struct Chunks<E> {
    chunk: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, E>>,
}

impl<E> Chunks<E> {
    pub(crate) fn new(tx: tokio::sync::mpsc::Sender<Result<Bytes, E>>) -> Self {
        Chunks {
            chunk: Vec::with_capacity(CHUNK_BYTES + 1024),
            tx,
        }
    }

    /// Where the next line is written.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.chunk
    }

    /// Send the chunk once it is full; `false` when the reader went away.
    pub(crate) async fn flush_if_full(&mut self) -> bool {
        if self.chunk.len() < CHUNK_BYTES {
            return true;
        }
        let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_BYTES + 1024));
        self.tx.send(Ok(Bytes::from(full))).await.is_ok()
    }

    /// Send what is left.
    pub(crate) async fn finish(self) {
        if !self.chunk.is_empty() {
            let _ = self.tx.send(Ok(Bytes::from(self.chunk))).await;
        }
    }
}

/// How many records `filter` selects (the length of an export's progress bar).
pub async fn count(pool: &PgPool, filter: &UsageFilter) -> Result<u64, sqlx::Error> {
    let mut sql = QueryBuilder::new("SELECT count(*) FROM usage_records WHERE true");
    filter.push_where(&mut sql, "recorded_at");
    let n: i64 = sql.build_query_scalar().fetch_one(pool).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn csv_fields(r: &UsageRecord) -> impl Iterator<Item = String> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        r.request_id.clone(),
        r.user_id.to_string(),
        opt(r.api_key_id.map(|k| k.to_string())),
        r.model.clone(),
        r.provider.clone(),
        r.outcome.clone(),
        r.input_tokens.to_string(),
        r.output_tokens.to_string(),
        r.cached_input_tokens.to_string(),
        r.token_source.clone(),
        r.latency_ms.to_string(),
        opt(r.first_token_ms.map(|v| v.to_string())),
        r.cost_micros.to_string(),
        r.charged_micros.to_string(),
        r.price_version.clone(),
        r.stream_sequence.to_string(),
        r.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    ]
    .into_iter()
}

/// One CSV record and its CRLF, each field quoted when RFC 4180 needs it.
fn csv_line(out: &mut Vec<u8>, fields: impl Iterator<Item = String>) {
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_field_is_quoted_only_when_it_must_be() {
        let mut out = Vec::new();
        let fields = ["plain", "a,b", "say \"hi\"", "two\nlines", ""];
        csv_line(&mut out, fields.iter().map(|f| f.to_string()));
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n"
        );
    }
}
