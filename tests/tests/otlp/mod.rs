//! A small OTLP/HTTP trace receiver for the tests: `POST /v1/traces` with an
//! `ExportTraceServiceRequest` in protobuf, as an OpenTelemetry Collector takes it, on
//! 127.0.0.1 and a port of its own. It keeps every span it was sent, flattened with its
//! resource's attributes.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A receiver, and this process's subscriber installed with `[traces]` pointing at it
/// (exporting only when `enabled`): the traces settings for the hub under test, and the
/// telemetry to shut down (flushing what is queued) once the hub has stopped.
pub fn subscribe(
    receiver: &Receiver,
    enabled: bool,
) -> (
    hub_app::config::TracesSettings,
    hub_server::telemetry::Telemetry,
) {
    let traces = hub_app::config::TracesSettings {
        enabled,
        endpoint: receiver.endpoint(),
        ..hub_app::config::TracesSettings::default()
    };
    let telemetry = hub_server::telemetry::try_init(
        &hub_app::config::LogSettings::default(),
        &traces,
        "all",
        tracing_subscriber::EnvFilter::new("warn"),
        std::io::stderr,
    )
    .expect("the only subscriber of this test binary");
    assert_eq!(telemetry.exporting(), enabled);
    (traces, telemetry)
}

/// One span as received.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
    pub name: String,
    /// Its attributes, each value as text (strings as they are, numbers in decimal).
    pub attributes: HashMap<String, String>,
    /// Its resource's attributes (`service.name`, `aihub.role`, ...).
    pub resource: HashMap<String, String>,
    pub error: bool,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    /// `POST /v1/traces` requests, decodable or not.
    requests: usize,
    spans: Vec<Span>,
}

pub struct Receiver {
    address: std::net::SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the OTLP receiver");
        let address = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            address,
            received,
            task,
        }
    }

    /// The base URL to give `traces.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.lock().spans.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn export(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> Response {
    let decoded = ExportTraceServiceRequest::decode(body);
    let mut received = received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    received.requests += 1;
    let Ok(request) = decoded else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let error = span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == SpanStatus::Error as i32);
                received.spans.push(Span {
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    name: span.name,
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    error,
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        answer,
    )
        .into_response()
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => s.clone(),
                Any::IntValue(i) => i.to_string(),
                Any::BoolValue(b) => b.to_string(),
                Any::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}
