//! The answer of an accepted request, as a worker streams it back: read piece by piece
//! ([`Submission::progress`]) or whole ([`Submission::answer`]). Dropping a [`Submission`]
//! before its last chunk asks the worker to stop (the client went away); the worker charges
//! what was produced.

use bytes::Bytes;
use hub_domain::UsageOutcome;
use hub_workers::chat::ToolCall;
use hub_workers::wire::{WireChunk, WireUsage};
use std::sync::Arc;
use std::time::Duration;

use super::GatewayError;
use crate::rate_limits::TokensTaken;
use crate::replies::Registration;
use crate::Hub;

/// An accepted request whose answer is on its way.
pub struct Submission {
    pub request_id: String,
    pub model: String,
    /// Unix seconds, for OpenAI's `created`.
    pub created: i64,
    pub prompt_tokens: u64,
    pub(crate) registration: Registration,
    pub(crate) client: async_nats::Client,
    pub(crate) cancel_subject: String,
    /// Longest wait for the next chunk.
    pub(crate) idle: Duration,
    pub(crate) done: bool,
    /// The tokens a chat took from its caller's per-minute budgets, given back, less what it
    /// used, when its last chunk arrives.
    pub(crate) tokens_taken: Option<(Arc<Hub>, TokensTaken)>,
}

/// How a request ended, when it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub finish_reason: String,
    pub usage: WireUsage,
    pub charged_micros: i64,
    pub outcome: UsageOutcome,
}

/// The whole answer of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub provider: String,
    pub text: String,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    pub finished: Finished,
}

/// Why a request was not answered, as the client is told: a stable code (the HTTP API's),
/// a message and the HTTP status.
/// An embeddings request's answer: one vector per input, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsAnswer {
    pub provider: String,
    pub vectors: Vec<Vec<f32>>,
    pub usage: WireUsage,
    pub charged_micros: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatFailure {
    pub code: String,
    pub message: String,
    pub status: u16,
    pub retry_after_s: Option<u64>,
}

impl ChatFailure {
    pub fn new(code: &str, message: &str, status: u16) -> Self {
        ChatFailure {
            code: code.to_string(),
            message: message.to_string(),
            status,
            retry_after_s: None,
        }
    }
}

impl From<&GatewayError> for ChatFailure {
    fn from(err: &GatewayError) -> Self {
        let (status, code) = err.status_and_code();
        ChatFailure::new(code, &err.to_string(), status)
    }
}

/// A request that got no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Unanswered {
    /// The worker said why.
    Failed(ChatFailure),
    /// Nothing (usable) came from the worker in time.
    Lost,
}

/// The next thing to tell a client that reads the answer piece by piece.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A provider took the request.
    Started {
        request_id: String,
        provider: String,
    },
    /// Text, in order; `seq` counts from 1.
    Delta { seq: u64, text: String },
    /// A piece of tool call `index`: the first names it (`id`, `name`), later ones carry
    /// more of its arguments; `seq` continues the deltas' count.
    ToolCall {
        seq: u64,
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The end (the last item).
    Finished(Finished),
    /// The request failed (the last item).
    Failed(ChatFailure),
    /// Nothing came in time (the last item).
    Lost,
}

impl Submission {
    /// Gives back to the rate limits the tokens counted at acceptance that the answer did not
    /// use (all of them when it failed), off the answer's path.
    fn refund_unused_tokens(&mut self, last: &WireChunk) {
        let Some((hub, taken)) = self.tokens_taken.take() else {
            return;
        };
        let used = match last {
            WireChunk::Finished { usage, .. } | WireChunk::Answered { usage, .. } => {
                usage.prompt_tokens + usage.completion_tokens
            }
            _ => 0,
        };
        taken.give_back(hub, used);
    }

    /// The next chunk; `None` if none came within the idle bound (a lost worker).
    async fn next(&mut self) -> Option<WireChunk> {
        if self.done {
            return None;
        }
        loop {
            let answers = &mut self.registration.answers;
            let payload: Bytes = match tokio::time::timeout(self.idle, answers.recv()).await {
                Ok(Some(payload)) => payload,
                Ok(None) | Err(_) => {
                    self.done = true;
                    return None;
                }
            };
            match serde_json::from_slice::<WireChunk>(&payload) {
                Ok(chunk) => {
                    if chunk.is_last() {
                        self.done = true;
                        self.refund_unused_tokens(&chunk);
                    }
                    return Some(chunk);
                }
                Err(err) => tracing::warn!(error = %err, "unreadable chunk skipped"),
            }
        }
    }

    /// The next piece of a streamed answer. `answered` only answers commands that asked for
    /// the whole answer at once, so here it counts as lost.
    pub async fn progress(&mut self) -> Progress {
        match self.next().await {
            Some(WireChunk::Started { provider }) => Progress::Started {
                request_id: self.request_id.clone(),
                provider,
            },
            Some(WireChunk::Delta { seq, text }) => Progress::Delta { seq, text },
            Some(WireChunk::ToolCall {
                seq,
                index,
                id,
                name,
                arguments,
            }) => Progress::ToolCall {
                seq,
                index,
                id,
                name,
                arguments,
            },
            Some(WireChunk::Finished {
                finish_reason,
                usage,
                charged_micros,
                outcome,
            }) => Progress::Finished(Finished {
                finish_reason,
                usage,
                charged_micros,
                outcome,
            }),
            Some(WireChunk::Failed {
                code,
                message,
                status,
                retry_after_s,
                ..
            }) => Progress::Failed(ChatFailure {
                code,
                message,
                status,
                retry_after_s,
            }),
            Some(
                WireChunk::Answered { .. }
                | WireChunk::Embedding { .. }
                | WireChunk::Embedded { .. },
            )
            | None => Progress::Lost,
        }
    }

    /// Waits for a provider to take the request (or for it to fail): the provider's name.
    pub async fn started(&mut self) -> Result<String, Unanswered> {
        match self.progress().await {
            Progress::Started { provider, .. } => Ok(provider),
            Progress::Failed(failure) => Err(Unanswered::Failed(failure)),
            Progress::Delta { .. }
            | Progress::ToolCall { .. }
            | Progress::Finished(_)
            | Progress::Lost => Err(Unanswered::Lost),
        }
    }

    /// The whole answer: one `answered` message from the worker (or, from a worker that
    /// sends the answer piece by piece, its pieces).
    pub async fn answer(&mut self) -> Result<Answer, Unanswered> {
        let mut text = String::new();
        let mut provider = String::new();
        let mut tool_calls = Vec::new();
        loop {
            match self.next().await {
                Some(WireChunk::Started { provider: started }) => provider = started,
                Some(WireChunk::Delta { text: piece, .. }) => text.push_str(&piece),
                Some(WireChunk::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                    ..
                }) => {
                    ToolCall::merge(
                        &mut tool_calls,
                        index,
                        id.as_deref(),
                        name.as_deref(),
                        &arguments,
                    );
                }
                Some(WireChunk::Finished {
                    finish_reason,
                    usage,
                    charged_micros,
                    outcome,
                }) => {
                    let finished = Finished {
                        finish_reason,
                        usage,
                        charged_micros,
                        outcome,
                    };
                    return Ok(Answer {
                        provider,
                        text,
                        tool_calls,
                        finished,
                    });
                }
                Some(WireChunk::Answered {
                    provider,
                    text,
                    tool_calls,
                    finish_reason,
                    usage,
                    charged_micros,
                    outcome,
                }) => {
                    let finished = Finished {
                        finish_reason,
                        usage,
                        charged_micros,
                        outcome,
                    };
                    return Ok(Answer {
                        provider,
                        text,
                        tool_calls,
                        finished,
                    });
                }
                Some(WireChunk::Failed {
                    code,
                    message,
                    status,
                    retry_after_s,
                    ..
                }) => {
                    return Err(Unanswered::Failed(ChatFailure {
                        code,
                        message,
                        status,
                        retry_after_s,
                    }))
                }
                Some(WireChunk::Embedding { .. } | WireChunk::Embedded { .. }) | None => {
                    return Err(Unanswered::Lost)
                }
            }
        }
    }

    /// The vectors of an embeddings request, one per input in order; `inputs` is how many
    /// it had. An answer that leaves an input without a vector is lost.
    pub async fn embeddings(&mut self, inputs: usize) -> Result<EmbeddingsAnswer, Unanswered> {
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; inputs];
        loop {
            match self.next().await {
                Some(WireChunk::Embedding { index, vector }) => {
                    if let Some(slot) = vectors.get_mut(index as usize) {
                        *slot = Some(vector);
                    }
                }
                Some(WireChunk::Embedded {
                    provider,
                    usage,
                    charged_micros,
                }) => {
                    let Some(vectors) = vectors.into_iter().collect::<Option<Vec<_>>>() else {
                        tracing::error!(request = %self.request_id, "an embedding went missing");
                        return Err(Unanswered::Lost);
                    };
                    return Ok(EmbeddingsAnswer {
                        provider,
                        vectors,
                        usage,
                        charged_micros,
                    });
                }
                Some(WireChunk::Failed {
                    code,
                    message,
                    status,
                    retry_after_s,
                    ..
                }) => {
                    return Err(Unanswered::Failed(ChatFailure {
                        code,
                        message,
                        status,
                        retry_after_s,
                    }))
                }
                Some(_) => {}
                None => return Err(Unanswered::Lost),
            }
        }
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The client went away: stop the worker; it charges what was produced.
        let client = self.client.clone();
        let subject = std::mem::take(&mut self.cancel_subject);
        tokio::spawn(async move {
            if let Err(err) = client.publish(subject, Bytes::new()).await {
                tracing::debug!(error = %err, "could not publish a cancellation");
            }
        });
    }
}
