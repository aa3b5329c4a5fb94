//! The process's subscriber: log lines on stderr, filtered by `RUST_LOG`, as text or as one
//! JSON object per line (`log.format`); and, with `traces.enabled`, the hub's spans exported
//! to an OTLP/HTTP receiver (docs/operations.md, "Traces").
//!
//! Spans go out in batches from a task on the tokio runtime, so [`init`] and [`try_init`]
//! are called inside one; [`Telemetry::shutdown`] sends what is still buffered before the
//! process exits. With traces off there is no exporter and no OpenTelemetry layer at all.

use hub_app::config::{LogFormat, LogSettings, TracesSettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// What is logged when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,async_nats=warn";

/// The crates whose spans are exported (at `info` and above: the spans the docs name),
/// whatever `RUST_LOG` says of the log lines. Nothing of the libraries under them: their
/// spans would be noise, and the exporter's own HTTP client must not trace itself.
const TRACED_CRATES: [&str; 6] = [
    "hub_api",
    "hub_app",
    "hub_commands",
    "hub_nats",
    "hub_server",
    "hub_workers",
];

/// Spans buffered for export at most; past it new spans are dropped (and counted in a
/// warning at shutdown) rather than holding memory while the receiver is away.
const QUEUE_SPANS_MAX: usize = 8_192;
/// Spans in one export request at most.
const BATCH_SPANS_MAX: usize = 512;
/// How long a span may wait in the queue before its batch is sent.
const BATCH_DELAY: Duration = Duration::from_secs(2);

/// The instrumentation scope every span is recorded under.
const SCOPE: &str = "aihub";

/// Why the subscriber could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from `traces` (its HTTP client or endpoint).
    #[error("could not build the OTLP trace exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    /// Another subscriber was installed first (a test binary installs one per process).
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadySet(String),
}

/// What the subscriber holds that must be shut down: the span exporter, when traces are on.
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Send what is still buffered and stop exporting: once, as the process exits.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "could not export the last spans"),
            Err(err) => tracing::warn!(error = %err, "the span exporter did not stop"),
        }
    }
}

/// Set up logging to stderr as `log` says (`RUST_LOG` overrides the default filter) and,
/// with `traces.enabled`, span export for a process running `role`. Call it inside the tokio
/// runtime. A subscriber already installed is left in place (the error is returned).
pub fn init(
    log: &LogSettings,
    traces: &TracesSettings,
    role: &str,
) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    try_init(log, traces, role, filter, std::io::stderr)
}

/// Install the process's subscriber: `filter` chooses the log lines, `writer` takes them, in
/// `log.format`. A JSON line carries the event's fields at the top level beside
/// `timestamp`, `level`, `target` and `message`, and the spans it is in (`spans`, with their
/// fields: the request's `request_id`). With `traces.enabled`, the hub's spans are also
/// exported (whatever `filter` keeps of the log lines). Fails when a subscriber is already
/// set.
pub fn try_init<W>(
    log: &LogSettings,
    traces: &TracesSettings,
    role: &str,
    filter: EnvFilter,
    writer: W,
) -> Result<Telemetry, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    };
    let provider = if traces.enabled {
        Some(tracer_provider(traces, role)?)
    } else {
        None
    };
    let spans = provider.as_ref().map(|provider| {
        let exported = TRACED_CRATES.iter().fold(Targets::new(), |targets, krate| {
            targets.with_target(*krate, tracing::Level::INFO)
        });
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE))
            .with_level(false)
            .with_target(false)
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(exported)
    });
    let installed = tracing_subscriber::registry()
        .with(lines)
        .with(spans)
        .try_init();
    if let Err(err) = installed {
        if let Some(provider) = provider {
            // Nothing was recorded through it; only its export task is to stop, and stopping
            // blocks until that task (on this runtime) answers: not on this thread.
            std::thread::spawn(move || drop(provider));
        }
        return Err(TelemetryError::AlreadySet(err.to_string()));
    }
    Ok(Telemetry { provider })
}

/// The span exporter of `traces`: OTLP/HTTP protobuf to `<endpoint>/v1/traces`, in batches
/// from a task on the current tokio runtime, sampling new traces at `sample_ratio` and
/// following a remote parent's decision.
fn tracer_provider(
    traces: &TracesSettings,
    role: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let endpoint = traces.traces_url();
    let failed = |reason: String| TelemetryError::Exporter {
        endpoint: endpoint.clone(),
        reason,
    };
    let timeout = Duration::from_millis(traces.export_timeout_ms);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|err| failed(err.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(timeout)
        .build()
        .map_err(|err| failed(err.to_string()))?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE_SPANS_MAX)
        .with_max_export_batch_size(BATCH_SPANS_MAX)
        .with_scheduled_delay(BATCH_DELAY)
        .with_max_export_timeout(timeout)
        .build();
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batches)
        .build();
    let resource = Resource::builder()
        .with_service_name(traces.service_name.clone())
        .with_attribute(KeyValue::new("aihub.role", role.to_owned()))
        .with_attribute(KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION").to_owned(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            traces.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}
