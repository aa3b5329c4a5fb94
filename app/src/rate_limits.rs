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
//! A process takes a share of a large budget ahead, beside a take that passes, and decides
//! the caller's next requests from it without a call to the store ([`Shares`]; ADR 05,
//! decision 9): never more than the store's budget in all, at the price of a share that
//! one process holds unused for up to a second.
//!
//! When the store does not answer, a request is admitted unlimited (`rate_limits.fail_open`,
//! the default) or refused (503); `/ready` shows the store's state either way.

use hub_adapters::rate_store::{
    lease_ahead_id, Bucket, BucketState, HeldLease, LeaseSet, RateStore, RateStoreError,
};
use hub_domain::{ApiKey, ApiKeyId, ApiKeyRateLimits, Role, User, UserId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::config::{Quota, RateLimitSettings};
use crate::hub::Hub;
use crate::inference::{GatewayError, Payer};

/// The window every per-minute budget refills over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a concurrency lease outlives the request's deadline before it lapses by itself
/// (a process that died holding it).
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// A per-minute budget smaller than this is decided by the store on every request: exact
/// across processes, where a share would be much of it.
const SHARE_MIN_LIMIT: u64 = 100;
/// A process takes ahead at most this part (1/n) of a per-minute budget…
const SHARE_OF_LIMIT: u64 = 20;
/// …and at most this many requests' worth (of the request that took it).
const SHARE_REQUESTS: u64 = 16;
/// Concurrency smaller than this is decided by the store on every request.
const PLACES_MIN_LIMIT: u64 = 16;
/// A process takes ahead at most this many places among a caller's concurrent requests
/// (and at most an eighth of the limit).
const PLACES_AHEAD: u64 = 4;
/// A share unused this long goes back to the store, for the caller's other processes.
pub const SHARE_IDLE: Duration = Duration::from_secs(1);
/// A share goes back this long after it was first taken, used or not.
const SHARE_MAX_AGE: Duration = Duration::from_secs(10);
/// How often a process gives back the shares that are due.
const GIVE_BACK_EVERY: Duration = Duration::from_millis(250);
/// A place is held for a new request only this long after the store gave it: its lease
/// lapses `LEASE_MARGIN` after a whole request's time, so a request that starts within
/// this ends before it can lapse.
const PLACE_REUSE: Duration = Duration::from_secs(20);

/// Units of a bucket to take ahead, beside a take of `cost`.
fn ahead_of_bucket(limit: u64, cost: u64) -> u64 {
    if limit < SHARE_MIN_LIMIT || cost == 0 {
        0
    } else {
        (limit / SHARE_OF_LIMIT).min(cost.saturating_mul(SHARE_REQUESTS))
    }
}

/// Places of a set to take ahead, beside a request's own.
fn ahead_of_set(limit: u64) -> u64 {
    if limit < PLACES_MIN_LIMIT {
        0
    } else {
        (limit / 8).min(PLACES_AHEAD)
    }
}

/// What this process holds of the store's budgets, taken ahead of need
/// (docs/adr/05-rate-limits.md, decision 9): a request that finds all it needs here is
/// decided without a call to the store. Every unit and place here was taken in the store,
/// so the processes together never admit more than the store's budgets; what one holds
/// and does not use, the caller's requests through another process cannot have until it
/// goes back ([`SHARE_IDLE`], [`SHARE_MAX_AGE`]).
#[derive(Debug, Default)]
struct Shares {
    held: Mutex<HashMap<String, Share>>,
}

/// One budget's share: a bucket's units, or a set's free places.
#[derive(Debug)]
struct Share {
    /// The budget's limit (a bucket's per window, a set's at once).
    limit: u64,
    /// Units of the bucket taken in the store and not yet spent.
    units: u64,
    /// Places of the set taken in the store and free: each lease's id, and when it was
    /// taken.
    places: Vec<(String, Instant)>,
    /// What the store had left of the bucket when last asked, and when.
    seen: Option<(u64, Instant)>,
    first: Instant,
    used: Instant,
}

impl Share {
    fn new(limit: u64, now: Instant) -> Share {
        Share {
            limit: limit.max(1),
            units: 0,
            places: Vec::new(),
            seen: None,
            first: now,
            used: now,
        }
    }

    /// The bucket as this process sees it now: what the store had left when last asked,
    /// what has refilled since, and the units held here.
    fn state(&self, now: Instant) -> Option<BucketState> {
        let (remaining, at) = self.seen?;
        let interval = (WINDOW.as_micros() / u128::from(self.limit)).max(1);
        let refilled = now.saturating_duration_since(at).as_micros() / interval;
        let remaining = u128::from(remaining + self.units)
            .saturating_add(refilled)
            .min(u128::from(self.limit));
        let reset = (u128::from(self.limit) - remaining) * interval;
        Some(BucketState {
            limit: self.limit,
            remaining: u64::try_from(remaining).unwrap_or(self.limit),
            reset: Duration::from_micros(u64::try_from(reset).unwrap_or(u64::MAX)),
            retry_after: Some(Duration::ZERO),
        })
    }

    fn fresh_place(&self, now: Instant) -> Option<usize> {
        self.places
            .iter()
            .position(|(_, taken)| now.saturating_duration_since(*taken) < PLACE_REUSE)
    }
}

/// What a request drew from this process's shares before asking the store.
struct Drawn {
    /// For each bucket: its cost was spent here (a read: the share's view was enough).
    buckets: Vec<bool>,
    /// For each set: a free place held here.
    places: Vec<Option<(String, Instant)>>,
}

impl Drawn {
    fn complete(&self) -> bool {
        self.buckets.iter().all(|b| *b) && self.places.iter().all(Option::is_some)
    }
}

/// A place a request holds among its caller's concurrent requests.
#[derive(Debug)]
struct Place {
    key: String,
    limit: u64,
    id: String,
    taken: Instant,
}

impl Shares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Share>> {
        // A panic while holding it leaves counts that are still counts.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Spend what this process holds toward a request: each bucket whose share covers its
    /// cost, and a free place in each set.
    fn draw(&self, buckets: &[Bucket], sets: &[LeaseSet], now: Instant) -> Drawn {
        let mut held = self.lock();
        let buckets = buckets
            .iter()
            .map(|bucket| match held.get_mut(&bucket.key) {
                Some(share) if share.seen.is_some() && share.units >= bucket.cost => {
                    share.units -= bucket.cost;
                    share.used = now;
                    true
                }
                _ => false,
            })
            .collect();
        let places = sets
            .iter()
            .map(|set| {
                let share = held.get_mut(&set.key)?;
                let at = share.fresh_place(now)?;
                share.used = now;
                Some(share.places.swap_remove(at))
            })
            .collect();
        Drawn { buckets, places }
    }

    /// Put back what [`Shares::draw`] took, for a request the store refused.
    fn undraw(&self, buckets: &[Bucket], sets: &[LeaseSet], drawn: Drawn) {
        let mut held = self.lock();
        for (bucket, spent) in buckets.iter().zip(drawn.buckets) {
            if let (true, Some(share)) = (spent, held.get_mut(&bucket.key)) {
                share.units += bucket.cost;
            }
        }
        for (set, place) in sets.iter().zip(drawn.places) {
            if let (Some(place), Some(share)) = (place, held.get_mut(&set.key)) {
                share.places.push(place);
            }
        }
    }

    /// Record what the store answered for `asked` (the buckets sent, in order) and the
    /// sets sent: what it has left, and what it gave ahead (when admitted).
    fn record(
        &self,
        asked: &[Bucket],
        sets: &[LeaseSet],
        lease_id: &str,
        taken: &hub_adapters::rate_store::Taken,
        now: Instant,
    ) {
        let mut held = self.lock();
        for (i, (bucket, state)) in asked.iter().zip(&taken.buckets).enumerate() {
            let share = held
                .entry(bucket.key.clone())
                .or_insert_with(|| Share::new(bucket.limit, now));
            share.units += taken.buckets_ahead.get(i).copied().unwrap_or(0);
            share.seen = Some((state.remaining, now));
            share.used = now;
        }
        for (j, set) in sets.iter().enumerate() {
            let ahead = taken.leases_ahead.get(j).copied().unwrap_or(0);
            if ahead == 0 {
                continue;
            }
            let share = held
                .entry(set.key.clone())
                .or_insert_with(|| Share::new(set.limit, now));
            share.used = now;
            share
                .places
                .extend((1..=ahead).map(|n| (lease_ahead_id(lease_id, n), now)));
        }
    }

    /// The state of each bucket as this process sees it, `fallback` where it holds none
    /// (one for each bucket, in order; `None` where neither knows it, a share given back
    /// since it was drawn).
    fn states(
        &self,
        buckets: &[Bucket],
        fallback: &[BucketState],
        now: Instant,
    ) -> Vec<Option<BucketState>> {
        let held = self.lock();
        buckets
            .iter()
            .enumerate()
            .map(|(i, bucket)| {
                let mine = held.get(&bucket.key).and_then(|share| share.state(now));
                match (mine, fallback.get(i)) {
                    // A refusal keeps the store's word on when to come back.
                    (Some(mine), Some(theirs)) => Some(BucketState {
                        retry_after: theirs.retry_after,
                        ..mine
                    }),
                    (mine, theirs) => mine.or(theirs.copied()),
                }
            })
            .collect()
    }

    /// Keep what a request gives back where it is worth keeping (units of a shared bucket,
    /// a place still fresh in a shared set); the rest goes back to the store.
    fn keep(
        &self,
        units: Vec<Bucket>,
        places: Vec<Place>,
        now: Instant,
    ) -> (Vec<Bucket>, Vec<HeldLease>) {
        let mut held = self.lock();
        let mut to_store = Vec::new();
        for bucket in units {
            let cap = bucket.limit / SHARE_OF_LIMIT;
            if bucket.limit < SHARE_MIN_LIMIT || bucket.cost == 0 {
                if bucket.cost > 0 {
                    to_store.push(bucket);
                }
                continue;
            }
            let share = held
                .entry(bucket.key.clone())
                .or_insert_with(|| Share::new(bucket.limit, now));
            let kept = bucket.cost.min(cap.saturating_sub(share.units));
            share.units += kept;
            if bucket.cost > kept {
                to_store.push(Bucket {
                    cost: bucket.cost - kept,
                    ..bucket
                });
            }
        }
        let mut leases = Vec::new();
        for place in places {
            let fresh = now.saturating_duration_since(place.taken) < PLACE_REUSE;
            if fresh && ahead_of_set(place.limit) > 0 {
                let share = held
                    .entry(place.key.clone())
                    .or_insert_with(|| Share::new(place.limit, now));
                share.used = now;
                share.places.push((place.id, place.taken));
            } else {
                leases.push(HeldLease {
                    key: place.key,
                    id: place.id,
                });
            }
        }
        (to_store, leases)
    }

    /// Take out the shares that are due back in the store (unused for [`SHARE_IDLE`], or
    /// held for [`SHARE_MAX_AGE`]; places too old to start a request on), grouped by the
    /// keys' hash tag (one call each, so that each stays in one Redis Cluster slot). All
    /// of them when `all`.
    fn due(&self, now: Instant, all: bool) -> Vec<(Vec<Bucket>, Vec<HeldLease>)> {
        let mut groups: HashMap<String, (Vec<Bucket>, Vec<HeldLease>)> = HashMap::new();
        let mut held = self.lock();
        held.retain(|key, share| {
            let tag = hash_tag(key).to_string();
            let over = all
                || now.saturating_duration_since(share.used) >= SHARE_IDLE
                || now.saturating_duration_since(share.first) >= SHARE_MAX_AGE;
            let places: Vec<(String, Instant)> = if over {
                std::mem::take(&mut share.places)
            } else {
                let (stale, fresh) = std::mem::take(&mut share.places)
                    .into_iter()
                    .partition(|(_, taken)| now.saturating_duration_since(*taken) >= PLACE_REUSE);
                share.places = fresh;
                stale
            };
            let units = if over {
                std::mem::take(&mut share.units)
            } else {
                0
            };
            if units > 0 || !places.is_empty() {
                let group = groups.entry(tag).or_default();
                if units > 0 {
                    group.0.push(Bucket {
                        key: key.clone(),
                        limit: share.limit,
                        cost: units,
                        ahead: 0,
                    });
                }
                group.1.extend(places.into_iter().map(|(id, _)| HeldLease {
                    key: key.clone(),
                    id,
                }));
            }
            !over
        });
        groups.into_values().collect()
    }
}

/// The places a request holds, one in each of `sets`: the one drawn from the process's
/// share, or else the one the store just gave it (`lease_id`, taken at `now`).
fn placed(
    sets: &[LeaseSet],
    drawn: Vec<Option<(String, Instant)>>,
    lease_id: &str,
    now: Instant,
) -> Vec<Place> {
    sets.iter()
        .zip(drawn)
        .map(|(set, place)| {
            let (id, taken) = place.unwrap_or_else(|| (lease_id.to_string(), now));
            Place {
                key: set.key.clone(),
                limit: set.limit,
                id,
                taken,
            }
        })
        .collect()
}

/// The Redis Cluster hash tag of a key (`{u:…}`), or the key itself.
fn hash_tag(key: &str) -> &str {
    match (key.find('{'), key.find('}')) {
        (Some(open), Some(close)) if close > open => &key[open..=close],
        _ => key,
    }
}

/// Give back, every [`GIVE_BACK_EVERY`], the shares that are due, until the limits they
/// belong to are dropped.
async fn give_back_due(shares: Weak<Shares>, store: RateStore) {
    let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(held) = shares.upgrade() else {
            return;
        };
        let due = held.due(Instant::now(), false);
        drop(held);
        for (buckets, leases) in due {
            if let Err(err) = store.give_back(&buckets, &leases, WINDOW).await {
                tracing::debug!(error = %err, "a share of the rate limits was not given back; it lapses");
            }
        }
    }
}

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
    shares: Arc<Shares>,
    places: Vec<Place>,
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
        let tokens = match self.handover.lock() {
            Ok(mut handover) => {
                handover.ended = true;
                std::mem::take(&mut handover.tokens)
            }
            Err(_) => Vec::new(),
        };
        let places = std::mem::take(&mut self.places);
        let (buckets, leases) = self.shares.keep(tokens, places, Instant::now());
        if buckets.is_empty() && leases.is_empty() {
            return;
        }
        let store = self.store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = store.give_back(&buckets, &leases, WINDOW).await {
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
    /// What this process took from the store ahead of need.
    shares: Arc<Shares>,
    /// The task that gives back shares when they are due, started on first use.
    giving_back: OnceLock<()>,
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
            shares: Arc::default(),
            giving_back: OnceLock::new(),
        })
    }

    /// Calls this process has made to the store (every script run, whether it answered).
    pub fn store_calls(&self) -> u64 {
        self.store.as_ref().map_or(0, RateStore::calls)
    }

    /// Give back to the store everything this process holds of it (at shutdown, so that
    /// other processes need not wait for it to lapse).
    pub async fn give_back_shares(&self) {
        let Some(store) = &self.store else {
            return;
        };
        for (buckets, leases) in self.shares.due(Instant::now(), true) {
            if let Err(err) = store.give_back(&buckets, &leases, WINDOW).await {
                tracing::debug!(error = %err, "a share of the rate limits was not given back; it lapses");
            }
        }
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
                ahead: 0,
            });
        }
        if let Some((id, quota)) = &subject.key {
            let key_limit = limit(quota);
            if key_limit > 0 {
                buckets.push(Bucket {
                    key: self.key(subject, what, Some(*id)),
                    limit: key_limit,
                    cost,
                    ahead: 0,
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
                ahead: 0,
            });
        }
        if let Some((id, quota)) = &subject.key {
            if quota.concurrent_requests > 0 {
                sets.push(LeaseSet {
                    key: self.key(subject, "con", Some(*id)),
                    limit: quota.concurrent_requests,
                    ahead: 0,
                });
            }
        }
        sets
    }

    fn lease(&self, store: &RateStore, places: Vec<Place>) -> Option<Lease> {
        (!places.is_empty()).then(|| Lease {
            store: store.clone(),
            shares: Arc::clone(&self.shares),
            places,
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
        if let Err(err) = store.give_back(&buckets, &[], WINDOW).await {
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
        self.giving_back.get_or_init(|| {
            tokio::spawn(give_back_due(Arc::downgrade(&self.shares), store.clone()));
        });
        let now = Instant::now();
        // What this process holds decides the request when it covers all of it; otherwise
        // the store decides on the rest, and gives a share ahead where the budget is large.
        let drawn = self.shares.draw(&all, &sets, now);
        let report_of = |states: &[Option<BucketState>]| {
            let (request_states, token_states) = states.split_at(requests.len());
            Report {
                requests: tightest(request_states.iter().flatten()),
                tokens: tightest(token_states.iter().flatten()),
            }
        };
        if drawn.complete() {
            let states = self.shares.states(&all, &[], now);
            return Verdict::Admitted {
                report: report_of(&states),
                lease: self.lease(store, placed(&sets, drawn.places, "", now)),
            };
        }
        let asked: Vec<Bucket> = all
            .iter()
            .zip(&drawn.buckets)
            .map(|(bucket, spent)| {
                let cost = if *spent { 0 } else { bucket.cost };
                Bucket {
                    key: bucket.key.clone(),
                    limit: bucket.limit,
                    cost,
                    ahead: ahead_of_bucket(bucket.limit, cost),
                }
            })
            .collect();
        let asked_sets: Vec<LeaseSet> = sets
            .iter()
            .zip(&drawn.places)
            .filter(|(_, place)| place.is_none())
            .map(|(set, _)| LeaseSet {
                key: set.key.clone(),
                limit: set.limit,
                ahead: ahead_of_set(set.limit),
            })
            .collect();
        let lease_id = if asked_sets.is_empty() {
            String::new()
        } else {
            uuid::Uuid::new_v4().simple().to_string()
        };
        let taken = match store
            .take(&asked, &asked_sets, &lease_id, self.lease_lifetime, WINDOW)
            .await
        {
            Ok(taken) => taken,
            Err(err) => {
                self.shares.undraw(&all, &sets, drawn);
                return self.store_failed(&err);
            }
        };
        let now = Instant::now();
        self.shares
            .record(&asked, &asked_sets, &lease_id, &taken, now);
        if taken.admitted {
            let states = self.shares.states(&all, &taken.buckets, now);
            return Verdict::Admitted {
                report: report_of(&states),
                lease: self.lease(store, placed(&sets, drawn.places, &lease_id, now)),
            };
        }
        self.shares.undraw(&all, &sets, drawn);
        let report = report_of(&self.shares.states(&all, &taken.buckets, now));
        let (request_states, token_states) = taken.buckets.split_at(requests.len());
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
            ahead: 0,
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
fn tightest<'a>(states: impl IntoIterator<Item = &'a BucketState>) -> Option<BucketState> {
    states.into_iter().copied().min_by_key(|s| s.remaining)
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
        let (buckets, _) = limits.shares.keep(buckets, Vec::new(), Instant::now());
        if buckets.is_empty() {
            return;
        }
        tokio::spawn(async move {
            // A store that does not answer keeps them (the budget only errs on the strict side).
            if let Err(err) = store.give_back(&buckets, &[], WINDOW).await {
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
