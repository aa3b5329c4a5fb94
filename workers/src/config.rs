//! The `[models]` section of the hub's settings: models, their prices and their providers, and
//! the timeouts, retries and cooldowns of every upstream call.
//!
//! The defaults describe one model, `mock-1`, served by the built-in [`ProviderKind::Mock`], so
//! that a hub with no provider keys runs offline. [`ModelsSettings::validate`] is called at
//! start-up and names the field at fault (`models.models[0].providers[1].base_url: ...`).

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use hub_domain::Price;
use serde::{Deserialize, Serialize};

use crate::providers::Timeouts;
use crate::tokens::Tokenizer;

/// Where an `openai` provider sends requests when no `base_url` is set.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Where an `anthropic` provider sends requests when no `base_url` is set.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// Most retries per provider per request: each waits up to `backoff_max_ms`, and a caller is
/// waiting for its first token.
pub const RETRIES_MAX_LIMIT: u32 = 10;
/// Most models one hub serves: `GET /v1/models` lists them all in one page.
pub const MODELS_MAX: usize = 1_000;
/// Most providers one model falls back through.
pub const PROVIDERS_PER_MODEL_MAX: usize = 16;
/// The highest price accepted, per million tokens of any kind: one million credits (in
/// micro-credits). Keeps every reservation far below the largest amount a command may move.
pub const PRICE_PER_MILLION_MAX_MICROS: i64 = 1_000_000 * 1_000_000;
/// The highest `admission_limit` accepted (tokio's semaphore holds fewer than 2^61 permits;
/// this is far above any useful value).
pub const ADMISSION_LIMIT_MAX: usize = 1_000_000;
/// The longest timeout accepted: one hour.
pub const TIMEOUT_MAX_MS: u64 = 3_600_000;
/// The largest prompt margin accepted, in percent: a prompt reserved for eleven times its
/// estimate is already a misconfiguration.
pub const PROMPT_MARGIN_PERCENT_MAX: u32 = 1_000;

/// Models, prices, providers and the resilience policy of every upstream call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsSettings {
    /// `max_tokens` of a request that names none (then capped by the model's own limit).
    pub default_max_output_tokens: u32,
    /// Longest wait for a TCP + TLS connection to an upstream.
    pub connect_timeout_ms: u64,
    /// Longest wait from sending a request to its first generated token.
    pub first_token_timeout_ms: u64,
    /// Longest one upstream call may take, from sending to the last token.
    pub total_timeout_ms: u64,
    /// Retries per provider of a request that failed before its first token with a retryable
    /// error (429, 5xx, connect error, first-token timeout). At most [`RETRIES_MAX_LIMIT`].
    pub retries_max: u32,
    /// First retry's backoff; it doubles with each retry, with jitter.
    pub backoff_base_ms: u64,
    /// Longest backoff, and the longest `Retry-After` that is waited out: an upstream asking
    /// for a longer pause is given up for this request.
    pub backoff_max_ms: u64,
    /// Consecutive failed calls after which a provider is skipped for `cooldown_ms`.
    pub cooldown_after_failures: u32,
    /// How long a failing provider is skipped before one request probes it again.
    pub cooldown_ms: u64,
    /// Requests one API process takes through admission (estimate, reserve, publish) at
    /// once; more are refused at once with 503 `overloaded` and `Retry-After: 1`. A burst
    /// beyond what Postgres and NATS take is shed instead of queued without bound (memory
    /// and latency). Streams already admitted do not count.
    pub admission_limit: usize,
    /// How much more than the hub's own count (OpenAI's tokenizers) each kind of provider
    /// may count a prompt, in percent: a request reserves its prompt with the largest margin
    /// among its model's providers, so that a provider reporting more prompt tokens than the
    /// hub estimated (within the margin) is still charged in full.
    pub prompt_margin_percent: PromptMargins,
    /// The models served, in the order `GET /v1/models` lists them.
    pub models: Vec<ModelSettings>,
}

/// Prompt margins per tokenizer family (a provider's kind), in percent of the hub's estimate.
///
/// The hub counts prompts with OpenAI's tokenizers. OpenAI itself and the mock count the
/// same way (0 %). Anthropic's tokenizer is not published for its current models and counts
/// the same text as more tokens than `o200k`, markedly so for code, digits and non-Latin
/// scripts: 30 % by default (docs/benchmarks.md, "Prompt margins", measures what is lost
/// with and without it). An OpenAI-compatible server counts with its model's own tokenizer,
/// which the hub does not know: 0 % by default; set it for a model whose tokenizer counts
/// more than OpenAI's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptMargins {
    pub openai: u32,
    pub anthropic: u32,
    pub compatible: u32,
    pub mock: u32,
}

impl Default for PromptMargins {
    fn default() -> Self {
        PromptMargins {
            openai: 0,
            anthropic: 30,
            compatible: 0,
            mock: 0,
        }
    }
}

impl PromptMargins {
    /// The margin of providers of `kind`, in percent.
    pub fn percent(&self, kind: ProviderKind) -> u32 {
        match kind {
            ProviderKind::Openai => self.openai,
            ProviderKind::Anthropic => self.anthropic,
            ProviderKind::Compatible => self.compatible,
            ProviderKind::Mock => self.mock,
        }
    }
}

/// One model clients may name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The name clients use in `model`; unique.
    pub name: String,
    /// What the model costs per million tokens.
    pub price: PriceSettings,
    /// The model's own limit on generated tokens; requests asking for more are capped.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// The model's context window, for clients to read in `GET /v1/models`.
    #[serde(default)]
    pub context_tokens: Option<u32>,
    /// The tokenizer that counts this model's tokens: `o200k` or `cl100k`.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// The providers that serve the model, tried in this order.
    pub providers: Vec<ProviderSettings>,
    /// The model takes images in user messages (`image_url` content parts).
    #[serde(default)]
    pub vision: bool,
    /// The most prompt tokens one image may count as: reserved per image, since only the
    /// provider can count an image (it is then charged what the provider reports).
    #[serde(default = "default_image_tokens_max")]
    pub image_tokens_max: u32,
    /// The model takes tools and tool calls.
    #[serde(default = "default_true")]
    pub tools: bool,
    /// The model takes `reasoning_effort` (a reasoning model).
    #[serde(default)]
    pub reasoning: bool,
    /// Set for an embedding model (`POST /v1/embeddings`): the length of its vectors. An
    /// embedding model answers no chat, and a chat model no embeddings.
    #[serde(default)]
    pub embedding_dimensions: Option<u32>,
}

/// Anthropic counts an image as about width × height / 750 tokens, at most about 1,600;
/// OpenAI's high detail at most 1,445 (85 + 8 tiles of 170).
fn default_image_tokens_max() -> u32 {
    1_600
}

fn default_true() -> bool {
    true
}

/// A price in micro-credits (1 credit = 1,000,000) per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSettings {
    /// Per million prompt tokens.
    pub input_per_million_micros: i64,
    /// Per million generated tokens.
    pub output_per_million_micros: i64,
    /// Per million prompt tokens served from the provider's cache.
    #[serde(default)]
    pub cached_input_per_million_micros: i64,
}

impl PriceSettings {
    /// The domain's price.
    pub fn price(&self) -> Price {
        Price::from_micros(
            self.input_per_million_micros,
            self.output_per_million_micros,
            self.cached_input_per_million_micros,
        )
    }
}

/// The wire protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's chat completions (`max_completion_tokens`); needs an API key.
    Openai,
    /// Anthropic's Messages API, translated to and from the OpenAI shape; needs an API key.
    Anthropic,
    /// Any OpenAI-compatible server (vLLM, Ollama, llama.cpp) at `base_url`; key optional.
    Compatible,
    /// The built-in deterministic provider: no network.
    Mock,
}

impl ProviderKind {
    /// The kind as written in settings (`openai`, `anthropic`, `compatible`, `mock`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Compatible => "compatible",
            ProviderKind::Mock => "mock",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One provider of a model.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Which protocol it speaks.
    pub kind: ProviderKind,
    /// Where it listens; defaults to [`OPENAI_BASE_URL`] or [`ANTHROPIC_BASE_URL`], required
    /// for `compatible`. OpenAI-style URLs end with the version (`.../v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The key sent upstream (`Authorization: Bearer` or `x-api-key`). Never printed.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The model id sent upstream; defaults to the model's name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// The name in usage records and `GET /api/providers/status`; defaults to the kind.
    /// Unique within a model.
    #[serde(default)]
    pub name: Option<String>,
    /// Pace of the `mock` provider; 0 or absent streams as fast as it can.
    #[serde(default)]
    pub mock_tokens_per_second: Option<u32>,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("upstream_model", &self.upstream_model)
            .field("name", &self.name)
            .field("mock_tokens_per_second", &self.mock_tokens_per_second)
            .finish()
    }
}

impl ProviderSettings {
    /// A `mock` provider at full speed.
    pub fn mock() -> Self {
        ProviderSettings {
            kind: ProviderKind::Mock,
            base_url: None,
            api_key: None,
            upstream_model: None,
            name: None,
            mock_tokens_per_second: None,
        }
    }

    /// A provider of `kind` at `base_url` with `api_key`.
    pub fn new(kind: ProviderKind, base_url: Option<&str>, api_key: Option<&str>) -> Self {
        ProviderSettings {
            kind,
            base_url: base_url.map(str::to_owned),
            api_key: api_key.map(str::to_owned),
            ..ProviderSettings::mock()
        }
    }

    /// The name in usage records: `name`, or the kind.
    pub fn effective_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The base URL requests go to: `base_url`, or the kind's default (none for `compatible`
    /// and `mock`). A trailing `/` is removed.
    pub fn effective_base_url(&self) -> Option<&str> {
        let url = self.base_url.as_deref().or(match self.kind {
            ProviderKind::Openai => Some(OPENAI_BASE_URL),
            ProviderKind::Anthropic => Some(ANTHROPIC_BASE_URL),
            ProviderKind::Compatible | ProviderKind::Mock => None,
        })?;
        Some(url.trim_end_matches('/'))
    }
}

fn default_tokenizer() -> String {
    Tokenizer::O200k.as_str().to_owned()
}

impl Default for ModelsSettings {
    fn default() -> Self {
        ModelsSettings {
            default_max_output_tokens: 1024,
            connect_timeout_ms: 5_000,
            first_token_timeout_ms: 30_000,
            total_timeout_ms: 300_000,
            retries_max: 2,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
            cooldown_after_failures: 3,
            cooldown_ms: 30_000,
            admission_limit: 256,
            prompt_margin_percent: PromptMargins::default(),
            models: vec![
                ModelSettings::mock("mock-1"),
                ModelSettings::mock_embedding("mock-embed-1"),
            ],
        }
    }
}

impl ModelSettings {
    /// A model named `name` served by the `mock` provider at full speed, at 1 credit per
    /// million input tokens, 2 per million output tokens and 0.5 per million cached tokens.
    pub fn mock(name: &str) -> Self {
        ModelSettings {
            name: name.to_owned(),
            price: PriceSettings {
                input_per_million_micros: 1_000_000,
                output_per_million_micros: 2_000_000,
                cached_input_per_million_micros: 500_000,
            },
            max_output_tokens: None,
            context_tokens: Some(128_000),
            tokenizer: default_tokenizer(),
            providers: vec![ProviderSettings::mock()],
            vision: true,
            image_tokens_max: default_image_tokens_max(),
            tools: true,
            reasoning: true,
            embedding_dimensions: None,
        }
    }

    /// An embedding model named `name` served by the `mock` provider: vectors of
    /// [`crate::providers::mock::MOCK_EMBEDDING_DIMENSIONS`] numbers, at 0.1 credit per million
    /// input tokens.
    pub fn mock_embedding(name: &str) -> Self {
        ModelSettings {
            price: PriceSettings {
                input_per_million_micros: 100_000,
                output_per_million_micros: 0,
                cached_input_per_million_micros: 0,
            },
            context_tokens: Some(8_192),
            vision: false,
            tools: false,
            reasoning: false,
            embedding_dimensions: Some(crate::providers::mock::MOCK_EMBEDDING_DIMENSIONS as u32),
            ..ModelSettings::mock(name)
        }
    }
}

impl ModelsSettings {
    /// The timeouts of every upstream call.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            first_token: Duration::from_millis(self.first_token_timeout_ms),
            total: Duration::from_millis(self.total_timeout_ms),
        }
    }

    /// Checks every rule; the error names the field at fault, e.g.
    /// `models.models[0].providers[1].base_url: required for a compatible provider`.
    pub fn validate(&self) -> Result<(), String> {
        let positive_ms = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_token_timeout_ms", self.first_token_timeout_ms),
            ("total_timeout_ms", self.total_timeout_ms),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            ("cooldown_ms", self.cooldown_ms),
        ];
        for (field, value) in positive_ms {
            if value == 0 || value > TIMEOUT_MAX_MS {
                return Err(format!(
                    "models.{field}: must be between 1 and {TIMEOUT_MAX_MS}, got {value}"
                ));
            }
        }
        if self.default_max_output_tokens == 0 {
            return Err("models.default_max_output_tokens: must be at least 1".into());
        }
        if self.admission_limit == 0 || self.admission_limit > ADMISSION_LIMIT_MAX {
            return Err(format!(
                "models.admission_limit: must be between 1 and {ADMISSION_LIMIT_MAX}, got {}",
                self.admission_limit
            ));
        }
        if self.first_token_timeout_ms > self.total_timeout_ms {
            return Err(format!(
                "models.first_token_timeout_ms: must not exceed total_timeout_ms ({})",
                self.total_timeout_ms
            ));
        }
        if self.backoff_base_ms > self.backoff_max_ms {
            return Err(format!(
                "models.backoff_base_ms: must not exceed backoff_max_ms ({})",
                self.backoff_max_ms
            ));
        }
        if self.retries_max > RETRIES_MAX_LIMIT {
            return Err(format!(
                "models.retries_max: at most {RETRIES_MAX_LIMIT}, got {}",
                self.retries_max
            ));
        }
        for kind in [
            ProviderKind::Openai,
            ProviderKind::Anthropic,
            ProviderKind::Compatible,
            ProviderKind::Mock,
        ] {
            let percent = self.prompt_margin_percent.percent(kind);
            if percent > PROMPT_MARGIN_PERCENT_MAX {
                return Err(format!(
                    "models.prompt_margin_percent.{kind}: at most {PROMPT_MARGIN_PERCENT_MAX}, got {percent}"
                ));
            }
        }
        if self.cooldown_after_failures == 0 {
            return Err("models.cooldown_after_failures: must be at least 1".into());
        }
        if self.models.is_empty() {
            return Err("models.models: at least one model is required".into());
        }
        if self.models.len() > MODELS_MAX {
            return Err(format!("models.models: at most {MODELS_MAX} models"));
        }
        let mut names = HashSet::new();
        for (index, model) in self.models.iter().enumerate() {
            let at = format!("models.models[{index}]");
            model.validate(&at)?;
            if !names.insert(model.name.as_str()) {
                return Err(format!("{at}.name: `{}` is named twice", model.name));
            }
        }
        Ok(())
    }
}

impl ModelSettings {
    fn validate(&self, at: &str) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(format!("{at}.name: must be 1 to 200 characters"));
        }
        if self.name.trim() != self.name || self.name.chars().any(char::is_control) {
            return Err(format!(
                "{at}.name: no leading or trailing spaces, no control characters"
            ));
        }
        let prices = [
            (
                "input_per_million_micros",
                self.price.input_per_million_micros,
            ),
            (
                "output_per_million_micros",
                self.price.output_per_million_micros,
            ),
            (
                "cached_input_per_million_micros",
                self.price.cached_input_per_million_micros,
            ),
        ];
        for (field, value) in prices {
            if !(0..=PRICE_PER_MILLION_MAX_MICROS).contains(&value) {
                return Err(format!(
                    "{at}.price.{field}: must be between 0 and {PRICE_PER_MILLION_MAX_MICROS}, got {value}"
                ));
            }
        }
        if self.max_output_tokens == Some(0) {
            return Err(format!("{at}.max_output_tokens: must be at least 1"));
        }
        if self.context_tokens == Some(0) {
            return Err(format!("{at}.context_tokens: must be at least 1"));
        }
        if Tokenizer::parse(&self.tokenizer).is_none() {
            return Err(format!(
                "{at}.tokenizer: `{}` is not one of o200k, cl100k",
                self.tokenizer
            ));
        }
        if self.providers.is_empty() {
            return Err(format!("{at}.providers: at least one provider is required"));
        }
        if self.providers.len() > PROVIDERS_PER_MODEL_MAX {
            return Err(format!(
                "{at}.providers: at most {PROVIDERS_PER_MODEL_MAX} providers"
            ));
        }
        if self.embedding_dimensions == Some(0) {
            return Err(format!("{at}.embedding_dimensions: must be at least 1"));
        }
        let mut names = HashSet::new();
        for (index, provider) in self.providers.iter().enumerate() {
            let at = format!("{at}.providers[{index}]");
            provider.validate(&at)?;
            if self.embedding_dimensions.is_some() && provider.kind == ProviderKind::Anthropic {
                return Err(format!(
                    "{at}.kind: Anthropic makes no embeddings (openai, compatible or mock)"
                ));
            }
            if !names.insert(provider.effective_name()) {
                return Err(format!(
                    "{at}.name: `{}` is used twice in this model; give each provider a name",
                    provider.effective_name()
                ));
            }
        }
        Ok(())
    }
}

impl ProviderSettings {
    fn validate(&self, at: &str) -> Result<(), String> {
        if let Some(name) = &self.name {
            if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err(format!(
                    "{at}.name: must be 1 to 100 characters, no control characters"
                ));
            }
        }
        if let Some(model) = &self.upstream_model {
            if model.trim().is_empty() {
                return Err(format!("{at}.upstream_model: must not be empty"));
            }
        }
        let kind = self.kind;
        if kind != ProviderKind::Mock && self.mock_tokens_per_second.is_some() {
            return Err(format!(
                "{at}.mock_tokens_per_second: only a mock provider has a pace"
            ));
        }
        match kind {
            ProviderKind::Mock => {
                if self.base_url.is_some() {
                    return Err(format!("{at}.base_url: a mock provider calls no server"));
                }
            }
            ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Compatible => {
                let Some(base_url) = self.effective_base_url() else {
                    return Err(format!("{at}.base_url: required for a {kind} provider"));
                };
                let parsed = url::Url::parse(base_url)
                    .map_err(|e| format!("{at}.base_url: not a URL ({e})"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(format!("{at}.base_url: must be an http or https URL"));
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    return Err(format!("{at}.base_url: must have no query or fragment"));
                }
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err(format!(
                        "{at}.base_url: put credentials in api_key, not in the URL"
                    ));
                }
            }
        }
        let needs_key = matches!(kind, ProviderKind::Openai | ProviderKind::Anthropic);
        match &self.api_key {
            None if needs_key => Err(format!("{at}.api_key: required for a {kind} provider")),
            Some(key) if key.trim().is_empty() => Err(format!("{at}.api_key: must not be empty")),
            Some(key) if key.chars().any(|c| c.is_control() || c == ' ') => Err(format!(
                "{at}.api_key: must not contain spaces or control characters"
            )),
            Some(_) if kind == ProviderKind::Mock => {
                Err(format!("{at}.api_key: a mock provider takes no key"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(key: Option<&str>) -> ProviderSettings {
        ProviderSettings::new(ProviderKind::Openai, None, key)
    }

    fn with_providers(providers: Vec<ProviderSettings>) -> ModelsSettings {
        let mut settings = ModelsSettings::default();
        settings.models[0].providers = providers;
        settings
    }

    #[test]
    fn the_defaults_are_valid_and_serve_a_mock_model_offline() {
        let settings = ModelsSettings::default();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.models[0].name, "mock-1");
        assert_eq!(settings.models[0].providers[0].kind, ProviderKind::Mock);
        assert_eq!(
            settings.models[0].price.price(),
            Price::from_micros(1_000_000, 2_000_000, 500_000)
        );
    }

    #[test]
    fn a_compatible_provider_needs_a_base_url_and_the_error_names_the_field() {
        let settings = with_providers(vec![
            ProviderSettings::mock(),
            ProviderSettings::new(ProviderKind::Compatible, None, None),
        ]);
        let error = settings.validate().err().unwrap_or_default();
        assert!(
            error.starts_with("models.models[0].providers[1].base_url:"),
            "{error}"
        );
    }

    #[test]
    fn openai_and_anthropic_need_a_key_but_default_their_base_url() {
        let error = with_providers(vec![openai(None)])
            .validate()
            .err()
            .unwrap_or_default();
        assert!(
            error.starts_with("models.models[0].providers[0].api_key:"),
            "{error}"
        );
        assert_eq!(
            with_providers(vec![openai(Some("sk-x"))]).validate(),
            Ok(())
        );
        assert_eq!(
            openai(Some("sk-x")).effective_base_url(),
            Some(OPENAI_BASE_URL)
        );
        let anthropic = ProviderSettings::new(ProviderKind::Anthropic, None, Some("k"));
        assert_eq!(anthropic.effective_base_url(), Some(ANTHROPIC_BASE_URL));
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        type Tweak = Box<dyn Fn(&mut ModelsSettings)>;
        let cases: Vec<(&str, Tweak)> = vec![
            ("models.retries_max", Box::new(|s| s.retries_max = 99)),
            (
                "models.connect_timeout_ms",
                Box::new(|s| s.connect_timeout_ms = 0),
            ),
            (
                "models.first_token_timeout_ms",
                Box::new(|s| s.first_token_timeout_ms = 400_000),
            ),
            (
                "models.backoff_base_ms",
                Box::new(|s| s.backoff_base_ms = 10_000),
            ),
            ("models.models:", Box::new(|s| s.models.clear())),
            (
                "models.models[0].tokenizer",
                Box::new(|s| s.models[0].tokenizer = "p50k".into()),
            ),
            (
                "models.models[0].price.output_per_million_micros",
                Box::new(|s| s.models[0].price.output_per_million_micros = -1),
            ),
            (
                "models.models[2].name",
                Box::new(|s| s.models.push(ModelSettings::mock("mock-1"))),
            ),
            (
                "models.models[1].providers[0].kind",
                Box::new(|s| {
                    s.models[1].providers[0] = ProviderSettings::new(
                        ProviderKind::Anthropic,
                        Some("https://api.anthropic.com"),
                        Some("sk-ant"),
                    )
                }),
            ),
            (
                "models.models[0].providers[1].name",
                Box::new(|s| s.models[0].providers.push(ProviderSettings::mock())),
            ),
            (
                "models.models[0].providers[0].base_url",
                Box::new(|s| {
                    s.models[0].providers[0] = ProviderSettings::new(
                        ProviderKind::Compatible,
                        Some("ftp://example.com"),
                        None,
                    )
                }),
            ),
        ];
        for (field, tweak) in cases {
            let mut settings = ModelsSettings::default();
            tweak(&mut settings);
            let error = settings.validate().err().unwrap_or_default();
            assert!(error.starts_with(field), "{field}: {error}");
        }
    }

    #[test]
    fn the_api_key_is_never_printed() {
        let provider = openai(Some("sk-very-secret"));
        let printed = format!("{provider:?} {:?}", with_providers(vec![provider.clone()]));
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }

    #[test]
    fn settings_deserialize_with_defaults_and_refuse_unknown_fields() {
        let json = serde_json::json!({
            "retries_max": 1,
            "models": [{
                "name": "gpt",
                "price": {"input_per_million_micros": 2, "output_per_million_micros": 3},
                "providers": [{"kind": "openai", "api_key": "k", "upstream_model": "gpt-4o"}]
            }]
        });
        let parsed: Result<ModelsSettings, _> = serde_json::from_value(json);
        let settings = parsed.map_err(|e| e.to_string());
        assert!(settings.is_ok(), "{settings:?}");
        let settings = settings.unwrap_or_default();
        assert_eq!(settings.retries_max, 1);
        assert_eq!(settings.total_timeout_ms, 300_000);
        assert_eq!(settings.models[0].tokenizer, "o200k");
        assert_eq!(settings.validate(), Ok(()));

        let unknown = serde_json::json!({"models": [], "retry_max": 1});
        assert!(serde_json::from_value::<ModelsSettings>(unknown).is_err());
    }
}
