//! The analysts' commands: `aihub events` (raw history of a time range, as NDJSON) and
//! `aihub usage export` (usage records of a range, as CSV or NDJSON). Each writes exactly
//! what its HTTP route answers (`GET /api/analytics/events`, `GET /api/usage/export`): the
//! bytes come from the same encoders in [`hub_app::analytics`].

use anyhow::Context;
use async_nats::jetstream;
use futures::{Stream, StreamExt};
use hub_app::analytics::events::{self, History, HistoryRange, RawEventsFilter};
use hub_app::analytics::export::{self, Format};
use hub_app::queries::usage::RawFilter;
use hub_domain::Role;
use hub_nats::Topology;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Read the filters of `aihub events` (the command line has no cap on the range).
pub fn events_range(raw: RawEventsFilter) -> anyhow::Result<HistoryRange> {
    raw.parse(None).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Write the events of `range` to `out`, one JSON object per line, in stream order; the
/// number of events written.
pub async fn write_events<W: Write>(
    js: &jetstream::Context,
    topology: &Topology,
    range: HistoryRange,
    out: &mut W,
) -> anyhow::Result<u64> {
    let history = History::open(js, topology, range)
        .await
        .context("could not open the event history")?;
    let mut lines = 0u64;
    copy(events::ndjson(history), out, |chunk| {
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    })
    .await?;
    Ok(lines)
}

/// Write the usage records `raw` selects (read as an analyst reads them: everyone's) to
/// `out` in `format`, with a progress bar on stderr when `progress` and stderr is a
/// terminal; the number of records written.
pub async fn write_usage_export<W: Write>(
    pool: &PgPool,
    raw: RawFilter,
    format: Format,
    out: &mut W,
    progress: bool,
) -> anyhow::Result<u64> {
    let filter = raw
        .parse(uuid::Uuid::nil(), &[Role::Analyst])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = if progress && std::io::stderr().is_terminal() {
        let total = export::count(pool, &filter)
            .await
            .context("could not count the usage records")?;
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "usage export [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, ETA {eta})",
            )?
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let rows = Arc::new(AtomicU64::new(0));
    let stream = export::export_counted(pool.clone(), filter, format, rows.clone());
    copy(stream, out, |_| {
        bar.set_position(rows.load(Ordering::Relaxed))
    })
    .await?;
    bar.finish_and_clear();
    Ok(rows.load(Ordering::Relaxed))
}

/// Copy a chunked body to `out`, calling `on_chunk` after each chunk is written.
async fn copy<W: Write, E: std::error::Error + Send + Sync + 'static>(
    stream: impl Stream<Item = Result<bytes::Bytes, E>>,
    out: &mut W,
    mut on_chunk: impl FnMut(&[u8]),
) -> anyhow::Result<()> {
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the read stopped before its end")?;
        out.write_all(&chunk)
            .context("could not write the output")?;
        on_chunk(&chunk);
    }
    out.flush().context("could not write the output")?;
    Ok(())
}
