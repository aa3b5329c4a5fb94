//! Running one command against one aggregate.

use hub_domain::Decision;
use rand::Rng;
use sqlx::PgPool;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use tokio::sync::Mutex;

use crate::error::{CommandError, StoreError};
use crate::store::{CommitHook, HubAggregate, HubEventStore, Loaded};

/// Number of lock stripes: commands for one aggregate run one at a time in a process, so
/// they never conflict with each other; different aggregates rarely share a stripe.
const STRIPES: usize = 1024;

/// How version conflicts (another process wrote the aggregate first) are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts_max: u32,
    /// Backoff before the second attempt; doubles each time up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Two processes hammering one account each lose about half their races; 64
        // jittered attempts (up to ~2 s of waiting) make starvation vanishingly unlikely
        // while still bounding how long a caller waits.
        RetryPolicy {
            attempts_max: 64,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(50),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: a uniform wait in `[0, min(max, base * 2^attempt)]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.backoff_max);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=micros))
    }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Committed<E> {
    /// The events written now (empty for a repeat or a command with nothing to do).
    pub events: Vec<E>,
    /// The event the caller asked about: the last one written under a key (else the last
    /// one written), or the first one ever written under a repeated key.
    pub decisive: Option<E>,
    /// The command's key had been used before; nothing was written.
    pub replayed: bool,
    /// The aggregate's sequence after the command.
    pub version: usize,
}

/// How a process builds its buses, one per aggregate: every bus shares the pool, the
/// snapshot interval, the cache size, the retry policy and the commit hook, so they are
/// set in one place.
#[derive(Clone)]
pub struct Buses {
    pool: PgPool,
    snapshot_every: usize,
    cache_max: usize,
    retry: RetryPolicy,
    on_commit: Option<CommitHook>,
}

impl Buses {
    /// `snapshot_every`: events between two snapshots of an aggregate (see
    /// [`crate::store::SNAPSHOT_EVERY_DEFAULT`]); `cache_max`: how many aggregates each bus
    /// keeps in memory (0 disables the cache). Conflicts are retried by
    /// [`RetryPolicy::default`].
    pub fn new(pool: PgPool, snapshot_every: usize, cache_max: usize) -> Self {
        Buses {
            pool,
            snapshot_every,
            cache_max,
            retry: RetryPolicy::default(),
            on_commit: None,
        }
    }

    /// Call `hook` after each commit that wrote events, on every bus built from here.
    pub fn with_commit_hook(mut self, hook: CommitHook) -> Self {
        self.on_commit = Some(hook);
        self
    }

    /// The event store of aggregate `A`, for reading and writing it without a bus.
    pub fn store<A: HubAggregate>(&self) -> HubEventStore<A> {
        let store = HubEventStore::new(self.pool.clone(), self.snapshot_every);
        match &self.on_commit {
            Some(hook) => store.with_commit_hook(hook.clone()),
            None => store,
        }
    }

    /// A command bus for aggregate `A`, with its own cache.
    pub fn bus<A>(&self) -> CommandBus<A>
    where
        A: HubAggregate,
        A::Command: Clone,
        A::Error: 'static,
    {
        CommandBus::new(self.store(), self.retry, self.cache_max)
    }
}

/// Recently used aggregates of one stripe, most recent last.
struct Stripe<A> {
    cached: Vec<Loaded<A>>,
}

impl<A> Stripe<A> {
    fn take(&mut self, aggregate_id: &str) -> Option<Loaded<A>> {
        let at = self
            .cached
            .iter()
            .position(|l| l.aggregate_id == aggregate_id)?;
        Some(self.cached.remove(at))
    }

    fn put(&mut self, loaded: Loaded<A>, capacity: usize) {
        self.cached.push(loaded);
        if self.cached.len() > capacity {
            self.cached.remove(0);
        }
    }
}

/// Runs commands through an [`HubEventStore`].
///
/// Aggregates stay cached between commands. A cached state may be stale if another process
/// wrote the aggregate; that is safe: its append conflicts on the sequence and the command
/// is retried from the store, and a refusal decided on cached state is checked against the
/// store before it is returned.
pub struct CommandBus<A: HubAggregate> {
    store: HubEventStore<A>,
    retry: RetryPolicy,
    stripes: Vec<Mutex<Stripe<A>>>,
    per_stripe: usize,
}

impl<A> CommandBus<A>
where
    A: HubAggregate,
    A::Command: Clone,
    A::Error: 'static,
{
    /// `cache_max`: how many aggregates to keep in memory (0 disables the cache). Built
    /// by [`Buses::bus`].
    pub(crate) fn new(store: HubEventStore<A>, retry: RetryPolicy, cache_max: usize) -> Self {
        CommandBus {
            store,
            retry,
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe { cached: Vec::new() }))
                .collect(),
            per_stripe: cache_max.div_ceil(STRIPES),
        }
    }

    pub fn store(&self) -> &HubEventStore<A> {
        &self.store
    }

    fn stripe(&self, aggregate_id: &str) -> &Mutex<Stripe<A>> {
        let mut hasher = DefaultHasher::new();
        aggregate_id.hash(&mut hasher);
        let at = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.stripes[at]
    }

    /// Run `command` against aggregate `aggregate_id`; `metadata` is stored with each event.
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>> {
        let mut stripe = self.stripe(aggregate_id).lock().await;
        let mut trust_cache = true;
        let mut recall = false;
        let mut attempt: u32 = 0;
        loop {
            let cached = if trust_cache {
                stripe.take(aggregate_id)
            } else {
                stripe.take(aggregate_id);
                None
            };
            let from_cache = cached.is_some();
            let mut loaded = match cached {
                Some(loaded) => loaded,
                None => self.store.load(aggregate_id).await?,
            };
            if recall {
                let keys = A::related_keys(&command);
                let found = self.store.find_by_keys(aggregate_id, &keys).await?;
                loaded.aggregate.recall(found);
            }
            let Decision { events, replay_of } = match loaded.aggregate.decide(command.clone()) {
                Ok(decision) => decision,
                Err(refusal) => {
                    if from_cache {
                        // Decided on state another process may have moved on: confirm.
                        trust_cache = false;
                        continue;
                    }
                    if !recall && A::may_be_forgotten(&refusal) {
                        recall = true;
                        trust_cache = false;
                        continue;
                    }
                    stripe.put(loaded, self.per_stripe);
                    return Err(CommandError::Rejected(refusal));
                }
            };
            if replay_of.is_some() || events.is_empty() {
                let version = loaded.sequence;
                stripe.put(loaded, self.per_stripe);
                return Ok(Committed {
                    events: Vec::new(),
                    replayed: replay_of.is_some(),
                    decisive: replay_of,
                    version,
                });
            }
            for event in &events {
                loaded.aggregate.apply(event.clone());
            }
            match self.store.append(events, &mut loaded, metadata).await {
                Ok(envelopes) => {
                    let version = loaded.sequence;
                    stripe.put(loaded, self.per_stripe);
                    let events: Vec<A::Event> = envelopes.into_iter().map(|e| e.payload).collect();
                    // An unkeyed event after the keyed one (a debt repaid from a grant's
                    // credits) is its consequence, not what the caller asked about.
                    let decisive = events
                        .iter()
                        .rev()
                        .find(|e| A::event_key(e).is_some())
                        .or(events.last())
                        .cloned();
                    return Ok(Committed {
                        decisive,
                        events,
                        replayed: false,
                        version,
                    });
                }
                Err(StoreError::Conflict) => {
                    // Another writer took this sequence, or this key was used before and is
                    // forgotten here: reload, recall the command's keys, decide again.
                    attempt += 1;
                    if attempt >= self.retry.attempts_max {
                        return Err(CommandError::Contention { attempts: attempt });
                    }
                    trust_cache = false;
                    recall = !A::related_keys(&command).is_empty();
                    tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
}
