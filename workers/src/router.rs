//! Routes a request for a model to its providers: retries, fallback and cooldown.
//!
//! [`ProviderRouter::open`] tries the model's providers in their configured order. On each it
//! waits for the **first token** (the first delta or reasoning, or the end of an empty
//! answer), so that everything that can fail before the upstream generated anything is
//! retried or falls back. Reasoning counts: it is output the upstream bills, so a stream that
//! breaks while the model thinks is charged, never sent again at the hub's expense:
//!
//! - a retryable error ([`ProviderError::retryable`]: 429, 5xx, connect error, connect or
//!   first-token timeout) is retried on the same provider up to `retries_max` times, after an
//!   exponential backoff (`backoff_base_ms × 2^n`, capped at `backoff_max_ms`, half of it
//!   random). A `Retry-After` is honoured as the least pause; one longer than `backoff_max_ms`
//!   is not waited out: the provider is given up for this request;
//! - any other error falls back to the next provider at once (a rejected key, a broken stream),
//!   except [`ProviderError::BadRequest`]: the request itself is wrong, and is returned as is;
//! - a provider whose calls failed `cooldown_after_failures` times in a row is skipped for
//!   `cooldown_ms`; then one request probes it (half-open) while the others keep skipping it:
//!   success makes it healthy, failure cools it down again.
//!
//! Nothing is retried after the first token: [`Opened::stream`] yields an error item if the
//! stream breaks later, and the caller charges for what was delivered.
//!
//! **One deadline.** [`ProviderRouter::open_until`] takes the request's deadline, fixed when
//! the hub accepted it: every attempt, backoff, retry and fallback is bounded by what is left
//! of it (a pause that would end past it is not taken; the next provider is tried at once),
//! and the opened stream ends with a `total` timeout when it passes. No attempt gets a fresh
//! allowance of its own, so a request never outlives its reservation.
//!
//! **Who holds the request.** From the moment an attempt is sent until it fails,
//! [`InFlight::sent_to`] names its provider: a caller that cancels before the first token
//! owes that provider's prompt. (The HTTP client does not tell a connection still being made
//! from a request already written; with pooled keep-alive connections, the difference is the
//! odd new connection's handshake.)

use crate::capabilities::Capabilities;
use crate::embed::{EmbedRequest, Embeddings};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hub_domain::Price;
use rand::Rng;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{ModelsSettings, ProviderKind};
use crate::providers::openai::Dialect;
use crate::providers::{
    http_client, AnthropicProvider, ChatMessage, ChatRequest, EventStream, MockProvider,
    OpenAiProvider, Provider, ProviderError, StreamEvent, Timeouts, PHASE_TOTAL,
};
use crate::tokens::{count_prompt_tokens, Tokenizer};

/// What [`RouteError::Unavailable`] suggests waiting when the only provider not cooling is
/// being probed by another request.
pub const PROBE_RETRY_HINT: Duration = Duration::from_secs(1);

/// Which provider, if any, holds a request that [`ProviderRouter::open_until`] is still
/// opening: set when an attempt is sent upstream, cleared when that attempt fails before its
/// first token (a retry or fallback then starts afresh).
#[derive(Debug, Default)]
pub struct InFlight(Mutex<Option<String>>);

impl InFlight {
    /// The provider the request was sent to and that has not failed it: its prompt is owed.
    pub fn sent_to(&self) -> Option<String> {
        self.lock().clone()
    }

    fn set(&self, provider: Option<&str>) {
        *self.lock() = provider.map(str::to_owned);
    }

    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        // A plain value, valid whatever panicked while holding the lock.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Routes requests to the providers of every configured model. Share it (`Arc`) between
/// tasks: provider health is shared by every request of the process.
pub struct ProviderRouter {
    /// In configuration order.
    models: Vec<Model>,
    /// Model name → index in `models`.
    index: HashMap<String, usize>,
    policy: Policy,
    /// `max_tokens` of a request that names none.
    default_max_output_tokens: u32,
    /// What [`ProviderRouter::open`] gives a request with no deadline of its own.
    total_timeout: Duration,
}

/// One configured model.
struct Model {
    name: String,
    price: Price,
    max_output_tokens: Option<u32>,
    context_tokens: Option<u32>,
    tokenizer: Tokenizer,
    /// The largest prompt margin among its providers' kinds, in percent.
    prompt_margin_percent: u32,
    /// In fallback order.
    providers: Vec<Arc<Slot>>,
    capabilities: Capabilities,
}

/// One provider of one model, with its health.
struct Slot {
    name: String,
    kind: ProviderKind,
    /// The model id sent upstream.
    upstream_model: String,
    provider: Box<dyn Provider>,
    policy: Policy,
    health: Mutex<Health>,
}

/// The retry and cooldown settings.
#[derive(Clone, Copy, Debug)]
struct Policy {
    retries_max: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    cooldown_after_failures: u32,
    cooldown: Duration,
}

/// A provider's circuit breaker.
#[derive(Debug)]
struct Health {
    state: State,
    consecutive_failures: u32,
    /// [`ProviderError::code`] of the last failure.
    last_error: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Healthy,
    /// Skipped until then; afterwards the next request probes it.
    Cooling {
        until: Instant,
    },
    /// One request is probing it; the others skip it.
    Probing,
}

/// Whether a request may use a provider now.
enum Admission {
    /// Yes, with retries.
    Normal,
    /// Yes, once: it is the probe after a cooldown.
    Probe,
    /// No, until about then.
    Skip { until: Instant },
}

impl Health {
    fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Healthy => Admission::Normal,
            State::Cooling { until } if now < until => Admission::Skip { until },
            State::Cooling { .. } => {
                self.state = State::Probing;
                Admission::Probe
            }
            State::Probing => Admission::Skip {
                until: now + PROBE_RETRY_HINT,
            },
        }
    }
}

/// A stream opened by [`ProviderRouter::open`]: the first token has arrived.
pub struct Opened {
    /// The name of the provider that answers (for the usage record).
    pub provider: String,
    /// Its kind.
    pub kind: ProviderKind,
    /// The answer: the events up to the first token (already received) and the rest as it
    /// comes. An error item ends it; it is never retried.
    pub stream: EventStream,
    /// Upstream calls made, this one included (1 when the first call answered).
    pub attempts: u32,
    /// The `provider call` span of the attempt that answered: it ends when this is dropped,
    /// with the stream.
    pub span: tracing::Span,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("provider", &self.provider)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Why no stream could be opened.
///
/// How the API answers each (OpenAI's error shape): `UnknownModel` → 404; `Unavailable` → 503
/// with `Retry-After`; `Provider` by its error: `RateLimited` → 429 with `Retry-After` when
/// known, `Timeout` → 504, `BadRequest` → 400, anything else (`Unauthorized` included: the
/// hub's key, not the client's, was refused) → 502.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No model has this name.
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    /// Every provider of the model is cooling down after repeated failures.
    #[error("every provider of model `{model}` is cooling down")]
    Unavailable {
        model: String,
        /// When the first of them may be tried again.
        retry_after: Duration,
    },
    /// The last provider tried failed (after its retries and every fallback).
    #[error("provider `{provider}` failed after {attempts} attempt(s): {error}")]
    Provider {
        /// The last provider tried.
        provider: String,
        /// Upstream calls made in all, over every provider.
        attempts: u32,
        #[source]
        error: ProviderError,
    },
}

impl RouteError {
    /// The provider error, for the `Provider` variant.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            RouteError::Provider { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A stable, low-cardinality code: `unknown_model`, `unavailable`, or the provider error's
    /// [`ProviderError::code`].
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::UnknownModel(_) => "unknown_model",
            RouteError::Unavailable { .. } => "unavailable",
            RouteError::Provider { error, .. } => error.code(),
        }
    }
}

/// A model as `GET /v1/models` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    /// Micro-credits per million tokens.
    pub price: Price,
    /// Changes whenever the price does: recorded with each usage event.
    pub price_version: String,
    /// The model's limit on generated tokens, if it has one.
    pub max_output_tokens: Option<u32>,
    /// `max_tokens` of a request that names none.
    pub default_max_tokens: u32,
    pub context_tokens: Option<u32>,
    /// `o200k` or `cl100k`.
    pub tokenizer: &'static str,
    /// How much more than the hub's count its providers may count a prompt, in percent:
    /// the prompt is reserved with this margin (`models.prompt_margin_percent`).
    pub prompt_margin_percent: u32,
    /// Provider names in fallback order.
    pub providers: Vec<String>,
    /// What the model can take.
    pub capabilities: Capabilities,
}

/// A provider's health, as `GET /api/providers/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProviderStatus {
    pub model: String,
    pub provider: String,
    pub kind: ProviderKind,
    pub state: HealthState,
    pub consecutive_failures: u32,
    /// [`ProviderError::code`] of its last failure, if any (kept after it recovers).
    pub last_error: Option<String>,
    /// While cooling: when it will be probed again.
    pub cooling_until: Option<DateTime<Utc>>,
}

/// The state of a provider's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Used normally.
    Healthy,
    /// Skipped after repeated failures, until `cooling_until`.
    Cooling,
    /// Cooled down: the next request (or the one in flight) probes it.
    Probing,
}

impl ProviderRouter {
    /// Validates `settings` and builds every model's providers over one HTTP client (rustls,
    /// the configured connect timeout).
    pub fn new(settings: &ModelsSettings) -> Result<Self, String> {
        settings.validate()?;
        let client = http_client(&settings.timeouts())?;
        Self::with_client(settings, client)
    }

    /// As [`ProviderRouter::new`], over a given HTTP client (which should carry the connect
    /// timeout).
    pub fn with_client(settings: &ModelsSettings, client: reqwest::Client) -> Result<Self, String> {
        settings.validate()?;
        let timeouts = settings.timeouts();
        let policy = Policy {
            retries_max: settings.retries_max,
            backoff_base: Duration::from_millis(settings.backoff_base_ms),
            backoff_max: Duration::from_millis(settings.backoff_max_ms),
            cooldown_after_failures: settings.cooldown_after_failures,
            cooldown: Duration::from_millis(settings.cooldown_ms),
        };
        let mut models = Vec::with_capacity(settings.models.len());
        let mut index = HashMap::new();
        for (position, model) in settings.models.iter().enumerate() {
            let tokenizer = Tokenizer::parse(&model.tokenizer).unwrap_or(Tokenizer::O200k);
            // Build the encoder now: the first request should not wait for it.
            crate::tokens::preload(tokenizer.as_str());
            let providers = model
                .providers
                .iter()
                .map(|p| {
                    let name = p.effective_name();
                    let provider = build_provider(p.kind, name, p, &client, &timeouts, tokenizer);
                    Arc::new(Slot {
                        name: name.to_owned(),
                        kind: p.kind,
                        upstream_model: p
                            .upstream_model
                            .clone()
                            .unwrap_or_else(|| model.name.clone()),
                        provider,
                        policy,
                        health: Mutex::new(Health {
                            state: State::Healthy,
                            consecutive_failures: 0,
                            last_error: None,
                        }),
                    })
                })
                .collect();
            let prompt_margin_percent = model
                .providers
                .iter()
                .map(|p| settings.prompt_margin_percent.percent(p.kind))
                .max()
                .unwrap_or(0);
            models.push(Model {
                name: model.name.clone(),
                price: model.price.price(),
                max_output_tokens: model.max_output_tokens,
                context_tokens: model.context_tokens,
                tokenizer,
                prompt_margin_percent,
                providers,
                capabilities: Capabilities {
                    vision: model.vision,
                    image_tokens_max: model.image_tokens_max,
                    tools: model.tools,
                    reasoning: model.reasoning,
                    embedding_dimensions: model.embedding_dimensions,
                    kinds: model.providers.iter().map(|p| p.kind).collect(),
                },
            });
            index.insert(model.name.clone(), position);
        }
        Ok(ProviderRouter {
            models,
            index,
            policy,
            default_max_output_tokens: settings.default_max_output_tokens,
            total_timeout: timeouts.total,
        })
    }

    fn model(&self, name: &str) -> Option<&Model> {
        self.index.get(name).and_then(|i| self.models.get(*i))
    }

    /// Opens a stream of the answer to `request` from its model (`request.model`, a
    /// configured name), trying the model's providers as the module documentation says, and
    /// returns once the first token has arrived.
    ///
    /// `request.max_tokens` is capped at the model's `max_output_tokens`. Dropping the future
    /// cancels the attempt in flight. The request's deadline is the total timeout from now
    /// (see [`ProviderRouter::open_until`]).
    pub async fn open(&self, request: ChatRequest) -> Result<Opened, RouteError> {
        let deadline = Instant::now() + self.total_timeout;
        self.open_until(request, deadline, &InFlight::default())
            .await
    }

    /// As [`ProviderRouter::open`], every attempt, pause and the opened stream bounded by
    /// `deadline`; `in_flight` names the provider holding the request while it is opened.
    /// Past the deadline, the answer is a `total` timeout.
    pub async fn open_until(
        &self,
        mut request: ChatRequest,
        deadline: Instant,
        in_flight: &InFlight,
    ) -> Result<Opened, RouteError> {
        let Some(entry) = self.model(&request.model) else {
            return Err(RouteError::UnknownModel(request.model));
        };
        if let Some(max) = entry.max_output_tokens {
            request.max_tokens = request.max_tokens.min(max);
        }
        let request = &request;
        let (slot, stream, attempts, span) = self
            .route(entry, deadline, in_flight, |slot| {
                let upstream = request.for_upstream(&slot.upstream_model);
                until_first_token(slot.provider.stream(upstream), in_flight, slot)
            })
            .await?;
        Ok(Opened {
            provider: slot.name.clone(),
            kind: slot.kind,
            stream: bounded(watched(Arc::clone(slot), stream), deadline),
            attempts,
            span,
        })
    }

    /// Embeds `request`'s inputs with its model (`request.model`), trying the model's
    /// providers as [`ProviderRouter::open_until`] does (retries, fallback, cooldown), every
    /// attempt bounded by `deadline`. Returns the provider that answered and its answer.
    pub async fn embed_until(
        &self,
        request: EmbedRequest,
        deadline: Instant,
        in_flight: &InFlight,
    ) -> Result<(String, Embeddings), RouteError> {
        let Some(entry) = self.model(&request.model) else {
            return Err(RouteError::UnknownModel(request.model));
        };
        let request = &request;
        let (slot, embeddings, _, _) = self
            .route(entry, deadline, in_flight, |slot| {
                in_flight.set(Some(&slot.name));
                slot.provider
                    .embed(request.for_upstream(&slot.upstream_model))
            })
            .await?;
        Ok((slot.name.clone(), embeddings))
    }

    /// Tries `entry`'s providers in order with `attempt` until one succeeds: each provider
    /// not cooling gets `retries_max` retries of a retryable error (with backoff, never
    /// past `deadline`), a cooling one is skipped (or probed once when its cooldown is
    /// over), a refused request (`BadRequest`) ends the search. Returns the provider that
    /// succeeded, its answer, the attempts made and the `provider call` span of the one
    /// that succeeded (each attempt has one: `model`, `provider`, `attempt`, and the error's
    /// code and an error status when it failed).
    async fn route<'s, T, F, Fut>(
        &'s self,
        entry: &'s Model,
        deadline: Instant,
        in_flight: &InFlight,
        attempt: F,
    ) -> Result<(&'s Arc<Slot>, T, u32, tracing::Span), RouteError>
    where
        F: Fn(&'s Arc<Slot>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut attempts = 0u32;
        let mut last: Option<(String, ProviderError)> = None;
        let mut soonest: Option<Instant> = None;
        let past_deadline = |attempts| RouteError::Provider {
            provider: String::new(),
            attempts,
            error: ProviderError::Timeout { phase: PHASE_TOTAL },
        };
        for (position, slot) in entry.providers.iter().enumerate() {
            if Instant::now() >= deadline {
                break;
            }
            let (tries, mut probe) = match slot.lock().admit(Instant::now()) {
                Admission::Skip { until } => {
                    soonest = Some(soonest.map_or(until, |s| s.min(until)));
                    continue;
                }
                Admission::Normal => (self.policy.retries_max + 1, None),
                Admission::Probe => (1, Some(ProbeGuard(slot))),
            };
            if position > 0 {
                // Every provider before this one failed or was cooling down.
                crate::metrics::fallback(&entry.name, &slot.name);
            }
            for try_index in 0..tries {
                attempts += 1;
                let span = tracing::info_span!(
                    "provider call",
                    model = %entry.name,
                    provider = %slot.name,
                    provider_kind = slot.kind.as_str(),
                    attempt = attempts,
                    error.type = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                );
                let failed = |code: &str| {
                    span.record("error.type", code);
                    span.record("otel.status_code", "ERROR");
                };
                let call = tracing::Instrument::instrument(attempt(slot), span.clone());
                let Ok(outcome) = tokio::time::timeout_at(deadline, call).await else {
                    // The request's time is up: not the provider's failure, and nothing
                    // left to retry or fall back with.
                    failed("timeout_total");
                    crate::metrics::upstream_error(&entry.name, &slot.name, "timeout_total");
                    in_flight.set(None);
                    return Err(RouteError::Provider {
                        provider: slot.name.clone(),
                        attempts,
                        error: ProviderError::Timeout { phase: PHASE_TOTAL },
                    });
                };
                match outcome {
                    Ok(answer) => {
                        slot.succeeded();
                        if let Some(guard) = probe.take() {
                            guard.disarm();
                        }
                        return Ok((slot, answer, attempts, span));
                    }
                    Err(error @ ProviderError::BadRequest { .. }) => {
                        failed(error.code());
                        // The upstream answered: not a failure of the provider, nor worth
                        // another. A probe that got this is simply taken again later.
                        crate::metrics::upstream_error(&entry.name, &slot.name, error.code());
                        return Err(RouteError::Provider {
                            provider: slot.name.clone(),
                            attempts,
                            error,
                        });
                    }
                    Err(error) => {
                        failed(error.code());
                        in_flight.set(None);
                        tracing::warn!(
                            model = entry.name,
                            provider = slot.name,
                            code = error.code(),
                            %error,
                            "an upstream call failed before its first token"
                        );
                        crate::metrics::upstream_error(&entry.name, &slot.name, error.code());
                        let cooling = slot.failed(&error);
                        if cooling {
                            crate::metrics::cooldown(&entry.name, &slot.name);
                        }
                        if let Some(guard) = probe.take() {
                            guard.disarm();
                        }
                        let pause = if !error.retryable() || cooling || try_index + 1 == tries {
                            None
                        } else {
                            self.backoff(try_index, &error)
                        };
                        last = Some((slot.name.clone(), error));
                        // A pause that would end past the deadline leaves no time for the
                        // retry: the next provider, if any, is tried at once instead.
                        let Some(pause) = pause.filter(|p| Instant::now() + *p < deadline) else {
                            break;
                        };
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        match last {
            None if Instant::now() >= deadline => Err(past_deadline(attempts)),
            Some((provider, error)) => Err(RouteError::Provider {
                provider,
                attempts,
                error,
            }),
            None => Err(RouteError::Unavailable {
                model: entry.name.clone(),
                retry_after: soonest.map_or(PROBE_RETRY_HINT, |s| {
                    s.saturating_duration_since(Instant::now())
                }),
            }),
        }
    }

    /// The pause before retry number `retry_index + 1`, or `None` to give the provider up.
    fn backoff(&self, retry_index: u32, error: &ProviderError) -> Option<Duration> {
        let policy = &self.policy;
        let exponential = policy
            .backoff_base
            .saturating_mul(1u32 << retry_index.min(16))
            .min(policy.backoff_max);
        let half = exponential / 2;
        let jitter =
            rand::rng().random_range(0..=half.as_micros().min(u128::from(u64::MAX)) as u64);
        let pause = half + Duration::from_micros(jitter);
        match error {
            ProviderError::RateLimited {
                retry_after: Some(asked),
            } => (*asked <= policy.backoff_max).then(|| pause.max(*asked)),
            _ => Some(pause),
        }
    }

    /// Every provider's health, model by model in configuration order.
    pub fn status(&self) -> Vec<ProviderStatus> {
        let now = Instant::now();
        let wall = SystemTime::now();
        self.models
            .iter()
            .flat_map(|model| model.providers.iter().map(move |slot| (model, slot)))
            .map(|(model, slot)| {
                let health = slot.lock();
                let (state, cooling_until) = match health.state {
                    State::Healthy => (HealthState::Healthy, None),
                    State::Cooling { until } if until > now => {
                        let at = wall + (until - now);
                        (HealthState::Cooling, Some(DateTime::<Utc>::from(at)))
                    }
                    State::Cooling { .. } | State::Probing => (HealthState::Probing, None),
                };
                ProviderStatus {
                    model: model.name.clone(),
                    provider: slot.name.clone(),
                    kind: slot.kind,
                    state,
                    consecutive_failures: health.consecutive_failures,
                    last_error: health.last_error.map(str::to_owned),
                    cooling_until,
                }
            })
            .collect()
    }

    /// Every model, in configuration order.
    pub fn models(&self) -> Vec<ModelInfo> {
        self.models.iter().map(|m| self.info(m)).collect()
    }

    /// One model, if it exists.
    pub fn model_info(&self, model: &str) -> Option<ModelInfo> {
        self.model(model).map(|m| self.info(m))
    }

    fn info(&self, model: &Model) -> ModelInfo {
        let price = model.price;
        ModelInfo {
            name: model.name.clone(),
            price,
            price_version: format!(
                "{}/{}/{}",
                price.input_per_million.micros(),
                price.output_per_million.micros(),
                price.cached_input_per_million.micros()
            ),
            max_output_tokens: model.max_output_tokens,
            default_max_tokens: self.default_max_tokens(model),
            context_tokens: model.context_tokens,
            tokenizer: model.tokenizer.as_str(),
            prompt_margin_percent: model.prompt_margin_percent,
            providers: model.providers.iter().map(|s| s.name.clone()).collect(),
            capabilities: model.capabilities.clone(),
        }
    }

    fn default_max_tokens(&self, model: &Model) -> u32 {
        model
            .max_output_tokens
            .map_or(self.default_max_output_tokens, |max| {
                max.min(self.default_max_output_tokens)
            })
    }

    /// The model's price, if the model exists.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.model(model).map(|m| m.price)
    }

    /// The model's tokenizer (`o200k` or `cl100k`), if the model exists.
    pub fn tokenizer(&self, model: &str) -> Option<&'static str> {
        self.model(model).map(|m| m.tokenizer.as_str())
    }

    /// The `max_tokens` a request for `model` will be sent with: `requested`, or the default
    /// when absent, capped at the model's `max_output_tokens`. `None` for an unknown model.
    /// Reserve credits for this many output tokens.
    pub fn effective_max_tokens(&self, model: &str, requested: Option<u32>) -> Option<u32> {
        let entry = self.model(model)?;
        let wanted = requested.unwrap_or_else(|| self.default_max_tokens(entry));
        Some(
            entry
                .max_output_tokens
                .map_or(wanted, |max| wanted.min(max)),
        )
    }

    /// `messages` counted with the model's tokenizer ([`count_prompt_tokens`]).
    pub fn count_prompt_tokens(&self, model: &str, messages: &[ChatMessage]) -> Option<u64> {
        self.tokenizer(model)
            .map(|tokenizer| count_prompt_tokens(tokenizer, messages))
    }
}

fn build_provider(
    kind: ProviderKind,
    name: &str,
    settings: &crate::config::ProviderSettings,
    client: &reqwest::Client,
    timeouts: &Timeouts,
    tokenizer: Tokenizer,
) -> Box<dyn Provider> {
    let base_url = settings.effective_base_url().unwrap_or_default();
    let key = settings.api_key.clone();
    match kind {
        ProviderKind::Openai => Box::new(OpenAiProvider::new(
            name,
            client.clone(),
            base_url,
            key,
            Dialect::OpenAi,
            *timeouts,
        )),
        ProviderKind::Compatible => Box::new(OpenAiProvider::new(
            name,
            client.clone(),
            base_url,
            key,
            Dialect::Compatible,
            *timeouts,
        )),
        ProviderKind::Anthropic => Box::new(AnthropicProvider::new(
            name,
            client.clone(),
            base_url,
            key,
            *timeouts,
        )),
        ProviderKind::Mock => Box::new(MockProvider::new(
            name,
            tokenizer.as_str(),
            settings.mock_tokens_per_second.unwrap_or(0),
        )),
    }
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Health> {
        // The state is a few plain fields, valid whatever panicked while holding the lock.
        self.health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn succeeded(&self) {
        let mut health = self.lock();
        health.state = State::Healthy;
        health.consecutive_failures = 0;
    }

    /// Records a failure; returns whether the provider is now cooling down.
    fn failed(&self, error: &ProviderError) -> bool {
        let mut health = self.lock();
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        health.last_error = Some(error.code());
        let trips = health.state == State::Probing
            || health.consecutive_failures >= self.policy.cooldown_after_failures;
        if trips {
            health.state = State::Cooling {
                until: Instant::now() + self.policy.cooldown,
            };
            tracing::warn!(
                provider = self.name,
                failures = health.consecutive_failures,
                cooldown_ms = self.policy.cooldown.as_millis() as u64,
                "a provider cools down"
            );
        }
        trips
    }
}

/// Held while a request probes a cooled-down provider: if the request is dropped before the
/// probe has an outcome, the provider may be probed again at once.
struct ProbeGuard<'a>(&'a Slot);

impl ProbeGuard<'_> {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        let mut health = self.0.lock();
        if health.state == State::Probing {
            health.state = State::Cooling {
                until: Instant::now(),
            };
        }
    }
}

/// Sends the request (naming `slot` in `in_flight`), awaits the upstream's acceptance, then
/// its events up to the first delta, reasoning or tool call (or the finish of an empty answer); returns
/// a stream that replays them, then continues.
async fn until_first_token(
    opening: futures::future::BoxFuture<'_, Result<EventStream, ProviderError>>,
    in_flight: &InFlight,
    slot: &Slot,
) -> Result<EventStream, ProviderError> {
    // A provider's call is a lazy future: it is sent when first awaited, here.
    in_flight.set(Some(&slot.name));
    let mut stream = opening.await?;
    let mut received = Vec::new();
    while let Some(item) = stream.next().await {
        let event = item?;
        let first_token = matches!(
            event,
            StreamEvent::Delta { .. }
                | StreamEvent::Reasoning { .. }
                | StreamEvent::ToolCall { .. }
                | StreamEvent::Finish { .. }
        );
        received.push(Ok(event));
        if first_token {
            break;
        }
    }
    Ok(Box::pin(futures::stream::iter(received).chain(stream)))
}

/// `stream`, ended by a `total` timeout at `deadline` (the request's, not the provider's
/// failure: it is not recorded against the provider).
fn bounded(stream: EventStream, deadline: Instant) -> EventStream {
    let expiry = Box::pin(tokio::time::sleep_until(deadline));
    Box::pin(futures::stream::unfold(
        Some((stream, expiry)),
        |state| async move {
            let (mut stream, mut expiry) = state?;
            tokio::select! {
                biased;
                item = stream.next() => {
                    let item = item?;
                    // An error is always the last item.
                    let rest = item.is_ok().then_some((stream, expiry));
                    Some((item, rest))
                }
                () = &mut expiry => {
                    Some((Err(ProviderError::Timeout { phase: PHASE_TOTAL }), None))
                }
            }
        },
    ))
}

/// `stream`, recording a failure of `slot` if it breaks after the first token.
fn watched(slot: Arc<Slot>, stream: EventStream) -> EventStream {
    Box::pin(stream.inspect(move |item| {
        if let Err(error) = item {
            tracing::warn!(
                provider = slot.name,
                code = error.code(),
                %error,
                "an upstream stream broke after its first token"
            );
            slot.failed(error);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelSettings, ProviderSettings};

    fn router(tweak: impl FnOnce(&mut ModelsSettings)) -> ProviderRouter {
        let mut settings = ModelsSettings::default();
        tweak(&mut settings);
        match ProviderRouter::new(&settings) {
            Ok(router) => router,
            Err(error) => panic!("{error}"),
        }
    }

    fn request(model: &str, prompt: &str, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: model.to_owned(),
            messages: vec![ChatMessage::new("user", prompt)],
            max_tokens,
            ..ChatRequest::default()
        }
    }

    #[tokio::test]
    async fn the_default_router_answers_offline_with_the_mock() {
        let router = router(|_| {});
        let opened = router.open(request("mock-1", "hello", 50)).await;
        let Ok(opened) = opened else {
            panic!("{opened:?}")
        };
        assert_eq!((opened.provider.as_str(), opened.attempts), ("mock", 1));
        let events: Vec<_> = opened.stream.collect().await;
        assert!(matches!(
            events.first(),
            Some(Ok(StreamEvent::Delta { .. }))
        ));
        assert!(matches!(
            events.last(),
            Some(Ok(StreamEvent::Finish { .. }))
        ));
    }

    #[tokio::test]
    async fn an_unknown_model_is_refused() {
        let router = router(|_| {});
        let error = router.open(request("gpt-9", "hi", 5)).await.err();
        assert_eq!(error, Some(RouteError::UnknownModel("gpt-9".into())));
    }

    #[test]
    fn models_prices_and_max_tokens_come_from_settings() {
        let router = router(|s| {
            let mut capped = ModelSettings::mock("capped");
            capped.max_output_tokens = Some(100);
            capped.tokenizer = "cl100k".into();
            s.models.push(capped);
        });
        let models = router.models();
        assert_eq!(models.len(), 3);
        assert_eq!(models[0].name, "mock-1");
        assert_eq!(models[1].name, "mock-embed-1");
        assert_eq!(models[1].capabilities.embedding_dimensions, Some(256));
        assert_eq!(models[0].default_max_tokens, 1024);
        assert_eq!(models[2].default_max_tokens, 100);
        assert_eq!(models[0].price_version, "1000000/2000000/500000");
        assert_eq!(router.tokenizer("capped"), Some("cl100k"));
        assert_eq!(router.price("nope"), None);
        assert_eq!(router.effective_max_tokens("capped", Some(5000)), Some(100));
        assert_eq!(router.effective_max_tokens("mock-1", None), Some(1024));
        assert_eq!(
            router.effective_max_tokens("mock-1", Some(5000)),
            Some(5000)
        );
        let json = serde_json::to_value(&models[0]).unwrap_or_default();
        assert_eq!(
            json["price"]["output_per_million"],
            serde_json::json!(2_000_000)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() {
        let router = router(|s| {
            s.backoff_base_ms = 100;
            s.backoff_max_ms = 1_000;
        });
        let server = ProviderError::Upstream {
            status: 500,
            message: String::new(),
        };
        for (retry, low, high) in [(0, 50, 100), (1, 100, 200), (3, 400, 800), (9, 500, 1_000)] {
            let pause = router.backoff(retry, &server).unwrap_or_default();
            assert!(
                pause >= Duration::from_millis(low) && pause <= Duration::from_millis(high),
                "retry {retry}: {pause:?}"
            );
        }
        let asked = |ms| ProviderError::RateLimited {
            retry_after: Some(Duration::from_millis(ms)),
        };
        assert!(router.backoff(0, &asked(700)) >= Some(Duration::from_millis(700)));
        assert_eq!(router.backoff(0, &asked(5_000)), None);
    }

    #[test]
    fn status_lists_every_provider_as_healthy_at_first() {
        let router = router(|s| {
            let mut second = ProviderSettings::mock();
            second.name = Some("mock-b".into());
            s.models[0].providers.push(second);
        });
        let status = router.status();
        // mock-1's two providers, and the embedding model's.
        assert_eq!(status.len(), 3);
        assert!(status.iter().all(|s| s.state == HealthState::Healthy));
        let json = serde_json::to_value(&status[1]).unwrap_or_default();
        assert_eq!(json["provider"], serde_json::json!("mock-b"));
        assert_eq!(json["state"], serde_json::json!("healthy"));
        assert_eq!(json["kind"], serde_json::json!("mock"));
    }
}
