//! The shared store of rate limits: Redis, one atomic Lua script per decision, so that every
//! API process draws on the same budgets (docs/adr/05-rate-limits.md).
//!
//! Two kinds of budget live here:
//!
//! - a **bucket** (requests or tokens per window): GCRA, the "generic cell rate algorithm",
//!   one key holding the theoretical arrival time (TAT) in microseconds. A full bucket admits
//!   `limit` units at once, and refills one unit every `window / limit`. A take of cost 0
//!   only reads (for the headers that tell a client what is left).
//! - a **lease set** (concurrent requests): a sorted set of lease ids scored by when each
//!   lease lapses, so a process that dies holding leases gives them back by itself.
//!
//! [`RateStore::take`] decides on every budget of a request at once, in one script: all are
//! taken, or none; when all are, it also takes what each budget was asked ahead, as far as
//! there is room (the caller's process spends it later without asking). Time is the Redis
//! server's (`TIME`), one clock for every process.
//!
//! The connection is made on first use, and after a failure no call is tried for
//! [`RETRY_AFTER_FAILURE`]: a store that is down costs a request nothing but the decision to
//! fail open or closed, which is the caller's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a failure, how long calls fail at once without trying the store: a down store
/// must not add its connect timeout to every request.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Check every budget, then take all of them or none; when all were taken, take from each
/// as much of what it asks ahead as it has room for (a share the caller's process spends
/// without asking again, `app::rate_limits`).
///
/// KEYS: the buckets, then the lease sets.
/// ARGV: number of buckets, lease id, lease lifetime (µs), window (µs), then for each bucket
/// its limit, cost and units asked ahead, then for each lease set its limit and places
/// asked ahead (named `<lease id>:1`, `:2`, …).
/// Returns: 1 or 0 (taken), then for each bucket remaining, µs until full, µs until the
/// take could pass (-1: never, it costs more than the limit), units taken ahead; then for
/// each lease set the leases held (with those taken) and places taken ahead.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nb = tonumber(ARGV[1])
local lease_id = ARGV[2]
local lease_us = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local sets_at = 4 + 3 * nb
local ok = 1
local out = {}
for i = 1, nb do
  local limit = tonumber(ARGV[2 + 3 * i])
  local cost = tonumber(ARGV[3 + 3 * i])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local retry = 0
  if cost > limit then
    retry = -1
    ok = 0
  elseif new_tat - now > window then
    retry = new_tat - now - window
    ok = 0
  end
  out[i] = { tat, new_tat, interval, retry }
end
local nl = #KEYS - nb
local held = {}
for j = 1, nl do
  local key = KEYS[nb + j]
  local limit = tonumber(ARGV[sets_at + 2 * j - 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local n = redis.call('ZCARD', key)
  if n >= limit then ok = 0 end
  held[j] = n
end
local reply = { ok }
for i = 1, nb do
  local o = out[i]
  local tat = o[1]
  local ahead = 0
  if ok == 1 then
    tat = o[2]
    local want = tonumber(ARGV[4 + 3 * i])
    if want > 0 then
      local room = math.floor((now + window - tat) / o[3])
      if room > 0 then
        ahead = math.min(want, room)
        tat = tat + ahead * o[3]
      end
    end
    if tat > now and tat ~= o[1] then
      redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    end
  end
  local remaining = math.floor((now + window - tat) / o[3])
  if remaining < 0 then remaining = 0 end
  reply[#reply + 1] = remaining
  reply[#reply + 1] = math.floor(tat - now)
  reply[#reply + 1] = math.floor(o[4])
  reply[#reply + 1] = ahead
end
for j = 1, nl do
  local key = KEYS[nb + j]
  local ahead = 0
  if ok == 1 then
    local limit = tonumber(ARGV[sets_at + 2 * j - 1])
    local want = tonumber(ARGV[sets_at + 2 * j])
    redis.call('ZADD', key, now + lease_us, lease_id)
    held[j] = held[j] + 1
    if want > 0 and held[j] < limit then
      ahead = math.min(want, limit - held[j])
      for k = 1, ahead do
        redis.call('ZADD', key, now + lease_us, lease_id .. ':' .. k)
      end
      held[j] = held[j] + ahead
    end
    redis.call('PEXPIRE', key, math.ceil(lease_us / 1000) + 1)
  end
  reply[#reply + 1] = held[j]
  reply[#reply + 1] = ahead
end
return reply
";

/// Give back what requests took and did not use: units of each bucket (a take that
/// counted more than was used, or a share taken ahead and not spent), and leases, in one
/// call.
/// KEYS: the buckets, then the lease sets (one per lease; a set may repeat).
/// ARGV: number of buckets, window (µs), then each bucket's limit and the units to give
/// back, then each lease's id.
const GIVE_BACK: &str = r"
local nb = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if nb > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  for i = 1, nb do
    local limit = tonumber(ARGV[1 + 2 * i])
    local units = tonumber(ARGV[2 + 2 * i])
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    local new_tat = tat - units * window / limit
    if new_tat > now then
      redis.call('SET', KEYS[i], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
    elseif tat > now then
      redis.call('DEL', KEYS[i])
    end
  end
end
for j = nb + 1, #KEYS do redis.call('ZREM', KEYS[j], ARGV[2 + nb + j]) end
return 1
";

/// One bucket of a take: its key, its limit per window, and what this take costs.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub key: String,
    /// Units per window; at least 1.
    pub limit: u64,
    /// Units this take needs; 0 reads the bucket only.
    pub cost: u64,
    /// Units to take ahead when the take passes, as many of them as there is room for
    /// (0: none).
    pub ahead: u64,
}

/// One set of concurrent leases: its key and how many may be held at once (at least 1).
#[derive(Debug, Clone)]
pub struct LeaseSet {
    pub key: String,
    pub limit: u64,
    /// Places to take ahead when the take passes, as many as there is room for (0: none);
    /// they are named `<lease id>:1`, `<lease id>:2`, ….
    pub ahead: u64,
}

/// One lease held in a set: what [`RateStore::give_back`] removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub key: String,
    pub id: String,
}

/// The id of the `n`-th place a take with `lease_id` took ahead (1-based).
pub fn lease_ahead_id(lease_id: &str, n: u64) -> String {
    format!("{lease_id}:{n}")
}

/// A bucket after a take, or as it stands when the take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub limit: u64,
    /// Units that could still be taken now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until this take could pass (`Duration::ZERO` when it passed); `None` when it never
    /// can (it costs more than the limit).
    pub retry_after: Option<Duration>,
}

/// What [`RateStore::take`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Every budget had room, and all were taken.
    pub admitted: bool,
    /// In the order asked.
    pub buckets: Vec<BucketState>,
    /// Leases held in each set (counting this one and those taken ahead when admitted),
    /// in the order asked.
    pub leases_held: Vec<u64>,
    /// Units taken ahead of each bucket, in the order asked (all 0 when refused).
    pub buckets_ahead: Vec<u64>,
    /// Places taken ahead in each set, in the order asked (all 0 when refused).
    pub leases_ahead: Vec<u64>,
}

/// Why the store gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum RateStoreError {
    #[error("the rate-limit store is unavailable: {0}")]
    Unavailable(String),
    #[error("the rate-limit store gave an answer that could not be read: {0}")]
    Protocol(String),
}

/// The shared rate-limit store. Cloning shares the connection.
#[derive(Clone)]
pub struct RateStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    /// Serialises connection attempts, so a burst makes one.
    connecting: tokio::sync::Mutex<()>,
    /// Scripts run (or tried), for the process's own accounting.
    calls: AtomicU64,
    /// Milliseconds since `epoch` of the last failure (0: none).
    failed_at_ms: AtomicU64,
    epoch: Instant,
    timeout: Duration,
    take: redis::Script,
    give_back: redis::Script,
}

impl std::fmt::Debug for RateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateStore")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RateStore {
    /// A store at `url` (`redis://host:port/db`); nothing is connected until first use.
    /// Each call waits at most `timeout` for an answer.
    pub fn new(url: &str, timeout: Duration) -> Result<RateStore, RateStoreError> {
        let client =
            redis::Client::open(url).map_err(|e| RateStoreError::Unavailable(e.to_string()))?;
        Ok(RateStore {
            inner: Arc::new(Inner {
                client,
                connection: tokio::sync::OnceCell::new(),
                connecting: tokio::sync::Mutex::new(()),
                calls: AtomicU64::new(0),
                failed_at_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                timeout,
                take: redis::Script::new(TAKE),
                give_back: redis::Script::new(GIVE_BACK),
            }),
        })
    }

    /// Scripts this store has sent (a call that failed counts too).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    fn note_failure(&self) {
        let ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.failed_at_ms.store(ms.max(1), Ordering::Relaxed);
    }

    fn recently_failed(&self) -> bool {
        let at = self.inner.failed_at_ms.load(Ordering::Relaxed);
        if at == 0 {
            return false;
        }
        let now = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(at) < u64::try_from(RETRY_AFTER_FAILURE.as_millis()).unwrap_or(0)
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, RateStoreError> {
        if let Some(connection) = self.inner.connection.get() {
            return Ok(connection.clone());
        }
        if self.recently_failed() {
            return Err(RateStoreError::Unavailable(
                "not connected; a recent attempt failed".into(),
            ));
        }
        let _one = self.inner.connecting.lock().await;
        if let Some(connection) = self.inner.connection.get() {
            return Ok(connection.clone());
        }
        if self.recently_failed() {
            return Err(RateStoreError::Unavailable(
                "not connected; a recent attempt failed".into(),
            ));
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout))
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.inner.timeout * 2,
            self.inner.client.get_connection_manager_with_config(config),
        )
        .await;
        match made {
            Ok(Ok(connection)) => {
                let _ = self.inner.connection.set(connection.clone());
                Ok(connection)
            }
            Ok(Err(err)) => {
                self.note_failure();
                Err(RateStoreError::Unavailable(err.to_string()))
            }
            Err(_) => {
                self.note_failure();
                Err(RateStoreError::Unavailable("connecting timed out".into()))
            }
        }
    }

    /// Run `invocation` with the call's timeout; a failure holds further calls back for
    /// [`RETRY_AFTER_FAILURE`].
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, RateStoreError> {
        if self.recently_failed() {
            return Err(RateStoreError::Unavailable(
                "a recent call failed; retrying shortly".into(),
            ));
        }
        let mut connection = self.connection().await?;
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(
            self.inner.timeout,
            invocation.invoke_async::<T>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let unavailable = err.is_io_error()
                    || err.is_timeout()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal();
                if unavailable {
                    self.note_failure();
                    Err(RateStoreError::Unavailable(err.to_string()))
                } else {
                    Err(RateStoreError::Protocol(err.to_string()))
                }
            }
            Err(_) => {
                self.note_failure();
                Err(RateStoreError::Unavailable("timed out".into()))
            }
        }
    }

    /// Check every bucket and lease set, and take all or none. `lease_id` names the lease
    /// taken in each set (unused without sets); a lease lapses after `lease_lifetime` if it
    /// is not released first. Buckets refill over `window`.
    pub async fn take(
        &self,
        buckets: &[Bucket],
        leases: &[LeaseSet],
        lease_id: &str,
        lease_lifetime: Duration,
        window: Duration,
    ) -> Result<Taken, RateStoreError> {
        let mut invocation = self.inner.take.prepare_invoke();
        for bucket in buckets {
            invocation.key(&bucket.key);
        }
        for set in leases {
            invocation.key(&set.key);
        }
        invocation
            .arg(buckets.len())
            .arg(lease_id)
            .arg(micros(lease_lifetime))
            .arg(micros(window));
        for bucket in buckets {
            invocation
                .arg(bucket.limit.max(1))
                .arg(bucket.cost)
                .arg(bucket.ahead);
        }
        for set in leases {
            invocation.arg(set.limit.max(1)).arg(set.ahead);
        }
        let reply: Vec<i64> = self.run(invocation).await?;
        let expected = 1 + 4 * buckets.len() + 2 * leases.len();
        if reply.len() != expected {
            return Err(RateStoreError::Protocol(format!(
                "{} values, expected {expected}",
                reply.len()
            )));
        }
        let duration = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let count = |value: i64| u64::try_from(value).unwrap_or(0);
        let admitted = reply[0] == 1;
        let (bucket_values, set_values) = reply[1..].split_at(4 * buckets.len());
        let states = buckets
            .iter()
            .zip(bucket_values.chunks_exact(4))
            .map(|(bucket, values)| BucketState {
                limit: bucket.limit,
                remaining: count(values[0]).min(bucket.limit),
                reset: duration(values[1]),
                retry_after: (values[2] >= 0).then(|| duration(values[2])),
            })
            .collect();
        let buckets_ahead = bucket_values
            .chunks_exact(4)
            .map(|values| count(values[3]))
            .collect();
        let leases_held = set_values
            .chunks_exact(2)
            .map(|values| count(values[0]))
            .collect();
        let leases_ahead = set_values
            .chunks_exact(2)
            .map(|values| count(values[1]))
            .collect();
        Ok(Taken {
            admitted,
            buckets: states,
            leases_held,
            buckets_ahead,
            leases_ahead,
        })
    }

    /// Give back `units` of each bucket (their `cost` field), as if they had not been taken,
    /// and each of `leases`: all in one call.
    pub async fn give_back(
        &self,
        buckets: &[Bucket],
        leases: &[HeldLease],
        window: Duration,
    ) -> Result<(), RateStoreError> {
        if buckets.is_empty() && leases.is_empty() {
            return Ok(());
        }
        let mut invocation = self.inner.give_back.prepare_invoke();
        for bucket in buckets {
            invocation.key(&bucket.key);
        }
        for lease in leases {
            invocation.key(&lease.key);
        }
        invocation.arg(buckets.len()).arg(micros(window));
        for bucket in buckets {
            invocation.arg(bucket.limit.max(1)).arg(bucket.cost);
        }
        for lease in leases {
            invocation.arg(&lease.id);
        }
        self.run::<i64>(invocation).await.map(|_| ())
    }

    /// Whether the store answers (for readiness).
    pub async fn ping(&self) -> Result<(), RateStoreError> {
        let mut connection = self.connection().await?;
        let answer = tokio::time::timeout(
            self.inner.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(RateStoreError::Unavailable(err.to_string())),
            Err(_) => Err(RateStoreError::Unavailable("timed out".into())),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
