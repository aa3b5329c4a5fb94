//! What the web app needs from the hub (issue 17): its files served at `/` with the right
//! caching and the app's own routes falling back to `index.html` (never the API's), and its
//! open WebSocket told the balance whenever it changes, whoever spent.

use futures::StreamExt;
use hub_domain::Role;
use hub_tests::{spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A built app: `index.html` and one hashed asset, in a folder of the test's own.
fn web_folder() -> std::path::PathBuf {
    let folder = std::env::temp_dir().join(format!("aihub-web-{}", Uuid::new_v4()));
    std::fs::create_dir_all(folder.join("assets")).expect("a folder");
    std::fs::write(
        folder.join("index.html"),
        "<!doctype html><title>Smart AI Hub</title><script src=\"/assets/app-1a2b3c.js\"></script>",
    )
    .expect("index");
    std::fs::write(folder.join("assets/app-1a2b3c.js"), "console.log('hi')").expect("asset");
    std::fs::write(folder.join("favicon.svg"), "<svg/>").expect("icon");
    folder
}

async fn spawn_with_web() -> (TestApp, std::path::PathBuf) {
    let folder = web_folder();
    let dir = folder.to_string_lossy().to_string();
    let app = spawn_app_with(hub_server::Roles::ALL, move |s| s.server.web_dir = dir).await;
    (app, folder)
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_app_is_served_at_the_root_with_its_routes_and_assets_cached_right() {
    let (app, folder) = spawn_with_web().await;

    for path in ["/", "/dashboard", "/usage/2026-12", "/admin/users"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            header(&response, "content-type").starts_with("text/html"),
            "{path}"
        );
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert!(response
            .text()
            .await
            .expect("body")
            .contains("Smart AI Hub"));
    }

    let asset = app.get("/assets/app-1a2b3c.js", None).await;
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(header(&asset, "content-type").starts_with("text/javascript"));
    assert_eq!(
        header(&asset, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let icon = app.get("/favicon.svg", None).await;
    assert_eq!(header(&icon, "content-type"), "image/svg+xml");
    assert_eq!(header(&icon, "cache-control"), "no-cache");

    // A missing file is a 404, not the app; the API's paths stay the API's.
    assert_eq!(
        app.get("/assets/app-gone.js", None).await.status(),
        StatusCode::NOT_FOUND
    );
    for path in ["/api/nope", "/v1/nope", "/api"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // Nothing outside the folder.
    for path in ["/..%2f..%2fetc%2fpasswd", "/assets/..%2f..%2findex.html"] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Only reads.
    let posted = app
        .client
        .post(app.url("/dashboard"))
        .send()
        .await
        .expect("sent");
    assert_eq!(posted.status(), StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(folder);
    app.stop().await;
}

async fn next_json(socket: &mut Socket, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("json");
                if value["type"] != "heartbeat" {
                    return Some(value);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

/// The next `balance.updated` with `available_micros` equal to `available`.
async fn balance_reaches(socket: &mut Socket, available: impl Fn(i64) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the balance in time");
        let message = next_json(socket, left).await.expect("a message in time");
        if message["type"] == "balance.updated"
            && message["available_micros"].as_i64().is_some_and(&available)
        {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_socket_hears_its_balance_change_when_a_key_spends_elsewhere() {
    let (app, folder) = spawn_with_web().await;
    let registered: Value = app
        .client
        .post(app.url("/api/auth/register"))
        .json(&json!({"email": "live@example.com", "password": "correct horse 1"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let user: Uuid = registered["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("an id");
    let token = registered["token"].as_str().expect("a token").to_string();
    let ticket: Value = app
        .client
        .post(app.url("/api/ws/ticket"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let url = format!(
        "{}/api/ws?ticket={}",
        app.address.replacen("http://", "ws://", 1),
        ticket["ticket"].as_str().expect("a ticket")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5))
            .await
            .expect("welcome")["type"],
        "welcome"
    );

    // A grant by an admin elsewhere: the socket hears the new balance.
    let admin = app.token(Uuid::new_v4(), Role::Admin);
    assert_eq!(
        app.grant(&admin, user, 3_000_000, "live-1").await.status(),
        StatusCode::CREATED
    );
    let granted = balance_reaches(&mut socket, |a| a == 3_000_000).await;
    assert_eq!(granted["account_id"], user.to_string());
    assert_eq!(granted["balance_micros"], 3_000_000);

    // A program spends through an API key: the socket hears the charge.
    let key: Value = app
        .client
        .post(app.url("/api/keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "script"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let key = key["key"].as_str().expect("a key");
    let answered = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "mock-1", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "Say hello."}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(answered.status(), StatusCode::OK);
    let spent = balance_reaches(&mut socket, |a| a < 3_000_000).await;
    let shown: Value = app
        .get("/api/credits/balance", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    // What the socket says is what the balance route says after it.
    let settled = balance_reaches_or(&mut socket, spent, &shown).await;
    assert_eq!(settled["balance_micros"], shown["balance_micros"]);
    let _ = std::fs::remove_dir_all(folder);
    app.stop().await;
}

/// `last` if it already equals what the route showed, or the next announcement that does
/// (the reservation and the settlement may be announced apart).
async fn balance_reaches_or(socket: &mut Socket, last: Value, shown: &Value) -> Value {
    if last["balance_micros"] == shown["balance_micros"] {
        return last;
    }
    let want = shown["available_micros"].as_i64().unwrap_or(-1);
    balance_reaches(socket, |a| a == want).await
}
