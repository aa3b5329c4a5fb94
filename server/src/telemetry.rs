//! The log subscriber: stderr, filtered by `RUST_LOG`, as text or as one JSON object per
//! line (`log.format`).

use hub_app::config::{LogFormat, LogSettings};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,async_nats=warn";

/// Log to stderr as `settings` say; `RUST_LOG` overrides the default filter.
pub fn init(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = try_init(settings, filter, std::io::stderr);
}

/// Install the process's subscriber: `filter` chooses the lines, `writer` takes them, in
/// `settings.format`. A JSON line carries the event's fields at the top level beside
/// `timestamp`, `level`, `target` and `message`, and the spans it is in (`spans`, with
/// their fields: the request's `request_id`). Fails when a subscriber is already set.
pub fn try_init<W>(
    settings: &LogSettings,
    filter: EnvFilter,
    writer: W,
) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    }
}
