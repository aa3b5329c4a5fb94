//! The MCP server at `/mcp` over the real app, spoken as raw JSON-RPC over Streamable HTTP:
//! no credential is a 401 before MCP; a signed-in caller lists the tools, reads its balance,
//! and a chat is billed to it; a failing tool is an MCP tool error, not a protocol error.
//! (The official MCP Python SDK is run against it in tests/sdk.)

use hub_domain::Role;
use hub_server::Roles;
use hub_tests::{spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The protocol version the requests speak.
const VERSION: &str = "2025-06-18";

async fn rpc(
    app: &TestApp,
    token: Option<&str>,
    id: u64,
    method: &str,
    params: Value,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", VERSION)
        .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    // A JSON answer, or one SSE event carrying it.
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or(Value::Null)
    });
    (status, body)
}

async fn initialize(app: &TestApp, token: &str) {
    let (status, body) = rpc(
        app,
        Some(token),
        1,
        "initialize",
        json!({"protocolVersion": VERSION, "capabilities": {},
            "clientInfo": {"name": "hub-tests", "version": "1"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "aihub", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_caller_uses_the_tools_and_a_chat_is_billed_to_it() {
    let app = spawn_app_with(Roles::ALL, |_| {}).await;
    let (status, body) = rpc(&app, None, 1, "tools/list", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    let user = Uuid::new_v4();
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    let granted = app
        .grant(&admin, user, 5_000_000, &format!("fund-{user}"))
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
    let token = app.token(user, Role::User);
    initialize(&app, &token).await;

    let (_, listed) = rpc(&app, Some(&token), 2, "tools/list", json!({})).await;
    let mut names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["balance", "chat", "list_models", "usage_summary"]);

    let (_, balance) = rpc(
        &app,
        Some(&token),
        3,
        "tools/call",
        json!({"name": "balance", "arguments": {}}),
    )
    .await;
    assert_eq!(balance["result"]["isError"], false, "{balance}");
    assert_eq!(
        balance["result"]["structuredContent"]["available_micros"],
        5_000_000
    );

    let (_, chat) = rpc(
        &app,
        Some(&token),
        4,
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "Say hello.", "max_tokens": 16}}),
    )
    .await;
    let result = &chat["result"];
    assert_eq!(result["isError"], false, "{chat}");
    assert!(result["content"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let charged = result["structuredContent"]["charged_micros"]
        .as_i64()
        .expect("a charge");
    assert!(charged > 0);
    let request_id = result["structuredContent"]["request_id"]
        .as_str()
        .expect("an id");
    // The charge is the request's: its usage record says so.
    hub_tests::eventually(
        std::time::Duration::from_secs(15),
        "the usage record",
        || async {
            let response = app
                .get(&format!("/api/usage/requests/{request_id}"), Some(&token))
                .await;
            (response.status() == StatusCode::OK).then_some(())
        },
    )
    .await;

    // A failing tool answers a tool error.
    let (_, refused) = rpc(
        &app,
        Some(&token),
        5,
        "tools/call",
        json!({"name": "chat", "arguments": {"prompt": "x", "model": "no-such-model"}}),
    )
    .await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert_eq!(
        refused["result"]["structuredContent"]["error"]["code"],
        "model_not_found"
    );
}
