//! Sessions and privileges that end (issue 14, findings 14, 15, 19 and API-key scopes):
//! a suspension, a revoked role, "log out everywhere" and a revoked key take effect on the
//! next request, also on a WebSocket that is already open; WebSocket tickets keep tokens out
//! of URLs; a key reaches only what its scopes allow. Each test fails on the code before
//! its fix.

use futures::{SinkExt, StreamExt};
use hub_domain::Role;
use hub_server::Roles;
use hub_tests::{eventually, spawn_app, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A registered user: id, access token, refresh token.
struct Person {
    id: Uuid,
    token: String,
    refresh: String,
}

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

fn signed_in(body: &Value) -> Person {
    Person {
        id: body["user"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("a user id"),
        token: body["token"].as_str().expect("a token").to_string(),
        refresh: body["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string(),
    }
}

async fn register(app: &TestApp, email: &str) -> Person {
    let response = post(
        app,
        "/api/auth/register",
        None,
        json!({"email": email, "password": "correct horse 1"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    signed_in(&response.json().await.expect("json"))
}

async fn login(app: &TestApp, email: &str) -> reqwest::Response {
    post(
        app,
        "/api/auth/login",
        None,
        json!({"email": email, "password": "correct horse 1"}),
    )
    .await
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    post(
        app,
        "/api/auth/refresh",
        None,
        json!({"refresh_token": refresh_token}),
    )
    .await
}

/// An admin token for a user nobody registered (as the bootstrap tests use).
fn bootstrap_admin(app: &TestApp) -> String {
    app.token(Uuid::new_v4(), Role::Admin)
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn create_key(app: &TestApp, token: &str, body: Value) -> (String, Value) {
    let response = post(app, "/api/keys", Some(token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    (
        created["key"].as_str().expect("the key").to_string(),
        created,
    )
}

async fn fund(app: &TestApp, user: Uuid) {
    let granted = app
        .grant(
            &bootstrap_admin(app),
            user,
            10_000_000,
            &format!("fund-{user}"),
        )
        .await;
    assert_eq!(granted.status(), StatusCode::CREATED);
}

fn chat_body() -> Value {
    json!({"model": "mock-1", "messages": [{"role": "user", "content": "Say hello."}],
           "max_tokens": 16})
}

fn ws_url(app: &TestApp, query: &str) -> String {
    format!(
        "{}/api/ws?{query}",
        app.address.replacen("http://", "ws://", 1)
    )
}

/// Open the socket with `Authorization: Bearer <credential>` and read its welcome.
async fn connect_with_header(app: &TestApp, credential: &str) -> Socket {
    let mut request = ws_url(app, "").into_client_request().expect("a request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().expect("a header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(next(&mut socket).await.json()["type"], "welcome");
    socket
}

async fn connect_at(app: &TestApp, query: &str) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(app, query))
        .await
        .expect("connect");
    assert_eq!(next(&mut socket).await.json()["type"], "welcome");
    socket
}

/// What the hub sent next: a JSON message, or the close (code and reason).
enum Heard {
    Json(Value),
    Closed(u16, String),
}

impl Heard {
    fn json(self) -> Value {
        match self {
            Heard::Json(value) => value,
            Heard::Closed(code, reason) => panic!("closed {code}: {reason}"),
        }
    }
}

async fn next(socket: &mut Socket) -> Heard {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("json");
                if value["type"] != "heartbeat" {
                    return Heard::Json(value);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Heard::Closed(code, reason);
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("socket error: {err}"),
            None => return Heard::Closed(1006, String::new()),
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .expect("send");
}

fn start(id: &str) -> Value {
    json!({"type": "chat.start", "id": id, "model": "mock-1",
           "messages": [{"role": "user", "content": "Say hello."}],
           "options": {"max_tokens": 16}})
}

/// Start chat `id` and read until it is done; answers its `chat.done`.
async fn chat_to_the_end(socket: &mut Socket, id: &str) -> Value {
    send(socket, start(id)).await;
    loop {
        let message = next(socket).await.json();
        match message["type"].as_str() {
            Some("chat.done") if message["id"] == id => return message,
            Some("chat.error") => panic!("the chat failed: {message}"),
            _ => {}
        }
    }
}

/// After `chat.start`, the socket must close with `code` before any chat starts.
async fn closes_before_the_chat_starts(socket: &mut Socket, code: u16) -> String {
    loop {
        match next(socket).await {
            Heard::Closed(got, reason) => {
                assert_eq!(got, code, "closed with {got}: {reason}");
                return reason;
            }
            Heard::Json(message) => assert!(
                !matches!(
                    message["type"].as_str(),
                    Some("chat.started" | "chat.chunk" | "chat.done")
                ),
                "a chat ran: {message}"
            ),
        }
    }
}

/// Finding 15: one admin action ends every way a user acts: their access token, refresh
/// token, password sign-in, API key and open WebSocket; lifting it lets them sign in again
/// but brings nothing old back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_user_is_refused_on_every_route_at_once() {
    let app = spawn_app().await;
    let admin = bootstrap_admin(&app);
    let user = register(&app, "mallory@example.com").await;
    fund(&app, user.id).await;
    let (key, _) = create_key(
        &app,
        &user.token,
        json!({"name": "ci", "scopes": ["inference", "read"]}),
    )
    .await;
    let ticket: Value = post(&app, "/api/ws/ticket", Some(&user.token), json!({}))
        .await
        .json()
        .await
        .expect("json");
    let ticket = ticket["ticket"].as_str().expect("a ticket");
    let mut socket = connect_at(&app, &format!("ticket={ticket}")).await;
    chat_to_the_end(&mut socket, "before").await;

    let suspended = post(
        &app,
        &format!("/api/admin/users/{}/suspend", user.id),
        Some(&admin),
        json!({"reason": "card testing"}),
    )
    .await;
    assert_eq!(suspended.status(), StatusCode::OK);
    let shown: Value = suspended.json().await.expect("json");
    assert_eq!(shown["suspended"], true);
    assert_eq!(shown["reason"], "card testing");

    // At once: no waiting for a token to expire or a read model to catch up.
    for (what, response) in [
        ("me", app.get("/api/auth/me", Some(&user.token)).await),
        (
            "balance (token)",
            app.get("/api/credits/balance", Some(&user.token)).await,
        ),
        (
            "balance (key)",
            app.get("/api/credits/balance", Some(&key)).await,
        ),
        ("sign-in", login(&app, "mallory@example.com").await),
    ] {
        assert_eq!(
            error_code(response).await,
            (StatusCode::FORBIDDEN, "account_suspended".to_string()),
            "{what}"
        );
    }
    // `/v1` answers in OpenAI's error shape: the status is the hub's.
    for credential in [&key, &user.token] {
        assert_eq!(
            post(&app, "/v1/chat/completions", Some(credential), chat_body())
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
    }
    let (status, _) = error_code(refresh(&app, &user.refresh).await).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the refresh token is revoked"
    );
    send(&mut socket, start("after")).await;
    let reason = closes_before_the_chat_starts(&mut socket, 4403).await;
    assert!(reason.contains("suspended"), "{reason}");

    // Admins see it in the listing (a read model: it follows shortly).
    eventually(
        Duration::from_secs(10),
        "the listing shows the suspension",
        || {
            let app = &app;
            let admin = admin.clone();
            async move {
                let page: Value = app
                    .get("/api/admin/users?email=mallory", Some(&admin))
                    .await
                    .json()
                    .await
                    .ok()?;
                (!page["users"][0]["suspended_at"].is_null()).then_some(())
            }
        },
    )
    .await;

    let lifted = post(
        &app,
        &format!("/api/admin/users/{}/unsuspend", user.id),
        Some(&admin),
        json!({"reason": "cleared by support"}),
    )
    .await;
    assert_eq!(lifted.status(), StatusCode::OK);
    assert_eq!(
        error_code(app.get("/api/auth/me", Some(&user.token)).await).await,
        (StatusCode::UNAUTHORIZED, "session_ended".to_string()),
        "a token from before the suspension stays dead"
    );
    let (status, _) = error_code(refresh(&app, &user.refresh).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let again = login(&app, "mallory@example.com").await;
    assert_eq!(again.status(), StatusCode::OK);
    let again = signed_in(&again.json().await.expect("json"));
    assert_eq!(
        app.get("/api/auth/me", Some(&again.token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/credits/balance", Some(&key)).await.status(),
        StatusCode::OK,
        "keys are not sessions: the key works again"
    );
    app.stop().await;
}

/// Finding 15: revoking a role cuts off the access tokens that carry it at once, not when
/// they expire; a refresh gives a token without it.
#[tokio::test]
async fn a_removed_admin_role_stops_working_before_the_token_expires() {
    let app = spawn_app().await;
    let bootstrap = bootstrap_admin(&app);
    let user = register(&app, "former-admin@example.com").await;
    let granted = post(
        &app,
        &format!("/api/admin/users/{}/roles", user.id),
        Some(&bootstrap),
        json!({"role": "admin"}),
    )
    .await;
    assert_eq!(granted.status(), StatusCode::OK);
    let admin = signed_in(
        &login(&app, "former-admin@example.com")
            .await
            .json()
            .await
            .expect("json"),
    );
    assert_eq!(
        app.get("/api/admin/users", Some(&admin.token))
            .await
            .status(),
        StatusCode::OK
    );

    let revoked = app
        .client
        .delete(app.url(&format!("/api/admin/users/{}/roles/admin", user.id)))
        .bearer_auth(&bootstrap)
        .send()
        .await
        .expect("sent");
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        error_code(app.get("/api/admin/users", Some(&admin.token)).await).await,
        (StatusCode::UNAUTHORIZED, "session_ended".to_string()),
        "the token minted with the role is refused long before its 15 minutes"
    );

    let refreshed = refresh(&app, &admin.refresh).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed = signed_in(&refreshed.json().await.expect("json"));
    assert_eq!(
        error_code(app.get("/api/admin/users", Some(&refreshed.token)).await).await,
        (StatusCode::FORBIDDEN, "forbidden".to_string())
    );
    assert_eq!(
        app.get("/api/auth/me", Some(&refreshed.token))
            .await
            .status(),
        StatusCode::OK,
        "the user is still a user"
    );
    app.stop().await;
}

/// Finding 15: "log out everywhere" ends every sign-in of the user, access and refresh
/// tokens alike, and a new sign-in works.
#[tokio::test]
async fn log_out_everywhere_ends_every_session() {
    let app = spawn_app().await;
    let laptop = register(&app, "traveller@example.com").await;
    let phone = signed_in(
        &login(&app, "traveller@example.com")
            .await
            .json()
            .await
            .expect("json"),
    );
    let ended = post(&app, "/api/auth/logout-all", Some(&phone.token), json!({})).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);

    for session in [&laptop, &phone] {
        assert_eq!(
            error_code(app.get("/api/auth/me", Some(&session.token)).await).await,
            (StatusCode::UNAUTHORIZED, "session_ended".to_string())
        );
        assert_eq!(
            refresh(&app, &session.refresh).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let again = login(&app, "traveller@example.com").await;
    assert_eq!(again.status(), StatusCode::OK);
    let again = signed_in(&again.json().await.expect("json"));
    assert_eq!(
        app.get("/api/auth/me", Some(&again.token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(refresh(&app, &again.refresh).await.status(), StatusCode::OK);
    app.stop().await;
}

/// Finding 14: an open socket checks its key again before every chat: a key revoked while
/// the socket is open spends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_whose_key_was_revoked_cannot_start_another_chat() {
    let app = spawn_app().await;
    let user = register(&app, "socket-key@example.com").await;
    fund(&app, user.id).await;
    let (key, created) = create_key(&app, &user.token, json!({"name": "bot"})).await;
    let mut socket = connect_with_header(&app, &key).await;
    chat_to_the_end(&mut socket, "first").await;

    let key_id = created["id"].as_str().expect("the key's id");
    let revoked = app
        .client
        .delete(app.url(&format!("/api/keys/{key_id}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("sent");
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);

    send(&mut socket, start("second")).await;
    let reason = closes_before_the_chat_starts(&mut socket, 4401).await;
    assert!(reason.contains("revoked"), "{reason}");
    app.stop().await;
}

/// Finding 14: a socket opened with an access token closes when the token expires, with a
/// reason the client can act on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_closes_when_its_token_expires() {
    let app = spawn_app().await;
    let user = register(&app, "socket-expiry@example.com").await;
    let mut socket = connect_at(&app, &format!("token={}", user.token)).await;
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await.json()["type"], "pong");

    app.clock.advance(Duration::from_secs(
        app.settings.auth.access_token_ttl_s + 60,
    ));
    send(&mut socket, json!({"type": "ping"})).await;
    let reason = closes_before_the_chat_starts(&mut socket, 4401).await;
    assert!(reason.contains("expired"), "{reason}");
    app.stop().await;
}

/// Finding 14: "log out everywhere" (as a password reset does) ends the sockets opened with
/// the old sessions' tokens at their next chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_of_a_session_ended_everywhere_cannot_start_another_chat() {
    let app = spawn_app().await;
    let user = register(&app, "socket-session@example.com").await;
    fund(&app, user.id).await;
    let mut socket = connect_at(&app, &format!("token={}", user.token)).await;
    chat_to_the_end(&mut socket, "first").await;
    let ended = post(&app, "/api/auth/logout-all", Some(&user.token), json!({})).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    send(&mut socket, start("second")).await;
    let reason = closes_before_the_chat_starts(&mut socket, 4401).await;
    assert!(reason.contains("ended"), "{reason}");
    app.stop().await;
}

/// Finding 19: a browser opens the socket with a short-lived ticket instead of its token in
/// the URL; the ticket works once, not after its 30 seconds, and not for a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_ticket_works_once() {
    let app = spawn_app().await;
    let user = register(&app, "ticket@example.com").await;
    let issue = || post(&app, "/api/ws/ticket", Some(&user.token), json!({}));
    let answer: Value = issue().await.json().await.expect("json");
    assert_eq!(answer["expires_in"], 30);
    let ticket = answer["ticket"].as_str().expect("a ticket").to_string();
    assert!(ticket.len() >= 43, "256 bits");

    let mut socket = connect_at(&app, &format!("ticket={ticket}")).await;
    send(&mut socket, json!({"type": "ping"})).await;
    assert_eq!(next(&mut socket).await.json()["type"], "pong");

    let again = tokio_tungstenite::connect_async(ws_url(&app, &format!("ticket={ticket}"))).await;
    assert!(
        matches!(
            again,
            Err(tokio_tungstenite::tungstenite::Error::Http(ref response))
                if response.status() == 401
        ),
        "a used ticket is refused: {again:?}"
    );

    let late: Value = issue().await.json().await.expect("json");
    app.clock.advance(Duration::from_secs(31));
    let late = late["ticket"].as_str().expect("a ticket");
    let expired = tokio_tungstenite::connect_async(ws_url(&app, &format!("ticket={late}"))).await;
    assert!(
        matches!(
            expired,
            Err(tokio_tungstenite::tungstenite::Error::Http(ref response))
                if response.status() == 401
        ),
        "an expired ticket is refused: {expired:?}"
    );
    let (stored, in_clear): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE ticket_hash = $1) FROM ws_tickets")
            .bind(late)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        (stored, in_clear),
        (1, 0),
        "the unused ticket is stored hashed"
    );
    app.stop().await;
}

/// Key scopes (finding 12's remainder): a key made for inference, the default, cannot read
/// its owner's ledger; a read-only key can, and cannot spend.
#[tokio::test]
async fn a_key_without_the_read_scope_cannot_read_the_ledger() {
    let app = spawn_app().await;
    let user = register(&app, "scoped@example.com").await;
    fund(&app, user.id).await;
    let (inference, created) = create_key(&app, &user.token, json!({"name": "bot"})).await;
    assert_eq!(created["scopes"], json!(["inference"]), "the default");
    assert_eq!(
        error_code(app.get("/api/credits/transactions", Some(&inference)).await).await,
        (StatusCode::FORBIDDEN, "insufficient_scope".to_string())
    );
    assert_eq!(
        post(&app, "/v1/chat/completions", Some(&inference), chat_body())
            .await
            .status(),
        StatusCode::OK
    );

    let (reader, created) = create_key(
        &app,
        &user.token,
        json!({"name": "dashboard", "scopes": ["read"]}),
    )
    .await;
    assert_eq!(created["scopes"], json!(["read"]));
    assert_eq!(
        app.get("/api/credits/transactions", Some(&reader))
            .await
            .status(),
        StatusCode::OK
    );
    // On `/v1` the refusal is in OpenAI's shape and keeps the hub's code, so an SDK user
    // can tell why.
    let refused = post(&app, "/v1/chat/completions", Some(&reader), chat_body()).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused: Value = refused.json().await.expect("json");
    assert_eq!(refused["error"]["code"], "insufficient_scope");
    assert_eq!(refused["error"]["type"], "permission_error");
    let listed: Value = app
        .get("/api/keys", Some(&user.token))
        .await
        .json()
        .await
        .expect("json");
    let scopes: Vec<&Value> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| &k["scopes"])
        .collect();
    assert_eq!(scopes, [&json!(["read"]), &json!(["inference"])]);
    let (status, code) = error_code(
        post(
            &app,
            "/api/keys",
            Some(&user.token),
            json!({"name": "x", "scopes": ["admin"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );
    app.stop().await;
}

/// Several API processes each keep the users they read (the per-request check reads only
/// the sequence of the user's last event): a change made through one process must still
/// count at the very next request in another that served the same credentials a moment
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_through_one_api_process_counts_at_once_in_another() {
    let app = spawn_app().await;
    let other = app
        .peer(Roles {
            http: true,
            ..Roles::NONE
        })
        .await;
    let admin = bootstrap_admin(&app);
    let user = register(&app, "eve@example.com").await;
    let (key, created) = create_key(
        &app,
        &user.token,
        json!({"name": "ci", "scopes": ["inference", "read"]}),
    )
    .await;
    let (spare, _) = create_key(
        &app,
        &user.token,
        json!({"name": "spare", "scopes": ["read"]}),
    )
    .await;
    let on_other = |credential: &str| {
        app.client
            .get(other.url("/api/credits/balance"))
            .bearer_auth(credential)
            .send()
    };
    for credential in [&user.token, &key, &spare] {
        let response = on_other(credential).await.expect("request sent");
        assert_eq!(response.status(), StatusCode::OK);
    }

    // A key revoked through the first process: the second refuses it at once.
    let key_id = created["id"].as_str().expect("a key id");
    let revoked = app
        .client
        .delete(app.url(&format!("/api/keys/{key_id}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("request sent");
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert_eq!(
        on_other(&key).await.expect("request sent").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        on_other(&user.token).await.expect("request sent").status(),
        StatusCode::OK
    );

    // "Log out everywhere" through the first process ends the token in the second.
    let ended = post(&app, "/api/auth/logout-all", Some(&user.token), json!({})).await;
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        error_code(on_other(&user.token).await.expect("request sent")).await,
        (StatusCode::UNAUTHORIZED, "session_ended".to_string())
    );

    // A suspension through the first process stops the remaining key in the second.
    assert_eq!(
        on_other(&spare).await.expect("request sent").status(),
        StatusCode::OK
    );
    let suspended = post(
        &app,
        &format!("/api/admin/users/{}/suspend", user.id),
        Some(&admin),
        json!({"reason": "chargebacks"}),
    )
    .await;
    assert_eq!(suspended.status(), StatusCode::OK);
    assert_eq!(
        error_code(on_other(&spare).await.expect("request sent")).await,
        (StatusCode::FORBIDDEN, "account_suspended".to_string())
    );
    drop(other);
    app.stop().await;
}
