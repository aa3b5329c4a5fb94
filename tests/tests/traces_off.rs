//! With `traces.enabled` off (the default) nothing is exported, even with an endpoint that
//! would take it: no exporter is built, and a chat sends the receiver nothing.
//!
//! A binary of its own: the subscriber is one per process (`traces.rs` has it on).

mod otlp;

use hub_domain::Role;
use hub_server::Roles;
use hub_tests::spawn_app_with;
use otlp::Receiver;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traces_off_a_chat_sends_no_span() {
    let receiver = Receiver::start().await;
    let (traces, telemetry) = otlp::subscribe(&receiver, false);
    let app = spawn_app_with(Roles::ALL, move |s| s.traces = traces).await;
    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let token = app.token(user, Role::User);
    let granted = app
        .grant(&admin, user, 10_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    for stream in [false, true] {
        let answer = app
            .client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&token)
            .json(
                &json!({"model": "mock-1", "stream": stream, "max_tokens": 32,
                "messages": [{"role": "user", "content": "Say hello."}]}),
            )
            .send()
            .await
            .expect("sent");
        assert_eq!(answer.status(), StatusCode::OK);
        answer.text().await.expect("the whole answer");
    }
    app.stop().await;
    telemetry.shutdown().await;
    assert_eq!(receiver.requests(), 0, "nothing was exported");
}
