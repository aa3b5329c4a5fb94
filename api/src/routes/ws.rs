//! `GET /api/ws`: chat over a WebSocket, several chats at once on one connection.
//!
//! Authenticated on connect by `Authorization: Bearer <jwt or API key>` (an API key needs
//! the `inference` scope), or, for browsers, which cannot set headers on a WebSocket, by
//! `?ticket=`: a one-use ticket from `POST /api/ws/ticket`, alive 30 seconds
//! ([`hub_app::identity::ws_ticket`]). `?token=<access token>` still works but puts the
//! token in URLs that proxies log: use a ticket.
//!
//! The credential is checked again before every `chat.start` (a revoked key, a suspended
//! user, a password reset, a revoked role or "log out everywhere" ends the socket there at
//! the latest), and a socket opened with an access token closes when the token expires.
//! The hub then closes with code 4401 (the credential ended: expired, revoked, cut off) or
//! 4403 (the account is suspended), and a reason in words; chats still running stop, and
//! what they produced is charged. JSON text messages:
//!
//! | client → hub | |
//! |---|---|
//! | `{"type":"chat.start","id":"c1","model":"mock-1","messages":[...],"options":{"max_tokens":64,"temperature":0.2}}` | start a chat; `id` is the client's |
//! | `{"type":"chat.cancel","id":"c1"}` | stop it; what was produced is charged |
//! | `{"type":"ping"}` | answered by `pong` |
//!
//! | hub → client | |
//! |---|---|
//! | `{"type":"welcome","user_id":...}` | once, on connect |
//! | `{"type":"chat.started","id","request_id","provider"}` | a provider took it |
//! | `{"type":"chat.chunk","id","seq","delta"}` | text, in order |
//! | `{"type":"chat.done","id","finish_reason","usage":{...},"credits_charged_micros"}` | the end |
//! | `{"type":"chat.error","id","code","message","status"}` | the chat failed (codes as the HTTP API's) |
//! | `{"type":"error","code","message"}` | a message the hub could not use |
//! | `{"type":"heartbeat"}` | every `HEARTBEAT`, so idle proxies keep the connection |
//! | `{"type":"balance.updated","account_id","balance_micros","reserved_micros","available_micros","debt_micros","version"}` | the account's balance, as the `balances` read model has it after each change (whoever caused it) |
//!
//! When the process stops ([`crate::shutdown::Sockets`]), a `chat.start` is refused with
//! `chat.error` code `shutting_down` (503), the chats running finish, and the hub then
//! closes with code 1001 (going away): connect again, to another replica. A chat still
//! running when the shutdown grace ends gets `chat.error` `shutting_down` (charged for what
//! it produced) before that close.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use hub_workers::providers::ChatMessage;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::shutdown::Sockets;
use crate::state::AppState;
use hub_app::identity::access::{AccessError, AccessRefused, Credential};
use hub_app::identity::ws_ticket;
use hub_app::inference::{Chat, ChatFailure, ChatSession, ChatUpdate, Progress};

/// How often an idle connection hears from the hub.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Largest message accepted from a client.
const MESSAGE_MAX_BYTES: usize = 1 << 20;

/// Close code: the credential ended (an access token expired or was cut off, a key was
/// revoked or expired). Sign in or refresh, then connect again.
pub const CLOSE_CREDENTIAL_ENDED: u16 = 4401;
/// Close code: the account is suspended.
pub const CLOSE_SUSPENDED: u16 = 4403;
/// Close code: the hub is shutting down (RFC 6455's "going away"); connect again.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// A one-use ticket for `GET /api/ws?ticket=`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ticket {
    pub ticket: String,
    /// Seconds it stays usable.
    pub expires_in: i64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    token: Option<String>,
    ticket: Option<String>,
}

/// `POST /api/ws/ticket` — a signed-in user with an access token (not an API key, which
/// can use the `Authorization` header). Answers `{ticket, expires_in}`.
#[utoipa::path(
    post,
    path = "/api/ws/ticket",
    tag = "auth",
    responses((status = 200, description = "A one-use ticket for /api/ws", body = Ticket), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn ticket(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<Ticket>, ApiError> {
    let Credential::AccessToken {
        expires_at,
        session_version,
    } = caller.credential
    else {
        return Err(ApiError::forbidden(
            "a signed-in user (API keys connect with their Authorization header)",
        ));
    };
    let issued = ws_ticket::issue(
        &state,
        hub_domain::UserId(caller.user),
        &caller.roles,
        expires_at,
        session_version,
    )
    .await?;
    Ok(axum::Json(Ticket {
        ticket: issued.ticket,
        expires_in: issued.expires_in,
    }))
}

/// `GET /api/ws` — any signed-in caller.
#[utoipa::path(
    get,
    path = "/api/ws",
    tag = "inference",
    params(TokenQuery),
    responses((status = 101, description = "Switched to the WebSocket chat protocol (docs/inference.md)"), crate::openapi::Errors),
    security(("bearer" = [])),
)]
pub async fn connect(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    sockets: Option<Extension<Sockets>>,
    upgrade: WebSocketUpgrade,
    parts: RequestParts,
) -> Result<Response, ApiError> {
    let sockets = sockets.map(|Extension(sockets)| sockets);
    let RequestParts(mut parts) = parts;
    if let Some(ticket) = query.ticket {
        let redeemed = ws_ticket::redeem(&state, &ticket)
            .await?
            .ok_or(ApiError::unauthorized("invalid, used or expired ticket"))?;
        let caller =
            Caller::of_credential(&state, redeemed.user.0, redeemed.roles, redeemed.credential)
                .await?;
        return Ok(upgrade
            .max_message_size(MESSAGE_MAX_BYTES)
            .on_upgrade(move |socket| tracked(socket, state, caller, sockets)));
    }
    // A browser's token comes in the query; it then counts as the `Authorization` header.
    if let Some(token) = query.token {
        let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::unauthorized("invalid token"))?;
        parts
            .headers
            .insert(axum::http::header::AUTHORIZATION, value);
    }
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    Ok(upgrade
        .max_message_size(MESSAGE_MAX_BYTES)
        .on_upgrade(move |socket| tracked(socket, state, caller, sockets)))
}

/// The session, as one that shutdown waits for when the process has [`Sockets`].
async fn tracked(
    socket: WebSocket,
    state: Arc<AppState>,
    caller: Caller,
    sockets: Option<Sockets>,
) {
    match sockets {
        Some(sockets) => {
            let session = session(socket, state, caller, Some(sockets.clone()));
            sockets.track(session).await;
        }
        None => session(socket, state, caller, None).await,
    }
}

/// The request's head, to authenticate after choosing where the token comes from.
pub struct RequestParts(Parts);

impl<S: Send + Sync> FromRequestParts<S> for RequestParts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestParts(parts.clone()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ClientMessage {
    #[serde(rename = "chat.start")]
    Start {
        id: String,
        model: String,
        messages: Vec<ChatMessage>,
        #[serde(default)]
        options: ChatOptions,
    },
    #[serde(rename = "chat.cancel")]
    Cancel { id: String },
    #[serde(rename = "ping")]
    Ping,
}

#[derive(Debug, Default, Deserialize)]
struct ChatOptions {
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    #[serde(default)]
    stop: Vec<String>,
}

/// A message to the client: JSON, or the close that ends the socket.
enum Outgoing {
    Json(Value),
    Close { code: u16, reason: String },
}

impl Outgoing {
    /// The close that tells the client why its credential no longer works.
    fn ended(refused: AccessRefused) -> Self {
        let code = match refused {
            AccessRefused::Suspended => CLOSE_SUSPENDED,
            AccessRefused::Expired | AccessRefused::SessionEnded | AccessRefused::KeyRefused => {
                CLOSE_CREDENTIAL_ENDED
            }
        };
        Outgoing::Close {
            code,
            reason: refused.to_string(),
        }
    }
}

impl From<ChatUpdate> for Outgoing {
    fn from(update: ChatUpdate) -> Self {
        let id = update.chat;
        Outgoing::Json(match update.progress {
            Progress::Started {
                request_id,
                provider,
            } => json!({"type": "chat.started", "id": id,
                "request_id": request_id, "provider": provider}),
            Progress::Delta { seq, text } => {
                json!({"type": "chat.chunk", "id": id, "seq": seq, "delta": text})
            }
            // The WebSocket chat offers no tools, so no call comes; should one, it is shown.
            Progress::ToolCall {
                seq,
                index,
                id: call_id,
                name,
                arguments,
            } => json!({"type": "chat.tool_call", "id": id, "seq": seq, "index": index,
                "call_id": call_id, "name": name, "arguments": arguments}),
            Progress::Finished(done) => json!({"type": "chat.done", "id": id,
                "finish_reason": done.finish_reason,
                "outcome": done.outcome,
                "usage": {"prompt_tokens": done.usage.prompt_tokens,
                          "completion_tokens": done.usage.completion_tokens,
                          "cached_tokens": done.usage.cached_tokens,
                          "source": done.usage.source},
                "credits_charged_micros": done.charged_micros}),
            Progress::Failed(failure) => chat_error(&id, &failure),
            Progress::Lost => chat_error(
                &id,
                &ChatFailure::new("upstream_timeout", "no answer in time", 504),
            ),
        })
    }
}

/// What one message from the client asks for.
enum Incoming {
    Message(ClientMessage),
    /// Answered with this, and nothing else done.
    Refused(Value),
    Ignored,
    Closed,
}

fn read(message: Message) -> Incoming {
    let text = match message {
        Message::Text(text) => text,
        Message::Close(_) => return Incoming::Closed,
        Message::Binary(_) => {
            return Incoming::Refused(error("unsupported", "send JSON text messages"))
        }
        Message::Ping(_) | Message::Pong(_) => return Incoming::Ignored,
    };
    match serde_json::from_str(text.as_str()) {
        Ok(parsed) => Incoming::Message(parsed),
        Err(err) => Incoming::Refused(error(
            "invalid_message",
            &format!("unreadable message: {err}"),
        )),
    }
}

/// Why a session ended from the hub's side.
enum End {
    /// The credential no longer lets its holder in.
    Refused(AccessRefused),
    /// The process is stopping and no chat runs any more.
    Drained,
    /// The process's shutdown grace ended with chats still running.
    Cut,
}

/// The chat refused, or cut, because the process is stopping.
fn shutting_down(cut: bool) -> ChatFailure {
    let message = if cut {
        "the hub is shutting down: the chat was cut (what it produced is charged); \
         connect again and retry"
    } else {
        "the hub is shutting down; connect again to start a chat"
    };
    ChatFailure::new("shutting_down", message, 503)
}

async fn session(
    socket: WebSocket,
    state: Arc<AppState>,
    caller: Caller,
    sockets: Option<Sockets>,
) {
    let (sink, mut incoming) = socket.split();
    let (out, outbox) = mpsc::channel::<Outgoing>(256);
    // One writer: chats and the reader send through the channel.
    let writer = tokio::spawn(write(sink, outbox));
    let welcome = json!({"type": "welcome", "user_id": caller.user});
    let _ = out.send(Outgoing::Json(welcome)).await;
    // The account's balance, pushed as the projection moves it (a charge made elsewhere,
    // by an API key in another program, shows at once).
    let balances = tokio::spawn(announce_balances(
        state.clone(),
        caller.user.to_string(),
        out.clone(),
    ));
    let mut chats = ChatSession::new(state.clone(), caller.payer(), out.clone());
    // Shutdown: no new chat once draining; the running ones are waited for until the
    // deadline. Without `Sockets` (a router built alone) neither comes.
    let (draining, deadline) = match &sockets {
        Some(sockets) => (
            futures::future::Either::Left(sockets.draining()),
            futures::future::Either::Left(sockets.deadline()),
        ),
        None => (
            futures::future::Either::Right(std::future::pending()),
            futures::future::Either::Right(std::future::pending()),
        ),
    };
    tokio::pin!(draining, deadline);
    let finished = chats.finished();
    let mut stopping = false;
    let ended = loop {
        if stopping && chats.running() == 0 {
            break Some(End::Drained);
        }
        // The credential's own end (an access token's expiry), on the hub's clock: measured
        // again at every turn, so a moved clock counts from the next message.
        let ends_at = caller.credential.ends_at();
        let until_end = ends_at.map(|end| (end - state.clock.now()).to_std().unwrap_or_default());
        let expiry = async move {
            match until_end {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            message = incoming.next() => message,
            () = expiry => break Some(End::Refused(AccessRefused::Expired)),
            () = &mut draining, if !stopping => {
                stopping = true;
                continue;
            }
            () = &mut deadline, if stopping => break Some(End::Cut),
            () = finished.notified(), if stopping => continue,
        };
        let Some(Ok(message)) = message else {
            break None;
        };
        if ends_at.is_some_and(|end| end < state.clock.now()) {
            break Some(End::Refused(AccessRefused::Expired));
        }
        // Read now as well: a message and the drain may arrive together.
        stopping = stopping || sockets.as_ref().is_some_and(Sockets::is_draining);
        let reply = match read(message) {
            Incoming::Closed => break None,
            Incoming::Ignored => None,
            Incoming::Refused(reply) => Some(reply),
            Incoming::Message(ClientMessage::Start { id, .. }) if stopping => {
                Some(chat_error(&id, &shutting_down(false)))
            }
            Incoming::Message(message @ ClientMessage::Start { .. }) => {
                // Every chat spends: the credential is checked again against the user now.
                match caller.recheck(&state).await {
                    Ok(()) => handle(&mut chats, message).await,
                    Err(AccessError::Refused(refused)) => break Some(End::Refused(refused)),
                    Err(AccessError::Store(err)) => {
                        tracing::warn!(error = %err, "could not check a socket's credential");
                        Some(error(
                            "unavailable",
                            "the hub could not check your credential; try again",
                        ))
                    }
                }
            }
            Incoming::Message(message) => handle(&mut chats, message).await,
        };
        if let Some(reply) = reply {
            let _ = out.send(Outgoing::Json(reply)).await;
        }
    };
    let going_away = || Outgoing::Close {
        code: CLOSE_GOING_AWAY,
        reason: "the hub is shutting down".into(),
    };
    match ended {
        Some(End::Refused(refused)) => {
            tracing::info!(user = %caller.user, reason = %refused, "WebSocket closed: its credential ended");
            let _ = out.send(Outgoing::ended(refused)).await;
        }
        Some(End::Drained) => {
            let _ = out.send(going_away()).await;
        }
        Some(End::Cut) => {
            let cut = chats.running();
            tracing::info!(user = %caller.user, cut, "WebSocket closed at the shutdown deadline; its chats were cut");
            chats.stop_all(&shutting_down(true)).await;
            let _ = out.send(going_away()).await;
        }
        None => {}
    }
    // The client left or was closed: dropping the session stops every chat still running.
    balances.abort();
    drop(chats);
    drop(out);
    let _ = writer.await;
}

/// Forward the balances projection's announcements for `account` as `balance.updated`
/// until the socket ends (the task is aborted then).
async fn announce_balances(state: Arc<AppState>, account: String, out: mpsc::Sender<Outgoing>) {
    let subject = state.topology.balance_subject(&account);
    let mut updates = match state.nats.subscribe(subject).await {
        Ok(updates) => updates,
        Err(err) => {
            tracing::warn!(error = %err, "could not follow a balance for a socket");
            return;
        }
    };
    while let Some(update) = updates.next().await {
        let Ok(mut body) = serde_json::from_slice::<Value>(&update.payload) else {
            continue;
        };
        if let Some(fields) = body.as_object_mut() {
            fields.insert("type".into(), json!("balance.updated"));
        }
        if out.send(Outgoing::Json(body)).await.is_err() {
            return;
        }
    }
}

/// Does what a client message asks; the direct reply, if any.
async fn handle(chats: &mut ChatSession<Outgoing>, message: ClientMessage) -> Option<Value> {
    match message {
        ClientMessage::Ping => Some(json!({"type": "pong"})),
        ClientMessage::Cancel { id } => {
            chats.cancel(&id).await;
            None
        }
        ClientMessage::Start {
            id,
            model,
            messages,
            options,
        } => {
            let chat = Chat {
                model,
                messages,
                max_tokens: options.max_tokens,
                temperature: options.temperature,
                top_p: options.top_p,
                stop: options.stop,
                options: Default::default(),
                whole: false,
            };
            let refused = chats.start(id.clone(), chat).err();
            refused.map(|failure| chat_error(&id, &failure))
        }
    }
}

/// Sends the outbox to the client, and a heartbeat when it is idle.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut outbox: mpsc::Receiver<Outgoing>) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let message = tokio::select! {
            message = outbox.recv() => match message {
                Some(Outgoing::Json(message)) => Message::Text(message.to_string().into()),
                Some(Outgoing::Close { code, reason }) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
                None => break,
            },
            _ = heartbeat.tick() => Message::Text(json!({"type": "heartbeat"}).to_string().into()),
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"type": "error", "code": code, "message": message})
}

fn chat_error(id: &str, failure: &ChatFailure) -> Value {
    json!({"type": "chat.error", "id": id, "code": failure.code,
           "message": failure.message, "status": failure.status})
}
