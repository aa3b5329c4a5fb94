//! Typed settings: defaults → optional `aihub.toml` → environment (`AIHUB__SECTION__KEY`),
//! validated at start-up with errors that name the field.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The secret used when none is configured: public, so accepted only while the hub listens
/// on a loopback address (and `auth.dev_secret_allowed`, the default, is true).
pub const DEV_JWT_SECRET: &str = "aihub-development-secret-change-me-0123456789";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub nats: NatsSettings,
    pub auth: AuthSettings,
    pub credits: CreditSettings,
    /// Outgoing email: a folder on a laptop, SMTP in production.
    pub mail: hub_adapters::mail::MailSettings,
    /// Google sign-in (OpenID Connect); off unless `enabled`.
    pub google: hub_adapters::oidc::GoogleSettings,
    /// Stripe Checkout and webhooks, and the credit packages for sale; checkout is off
    /// (503) until `stripe_secret_key` is set.
    pub payments: hub_adapters::stripe::PaymentSettings,
    /// Models, their prices and providers, timeouts and retries (the inference gateway).
    pub models: hub_workers::ModelsSettings,
    /// Signed ledger checkpoints (docs/audit.md).
    pub audit: AuditSettings,
    /// Rate limits and quotas, shared by every API process through Redis
    /// (docs/adr/05-rate-limits.md); off unless `enabled`.
    pub rate_limits: RateLimitSettings,
    /// Low-balance alerts: the default threshold and how notifications are delivered
    /// (docs/alerts.md).
    pub alerts: AlertSettings,
    /// `GET /metrics` in Prometheus text, and the gauges sampled for it (docs/operations.md).
    pub metrics: MetricsSettings,
    /// How log lines are written.
    pub log: LogSettings,
    /// OpenTelemetry traces over OTLP/HTTP (docs/operations.md); off unless `enabled`.
    pub traces: TracesSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// The low-balance threshold of a user who has not set one, in micro-credits (0: no
    /// alert unless the user sets a threshold).
    pub low_balance_default_micros: i64,
    /// How often the delivery loop (sweeper role) looks for notifications to send, in
    /// milliseconds.
    pub delivery_interval_ms: u64,
    /// Longest wait for a webhook receiver's answer, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Attempts per notification (email and webhook) before it is given up.
    pub attempts_max: u32,
    /// The wait before the first retry, in milliseconds; each further retry waits twice as
    /// long as the one before, up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// The longest wait between two attempts, in milliseconds.
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Record metrics and answer `GET /metrics`. Off: nothing is recorded (every
    /// recording call is a no-op) and no route or listener answers.
    pub enabled: bool,
    /// Answer `GET /metrics` on the API's own port too (roles that serve HTTP). Turn it off
    /// when that port faces the internet and scrape `listen` instead.
    pub api_route: bool,
    /// A listener of its own that answers only `GET /metrics` (`host:port`), for the roles
    /// without an HTTP server (worker, relay, project) or to keep scrapes off the API's port.
    /// Empty: none. Each process on one machine needs a port of its own.
    pub listen: String,
    /// How often the gauges (outbox depth, relay and projection lag, the Postgres pool, the
    /// NATS connection) are sampled, in milliseconds.
    pub sample_interval_ms: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            api_route: true,
            listen: String::new(),
            sample_interval_ms: 5_000,
        }
    }
}

impl MetricsSettings {
    /// The listener's address, when one is configured.
    pub fn listen_address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (the default: one readable line per event) or `json` (one JSON object per
    /// line, for a log shipper). `RUST_LOG` still chooses what is logged.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesSettings {
    /// Export spans to an OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo).
    /// Off: no exporter is built and no span is recorded for it.
    pub enabled: bool,
    /// The receiver's base URL (`http://` or `https://`); spans are posted, as protobuf, to
    /// `<endpoint>/v1/traces`.
    pub endpoint: String,
    /// `service.name` of every span; the process's role is the resource attribute
    /// `aihub.role` (`all`, `serve`, `worker`, ...).
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0. A span whose parent came from another
    /// process follows that parent's decision, so a trace is kept whole or not at all.
    pub sample_ratio: f64,
    /// Longest wait for the receiver to take one batch of spans, in milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for TracesSettings {
    fn default() -> Self {
        TracesSettings {
            enabled: false,
            endpoint: "http://127.0.0.1:4318".into(),
            service_name: "aihub".into(),
            sample_ratio: 1.0,
            export_timeout_ms: 10_000,
        }
    }
}

impl TracesSettings {
    /// The longest `export_timeout_ms`: a batch held longer would hold up shutdown.
    pub const EXPORT_TIMEOUT_MS_MAX: u64 = 60_000;

    /// Where spans are posted: the endpoint's `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let endpoint = url::Url::parse(&self.endpoint).map_err(|err| {
            invalid(
                "traces.endpoint",
                format!("{:?} is not a URL: {err}", self.endpoint),
            )
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(invalid(
                "traces.endpoint",
                "must be an http:// or https:// URL with a host (http://127.0.0.1:4318)",
            ));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(invalid(
                "traces.endpoint",
                "must be a base URL without a query or fragment; /v1/traces is added to it",
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("traces.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "traces.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if !(1..=Self::EXPORT_TIMEOUT_MS_MAX).contains(&self.export_timeout_ms) {
            return Err(invalid(
                "traces.export_timeout_ms",
                format!("must be 1 to {}", Self::EXPORT_TIMEOUT_MS_MAX),
            ));
        }
        Ok(())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Enforce the limits below (needs the Redis at `redis_url`).
    pub enabled: bool,
    /// The one store every API process shares (`redis://host:port/db`).
    pub redis_url: String,
    /// Put before every key, so that several hubs (or tests) can share one Redis.
    pub key_prefix: String,
    /// When the store does not answer: admit the request unlimited (true), or refuse it with
    /// 503 `rate_limits_unavailable` (false). Either way `/ready` shows it.
    pub fail_open: bool,
    /// Longest wait for the store's answer, in milliseconds.
    pub store_timeout_ms: u64,
    /// Requests per minute one client address may make to the routes anyone may call
    /// (register, sign in, password reset, resend verification, Google sign-in); 0: no limit.
    pub anonymous_requests_per_minute_per_ip: u64,
    /// The quotas of a user holding each role (a user with several gets the largest of
    /// each); an API key's defaults are the `user` role's, overridden per key.
    pub user: Quota,
    pub admin: Quota,
    pub analyst: Quota,
    pub auditor: Quota,
}

/// What one caller may use of the inference API; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Requests to `/v1` per minute.
    pub requests_per_minute: u64,
    /// Tokens per minute, counted when a request is accepted: its prompt plus the most it
    /// may generate (`max_tokens`), as OpenAI counts them.
    pub tokens_per_minute: u64,
    /// Inference requests running at once (a stream holds its place until it ends).
    pub concurrent_requests: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            requests_per_minute: 600,
            tokens_per_minute: 2_000_000,
            concurrent_requests: 32,
        }
    }
}

impl std::fmt::Debug for RateLimitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitSettings")
            .field("enabled", &self.enabled)
            .field(
                "redis_url",
                &hub_adapters::secrets::redact_url(&self.redis_url),
            )
            .field("key_prefix", &self.key_prefix)
            .field("fail_open", &self.fail_open)
            .field("store_timeout_ms", &self.store_timeout_ms)
            .field(
                "anonymous_requests_per_minute_per_ip",
                &self.anonymous_requests_per_minute_per_ip,
            )
            .field("user", &self.user)
            .field("admin", &self.admin)
            .field("analyst", &self.analyst)
            .field("auditor", &self.auditor)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// The Ed25519 key checkpoints are signed with: its 32-byte seed as 64 hex digits.
    /// Empty: derived from `auth.jwt_secret` (stable while that secret is; set a key of its
    /// own to rotate the two apart).
    pub signing_key: String,
    /// How often the checkpointer signs the heads of every aggregate that moved, in
    /// milliseconds.
    pub checkpoint_interval_ms: u64,
}

impl std::fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSettings")
            .field(
                "signing_key",
                &if self.signing_key.is_empty() {
                    ""
                } else {
                    "***"
                },
            )
            .field("checkpoint_interval_ms", &self.checkpoint_interval_ms)
            .finish()
    }
}

impl Settings {
    /// The key checkpoints are signed with.
    pub fn checkpoint_key(&self) -> Result<crate::evidence::CheckpointKey, ConfigError> {
        if self.audit.signing_key.is_empty() {
            return Ok(crate::evidence::CheckpointKey::derived_from(
                &self.auth.jwt_secret,
            ));
        }
        crate::evidence::chain::hash_from_hex(&self.audit.signing_key)
            .map(|seed| crate::evidence::CheckpointKey::from_seed(&seed))
            .ok_or_else(|| {
                invalid(
                    "audit.signing_key",
                    "must be 64 hex digits (an Ed25519 seed)",
                )
            })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Whole-request timeout of every route but inference (which runs under
    /// `models.total_timeout_ms`), in milliseconds.
    pub request_timeout_ms: u64,
    /// On SIGTERM (or Ctrl-C) a process stops taking new requests and commands, and gives
    /// those it is running this long to finish, in milliseconds; a stream still open then is
    /// ended, and charged for what it delivered. Under orchestrators' usual 30 s.
    pub shutdown_grace_ms: u64,
    /// The web app's built files (`web/dist`, relative to the working directory), served
    /// at `/`; nothing is served there when the folder is missing.
    pub web_dir: String,
    /// Which other sites' pages may call the API from a browser (CORS); none while
    /// `cors.allowed_origins` is empty (the web app served at `/` needs none).
    pub cors: CorsSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins allowed, each exactly as a browser sends it (`https://app.example.com`,
    /// scheme and host and any port, no path). `*` is not accepted: name them.
    pub allowed_origins: Vec<String>,
    /// Let those pages send credentials (cookies: the refresh token's).
    pub allow_credentials: bool,
    /// How long a browser may reuse a preflight's answer, in seconds.
    pub max_age_s: u64,
}

impl Default for CorsSettings {
    fn default() -> Self {
        CorsSettings {
            allowed_origins: Vec::new(),
            allow_credentials: true,
            max_age_s: 600,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    pub url: String,
    /// Prepended to stream names (empty in production).
    pub stream_prefix: String,
    /// First token of every subject.
    pub subject_prefix: String,
    pub duplicate_window_s: u64,
    pub replicas: usize,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HS256 secret for access tokens; at least 32 bytes.
    pub jwt_secret: String,
    /// Lifetime of tokens minted by `aihub token`, in seconds.
    pub token_ttl_s: u64,
    /// Accept the built-in development secret (a laptop default; turn off in production).
    pub dev_secret_allowed: bool,
    /// Lifetime of access tokens issued at sign-in and refresh, in seconds.
    pub access_token_ttl_s: u64,
    /// Lifetime of a refresh token, in seconds (each use replaces it).
    pub refresh_token_ttl_s: u64,
    /// Credits granted when a user registers, in micro-credits (0: none).
    pub signup_grant_micros: i64,
    /// Refuse inference and purchases until the user's email is verified.
    pub require_verified_email: bool,
    /// Lifetime of an email verification code, in seconds.
    pub verification_code_ttl_s: u64,
    /// Wrong guesses a verification code allows.
    pub verification_attempts: u32,
    /// Lifetime of a password-reset link, in seconds.
    pub reset_token_ttl_s: u64,
    /// Failed logins allowed per account before each further one locks it (1 s, 2 s, 4 s, ...).
    pub login_free_failures_account: i32,
    /// The same per client address.
    pub login_free_failures_ip: i32,
    /// Failed logins older than this are forgotten, in seconds.
    pub login_window_s: u64,
    /// Longest login lock, in seconds.
    pub login_lock_max_s: u64,
    /// Where users reach the hub: the base of links in emails.
    pub public_url: String,
    /// Mark session cookies `Secure` (browsers then send them over HTTPS only).
    pub cookie_secure: bool,
    /// Take the client address from `X-Forwarded-For` (only behind proxies that append to it).
    pub trust_forwarded_for: bool,
    /// How many proxies in front of the hub append to `X-Forwarded-For`: the client is the
    /// entry this many from the right. Entries further left were written by the client and
    /// are ignored.
    pub trusted_proxies: u32,
    /// Password hashes and verifications run at once (argon2id: ~19 MiB and tens of ms of a
    /// core each); more wait for a turn.
    pub password_work_max: usize,
    /// How long a sign-in, registration or reset waits for a turn before the hub answers
    /// 503 `busy` with `Retry-After`, in milliseconds.
    pub password_queue_wait_ms: u64,
    /// Google sign-ins started and not finished (each a row for ten minutes) that the hub
    /// keeps at once; beyond it a new start answers 503 `busy`.
    pub oidc_pending_max: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditSettings {
    /// Take an aggregate snapshot every this many events.
    pub snapshot_every: usize,
    /// Credit accounts kept in memory by the command side.
    pub cache_accounts: usize,
    /// After a write, wait up to this long for the read model to show it, in milliseconds.
    pub read_your_writes_wait_ms: u64,
    /// How often expired reservations are swept, in milliseconds.
    pub sweep_interval_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings {
                host: "127.0.0.1".into(),
                port: 8080,
                body_limit_bytes: 1 << 20,
                request_timeout_ms: 30_000,
                shutdown_grace_ms: 20_000,
                web_dir: "web/dist".into(),
                cors: CorsSettings::default(),
            },
            database: DatabaseSettings {
                url: "postgres://postgres@127.0.0.1:5432/aihub".into(),
                max_connections: 32,
                acquire_timeout_ms: 3_000,
            },
            nats: NatsSettings {
                url: "nats://127.0.0.1:4222".into(),
                stream_prefix: String::new(),
                subject_prefix: "hub".into(),
                duplicate_window_s: 120,
                replicas: 1,
            },
            auth: AuthSettings {
                jwt_secret: DEV_JWT_SECRET.into(),
                token_ttl_s: 3_600,
                dev_secret_allowed: true,
                access_token_ttl_s: 900,
                refresh_token_ttl_s: 30 * 24 * 3_600,
                signup_grant_micros: 0,
                require_verified_email: false,
                verification_code_ttl_s: 900,
                verification_attempts: 5,
                reset_token_ttl_s: 3_600,
                login_free_failures_account: 5,
                login_free_failures_ip: 20,
                login_window_s: 900,
                login_lock_max_s: 900,
                public_url: "http://127.0.0.1:8080".into(),
                cookie_secure: true,
                trust_forwarded_for: false,
                trusted_proxies: 1,
                password_work_max: 4,
                password_queue_wait_ms: 2_000,
                oidc_pending_max: 10_000,
            },
            credits: CreditSettings {
                snapshot_every: hub_commands::store::SNAPSHOT_EVERY_DEFAULT,
                cache_accounts: 16_384,
                read_your_writes_wait_ms: 2_000,
                sweep_interval_ms: 1_000,
            },
            mail: hub_adapters::mail::MailSettings::default(),
            google: hub_adapters::oidc::GoogleSettings::default(),
            payments: hub_adapters::stripe::PaymentSettings::default(),
            models: hub_workers::ModelsSettings::default(),
            audit: AuditSettings {
                signing_key: String::new(),
                checkpoint_interval_ms: 60_000,
            },
            rate_limits: RateLimitSettings {
                enabled: false,
                redis_url: "redis://127.0.0.1:6379".into(),
                key_prefix: "aihub".into(),
                fail_open: true,
                store_timeout_ms: 250,
                anonymous_requests_per_minute_per_ip: 60,
                user: Quota::default(),
                admin: Quota::default(),
                analyst: Quota::default(),
                auditor: Quota::default(),
            },
            alerts: AlertSettings {
                low_balance_default_micros: 1_000_000,
                delivery_interval_ms: 1_000,
                webhook_timeout_ms: 5_000,
                attempts_max: 10,
                retry_base_ms: 1_000,
                retry_max_ms: 3_600_000,
            },
            metrics: MetricsSettings::default(),
            log: LogSettings::default(),
            traces: TracesSettings::default(),
        }
    }
}

macro_rules! default_sections {
    ($($t:ident),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                let s = Settings::default();
                default_sections!(@pick s, $t)
            }
        }
    )*};
    (@pick $s:ident, ServerSettings) => { $s.server };
    (@pick $s:ident, DatabaseSettings) => { $s.database };
    (@pick $s:ident, NatsSettings) => { $s.nats };
    (@pick $s:ident, AuthSettings) => { $s.auth };
    (@pick $s:ident, CreditSettings) => { $s.credits };
    (@pick $s:ident, AuditSettings) => { $s.audit };
    (@pick $s:ident, RateLimitSettings) => { $s.rate_limits };
    (@pick $s:ident, AlertSettings) => { $s.alerts };
}
default_sections!(
    ServerSettings,
    DatabaseSettings,
    NatsSettings,
    AuthSettings,
    CreditSettings,
    AuditSettings,
    RateLimitSettings,
    AlertSettings
);

/// Settings that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Settings {
    /// Load from defaults, then `file` if it exists, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let path = file.unwrap_or(Path::new("aihub.toml"));
        let settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(path))
            .merge(Env::prefixed("AIHUB__").split("__"))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return Err(invalid("database.url", "must start with postgres://"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if !self.nats.url.starts_with("nats://") && !self.nats.url.starts_with("tls://") {
            return Err(invalid("nats.url", "must start with nats:// or tls://"));
        }
        if self.nats.subject_prefix.is_empty()
            || self.nats.subject_prefix.contains(['.', '*', '>', ' '])
        {
            return Err(invalid("nats.subject_prefix", "must be one subject token"));
        }
        if !self
            .nats
            .stream_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "nats.stream_prefix",
                "may only hold letters, digits, _ and -",
            ));
        }
        if self.audit.checkpoint_interval_ms == 0 {
            return Err(invalid(
                "audit.checkpoint_interval_ms",
                "must be at least 1",
            ));
        }
        self.checkpoint_key()?;
        if self.nats.duplicate_window_s == 0 {
            return Err(invalid("nats.duplicate_window_s", "must be at least 1"));
        }
        if self.auth.jwt_secret.len() < 32 {
            return Err(invalid("auth.jwt_secret", "must be at least 32 bytes"));
        }
        if self.auth.jwt_secret == DEV_JWT_SECRET {
            // The development secret is public: with it anyone can sign an admin token and
            // forge verification codes. Only a hub nobody else can reach may use it.
            if !self.auth.dev_secret_allowed {
                return Err(invalid(
                    "auth.jwt_secret",
                    "is the public development secret and auth.dev_secret_allowed is false; \
                     set AIHUB__AUTH__JWT_SECRET to a secret of 32 bytes or more",
                ));
            }
            if !is_loopback(&self.server.host) {
                return Err(invalid(
                    "auth.jwt_secret",
                    "is the public development secret, and server.host is not a loopback \
                     address: anyone who reaches the hub could sign an admin token. Set \
                     AIHUB__AUTH__JWT_SECRET to a secret of 32 bytes or more, or serve on \
                     127.0.0.1 / ::1 only",
                ));
            }
        }
        for (field, value) in [
            ("auth.token_ttl_s", self.auth.token_ttl_s),
            ("auth.access_token_ttl_s", self.auth.access_token_ttl_s),
            ("auth.refresh_token_ttl_s", self.auth.refresh_token_ttl_s),
            (
                "auth.verification_code_ttl_s",
                self.auth.verification_code_ttl_s,
            ),
            ("auth.reset_token_ttl_s", self.auth.reset_token_ttl_s),
            ("auth.login_window_s", self.auth.login_window_s),
            ("auth.login_lock_max_s", self.auth.login_lock_max_s),
            ("auth.trusted_proxies", u64::from(self.auth.trusted_proxies)),
            (
                "auth.password_work_max",
                u64::try_from(self.auth.password_work_max).unwrap_or(u64::MAX),
            ),
            ("auth.oidc_pending_max", self.auth.oidc_pending_max),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if self.auth.verification_code_ttl_s > 24 * 3_600 {
            return Err(invalid(
                "auth.verification_code_ttl_s",
                "must be at most 86400",
            ));
        }
        if self.auth.reset_token_ttl_s > 24 * 3_600 {
            return Err(invalid("auth.reset_token_ttl_s", "must be at most 86400"));
        }
        if !(1..=hub_domain::user::VERIFICATION_ATTEMPTS_MAX)
            .contains(&self.auth.verification_attempts)
        {
            return Err(invalid(
                "auth.verification_attempts",
                format!(
                    "must be 1 to {}",
                    hub_domain::user::VERIFICATION_ATTEMPTS_MAX
                ),
            ));
        }
        if self.auth.signup_grant_micros < 0 {
            return Err(invalid("auth.signup_grant_micros", "must not be negative"));
        }
        if self.auth.login_free_failures_account < 1 || self.auth.login_free_failures_ip < 1 {
            return Err(invalid(
                "auth.login_free_failures_account",
                "login_free_failures_account and login_free_failures_ip must be at least 1",
            ));
        }
        if !self.auth.public_url.starts_with("http://")
            && !self.auth.public_url.starts_with("https://")
        {
            return Err(invalid(
                "auth.public_url",
                "must start with http:// or https://",
            ));
        }
        let alerts = &self.alerts;
        if alerts.low_balance_default_micros < 0 {
            return Err(invalid(
                "alerts.low_balance_default_micros",
                "must not be negative",
            ));
        }
        for (field, value) in [
            ("alerts.delivery_interval_ms", alerts.delivery_interval_ms),
            ("alerts.webhook_timeout_ms", alerts.webhook_timeout_ms),
            ("alerts.attempts_max", u64::from(alerts.attempts_max)),
            ("alerts.retry_base_ms", alerts.retry_base_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if alerts.retry_max_ms < alerts.retry_base_ms {
            return Err(invalid(
                "alerts.retry_max_ms",
                "must be at least alerts.retry_base_ms",
            ));
        }
        if self.credits.snapshot_every == 0 {
            return Err(invalid("credits.snapshot_every", "must be at least 1"));
        }
        if let Err(reason) = self.mail.validate() {
            return Err(ConfigError::Invalid {
                field: "mail",
                reason,
            });
        }
        if let Err(reason) = self.models.validate() {
            return Err(ConfigError::Invalid {
                field: "models",
                reason,
            });
        }
        if let Err(reason) = self.payments.validate() {
            return Err(ConfigError::Invalid {
                field: "payments",
                reason,
            });
        }
        if let Err(reason) = self.google.validate() {
            return Err(ConfigError::Invalid {
                field: "google",
                reason,
            });
        }
        if self.server.body_limit_bytes == 0 {
            return Err(invalid("server.body_limit_bytes", "must be at least 1"));
        }
        for origin in &self.server.cors.allowed_origins {
            let Some((scheme, rest)) = origin.split_once("://") else {
                return Err(invalid(
                    "server.cors.allowed_origins",
                    format!("{origin:?} must start with http:// or https://"),
                ));
            };
            let host_ok = !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !matches!(scheme, "http" | "https") || !host_ok {
                return Err(invalid(
                    "server.cors.allowed_origins",
                    format!("{origin:?} is not an origin (scheme://host[:port], no path, no *)"),
                ));
            }
        }
        if self.server.cors.max_age_s > 86_400 {
            return Err(invalid("server.cors.max_age_s", "must be at most 86400"));
        }
        let limits = &self.rate_limits;
        if !limits.redis_url.starts_with("redis://") {
            // The client is built without TLS: a store off the machine sits on a private
            // network, or behind a local TLS tunnel.
            return Err(invalid("rate_limits.redis_url", "must start with redis://"));
        }
        if limits.key_prefix.is_empty()
            || !limits
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            return Err(invalid(
                "rate_limits.key_prefix",
                "must be letters, digits, _, -, . or : (at least one)",
            ));
        }
        if limits.store_timeout_ms == 0 {
            return Err(invalid(
                "rate_limits.store_timeout_ms",
                "must be at least 1",
            ));
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen_address().is_none() {
            return Err(invalid(
                "metrics.listen",
                "must be host:port with an IP address (127.0.0.1:9464), or empty",
            ));
        }
        if self.metrics.sample_interval_ms < 100 {
            return Err(invalid(
                "metrics.sample_interval_ms",
                "must be at least 100",
            ));
        }
        self.traces.validate()?;
        Ok(())
    }

    pub fn topology(&self) -> hub_nats::Topology {
        hub_nats::Topology {
            stream_prefix: self.nats.stream_prefix.clone(),
            subject_prefix: self.nats.subject_prefix.clone(),
            duplicate_window: Duration::from_secs(self.nats.duplicate_window_s),
            replicas: self.nats.replicas,
        }
    }

    pub fn pool_settings(&self) -> hub_commands::db::PoolSettings {
        hub_commands::db::PoolSettings {
            url: self.database.url.clone(),
            max_connections: self.database.max_connections,
            acquire_timeout: Duration::from_millis(self.database.acquire_timeout_ms),
        }
    }
}

/// Whether `host` (as in `server.host`) only accepts connections from this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

// Settings are logged and shown in errors: their secrets (a password in a URL, the JWT
// secret) print as `***`.

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &hub_adapters::secrets::redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .finish()
    }
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &hub_adapters::secrets::redact_url(&self.url))
            .field("stream_prefix", &self.stream_prefix)
            .field("subject_prefix", &self.subject_prefix)
            .field("duplicate_window_s", &self.duplicate_window_s)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let AuthSettings {
            jwt_secret: _,
            token_ttl_s,
            dev_secret_allowed,
            access_token_ttl_s,
            refresh_token_ttl_s,
            signup_grant_micros,
            require_verified_email,
            verification_code_ttl_s,
            verification_attempts,
            reset_token_ttl_s,
            login_free_failures_account,
            login_free_failures_ip,
            login_window_s,
            login_lock_max_s,
            public_url,
            cookie_secure,
            trust_forwarded_for,
            trusted_proxies,
            password_work_max,
            password_queue_wait_ms,
            oidc_pending_max,
        } = self;
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &"***")
            .field("token_ttl_s", token_ttl_s)
            .field("dev_secret_allowed", dev_secret_allowed)
            .field("access_token_ttl_s", access_token_ttl_s)
            .field("refresh_token_ttl_s", refresh_token_ttl_s)
            .field("signup_grant_micros", signup_grant_micros)
            .field("require_verified_email", require_verified_email)
            .field("verification_code_ttl_s", verification_code_ttl_s)
            .field("verification_attempts", verification_attempts)
            .field("reset_token_ttl_s", reset_token_ttl_s)
            .field("login_free_failures_account", login_free_failures_account)
            .field("login_free_failures_ip", login_free_failures_ip)
            .field("login_window_s", login_window_s)
            .field("login_lock_max_s", login_lock_max_s)
            .field("public_url", public_url)
            .field("cookie_secure", cookie_secure)
            .field("trust_forwarded_for", trust_forwarded_for)
            .field("trusted_proxies", trusted_proxies)
            .field("password_work_max", password_work_max)
            .field("password_queue_wait_ms", password_queue_wait_ms)
            .field("oidc_pending_max", oidc_pending_max)
            .finish()
    }
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn a_short_jwt_secret_is_refused_naming_the_field() {
        let mut s = Settings::default();
        s.auth.jwt_secret = "short".into();
        let err = s.validate().expect_err("refused").to_string();
        assert!(err.contains("auth.jwt_secret"), "{err}");
    }

    #[test]
    fn rate_limit_and_cors_settings_are_checked_naming_the_field() {
        let refused = |tweak: fn(&mut Settings)| {
            let mut s = Settings::default();
            tweak(&mut s);
            s.validate().expect_err("refused").to_string()
        };
        let err = refused(|s| s.rate_limits.redis_url = "http://redis:6379".into());
        assert!(err.contains("rate_limits.redis_url"), "{err}");
        let err = refused(|s| s.rate_limits.key_prefix = "has space".into());
        assert!(err.contains("rate_limits.key_prefix"), "{err}");
        let err = refused(|s| s.rate_limits.store_timeout_ms = 0);
        assert!(err.contains("rate_limits.store_timeout_ms"), "{err}");
        let err = refused(|s| s.metrics.listen = "localhost".into());
        assert!(err.contains("metrics.listen"), "{err}");
        let err = refused(|s| s.metrics.sample_interval_ms = 0);
        assert!(err.contains("metrics.sample_interval_ms"), "{err}");
        for origin in [
            "*",
            "app.example.com",
            "https://app.example.com/",
            "ftp://x.org",
        ] {
            let mut s = Settings::default();
            s.server.cors.allowed_origins = vec![origin.into()];
            let err = s.validate().expect_err("refused").to_string();
            assert!(
                err.contains("server.cors.allowed_origins"),
                "{origin}: {err}"
            );
        }
        let mut s = Settings::default();
        s.server.cors.allowed_origins = vec![
            "https://app.example.com".into(),
            "http://localhost:5173".into(),
        ];
        assert!(s.validate().is_ok());
    }

    #[test]
    fn trace_settings_are_checked_naming_the_field() {
        let refused = |tweak: fn(&mut Settings)| {
            let mut s = Settings::default();
            tweak(&mut s);
            s.validate().expect_err("refused").to_string()
        };
        for (tweak, field) in [
            (
                (|s: &mut Settings| s.traces.endpoint = "127.0.0.1:4318".into())
                    as fn(&mut Settings),
                "traces.endpoint",
            ),
            (
                |s| s.traces.endpoint = "grpc://collector:4317".into(),
                "traces.endpoint",
            ),
            (
                |s| s.traces.endpoint = "http://collector:4318/?x=1".into(),
                "traces.endpoint",
            ),
            (
                |s| s.traces.service_name = " ".into(),
                "traces.service_name",
            ),
            (|s| s.traces.sample_ratio = 1.5, "traces.sample_ratio"),
            (|s| s.traces.sample_ratio = f64::NAN, "traces.sample_ratio"),
            (
                |s| s.traces.export_timeout_ms = 0,
                "traces.export_timeout_ms",
            ),
        ] {
            let err = refused(tweak);
            assert!(err.contains(field), "{field}: {err}");
        }
        let mut s = Settings::default();
        s.traces.endpoint = "https://otel.example.com/base/".into();
        assert!(s.validate().is_ok());
        assert_eq!(
            s.traces.traces_url(),
            "https://otel.example.com/base/v1/traces"
        );
    }

    #[test]
    fn traces_are_turned_on_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIHUB__TRACES__ENABLED", "true");
            jail.set_env("AIHUB__TRACES__SAMPLE_RATIO", "0.25");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.traces.enabled);
            assert_eq!(s.traces.sample_ratio, 0.25);
            assert_eq!(s.traces.endpoint, "http://127.0.0.1:4318");
            Ok(())
        });
    }

    #[test]
    fn quotas_per_role_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AIHUB__RATE_LIMITS__ENABLED", "true");
            jail.set_env("AIHUB__RATE_LIMITS__ADMIN__REQUESTS_PER_MINUTE", "5000");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.rate_limits.enabled);
            assert_eq!(s.rate_limits.admin.requests_per_minute, 5000);
            assert_eq!(
                s.rate_limits.admin.tokens_per_minute,
                Quota::default().tokens_per_minute,
                "the other fields keep their defaults"
            );
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "aihub.toml",
                "[server]\nport = 9000\n[nats]\nsubject_prefix = \"file\"\n",
            )?;
            jail.set_env("AIHUB__NATS__SUBJECT_PREFIX", "env");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.server.port, 9000);
            assert_eq!(s.nats.subject_prefix, "env");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("aihub.toml", "[server]\nprot = 9000\n")?;
            let err = Settings::load(None).expect_err("refused").to_string();
            assert!(err.contains("prot"), "{err}");
            Ok(())
        });
    }
}
