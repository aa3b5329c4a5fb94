//! Rate limits and quotas, held across every API process by one shared store
//! ([`hub_adapters::rate_store`], Redis; docs/adr/05-rate-limits.md).
//!
//! - **Per caller, on `/v1`**: requests per minute, tokens per minute and concurrent
//!   requests. A chat (or an embeddings request) takes all three in one call when the submit
//!   pipeline has its estimate ([`take_tokens`]): the request, its tokens (its prompt and
//!   the most it may generate) and its place among the caller's concurrent requests. Any
//!   other `/v1` request is admitted by the API before its handler runs
//!   ([`RateLimits::admit_request`]). A WebSocket chat or an MCP tool's takes its request
//!   and tokens in the pipeline too (its concurrency is the connection's own limit). What an
//!   answer did not use of its tokens goes back with its place, in one call, when it ends
//!   ([`TokensTaken::give_back`]). Each counts against the user and, for a program, against
//!   its API key too: a request passes only when every budget has room, and takes from all
//!   of them at once.
//! - **Per client address, on the routes anyone may call** (register, sign in, password
//!   reset, resend verification, Google sign-in): requests per minute
//!   ([`RateLimits::admit_address`]). Beside it stay the login throttle's rows in Postgres
//!   (failures per account and address, docs/security.md) and the cap on concurrent password
//!   hashes ([`hub_adapters::secrets::Passwords`]).
//!
//! Quotas: each role's from settings (a user with several roles gets the largest), an API
//! key's the `user` role's unless the key overrides them. 0 means no limit.
//!
//! When the store does not answer, a request is admitted unlimited (`rate_limits.fail_open`,
//! the default) or refused (503); `/ready` shows the store's state either way.

use hub_adapters::rate_store::{Bucket, BucketState, LeaseSet, RateStore, RateStoreError};
use hub_domain::{ApiKey, ApiKeyId, ApiKeyRateLimits, Role, User, UserId};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

use crate::config::{Quota, RateLimitSettings};
use crate::hub::Hub;
use crate::inference::{GatewayError, Payer};

/// The window every per-minute budget refills over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a concurrency lease outlives the request's deadline before it lapses by itself
/// (a process that died holding it).
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// An API key's own limits, overriding the `user` role's where set (0: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyOverrides {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub concurrent_requests: Option<u64>,
}

impl KeyOverrides {
    pub fn of(key: &ApiKey) -> Self {
        Self::from_limits(key.rate_limits())
    }

    pub fn from_limits(limits: ApiKeyRateLimits) -> Self {
        KeyOverrides {
            requests_per_minute: limits.requests_per_minute.map(u64::from),
            tokens_per_minute: limits.tokens_per_minute.map(u64::from),
            concurrent_requests: limits.concurrent_requests.map(u64::from),
        }
    }
}

/// Who a request counts against, and how much each may use.
#[derive(Debug, Clone)]
pub struct Subject {
    pub user: Uuid,
    pub user_quota: Quota,
    /// The API key used, and its quota.
    pub key: Option<(ApiKeyId, Quota)>,
}

/// Which budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Requests,
    Tokens,
    Concurrency,
    Address,
}

impl Limited {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Limited::Requests => {
                "rate limit reached for requests per minute; retry after the time in Retry-After"
            }
            Limited::Tokens => {
                "rate limit reached for tokens per minute; retry after the time in Retry-After"
            }
            Limited::Concurrency => {
                "too many requests running at once for this caller; retry when one ends"
            }
            Limited::Address => {
                "too many requests from this address; retry after the time in Retry-After"
            }
        }
    }
}

/// What a caller has left, for the `x-ratelimit-*` headers: the tightest of its budgets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub requests: Option<BucketState>,
    pub tokens: Option<BucketState>,
}

impl Report {
    /// This report's budgets, and `other`'s where this one has none.
    pub fn or(self, other: Report) -> Report {
        Report {
            requests: self.requests.or(other.requests),
            tokens: self.tokens.or(other.tokens),
        }
    }
}

/// What the store decided.
#[derive(Debug)]
pub enum Verdict {
    /// Taken from every budget; the lease (if one was asked) is held until dropped.
    Admitted {
        report: Report,
        lease: Option<Lease>,
    },
    Refused {
        limited: Limited,
        /// When to come back; `None` when waiting will not help (one request larger than
        /// a whole minute's tokens).
        retry_after: Option<Duration>,
        report: Report,
    },
    /// Limits are off, or the store is down and they fail open: admitted, unlimited.
    Unchecked,
    /// The store is down and limits fail closed.
    Unavailable,
}

/// A place among a caller's concurrent requests, given back when dropped (or, if the process
/// dies, when it lapses). What the request's answer left of the tokens it took can be handed
/// to the lease before then ([`TokensTaken::give_back`]): both go back in one call.
#[derive(Debug)]
pub struct Lease {
    store: RateStore,
    sets: Vec<LeaseSet>,
    id: String,
    handover: Arc<Mutex<Handover>>,
}

/// Unused tokens waiting for their lease to end, or the news that it has.
#[derive(Debug, Default)]
struct Handover {
    ended: bool,
    tokens: Vec<Bucket>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let store = self.store.clone();
        let sets = std::mem::take(&mut self.sets);
        let id = std::mem::take(&mut self.id);
        let tokens = match self.handover.lock() {
            Ok(mut handover) => {
                handover.ended = true;
                std::mem::take(&mut handover.tokens)
            }
            Err(_) => Vec::new(),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = store.give_back(&tokens, &sets, &id, WINDOW).await {
                    tracing::debug!(error = %err, "a concurrency lease was not released; it will lapse");
                }
            });
        }
    }
}

/// The limits of one process, over the shared store.
pub struct RateLimits {
    settings: RateLimitSettings,
    /// `None` when limits are off.
    store: Option<RateStore>,
    lease_lifetime: Duration,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// The store's state, for readiness.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreCheck {
    pub ok: bool,
    /// What happens to requests while it is down: `open` (admitted unlimited) or `closed`.
    pub fails: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RateLimits {
    /// `request_deadline`: the longest an inference request runs (its lease lives that long
    /// and a margin).
    pub fn new(
        settings: &RateLimitSettings,
        request_deadline: Duration,
    ) -> Result<Self, RateStoreError> {
        let store = if settings.enabled {
            Some(RateStore::new(
                &settings.redis_url,
                Duration::from_millis(settings.store_timeout_ms),
            )?)
        } else {
            None
        };
        Ok(RateLimits {
            settings: settings.clone(),
            store,
            lease_lifetime: request_deadline + LEASE_MARGIN,
        })
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// The quota of a user holding `roles`: for each limit the largest a role gives (0, no
    /// limit, is the largest).
    pub fn user_quota<'a>(&self, roles: impl IntoIterator<Item = &'a Role>) -> Quota {
        let mut quota: Option<Quota> = None;
        for role in roles {
            let of_role = match role {
                Role::User => self.settings.user,
                Role::Admin => self.settings.admin,
                Role::Analyst => self.settings.analyst,
                Role::Auditor => self.settings.auditor,
            };
            quota = Some(match quota {
                None => of_role,
                Some(q) => Quota {
                    requests_per_minute: largest(
                        q.requests_per_minute,
                        of_role.requests_per_minute,
                    ),
                    tokens_per_minute: largest(q.tokens_per_minute, of_role.tokens_per_minute),
                    concurrent_requests: largest(
                        q.concurrent_requests,
                        of_role.concurrent_requests,
                    ),
                },
            });
        }
        quota.unwrap_or(self.settings.user)
    }

    /// An API key's quota: its own where it sets one, else the `user` role's.
    pub fn key_quota(&self, overrides: KeyOverrides) -> Quota {
        let base = self.settings.user;
        Quota {
            requests_per_minute: overrides
                .requests_per_minute
                .unwrap_or(base.requests_per_minute),
            tokens_per_minute: overrides
                .tokens_per_minute
                .unwrap_or(base.tokens_per_minute),
            concurrent_requests: overrides
                .concurrent_requests
                .unwrap_or(base.concurrent_requests),
        }
    }

    /// The subject of a request by `user` holding `roles`, through `key` if a program.
    pub fn subject<'a>(
        &self,
        user: Uuid,
        roles: impl IntoIterator<Item = &'a Role>,
        key: Option<(ApiKeyId, KeyOverrides)>,
    ) -> Subject {
        Subject {
            user,
            user_quota: self.user_quota(roles),
            key: key.map(|(id, overrides)| (id, self.key_quota(overrides))),
        }
    }

    fn key(&self, subject: &Subject, what: &str, key: Option<ApiKeyId>) -> String {
        // One hash tag per user: every key of a decision lands in one Redis Cluster slot.
        match key {
            None => format!(
                "{}:rl:{{u:{}}}:{what}",
                self.settings.key_prefix, subject.user
            ),
            Some(id) => format!(
                "{}:rl:{{u:{}}}:{what}:k:{}",
                self.settings.key_prefix, subject.user, id.0
            ),
        }
    }

    /// The buckets of one kind (`what`) for `subject`, each costing `cost`: the user's and
    /// the key's, those that have a limit.
    fn buckets(
        &self,
        subject: &Subject,
        what: &str,
        limit: impl Fn(&Quota) -> u64,
        cost: u64,
    ) -> Vec<Bucket> {
        let mut buckets = Vec::with_capacity(2);
        let user_limit = limit(&subject.user_quota);
        if user_limit > 0 {
            buckets.push(Bucket {
                key: self.key(subject, what, None),
                limit: user_limit,
                cost,
            });
        }
        if let Some((id, quota)) = &subject.key {
            let key_limit = limit(quota);
            if key_limit > 0 {
                buckets.push(Bucket {
                    key: self.key(subject, what, Some(*id)),
                    limit: key_limit,
                    cost,
                });
            }
        }
        buckets
    }

    /// The sets of the subject's concurrent requests, those that have a limit.
    fn lease_sets(&self, subject: &Subject) -> Vec<LeaseSet> {
        let mut sets = Vec::with_capacity(2);
        if subject.user_quota.concurrent_requests > 0 {
            sets.push(LeaseSet {
                key: self.key(subject, "con", None),
                limit: subject.user_quota.concurrent_requests,
            });
        }
        if let Some((id, quota)) = &subject.key {
            if quota.concurrent_requests > 0 {
                sets.push(LeaseSet {
                    key: self.key(subject, "con", Some(*id)),
                    limit: quota.concurrent_requests,
                });
            }
        }
        sets
    }

    fn lease(&self, store: &RateStore, sets: Vec<LeaseSet>, id: String) -> Option<Lease> {
        (!sets.is_empty()).then(|| Lease {
            store: store.clone(),
            sets,
            id,
            handover: Arc::default(),
        })
    }

    /// Admit one `/v1` request: a request from each per-minute budget, and (when `lease`, an
    /// inference request) a place among the caller's concurrent requests. The tokens left are
    /// read too, for the headers.
    pub async fn admit_request(&self, subject: &Subject, lease: bool) -> Verdict {
        self.admit(subject, 0, true, lease).await
    }

    /// Give back the request an admission took from the subject's per-minute request
    /// budgets: for a request refused after it was admitted (its access token's user was
    /// signed out or suspended), which must not use up the user's budget.
    pub async fn refund_request(&self, subject: &Subject) {
        let Some(store) = &self.store else {
            return;
        };
        let buckets = self.buckets(subject, "req", |q| q.requests_per_minute, 1);
        if buckets.is_empty() {
            return;
        }
        if let Err(err) = store.give_back(&buckets, &[], "", WINDOW).await {
            tracing::debug!(error = %err, "could not give a request back to the rate limits");
        }
    }

    /// Take `tokens` from the subject's per-minute token budgets (0 reads them, for the
    /// headers) and, when `request`, one request from its request budgets and, when `lease`,
    /// a place among its concurrent requests: all in one decision.
    pub async fn admit(
        &self,
        subject: &Subject,
        tokens: u64,
        request: bool,
        lease: bool,
    ) -> Verdict {
        let Some(store) = &self.store else {
            return Verdict::Unchecked;
        };
        let requests = if request {
            self.buckets(subject, "req", |q| q.requests_per_minute, 1)
        } else {
            Vec::new()
        };
        let tokens = self.buckets(subject, "tok", |q| q.tokens_per_minute, tokens);
        let sets = if lease {
            self.lease_sets(subject)
        } else {
            Vec::new()
        };
        let all: Vec<Bucket> = requests.iter().chain(tokens.iter()).cloned().collect();
        if all.is_empty() && sets.is_empty() {
            return Verdict::Unchecked;
        }
        let lease_id = if sets.is_empty() {
            String::new()
        } else {
            uuid::Uuid::new_v4().simple().to_string()
        };
        let taken = match store
            .take(&all, &sets, &lease_id, self.lease_lifetime, WINDOW)
            .await
        {
            Ok(taken) => taken,
            Err(err) => return self.store_failed(&err),
        };
        let (request_states, token_states) = taken.buckets.split_at(requests.len());
        let report = Report {
            requests: tightest(request_states),
            tokens: tightest(token_states),
        };
        if taken.admitted {
            let lease = self.lease(store, sets, lease_id);
            return Verdict::Admitted { report, lease };
        }
        let refused = |states: &[BucketState]| {
            states
                .iter()
                .filter(|s| s.retry_after != Some(Duration::ZERO))
                .map(|s| s.retry_after)
                .max_by_key(|r| r.unwrap_or(Duration::MAX))
        };
        let (limited, retry_after) = match (refused(request_states), refused(token_states)) {
            (Some(retry_after), _) => (Limited::Requests, retry_after),
            (None, Some(retry_after)) => (Limited::Tokens, retry_after),
            // Every bucket had room: the concurrent requests were full.
            (None, None) => (Limited::Concurrency, Some(Duration::from_secs(1))),
        };
        Verdict::Refused {
            limited,
            retry_after,
            report,
        }
    }

    /// Admit one request from `address` to a route anyone may call. IPv6 addresses count by
    /// their /64, what one subscriber is usually given.
    pub async fn admit_address(&self, address: IpAddr) -> Verdict {
        let Some(store) = &self.store else {
            return Verdict::Unchecked;
        };
        let limit = self.settings.anonymous_requests_per_minute_per_ip;
        if limit == 0 {
            return Verdict::Unchecked;
        }
        let client = match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        };
        let bucket = Bucket {
            key: format!("{}:rl:{{ip:{client}}}:anon", self.settings.key_prefix),
            limit,
            cost: 1,
        };
        let taken = match store.take(&[bucket], &[], "", Duration::ZERO, WINDOW).await {
            Ok(taken) => taken,
            Err(err) => return self.store_failed(&err),
        };
        let state = taken.buckets.first().copied();
        let report = Report {
            requests: state,
            tokens: None,
        };
        if taken.admitted {
            return Verdict::Admitted {
                report,
                lease: None,
            };
        }
        Verdict::Refused {
            limited: Limited::Address,
            retry_after: state.and_then(|s| s.retry_after),
            report,
        }
    }

    fn store_failed(&self, err: &RateStoreError) -> Verdict {
        tracing::warn!(error = %err, fail_open = self.settings.fail_open, "rate limits not checked");
        if self.settings.fail_open {
            Verdict::Unchecked
        } else {
            Verdict::Unavailable
        }
    }

    /// Whether the store answers; `None` when limits are off.
    pub async fn check(&self) -> Option<StoreCheck> {
        let store = self.store.as_ref()?;
        let fails = if self.settings.fail_open {
            "open"
        } else {
            "closed"
        };
        Some(match store.ping().await {
            Ok(()) => StoreCheck {
                ok: true,
                fails,
                error: None,
            },
            Err(err) => StoreCheck {
                ok: false,
                fails,
                error: Some(err.to_string()),
            },
        })
    }

    /// Whether requests are refused while the store is down.
    pub fn fails_closed(&self) -> bool {
        !self.settings.fail_open
    }
}

/// `a` or `b`, whichever allows more (0: no limit).
fn largest(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a.max(b)
    }
}

/// The budget with the least left.
fn tightest(states: &[BucketState]) -> Option<BucketState> {
    states.iter().copied().min_by_key(|s| s.remaining)
}

/// What one request's middleware knows, for the steps inside it: who it counts against,
/// whether it admitted the request already, and what the submit pipeline decided (read back
/// for the headers, and the lease to hold while the answer is sent).
#[derive(Debug)]
pub struct RequestLimits {
    pub subject: Subject,
    /// The edge took the request (and its place among the concurrent ones) before the
    /// handler ran: the pipeline takes the tokens only. Otherwise the pipeline takes all of
    /// them in its one call.
    admitted: bool,
    verdict: Mutex<Option<Verdict>>,
}

impl RequestLimits {
    pub fn new(subject: Subject, admitted: bool) -> Arc<Self> {
        Arc::new(RequestLimits {
            subject,
            admitted,
            verdict: Mutex::new(None),
        })
    }

    /// What the submit pipeline's limits decided, if the request got that far.
    pub fn take_verdict(&self) -> Option<Verdict> {
        self.verdict.lock().ok()?.take()
    }

    fn record(&self, verdict: Verdict) {
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(verdict);
        }
    }
}

tokio::task_local! {
    /// The limits of the request this task serves, set by the API around its handler.
    static REQUEST: Arc<RequestLimits>;
}

/// Tokens a chat took from its caller's per-minute budgets at acceptance; what its answer did
/// not use goes back when it ends ([`TokensTaken::give_back`]).
#[derive(Debug)]
pub struct TokensTaken {
    pub subject: Subject,
    pub tokens: u64,
    /// The request's concurrency lease, when it has one: the unused tokens go back with it.
    handover: Option<Arc<Mutex<Handover>>>,
}

impl TokensTaken {
    /// Give back what the answer did not use of the tokens taken, `used` being what it
    /// did (0 when it failed), off the answer's path: handed to the request's lease if it
    /// is still held, so that one call returns both, or on their own.
    pub fn give_back(self, hub: Arc<Hub>, used: u64) {
        let unused = self.tokens.saturating_sub(used);
        if unused == 0 {
            return;
        }
        let limits = &hub.rate_limits;
        let buckets = limits.buckets(&self.subject, "tok", |q| q.tokens_per_minute, unused);
        if buckets.is_empty() {
            return;
        }
        if let Some(handover) = &self.handover {
            if let Ok(mut handover) = handover.lock() {
                if !handover.ended {
                    handover.tokens = buckets;
                    return;
                }
            }
        }
        let Some(store) = limits.store.clone() else {
            return;
        };
        tokio::spawn(async move {
            // A store that does not answer keeps them (the budget only errs on the strict side).
            if let Err(err) = store.give_back(&buckets, &[], "", WINDOW).await {
                tracing::debug!(error = %err, "could not give unused tokens back to the rate limits");
            }
        });
    }
}

/// Run `work` (a request's handler) with `limits` visible to [`take_tokens`].
pub async fn with_request<F: std::future::Future>(
    limits: Arc<RequestLimits>,
    work: F,
) -> F::Output {
    REQUEST.scope(limits, work).await
}

/// The submit pipeline's step: take the request's tokens (its prompt and the most it may
/// generate) from the payer's per-minute budgets, and, unless the edge did already, the
/// request itself and its place among the concurrent ones, in one call. `user`: the payer,
/// when already loaded.
pub async fn take_tokens(
    hub: &Hub,
    payer: &Payer,
    user: Option<&User>,
    tokens: u64,
) -> Result<Option<TokensTaken>, GatewayError> {
    let limits = &hub.rate_limits;
    if !limits.enabled() {
        return Ok(None);
    }
    let request = REQUEST.try_with(Arc::clone).ok();
    let subject = match &request {
        Some(request) => request.subject.clone(),
        // A chat without the API's middleware around it (the WebSocket, an MCP tool): who
        // pays, as the event store has them.
        None => {
            let loaded;
            let user = match user {
                Some(user) => user,
                None => {
                    loaded =
                        hub.users.current(UserId(payer.user)).await.map_err(|_| {
                            GatewayError::Unavailable("the event store is unavailable")
                        })?;
                    loaded.as_ref()
                }
            };
            let key = payer.api_key.map(|id| {
                let overrides = user.api_key(id).map(KeyOverrides::of).unwrap_or_default();
                (id, overrides)
            });
            limits.subject(payer.user, user.roles(), key)
        }
    };
    // Through `/v1` the request takes its place among the caller's concurrent ones here
    // (the middleware holds it until the answer is sent); without the middleware, the
    // WebSocket's own cap of chats at once bounds it.
    let (take_request, lease) = match &request {
        Some(request) => (!request.admitted, !request.admitted),
        None => (true, false),
    };
    let verdict = limits.admit(&subject, tokens, take_request, lease).await;
    let outcome = match &verdict {
        Verdict::Admitted { lease, .. } => Ok(Some(TokensTaken {
            subject: subject.clone(),
            tokens,
            handover: lease.as_ref().map(|lease| Arc::clone(&lease.handover)),
        })),
        Verdict::Unchecked => Ok(None),
        Verdict::Refused {
            limited,
            retry_after,
            ..
        } => Err(GatewayError::RateLimited {
            message: if retry_after.is_none() {
                "this request needs more tokens than the per-minute limit allows; ask for fewer (max_tokens) or a shorter prompt"
            } else {
                limited.message()
            },
            retry_after_s: retry_after.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
        }),
        Verdict::Unavailable => Err(GatewayError::Unavailable(
            "the rate-limit store is unavailable",
        )),
    };
    if let Some(request) = request {
        request.record(verdict);
    }
    outcome
}
