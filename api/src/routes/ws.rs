//! `GET /api/ws`: chat over a WebSocket, several chats at once on one connection.
//!
//! Authenticated on connect (`Authorization: Bearer <jwt or API key>`, or `?token=` for
//! browsers, which cannot set headers on a WebSocket). JSON text messages:
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

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hub_workers::providers::ChatMessage;
use hub_workers::wire::WireChunk;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use hub_app::inference::{self, ChatParams};

/// How often an idle connection hears from the hub.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Chats one connection may run at once.
const CHATS_MAX: usize = 16;
/// Largest message accepted from a client.
const MESSAGE_MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `GET /api/ws` — any signed-in caller.
pub async fn connect(
    State(state): State<Arc<AppState>>,
    Query(query): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
    parts: RequestParts,
) -> Result<Response, ApiError> {
    let caller = match query.token {
        Some(token) => {
            let mut parts = parts.0;
            let value = axum::http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ApiError::unauthorized("invalid token"))?;
            parts
                .headers
                .insert(axum::http::header::AUTHORIZATION, value);
            Caller::from_request_parts(&mut parts, &state).await?
        }
        None => {
            let mut parts = parts.0;
            Caller::from_request_parts(&mut parts, &state).await?
        }
    };
    Ok(upgrade
        .max_message_size(MESSAGE_MAX_BYTES)
        .on_upgrade(move |socket| session(socket, state, caller)))
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

async fn session(socket: WebSocket, state: Arc<AppState>, caller: Caller) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut outbox) = mpsc::channel::<Value>(256);
    // One writer: chats and the reader send through the channel.
    let writer = tokio::spawn(async move {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        loop {
            let message = tokio::select! {
                message = outbox.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = heartbeat.tick() => json!({"type": "heartbeat"}),
            };
            if sink
                .send(Message::Text(message.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let _ = out
        .send(json!({"type": "welcome", "user_id": caller.user}))
        .await;
    let mut chats: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(Ok(message)) = incoming.next().await {
        chats.retain(|_, task| !task.is_finished());
        let text = match message {
            Message::Text(text) => text,
            Message::Close(_) => break,
            Message::Binary(_) => {
                let _ = out
                    .send(error("unsupported", "send JSON text messages"))
                    .await;
                continue;
            }
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let parsed: ClientMessage = match serde_json::from_str(text.as_str()) {
            Ok(parsed) => parsed,
            Err(err) => {
                let _ = out
                    .send(error(
                        "invalid_message",
                        &format!("unreadable message: {err}"),
                    ))
                    .await;
                continue;
            }
        };
        match parsed {
            ClientMessage::Ping => {
                let _ = out.send(json!({"type": "pong"})).await;
            }
            ClientMessage::Cancel { id } => {
                // Dropping the chat's submission tells its worker to stop.
                if let Some(task) = chats.remove(&id) {
                    task.abort();
                    let _ = out
                        .send(json!({"type": "chat.error", "id": id, "code": "cancelled",
                                     "message": "cancelled by the client", "status": 499}))
                        .await;
                }
            }
            ClientMessage::Start {
                id,
                model,
                messages,
                options,
            } => {
                if chats.contains_key(&id) {
                    let _ = out
                        .send(chat_error(
                            &id,
                            "duplicate_id",
                            "a chat with this id is running",
                            400,
                        ))
                        .await;
                    continue;
                }
                if chats.len() >= CHATS_MAX {
                    let _ = out
                        .send(chat_error(
                            &id,
                            "too_many_chats",
                            "too many chats at once on this connection",
                            429,
                        ))
                        .await;
                    continue;
                }
                let params = ChatParams {
                    model,
                    messages,
                    max_tokens: options.max_tokens,
                    temperature: options.temperature,
                    top_p: options.top_p,
                    stop: options.stop,
                    whole: false,
                };
                let task = tokio::spawn(chat(
                    state.clone(),
                    caller.clone(),
                    id.clone(),
                    params,
                    out.clone(),
                ));
                chats.insert(id, task);
            }
        }
    }
    // The client left: stop every chat still running (each is charged what it produced).
    for (_, task) in chats {
        task.abort();
    }
    drop(out);
    let _ = writer.await;
}

async fn chat(
    state: Arc<AppState>,
    caller: Caller,
    id: String,
    params: ChatParams,
    out: mpsc::Sender<Value>,
) {
    let mut submission = match inference::submit(&state, &caller.payer(), params).await {
        Ok(submission) => submission,
        Err(err) => {
            let (status, code) = err.status_and_code();
            let _ = out
                .send(chat_error(&id, code, &err.to_string(), status))
                .await;
            return;
        }
    };
    loop {
        let message = match submission.next().await {
            Some(WireChunk::Started { provider }) => json!({"type": "chat.started", "id": id,
                "request_id": submission.request_id, "provider": provider}),
            Some(WireChunk::Delta { seq, text }) => {
                json!({"type": "chat.chunk", "id": id, "seq": seq, "delta": text})
            }
            Some(WireChunk::Finished {
                finish_reason,
                usage,
                charged_micros,
                outcome,
            }) => {
                let _ = out
                    .send(
                        json!({"type": "chat.done", "id": id, "finish_reason": finish_reason,
                        "outcome": outcome,
                        "usage": {"prompt_tokens": usage.prompt_tokens,
                                  "completion_tokens": usage.completion_tokens,
                                  "cached_tokens": usage.cached_tokens,
                                  "source": usage.source},
                        "credits_charged_micros": charged_micros}),
                    )
                    .await;
                return;
            }
            Some(WireChunk::Failed {
                code,
                message,
                status,
                ..
            }) => {
                let _ = out.send(chat_error(&id, &code, &message, status)).await;
                return;
            }
            // `answered` only answers commands that asked for the whole answer at once.
            None | Some(WireChunk::Answered { .. }) => {
                let _ = out
                    .send(chat_error(
                        &id,
                        "upstream_timeout",
                        "no answer in time",
                        504,
                    ))
                    .await;
                return;
            }
        };
        if out.send(message).await.is_err() {
            return; // The connection is gone; dropping the submission cancels the chat.
        }
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"type": "error", "code": code, "message": message})
}

fn chat_error(id: &str, code: &str, message: &str, status: u16) -> Value {
    json!({"type": "chat.error", "id": id, "code": code, "message": message, "status": status})
}
