//! The inference worker: pulls [`InferenceCommand`]s from `HUB_COMMANDS`, calls the
//! provider, streams the answer back over core NATS, and settles the reservation from the
//! usage.
//!
//! **At most once.** A worker acknowledges a command (and waits for the server to confirm
//! the ack) *before* it calls a provider. A command is redelivered only if that ack never
//! happened, so no provider is ever called twice for one request. A worker that dies after
//! the ack leaves a reservation that the sweeper expires and releases: the user pays nothing.
//!
//! **Billing.** When a provider accepted the request, the user pays for the prompt and for
//! the tokens produced (all of them when the answer completed; those delivered when the
//! client went away or the stream broke), at the model's price as accepted, capped at the
//! reservation. Tokens produced include a reasoning model's thinking: reported usage counts
//! it already, and an estimate counts its text as output, though it is not forwarded. When
//! no provider accepted it, the reservation is released.
//!
//! **No answer unpaid.** The settlement is durable before the answer's last chunk is sent:
//! written to the account, or, when Postgres does not take it, to JetStream
//! ([`crate::settlement`]), from where a settler applies it, retried until Postgres does.
//! Neither the database going away nor this process dying after the answer loses the
//! charge.

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures::{FutureExt, StreamExt};
use hub_commands::{CreditAccounts, SharedClock};
use hub_domain::pricing::{Price, TokenUsage};
use hub_domain::{
    AccountId, CreditCommand, CreditError, Credits, RequestId, TokenSource, UsageOutcome,
    UsageRecord,
};
use hub_nats::Topology;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::ToolCall;
use crate::embed::EmbedRequest;
use crate::providers::{ProviderError, StreamEvent};
use crate::router::{InFlight, ProviderRouter, RouteError};
use crate::settlement::{Settlement, Settlements};
use crate::tokens;
use crate::wire::{InferenceCommand, WireChunk, WireUsage};

/// Tuning, passed explicitly.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Requests one worker process runs at once.
    pub concurrency: usize,
    /// Wait this long before retrying after an error.
    pub retry_delay: Duration,
    /// On shutdown, how long the requests in flight may take to finish before they are
    /// cancelled (each then settles for what it delivered).
    pub drain_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 1_024,
            retry_delay: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// How long cancelled requests may take to settle when the process stops.
const SETTLE_ON_SHUTDOWN: Duration = Duration::from_secs(10);

/// The durable consumer all workers share (the stream is a work queue: each command goes
/// to one of them).
pub const CONSUMER: &str = "inference_workers";

/// One worker process.
pub struct Worker {
    js: jetstream::Context,
    topology: Topology,
    router: Arc<ProviderRouter>,
    credits: Arc<CreditAccounts>,
    /// Where answered requests' settlements are written before their answers go out.
    settlements: Arc<Settlements>,
    /// The time a command's `start_by` is checked against (tests move it).
    clock: SharedClock,
    config: WorkerConfig,
    cancels: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// The requests being run, for shutdown to wait on.
    in_flight: TaskTracker,
}

impl Worker {
    pub fn new(
        js: jetstream::Context,
        topology: Topology,
        router: Arc<ProviderRouter>,
        credits: Arc<CreditAccounts>,
        settlements: Arc<Settlements>,
        clock: SharedClock,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            js,
            topology,
            router,
            credits,
            settlements,
            clock,
            config,
            cancels: Arc::default(),
            in_flight: TaskTracker::new(),
        }
    }

    /// Work until `shutdown` resolves; errors are logged and retried. Then drain: no new
    /// command is pulled (those fetched and not yet claimed go back to the stream for other
    /// workers), and the requests in flight get [`WorkerConfig::drain_timeout`] to finish;
    /// any still running then are cancelled, so each settles for what it delivered, and the
    /// call returns once they have.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let this = Arc::new(self);
        let delay = this.config.retry_delay;
        hub_nats::leader::supervise("worker", delay, shutdown, || this.clone().work()).await;
        this.drain().await;
    }

    async fn drain(&self) {
        self.in_flight.close();
        if self.in_flight.is_empty() {
            return;
        }
        tracing::info!(
            in_flight = self.in_flight.len(),
            "shutting down: letting the requests in flight finish"
        );
        if tokio::time::timeout(self.config.drain_timeout, self.in_flight.wait())
            .await
            .is_ok()
        {
            return;
        }
        let cancelled = self.cancels.lock().map_or(0, |map| {
            map.values().for_each(CancellationToken::cancel);
            map.len()
        });
        tracing::warn!(
            cancelled,
            "shutdown deadline passed: cancelling the requests still running (each is charged for what it delivered)"
        );
        // Cancelled requests settle at once; the bound is for a settlement that cannot be
        // written (it stays reserved, and the sweeper settles or releases it).
        if tokio::time::timeout(SETTLE_ON_SHUTDOWN, self.in_flight.wait())
            .await
            .is_err()
        {
            tracing::error!(
                left = self.in_flight.len(),
                "requests still settling at exit; the sweeper will finish them"
            );
        }
    }

    async fn work(self: Arc<Self>) -> anyhow::Result<()> {
        let stream = self.js.get_stream(self.topology.commands_stream()).await?;
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.to_string()),
                    filter_subject: self.topology.inference_command_subject(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: i64::try_from(self.config.concurrency * 2).unwrap_or(2_048),
                    ..Default::default()
                },
            )
            .await?;
        // One subscription for every cancellation aimed at this process's requests.
        let mut cancellations = self
            .js
            .client()
            .subscribe(self.topology.inference_cancel_all())
            .await?;
        let cancels = self.cancels.clone();
        let prefix_len = self.topology.inference_cancel_subject("").len();
        let listener = tokio::spawn(async move {
            while let Some(message) = cancellations.next().await {
                let request = message
                    .subject
                    .as_str()
                    .get(prefix_len..)
                    .unwrap_or_default();
                if let Ok(map) = cancels.lock() {
                    if let Some(token) = map.get(request) {
                        token.cancel();
                    }
                }
            }
        });
        let _listener = AbortOnDrop(listener);

        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.concurrency.min(256))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        tracing::info!("inference worker is pulling commands");
        while let Some(message) = messages.next().await {
            let message = message?;
            let permit = permits.clone().acquire_owned().await?;
            let this = self.clone();
            // Tracked, so that shutdown waits for it (a detached task would die with the
            // process mid-answer).
            self.in_flight.spawn(async move {
                this.handle(message).await;
                drop(permit);
            });
        }
        anyhow::bail!("the command stream ended")
    }

    async fn handle(&self, message: jetstream::Message) {
        // Claim before calling anyone: confirmed by the server, or not run at all.
        if let Err(err) = message.double_ack().await {
            tracing::warn!(error = %err, "could not acknowledge an inference command; leaving it");
            return;
        }
        let command: InferenceCommand = match serde_json::from_slice(&message.payload) {
            Ok(command) => command,
            Err(err) => {
                tracing::error!(error = %err, "unreadable inference command dropped");
                return;
            }
        };
        let token = CancellationToken::new();
        if let Ok(mut map) = self.cancels.lock() {
            map.insert(command.request_id.clone(), token.clone());
        }
        let request_id = command.request_id.clone();
        // Every line logged for the request names it and the client's x-request-id; with
        // traces on, the span is the child of the API's `publish` of the command.
        let span = tracing::info_span!(
            "process",
            request = %request_id,
            request_id = command.correlation_id.as_deref().unwrap_or(""),
        );
        hub_nats::trace_context::follow(&span, message.headers.as_ref());
        // Its events (the settlement) name the client's request and this command.
        let trace = hub_commands::trace::Trace {
            correlation_id: command.correlation_id.clone(),
            causation_id: Some(request_id.clone()),
        };
        let work = hub_commands::trace::scope(trace, self.execute(command, token));
        tracing::Instrument::instrument(work, span).await;
        if let Ok(mut map) = self.cancels.lock() {
            map.remove(&request_id);
        }
    }

    async fn execute(&self, command: InferenceCommand, cancel: CancellationToken) {
        let reply = command
            .reply_subject
            .clone()
            .unwrap_or_else(|| self.topology.inference_reply_subject(&command.request_id));
        let send = |chunk: WireChunk| self.send(&reply, chunk);
        // The request's one deadline, fixed at acceptance, on this process's monotonic clock.
        let now = self.clock.now();
        let deadline_at = command.deadline();
        let Some(left) = (deadline_at - now)
            .to_std()
            .ok()
            .filter(|left| !left.is_zero())
        else {
            self.release(&command).await;
            crate::metrics::unanswered(&command.model, Some("expired"));
            send(failed(
                "expired",
                "the request waited too long for a worker",
                504,
                None,
                0,
            ))
            .await;
            return;
        };
        let deadline = tokio::time::Instant::now() + left;
        let started = Instant::now();
        if let Some(request) = command.embed.clone() {
            self.embed(&command, request, &reply, deadline, cancel)
                .await;
            return;
        }
        let in_flight = InFlight::default();
        let opened = tokio::select! {
            opened = self.router.open_until(command.chat_request(), deadline, &in_flight) => opened,
            () = cancel.cancelled() => {
                // Once the request was sent to a provider, its prompt is owed whether or
                // not a token came back; before that, nothing is.
                match in_flight.sent_to() {
                    Some(provider) => {
                        let run = Run::new(provider, UsageOutcome::Cancelled);
                        self.conclude(&command, &reply, run, started).await;
                    }
                    None => {
                        self.release(&command).await;
                        crate::metrics::unanswered(&command.model, None);
                    }
                }
                return;
            }
        };
        let mut opened = match opened {
            Ok(opened) => opened,
            Err(err) => {
                self.release(&command).await;
                crate::metrics::unanswered(&command.model, Some(err.code()));
                send(route_failure(&err)).await;
                return;
            }
        };
        if !command.whole {
            send(WireChunk::Started {
                provider: opened.provider.clone(),
            })
            .await;
        }

        let mut run = Run::new(opened.provider.clone(), UsageOutcome::Completed);
        let mut seq = 0u64;
        // An event read while coalescing deltas, handled on the next pass.
        let mut held = None;
        loop {
            let event = match held.take() {
                Some(event) => event,
                None => tokio::select! {
                    event = opened.stream.next() => event,
                    () = cancel.cancelled() => {
                        run.outcome = UsageOutcome::Cancelled;
                        break;
                    }
                },
            };
            match event {
                Some(Ok(StreamEvent::Delta { text: mut piece })) => {
                    // Deltas the upstream has already sent travel as one message: a fast
                    // or backlogged upstream costs a few messages, not one per token,
                    // and nothing waits for a delta that has not arrived.
                    while let Some(next) = opened.stream.next().now_or_never() {
                        match next {
                            Some(Ok(StreamEvent::Delta { text: more })) => piece.push_str(&more),
                            other => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    if piece.is_empty() {
                        continue;
                    }
                    run.first_token_ms
                        .get_or_insert_with(|| millis(started.elapsed()));
                    run.text.push_str(&piece);
                    if !command.whole {
                        seq += 1;
                        send(WireChunk::Delta { seq, text: piece }).await;
                    }
                }
                Some(Ok(StreamEvent::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                })) => {
                    run.first_token_ms
                        .get_or_insert_with(|| millis(started.elapsed()));
                    run.tool_call(index, id.as_deref(), name.as_deref(), &arguments);
                    if !command.whole {
                        seq += 1;
                        send(WireChunk::ToolCall {
                            seq,
                            index,
                            id,
                            name,
                            arguments,
                        })
                        .await;
                    }
                }
                Some(Ok(StreamEvent::Reasoning { text })) => {
                    // Not forwarded (the answer stays as it was), and not the first token of
                    // `first_token_ms`, which measures what the client sees; kept to be
                    // counted should the provider report no usage.
                    run.reasoning.push_str(&text);
                }
                Some(Ok(StreamEvent::Usage(usage))) => run.reported = Some(usage),
                Some(Ok(StreamEvent::Finish { reason })) => run.finish_reason = reason,
                Some(Err(err)) => {
                    crate::metrics::upstream_error(&command.model, &run.provider, err.code());
                    run.outcome = UsageOutcome::Broken;
                    run.broken = Some(err);
                    break;
                }
                None => break,
            }
        }
        if run.broken.is_some() {
            opened.span.record("otel.status_code", "ERROR");
        }
        // Dropping the stream aborts the upstream call (a cancelled or broken request), and
        // ends its `provider call` span.
        drop(opened);
        self.conclude(&command, &reply, run, started).await;
    }

    /// Runs an embeddings command: the vectors from the model's providers, the settlement
    /// from the prompt tokens they report (the hub's count when they report none), then one
    /// chunk per vector and the last. A cancel before an upstream has the request releases
    /// it; after, the prompt is owed, as with a chat.
    async fn embed(
        &self,
        command: &InferenceCommand,
        request: EmbedRequest,
        reply: &str,
        deadline: tokio::time::Instant,
        cancel: CancellationToken,
    ) {
        let started = Instant::now();
        let in_flight = InFlight::default();
        let answered = tokio::select! {
            answered = self.router.embed_until(request, deadline, &in_flight) => answered,
            () = cancel.cancelled() => Err(RouteError::Provider {
                provider: in_flight.sent_to().unwrap_or_default(),
                attempts: 0,
                error: ProviderError::StreamBroken("cancelled by the client".into()),
            }),
        };
        let (provider, embeddings) = match answered {
            Ok(answered) => answered,
            Err(err) => {
                match (cancel.is_cancelled(), in_flight.sent_to()) {
                    (true, Some(provider)) => {
                        let usage = TokenUsage {
                            input_tokens: command.prompt_tokens,
                            ..TokenUsage::default()
                        };
                        let record = self.usage_record(
                            command,
                            provider,
                            usage,
                            TokenSource::Estimated,
                            started,
                            None,
                            UsageOutcome::Cancelled,
                        );
                        self.settle(command, record).await;
                    }
                    (cancelled, _) => {
                        self.release(command).await;
                        // A cancel before any provider had it is not a failure.
                        let code = (!cancelled).then(|| err.code());
                        crate::metrics::unanswered(&command.model, code);
                        self.send(reply, route_failure(&err)).await;
                    }
                }
                return;
            }
        };
        let (usage, source) = match embeddings.usage {
            Some(usage) => (usage, TokenSource::Provider),
            None => (
                TokenUsage {
                    input_tokens: command.prompt_tokens,
                    ..TokenUsage::default()
                },
                TokenSource::Estimated,
            ),
        };
        let took = Some(millis(started.elapsed()));
        let record = self.usage_record(
            command,
            provider.clone(),
            usage,
            source,
            started,
            took,
            UsageOutcome::Completed,
        );
        let (charged, _) = self.settle(command, record).await;
        for (index, vector) in embeddings.vectors.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            self.send(reply, WireChunk::Embedding { index, vector })
                .await;
        }
        let usage = WireUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: 0,
            cached_tokens: 0,
            reasoning_tokens: 0,
            source,
        };
        self.send(
            reply,
            WireChunk::Embedded {
                provider,
                usage,
                charged_micros: charged,
            },
        )
        .await;
    }

    /// The usage record of a request, priced at the command's price (the reservation is
    /// charged should the price overflow).
    #[allow(clippy::too_many_arguments)]
    fn usage_record(
        &self,
        command: &InferenceCommand,
        provider: String,
        usage: TokenUsage,
        source: TokenSource,
        started: Instant,
        first_token_ms: Option<u64>,
        outcome: UsageOutcome,
    ) -> UsageRecord {
        let price: Price = command.price.into();
        let cost = match price.cost(&usage) {
            Ok(cost) => cost,
            Err(err) => {
                tracing::error!(error = %err, "cost overflow; charging the reservation");
                hub_domain::Credits::from_micros(command.reserved_micros)
            }
        };
        UsageRecord {
            model: command.model.clone(),
            provider,
            api_key: command.api_key,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            token_source: source,
            latency_ms: millis(started.elapsed()),
            first_token_ms,
            cost,
            price_version: command.price_version.clone(),
            outcome,
        }
    }

    /// Settles a request a provider accepted, from what it used, then sends its last chunk.
    async fn conclude(&self, command: &InferenceCommand, reply: &str, run: Run, started: Instant) {
        let tokenizer = self.router.tokenizer(&command.model).unwrap_or("o200k");
        // A reported output count includes the reasoning tokens (OpenAI's
        // `completion_tokens`, Anthropic's `output_tokens`): nothing is added to it. Without
        // one, the reasoning seen is output too, or a long hidden thinking phase cut short
        // would be free. So are the tool calls' names and arguments.
        let (usage, source) = match run.reported {
            Some(usage) if run.outcome == UsageOutcome::Completed => (usage, TokenSource::Provider),
            _ => {
                let calls: String = run
                    .tool_calls
                    .iter()
                    .flat_map(|c| [c.name.as_str(), c.arguments.as_str()])
                    .collect();
                let answer = tokens::count_text_tokens_off_runtime(tokenizer, &run.text).await
                    + tokens::count_text_tokens_off_runtime(tokenizer, &calls).await;
                let reasoning =
                    tokens::count_text_tokens_off_runtime(tokenizer, &run.reasoning).await;
                if reasoning > 0 {
                    tracing::debug!(request = %command.request_id, answer, reasoning,
                        "output estimated, reasoning included");
                }
                let usage = TokenUsage {
                    input_tokens: command.prompt_tokens,
                    output_tokens: answer.saturating_add(reasoning),
                    cached_input_tokens: 0,
                    reasoning_tokens: 0,
                };
                (usage, TokenSource::Estimated)
            }
        };
        let record = self.usage_record(
            command,
            run.provider.clone(),
            usage,
            source,
            started,
            run.first_token_ms,
            run.outcome,
        );
        let (charged, deferred) = self.settle(command, record).await;
        let wire_usage = WireUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            cached_tokens: usage.cached_input_tokens,
            reasoning_tokens: usage.reasoning_tokens.min(usage.output_tokens),
            source,
        };
        let last = match run.broken {
            Some(err @ ProviderError::Timeout { .. }) => failed(
                "upstream_timeout",
                &format!("the answer did not finish in time: {err}"),
                504,
                None,
                charged,
            ),
            Some(err) => failed(
                "upstream_stream_broken",
                &format!("the provider's stream broke: {err}"),
                502,
                None,
                charged,
            ),
            None if command.whole => WireChunk::Answered {
                provider: run.provider,
                text: run.text,
                tool_calls: run.tool_calls,
                finish_reason: run.finish_reason,
                usage: wire_usage,
                charged_micros: charged,
                outcome: run.outcome,
            },
            None => WireChunk::Finished {
                finish_reason: run.finish_reason,
                usage: wire_usage,
                charged_micros: charged,
                outcome: run.outcome,
            },
        };
        self.send(reply, last).await;
        if deferred && crash_requested(CrashPoint::AfterDeferredAnswer) {
            // The answer must have left the process: a crash before it reached the client
            // would test nothing.
            let _ = self.js.client().flush().await;
            tracing::error!("AIHUB_CRASH_AT=after_deferred_answer: stopping dead after an answer");
            std::process::abort();
        }
    }

    /// Sends one chunk of an answer to the API process that asked.
    async fn send(&self, reply: &str, chunk: WireChunk) {
        match serde_json::to_vec(&chunk) {
            Ok(body) => {
                let client = self.js.client();
                if let Err(err) = client.publish(reply.to_owned(), body.into()).await {
                    tracing::debug!(error = %err, "could not stream a chunk back");
                }
            }
            Err(err) => tracing::error!(error = %err, "could not encode a chunk"),
        }
    }

    /// Make the settlement durable before the answer goes out: written to the account when
    /// Postgres takes it within [`DIRECT_SETTLE_WAIT`], else handed to JetStream for the
    /// settlers ([`crate::settlement`]). Returns what it charges (the account's answer, or
    /// the cost capped at the reservation, as the account charges an active reservation)
    /// and whether it was handed on. Traced as the span `settle` (`settlement`: `direct`,
    /// `deferred`, or `refused`).
    #[tracing::instrument(
        name = "settle",
        skip_all,
        fields(
            request = %command.request_id,
            settlement = tracing::field::Empty,
            charged_micros = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    )]
    async fn settle(&self, command: &InferenceCommand, usage: UsageRecord) -> (i64, bool) {
        let (charged, deferred) = self.settle_durably(command, usage).await;
        let span = tracing::Span::current();
        span.record("charged_micros", charged);
        span.record("settlement", if deferred { "deferred" } else { "direct" });
        (charged, deferred)
    }

    async fn settle_durably(&self, command: &InferenceCommand, usage: UsageRecord) -> (i64, bool) {
        let reserved = Credits::from_micros(command.reserved_micros);
        let charged = usage.cost.min(reserved).max(Credits::ZERO).micros();
        crate::metrics::settled(&usage);
        let Ok(request_id) = RequestId::parse(&command.request_id) else {
            tracing::error!(request = %command.request_id, "an answered request has no valid id; not settled");
            return (0, false);
        };
        let settlement = Settlement {
            account: AccountId(command.account),
            request_id,
            usage,
            written_at: self.clock.now(),
        };
        match tokio::time::timeout(
            DIRECT_SETTLE_WAIT,
            self.settlements.apply(settlement.clone()),
        )
        .await
        {
            Ok(Ok(applied)) => return (applied.charged_micros, false),
            Ok(Err(err)) if !err.is_transient() => {
                tracing::Span::current().record("otel.status_code", "ERROR");
                tracing::error!(request = %command.request_id, error = %err, "an answered request's settlement was refused");
                return (0, false);
            }
            Ok(Err(err)) => {
                tracing::warn!(request = %command.request_id, error = %err, "settlement deferred to JetStream");
            }
            Err(_) => {
                tracing::warn!(request = %command.request_id, "settlement slow; deferred to JetStream");
            }
        }
        crate::metrics::settlement_deferred();
        // Retried for as long as the reservation holds, should JetStream refuse it too.
        let patience = (command.deadline() - self.clock.now())
            .to_std()
            .unwrap_or_default()
            .max(SETTLE_PATIENCE_MIN);
        if let Err(err) = self.settlements.defer(&settlement, patience).await {
            tracing::error!(request = %command.request_id, error = %err,
                "an answered request could not be settled; its reservation will expire");
        }
        (charged, true)
    }

    async fn release(&self, command: &InferenceCommand) {
        let Ok(request_id) = RequestId::parse(&command.request_id) else {
            return;
        };
        let release = CreditCommand::ReleaseReservation { request_id };
        match self
            .credits
            .execute(AccountId(command.account), release, "worker")
            .await
        {
            Ok(_)
            | Err(hub_commands::CommandError::Rejected(CreditError::ReservationExpired(_))) => {}
            Err(err) => {
                tracing::warn!(request = %command.request_id, error = %err, "could not release a reservation; it will expire");
            }
        }
    }
}

/// What a request a provider accepted produced, for its settlement and last chunk.
struct Run {
    /// The provider that accepted it.
    provider: String,
    /// The answer's text as delivered.
    text: String,
    /// The model's reasoning as received (not delivered), for an estimate of the output.
    reasoning: String,
    /// The tool calls as delivered, by index.
    tool_calls: Vec<ToolCall>,
    /// Usage the provider reported, if it did.
    reported: Option<TokenUsage>,
    finish_reason: String,
    first_token_ms: Option<u64>,
    outcome: UsageOutcome,
    /// What ended the stream early, if anything did.
    broken: Option<ProviderError>,
}

impl Run {
    /// Adds a piece of a tool call.
    fn tool_call(&mut self, index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) {
        if !ToolCall::merge(&mut self.tool_calls, index, id, name, arguments) {
            tracing::warn!(
                index,
                "a tool call past the most one answer may carry was dropped"
            );
        }
    }

    fn new(provider: String, outcome: UsageOutcome) -> Self {
        Run {
            provider,
            text: String::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
            reported: None,
            finish_reason: "stop".to_string(),
            first_token_ms: None,
            outcome,
            broken: None,
        }
    }
}

/// The least time a settlement is retried for when neither JetStream nor Postgres takes it.
const SETTLE_PATIENCE_MIN: Duration = Duration::from_secs(30);

/// How long the answer waits for Postgres to take its settlement before the settlement is
/// handed to JetStream instead (a settle that finishes later anyway is applied once).
const DIRECT_SETTLE_WAIT: Duration = Duration::from_secs(1);

/// Where a crash test may stop a worker process dead, named by `AIHUB_CRASH_AT` (read
/// once; unset in any real deployment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashPoint {
    /// `after_deferred_answer`: right after an answer was delivered whose settlement
    /// Postgres did not take, so it waits in JetStream (without a settler in the process,
    /// nothing here applies it).
    AfterDeferredAnswer,
}

fn crash_requested(point: CrashPoint) -> bool {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("AIHUB_CRASH_AT").ok());
    at.as_deref() == Some("after_deferred_answer") && point == CrashPoint::AfterDeferredAnswer
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn failed(
    code: &str,
    message: &str,
    status: u16,
    retry_after_s: Option<u64>,
    charged: i64,
) -> WireChunk {
    WireChunk::Failed {
        code: code.to_string(),
        message: message.to_string(),
        status,
        retry_after_s,
        charged_micros: charged,
    }
}

/// No provider took the request: what the client is told.
fn route_failure(err: &RouteError) -> WireChunk {
    match err {
        RouteError::UnknownModel(model) => failed(
            "model_not_found",
            &format!("the model {model:?} does not exist"),
            404,
            None,
            0,
        ),
        RouteError::Unavailable { retry_after, .. } => failed(
            "upstream_unavailable",
            &err.to_string(),
            503,
            Some(retry_after.as_secs().max(1)),
            0,
        ),
        RouteError::Provider { error, .. } => provider_failure(error),
    }
}

fn provider_failure(err: &ProviderError) -> WireChunk {
    let message = err.to_string();
    match err {
        ProviderError::RateLimited { retry_after } => failed(
            "upstream_rate_limited",
            &message,
            429,
            Some(retry_after.map_or(1, |d| d.as_secs().max(1))),
            0,
        ),
        ProviderError::Unauthorized { .. } => {
            failed("upstream_unauthorized", &message, 502, None, 0)
        }
        ProviderError::Timeout { .. } => failed("upstream_timeout", &message, 504, None, 0),
        ProviderError::BadRequest { .. } => failed("invalid_request", &message, 400, None, 0),
        _ => failed("upstream_error", &message, 502, None, 0),
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
