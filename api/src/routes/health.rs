use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hub_projections::{checkpoint, ProjectionKind};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

use crate::state::AppState;

/// Each dependency check gets at most this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up.
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Postgres and NATS reachable, with relay and projection lag. 503 if a dependency is down.
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let postgres = tokio::time::timeout(
        CHECK_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));

    let stream_last = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut stream = state.js.get_stream(state.topology.events_stream()).await?;
        let info = stream.info().await?;
        Ok::<u64, async_nats::Error>(info.state.last_sequence)
    })
    .await
    .map_err(|_| "timed out".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));

    let mut body = json!({
        "postgres": match &postgres { Ok(_) => json!({"ok": true}), Err(e) => json!({"ok": false, "error": e}) },
        "nats": match &stream_last { Ok(seq) => json!({"ok": true, "stream_last_sequence": seq}), Err(e) => json!({"ok": false, "error": e}) },
    });
    if postgres.is_ok() {
        if let Ok(lag) = hub_nats::relay::lag(&state.pool).await {
            body["relay"] = json!(lag);
        }
        let mut projections = serde_json::Map::new();
        for kind in ProjectionKind::ALL {
            if let Ok(at) = checkpoint(&state.pool, kind).await {
                let behind = stream_last
                    .as_ref()
                    .ok()
                    .map(|last| last.saturating_sub(at));
                projections.insert(
                    kind.name().into(),
                    json!({ "checkpoint": at, "stream_messages_behind": behind }),
                );
            }
        }
        body["projections"] = Value::Object(projections);
    }
    let ok = postgres.is_ok() && stream_last.is_ok();
    body["status"] = json!(if ok { "ready" } else { "unavailable" });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
