//! `aihub audit verify`: check the books from the event store outward, and list every
//! discrepancy found, naming the event or row.
//!
//! 1. **accounts** — every credit account folded from its events (its own rules) equals its
//!    `balances` row and the sum of its `ledger` entries;
//! 2. **stream** — every event in Postgres is in `HUB_EVENTS` exactly once, in aggregate
//!    order, with the same payload (events the relay has not published yet are counted as
//!    pending, not missing);
//! 3. **charges** — every charge is at most its reservation and at most the price of its
//!    recorded price version times its usage, which is what its usage record says it cost;
//! 4. **payments** — every paid Stripe session credited exactly once, to its payer, with
//!    its package's credits; no purchase without a paid session;
//! 5. **trial balance** — the double-entry journal balances at the head and at past times;
//! 6. **hash chain** — every event's hash recomputed from its stored bytes, and every
//!    signed checkpoint: its signature, its link to the one before, its root recomputed
//!    from its heads, and each head equal to the event it names.
//!
//! Events are read once, in aggregate order, streamed from one snapshot of the database.
//! A run's report is kept in `audit_verifications` (`GET /api/audit/verify` shows the last).

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use futures::{StreamExt, TryStreamExt};
use hub_domain::{CreditAccount, CreditEvent, Decider, PaymentEvent, Price, TokenUsage};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::evidence::chain::{self, link, Hash, GENESIS};
use crate::evidence::checkpoints::{
    self, checkpoint_of, stored_of, tree_of, EvidenceError, STORED_COLUMNS,
};
use crate::evidence::proof::verify_checkpoint;

/// Discrepancies listed in a report at most (all are counted).
pub const LISTED_MAX: usize = 1_000;

/// Past times the trial balance is checked at, besides the head.
const PAST_SAMPLES: usize = 5;

/// How long the stream read waits for a message it knows is there.
const STALL: Duration = Duration::from_secs(30);

/// The checks, by name, in the order they are reported.
pub const CHECKS: [&str; 6] = [
    "accounts",
    "stream",
    "charges",
    "payments",
    "trial_balance",
    "hash_chain",
];

/// One thing that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Discrepancy {
    /// One of [`CHECKS`].
    pub check: String,
    /// The event (`<type>/<id>/<sequence>`), row or checkpoint it is about.
    pub subject: String,
    pub detail: String,
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckOutcome {
    pub check: String,
    pub passed: bool,
    pub discrepancies: u64,
}

/// What a run found.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub passed: bool,
    pub events: u64,
    pub events_per_second: f64,
    pub accounts: u64,
    pub payments: u64,
    pub stream: String,
    pub stream_messages: u64,
    /// Events the relay has not published yet (not counted as missing).
    pub pending_publication: u64,
    /// Accounts whose `balances` row has not caught up with their last event yet (not
    /// compared).
    pub read_model_behind: u64,
    pub checkpoints: u64,
    /// Times the trial balance was checked at (the head first, as `null`).
    pub trial_balance_at: Vec<Option<DateTime<Utc>>>,
    pub checks: Vec<CheckOutcome>,
    /// At most [`LISTED_MAX`], in the order found.
    pub discrepancies: Vec<Discrepancy>,
}

/// What to check against.
pub struct Options {
    /// The stream holding the events: `HUB_EVENTS` (with the topology's prefix) unless
    /// another is named (a copy, a mirror).
    pub stream: Option<String>,
    /// The key checkpoints must be signed with.
    pub public_key: VerifyingKey,
    pub now: DateTime<Utc>,
}

/// Where a run is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stage: &'static str,
    pub done: u64,
    /// 0 when unknown.
    pub total: u64,
}

/// Why a run could not finish (a discrepancy is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the database could not be read: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the stream could not be read: {0}")]
    Stream(String),
    #[error(transparent)]
    Audit(#[from] super::AuditError),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
}

struct Findings {
    listed: Vec<Discrepancy>,
    counts: BTreeMap<&'static str, u64>,
}

impl Findings {
    fn new() -> Findings {
        Findings {
            listed: Vec::new(),
            counts: CHECKS.iter().map(|c| (*c, 0)).collect(),
        }
    }

    fn add(&mut self, check: &'static str, subject: impl Into<String>, detail: impl Into<String>) {
        *self.counts.entry(check).or_insert(0) += 1;
        if self.listed.len() < LISTED_MAX {
            self.listed.push(Discrepancy {
                check: check.to_string(),
                subject: subject.into(),
                detail: detail.into(),
            });
        }
    }
}

/// The first eight bytes of an event's chain digest: equal for the store's row and a
/// stream message that carries the same event byte for byte.
fn fingerprint(digest: &Hash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn event_name(aggregate_type: &str, aggregate_id: &str, sequence: i64) -> String {
    format!("{aggregate_type}/{aggregate_id}/{sequence}")
}

/// An aggregate as the store has it: event fingerprints by sequence (index 0 is
/// sequence 1; `None`: no such event in the store, a gap).
struct StoreAggregate {
    fingerprints: Vec<Option<u64>>,
}

/// A credit account being folded.
struct Folding {
    id: Uuid,
    account: CreditAccount,
    /// Balance after each event, by sequence (index 0 is sequence 1).
    balance_after: Vec<i64>,
}

/// The read models an account is compared with, read before the events.
struct ReadModels {
    /// account → (balance, reserved, debt, version).
    balances: HashMap<Uuid, (i64, i64, i64, i64)>,
    /// account → (sum of amounts, last sequence, balance after the last entry).
    ledger: HashMap<Uuid, (i64, i64, i64)>,
}

/// Run every check.
pub async fn verify(
    pool: &PgPool,
    js: &jetstream::Context,
    topology: &hub_nats::Topology,
    options: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, VerifyError> {
    let started_at = options.now;
    let clock = Instant::now();
    // The stream is read on a task of its own while the event store is: the two passes
    // share nothing until they are compared.
    let stream_name = options
        .stream
        .clone()
        .unwrap_or_else(|| topology.events_stream());
    let stream_read = tokio::spawn(read_stream(js.clone(), stream_name.clone()));
    let mut findings = Findings::new();
    let mut tx = super::snapshot(pool).await?;

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    let models = read_models(&mut tx).await?;

    // One pass over the event store: checks 1, 3, 6 (the chain) and what 2 and 4 need.
    let mut store: HashMap<(String, String), StoreAggregate> = HashMap::new();
    let mut paid: HashMap<String, (Uuid, i64)> = HashMap::new();
    let mut purchased: HashMap<String, Vec<(Uuid, i64, String)>> = HashMap::new();
    let mut accounts = 0u64;
    let mut behind = 0u64;
    let mut events = 0u64;
    {
        let statement = format!(
            "SELECT {STORED_COLUMNS}, hash FROM events
              ORDER BY aggregate_type, aggregate_id, sequence"
        );
        let mut rows = sqlx::query(&statement).fetch(&mut *tx);
        let mut current: Option<(String, String)> = None;
        // The fingerprints of the aggregate being read, moved into `store` when it ends.
        let mut prints: Vec<Option<u64>> = Vec::new();
        let mut previous: Hash = GENESIS;
        let mut expected = 1i64;
        let mut folding: Option<Folding> = None;
        while let Some(row) = rows.try_next().await? {
            let stored = stored_of(&row)?;
            let hash: Vec<u8> = row.try_get("hash")?;
            let name = event_name(
                &stored.aggregate_type,
                &stored.aggregate_id,
                stored.sequence,
            );
            let same = current
                .as_ref()
                .is_some_and(|(t, i)| *t == stored.aggregate_type && *i == stored.aggregate_id);
            if !same {
                if let Some(done) = folding.take() {
                    accounts += 1;
                    behind += u64::from(close_account(done, &models, &mut findings));
                }
                if let Some(key) = current.take() {
                    store.insert(
                        key,
                        StoreAggregate {
                            fingerprints: std::mem::take(&mut prints),
                        },
                    );
                }
                current = Some((stored.aggregate_type.clone(), stored.aggregate_id.clone()));
                previous = GENESIS;
                expected = 1;
                if stored.aggregate_type == super::CREDIT_ACCOUNT {
                    folding = match stored.aggregate_id.parse::<Uuid>() {
                        Ok(id) => Some(Folding {
                            id,
                            account: CreditAccount::default(),
                            balance_after: Vec::new(),
                        }),
                        Err(_) => {
                            findings.add(
                                "accounts",
                                &name,
                                "a credit account whose id is not a UUID",
                            );
                            None
                        }
                    };
                }
            }
            // 6. The chain.
            if stored.sequence != expected {
                findings.add(
                    "hash_chain",
                    &name,
                    format!(
                        "follows sequence {} of its aggregate: events {expected}..{} are missing",
                        expected - 1,
                        stored.sequence - 1
                    ),
                );
            }
            let digest = stored.digest();
            let recomputed = link(&previous, &digest);
            if hash.as_slice() != recomputed {
                findings.add(
                    "hash_chain",
                    &name,
                    "its stored hash does not follow from the previous event's hash and its own bytes (edited, inserted or reordered)",
                );
            }
            previous = hash.as_slice().try_into().unwrap_or(recomputed);
            expected = stored.sequence + 1;

            let index = usize::try_from(stored.sequence - 1).unwrap_or(usize::MAX);
            if index != usize::MAX {
                if prints.len() <= index {
                    prints.resize(index + 1, None);
                }
                prints[index] = Some(fingerprint(&digest));
            }

            match stored.aggregate_type.as_str() {
                super::CREDIT_ACCOUNT => {
                    if let Some(f) = folding.as_mut() {
                        match serde_json::from_str::<CreditEvent>(&stored.payload) {
                            Ok(event) => {
                                check_charge(&event, &name, &mut findings);
                                if let CreditEvent::CreditsPurchased {
                                    payment_id, amount, ..
                                } = &event
                                {
                                    purchased
                                        .entry(payment_id.as_str().to_string())
                                        .or_default()
                                        .push((f.id, amount.micros(), name.clone()));
                                }
                                f.account.evolve(event);
                                let i = usize::try_from(stored.sequence - 1).unwrap_or(0);
                                if f.balance_after.len() <= i {
                                    f.balance_after.resize(i + 1, 0);
                                }
                                f.balance_after[i] = f.account.balance().micros();
                            }
                            Err(err) => findings.add(
                                "accounts",
                                &name,
                                format!("does not read as a credit account event: {err}"),
                            ),
                        }
                    }
                }
                "Payment" => {
                    if let Ok(PaymentEvent::PaymentCompleted { checkout, .. }) =
                        serde_json::from_str::<PaymentEvent>(&stored.payload)
                    {
                        if paid
                            .insert(
                                checkout.session_id.as_str().to_string(),
                                (checkout.user.0, checkout.credits.micros()),
                            )
                            .is_some()
                        {
                            findings.add(
                                "payments",
                                &name,
                                "a second completion of the same session",
                            );
                        }
                    }
                }
                _ => {}
            }
            events += 1;
            // Let the stream's reader (and the rest of the process) run: this loop rarely
            // waits on its own.
            if events.is_multiple_of(1_000) {
                tokio::task::yield_now().await;
            }
            if events.is_multiple_of(10_000) {
                progress(Progress {
                    stage: "event store",
                    done: events,
                    total,
                });
            }
        }
        if let Some(done) = folding.take() {
            accounts += 1;
            behind += u64::from(close_account(done, &models, &mut findings));
        }
        if let Some(key) = current.take() {
            store.insert(
                key,
                StoreAggregate {
                    fingerprints: prints,
                },
            );
        }
    }
    progress(Progress {
        stage: "event store",
        done: events,
        total,
    });

    // 4. Payments.
    let payments = paid.len() as u64;
    for (session, (user, credits)) in &paid {
        match purchased.get(session).map(Vec::as_slice) {
            None | Some([]) => findings.add(
                "payments",
                format!("Payment/{session}"),
                "paid, but no purchase credited the account",
            ),
            Some([(account, amount, event)]) => {
                if account != user {
                    findings.add(
                        "payments",
                        event,
                        format!("credited account {account}, but the payer is {user}"),
                    );
                }
                if amount != credits {
                    findings.add(
                        "payments",
                        event,
                        format!("credited {amount} µc, but the package is {credits} µc"),
                    );
                }
            }
            Some(many) => findings.add(
                "payments",
                format!("Payment/{session}"),
                format!("credited {} times", many.len()),
            ),
        }
    }
    for (payment_id, credits) in &purchased {
        // A won dispute gives back credits as a purchase of its own: `<session>:won:<id>`.
        let session = payment_id.split(":won:").next().unwrap_or(payment_id);
        if !paid.contains_key(session) {
            for (_, _, event) in credits {
                findings.add(
                    "payments",
                    event,
                    format!("a purchase for {payment_id}, which no paid session explains"),
                );
            }
        }
    }

    // 6. Checkpoints.
    let checkpoints = verify_checkpoints(&mut tx, &options.public_key, &mut findings).await?;

    // 2. The stream (read meanwhile).
    let pending = pending_publication(&mut tx).await?;
    tx.commit().await?;
    progress(Progress {
        stage: "stream",
        done: 0,
        total: 0,
    });
    let read = stream_read
        .await
        .map_err(|e| VerifyError::Stream(format!("the stream reader failed: {e}")))??;
    let (mut later, mut unlike) = (Vec::new(), Vec::new());
    let stream_messages = check_stream(
        read,
        &stream_name,
        &store,
        &pending,
        &mut findings,
        &mut later,
        &mut unlike,
    );
    compare_unlike(pool, js, &stream_name, &unlike, &mut findings).await?;
    // A message whose event the snapshot lacks is a discrepancy only if the event store
    // still lacks it (it was not written after the snapshot was taken).
    if !later.is_empty() {
        let exists: Vec<bool> = sqlx::query_scalar(
            "SELECT e.sequence IS NOT NULL
               FROM UNNEST($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS m(t, i, s, n)
               LEFT JOIN events e
                 ON e.aggregate_type = m.t AND e.aggregate_id = m.i AND e.sequence = m.s
              ORDER BY m.n",
        )
        .bind(later.iter().map(|l| l.0 .0.as_str()).collect::<Vec<_>>())
        .bind(later.iter().map(|l| l.0 .1.as_str()).collect::<Vec<_>>())
        .bind(later.iter().map(|l| l.1).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        for ((key, event, sequence), exists) in later.iter().zip(exists) {
            if !exists {
                findings.add(
                    "stream",
                    event_name(&key.0, &key.1, *event),
                    format!("is in {stream_name} (message {sequence}) but not in the event store"),
                );
            }
        }
    }
    let pending_publication = pending
        .values()
        .map(|(from, to)| u64::try_from(to - from + 1).unwrap_or(0))
        .sum();

    // 5. The trial balance, at the head and at past times.
    let first: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(recorded_at) FROM events")
        .fetch_one(pool)
        .await?;
    let mut at: Vec<Option<DateTime<Utc>>> = vec![None];
    if let Some(first) = first {
        let span = options.now - first;
        for i in 1..=PAST_SAMPLES {
            at.push(Some(
                first
                    + span * i32::try_from(i).unwrap_or(1)
                        / i32::try_from(PAST_SAMPLES + 1).unwrap_or(1),
            ));
        }
    }
    for time in &at {
        let text = time.map(|t| t.to_rfc3339());
        let balance =
            super::trial_balance::trial_balance(pool, options.now, text.as_deref()).await?;
        let when = text.clone().unwrap_or_else(|| "the head".into());
        if !balance.balanced {
            findings.add(
                "trial_balance",
                format!("trial balance at {when}"),
                format!(
                    "debits {} µc, credits {} µc",
                    balance.total_debits_micros, balance.total_credits_micros
                ),
            );
        }
        if let Some(read_model) = balance.read_model.filter(|r| !r.agrees) {
            findings.add(
                "trial_balance",
                format!("trial balance at {when}"),
                format!(
                    "the users' lines differ from the balances read model (available {} µc, reserved {} µc, debt {} µc there)",
                    read_model.available_micros, read_model.reserved_micros, read_model.debt_micros
                ),
            );
        }
    }

    let elapsed = clock.elapsed().as_secs_f64().max(1e-9);
    let checks: Vec<CheckOutcome> = CHECKS
        .iter()
        .map(|check| {
            let n = findings.counts.get(check).copied().unwrap_or(0);
            CheckOutcome {
                check: (*check).to_string(),
                passed: n == 0,
                discrepancies: n,
            }
        })
        .collect();
    Ok(Report {
        started_at,
        finished_at: started_at
            + chrono::Duration::milliseconds(
                i64::try_from(clock.elapsed().as_millis()).unwrap_or(0),
            ),
        passed: checks.iter().all(|c| c.passed),
        events,
        events_per_second: events as f64 / elapsed,
        accounts,
        payments,
        stream: stream_name,
        stream_messages,
        pending_publication,
        read_model_behind: behind,
        checkpoints,
        trial_balance_at: at,
        checks,
        discrepancies: findings.listed,
    })
}

/// 3. A settlement's charge against its reservation and its price.
fn check_charge(event: &CreditEvent, name: &str, findings: &mut Findings) {
    let CreditEvent::ReservationSettled {
        reserved,
        charged,
        usage,
        ..
    } = event
    else {
        return;
    };
    if charged.micros() > reserved.micros() {
        findings.add(
            "charges",
            name,
            format!(
                "charged {} µc, above its reservation of {} µc",
                charged.micros(),
                reserved.micros()
            ),
        );
    }
    let Some(usage) = usage else {
        return;
    };
    if charged.micros() > usage.cost.micros() {
        findings.add(
            "charges",
            name,
            format!(
                "charged {} µc, above its recorded cost of {} µc",
                charged.micros(),
                usage.cost.micros()
            ),
        );
    }
    // The price version is the model's prices when the request was accepted:
    // `<input>/<output>/<cached input>` micro-credits per million tokens.
    let prices: Vec<i64> = usage
        .price_version
        .split('/')
        .filter_map(|p| p.parse().ok())
        .collect();
    let [input, output, cached] = prices[..] else {
        findings.add(
            "charges",
            name,
            format!("price version {:?} names no price", usage.price_version),
        );
        return;
    };
    let tokens = TokenUsage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cached_input_tokens: usage.cached_input_tokens,
        reasoning_tokens: 0,
    };
    match Price::from_micros(input, output, cached).cost(&tokens) {
        Ok(cost) if cost == usage.cost => {}
        Ok(cost) => findings.add(
            "charges",
            name,
            format!(
                "its usage costs {} µc at price version {}, but {} µc is recorded",
                cost.micros(),
                usage.price_version,
                usage.cost.micros()
            ),
        ),
        Err(err) => findings.add(
            "charges",
            name,
            format!("its cost cannot be computed: {err}"),
        ),
    }
}

/// 1. A folded account against its read models; whether its `balances` row is behind.
fn close_account(done: Folding, models: &ReadModels, findings: &mut Findings) -> bool {
    let subject = format!("account {}", done.id);
    let head = done.balance_after.len();
    let balance = done.account.balance().micros();
    let mut behind = false;
    match models.balances.get(&done.id) {
        None => findings.add("accounts", &subject, "has events but no balances row"),
        Some(&(b, r, d, version)) => {
            let head = i64::try_from(head).unwrap_or(i64::MAX);
            if version > head {
                findings.add(
                    "accounts",
                    &subject,
                    format!("its balances row claims event {version}, past its last event {head}"),
                );
            } else if version < head {
                behind = true;
            } else {
                let folded = (
                    balance,
                    done.account.reserved().micros(),
                    done.account.debt().micros(),
                );
                if (b, r, d) != folded {
                    findings.add(
                        "accounts",
                        &subject,
                        format!(
                            "balances row says balance {b}, reserved {r}, debt {d} µc; its events say {}, {}, {}",
                            folded.0, folded.1, folded.2
                        ),
                    );
                }
            }
        }
    }
    if let Some(&(sum, last, last_after)) = models.ledger.get(&done.id) {
        let at = usize::try_from(last - 1)
            .ok()
            .and_then(|i| done.balance_after.get(i))
            .copied();
        match at {
            None => findings.add(
                "accounts",
                &subject,
                format!("its ledger has an entry for event {last}, which does not exist"),
            ),
            Some(expected) => {
                if sum != expected || last_after != expected {
                    findings.add(
                        "accounts",
                        &subject,
                        format!("its ledger sums to {sum} µc (last balance after {last_after} µc) through event {last}; its events say {expected} µc"),
                    );
                }
            }
        }
    } else if balance != 0 {
        findings.add(
            "accounts",
            &subject,
            format!("holds {balance} µc but has no ledger entry"),
        );
    }
    behind
}

async fn read_models(conn: &mut sqlx::PgConnection) -> Result<ReadModels, sqlx::Error> {
    let mut balances = HashMap::new();
    let mut rows = sqlx::query(
        "SELECT account_id, balance_micros, reserved_micros, debt_micros, version FROM balances",
    )
    .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        balances.insert(
            row.try_get("account_id")?,
            (
                row.try_get("balance_micros")?,
                row.try_get("reserved_micros")?,
                row.try_get("debt_micros")?,
                row.try_get("version")?,
            ),
        );
    }
    drop(rows);
    let mut ledger = HashMap::new();
    let mut rows = sqlx::query(
        "SELECT DISTINCT ON (account_id) account_id,
                sum(amount_micros) OVER (PARTITION BY account_id)::int8 AS total,
                sequence, balance_after_micros
           FROM ledger
          ORDER BY account_id, sequence DESC",
    )
    .fetch(&mut *conn);
    while let Some(row) = rows.try_next().await? {
        ledger.insert(
            row.try_get("account_id")?,
            (
                row.try_get("total")?,
                row.try_get("sequence")?,
                row.try_get("balance_after_micros")?,
            ),
        );
    }
    Ok(ReadModels { balances, ledger })
}

/// Events still in the outbox, by aggregate: (first, last) sequence.
async fn pending_publication(
    conn: &mut sqlx::PgConnection,
) -> Result<HashMap<(String, String), (i64, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, min(sequence), max(sequence)
           FROM event_outbox GROUP BY aggregate_type, aggregate_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, i, from, to)| ((t, i), (from, to)))
        .collect())
}

/// One message of the stream, as much as the comparison needs.
struct StreamMessage {
    stream_sequence: u64,
    key: (String, String),
    event: i64,
    fingerprint: u64,
}

/// The stream, read whole (a task of its own, beside the pass over the event store).
struct StreamRead {
    messages: Vec<StreamMessage>,
    /// Stream sequences of messages that are not event envelopes.
    malformed: Vec<u64>,
}

/// Read every message of stream `name` as it was when the read began.
async fn read_stream(js: jetstream::Context, name: String) -> Result<StreamRead, VerifyError> {
    let stream_error = |e: &dyn std::fmt::Display| VerifyError::Stream(format!("{name}: {e}"));
    let mut stream = js.get_stream(&name).await.map_err(|e| stream_error(&e))?;
    let info = stream.info().await.map_err(|e| stream_error(&e))?;
    let (last, count) = (info.state.last_sequence, info.state.messages);
    let mut read = StreamRead {
        messages: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
        malformed: Vec::new(),
    };
    if count == 0 {
        return Ok(read);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| stream_error(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| stream_error(&e))?;
    let mut n = 0u64;
    while n < count {
        let message = match tokio::time::timeout(STALL, messages.next()).await {
            Err(_) => return Err(stream_error(&"no message for 30 s while more were due")),
            Ok(None) => break,
            Ok(Some(message)) => message.map_err(|e| stream_error(&e))?,
        };
        let info = message.info().map_err(|e| stream_error(&e))?;
        let sequence = info.stream_sequence;
        n += 1;
        if n.is_multiple_of(1_000) {
            tokio::task::yield_now().await;
        }
        match serde_json::from_slice::<hub_nats::EventEnvelope>(&message.payload) {
            Ok(envelope) => {
                let event = i64::try_from(envelope.sequence).unwrap_or(i64::MAX);
                let digest = chain::digest(
                    [
                        &envelope.aggregate_type,
                        &envelope.aggregate_id,
                        &envelope.event_type,
                        &envelope.event_version,
                        envelope.payload.text(),
                        envelope.metadata.text(),
                    ],
                    event,
                    envelope.recorded_at.timestamp_micros(),
                );
                read.messages.push(StreamMessage {
                    stream_sequence: sequence,
                    event,
                    fingerprint: fingerprint(&digest),
                    key: (envelope.aggregate_type, envelope.aggregate_id),
                });
            }
            Err(_) => read.malformed.push(sequence),
        }
        if sequence >= last {
            break;
        }
    }
    Ok(read)
}

/// 2. Every message of the stream against the store.
fn check_stream(
    read: StreamRead,
    name: &str,
    store: &HashMap<(String, String), StoreAggregate>,
    pending: &HashMap<(String, String), (i64, i64)>,
    findings: &mut Findings,
    later: &mut Vec<((String, String), i64, u64)>,
    unlike: &mut Vec<((String, String), i64, u64)>,
) -> u64 {
    let total = (read.messages.len() + read.malformed.len()) as u64;
    for sequence in read.malformed {
        findings.add(
            "stream",
            format!("{name} message {sequence}"),
            "is not an event envelope",
        );
    }
    // Which sequences of each aggregate the stream holds, in stream order.
    let mut seen: HashMap<(String, String), Vec<i64>> = HashMap::new();
    for message in read.messages {
        let sequence = message.stream_sequence;
        match store
            .get(&message.key)
            .and_then(|a| {
                usize::try_from(message.event - 1)
                    .ok()
                    .and_then(|i| a.fingerprints.get(i))
            })
            .copied()
            .flatten()
        {
            // Not in the snapshot: maybe written since (checked by the caller).
            None => later.push((message.key.clone(), message.event, sequence)),
            // Not byte for byte the stored event: compared again field by field (a message
            // published before payloads travelled verbatim holds its JSON keys reordered).
            Some(f) if f != message.fingerprint => {
                unlike.push((message.key.clone(), message.event, sequence));
            }
            Some(_) => {}
        }
        seen.entry(message.key).or_default().push(message.event);
    }
    for (key, aggregate) in store {
        let stored = i64::try_from(aggregate.fingerprints.len()).unwrap_or(i64::MAX);
        // What the relay has not published yet is not expected in the stream.
        let published_up_to = match pending.get(key) {
            Some((from, _)) => from - 1,
            None => stored,
        };
        let sequences = seen.get(key).map(Vec::as_slice).unwrap_or_default();
        let mut expected = 1i64;
        for &s in sequences {
            let subject = event_name(&key.0, &key.1, s);
            if s < expected {
                findings.add(
                    "stream",
                    &subject,
                    format!(
                        "is in {name} again, or out of order (after event {})",
                        expected - 1
                    ),
                );
                continue;
            }
            if s > expected {
                for missing in expected..s.min(published_up_to + 1) {
                    report_missing(aggregate, key, missing, name, findings);
                }
            }
            expected = s + 1;
        }
        for missing in expected..=published_up_to {
            report_missing(aggregate, key, missing, name, findings);
        }
    }
    total
}

/// Compare, field by field, the messages whose bytes are not the stored event's: a
/// difference in what they say is a discrepancy; keys in another order are not.
async fn compare_unlike(
    pool: &PgPool,
    js: &jetstream::Context,
    name: &str,
    unlike: &[((String, String), i64, u64)],
    findings: &mut Findings,
) -> Result<(), VerifyError> {
    if unlike.is_empty() {
        return Ok(());
    }
    let stream_error = |e: &dyn std::fmt::Display| VerifyError::Stream(format!("{name}: {e}"));
    let stream = js.get_stream(name).await.map_err(|e| stream_error(&e))?;
    let mut conn = pool.acquire().await?;
    for ((aggregate_type, aggregate_id), event, sequence) in unlike {
        let (event, sequence) = (*event, *sequence);
        let subject = event_name(aggregate_type, aggregate_id, event);
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| stream_error(&e))?;
        let Ok(envelope) = serde_json::from_slice::<hub_nats::EventEnvelope>(&message.payload)
        else {
            findings.add(
                "stream",
                format!("{name} message {sequence}"),
                "is not an event envelope",
            );
            continue;
        };
        let Some((stored, _)) =
            checkpoints::stored_event(&mut conn, aggregate_type, aggregate_id, event).await?
        else {
            continue;
        };
        let same_json = |text: &str, raw: &hub_nats::RawJson| match (
            serde_json::from_str::<serde_json::Value>(text),
            raw.to_value(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        let mut differing = Vec::new();
        if !same_json(&stored.payload, &envelope.payload) {
            differing.push("payload");
        }
        if !same_json(&stored.metadata, &envelope.metadata) {
            differing.push("metadata");
        }
        if stored.event_type != envelope.event_type {
            differing.push("event type");
        }
        if stored.event_version != envelope.event_version {
            differing.push("event version");
        }
        if stored.recorded_at_micros != envelope.recorded_at.timestamp_micros() {
            differing.push("time");
        }
        if !differing.is_empty() {
            findings.add(
                "stream",
                &subject,
                format!(
                    "its {} in {name} (message {sequence}) differs from the event store's",
                    differing.join(", ")
                ),
            );
        }
    }
    Ok(())
}

/// An event the stream lacks, unless the store lacks it too (a gap the chain reports).
fn report_missing(
    aggregate: &StoreAggregate,
    key: &(String, String),
    sequence: i64,
    stream: &str,
    findings: &mut Findings,
) {
    let in_store = usize::try_from(sequence - 1)
        .ok()
        .and_then(|i| aggregate.fingerprints.get(i))
        .is_some_and(Option::is_some);
    if in_store {
        findings.add(
            "stream",
            event_name(&key.0, &key.1, sequence),
            format!("is in the event store but missing from {stream}"),
        );
    }
}

/// 6. Every checkpoint: signature, link, root, and heads against the events.
async fn verify_checkpoints(
    conn: &mut sqlx::PgConnection,
    public: &VerifyingKey,
    findings: &mut Findings,
) -> Result<u64, VerifyError> {
    let rows = sqlx::query(
        "SELECT id, created_at, tree_size, root, previous, signature, key_id
           FROM ledger_checkpoints ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut heads_rows = sqlx::query(
        "SELECT checkpoint_id, aggregate_type, aggregate_id, sequence, hash
           FROM ledger_checkpoint_heads ORDER BY checkpoint_id",
    )
    .fetch(&mut *conn);
    let mut heads: BTreeMap<(String, String), (i64, Hash)> = BTreeMap::new();
    let mut next_head: Option<sqlx::postgres::PgRow> = heads_rows.try_next().await?;
    let mut previous_root = GENESIS;
    let mut checked = 0u64;
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let subject = format!("checkpoint {id}");
        while let Some(head) = next_head.take() {
            let of: i64 = head.try_get("checkpoint_id")?;
            if of > id {
                next_head = Some(head);
                break;
            }
            let hash: Vec<u8> = head.try_get("hash")?;
            heads.insert(
                (
                    head.try_get("aggregate_type")?,
                    head.try_get("aggregate_id")?,
                ),
                (
                    head.try_get("sequence")?,
                    hash.try_into().unwrap_or(GENESIS),
                ),
            );
            next_head = heads_rows.try_next().await?;
        }
        let root: Vec<u8> = row.try_get("root")?;
        let previous: Vec<u8> = row.try_get("previous")?;
        let checkpoint = checkpoint_of(row)?;
        if let Err(err) = verify_checkpoint(&checkpoint, public) {
            findings.add("hash_chain", &subject, err.to_string());
        }
        if previous.as_slice() != previous_root {
            findings.add(
                "hash_chain",
                &subject,
                "does not name the previous checkpoint's root",
            );
        }
        let tree = tree_of(&heads);
        if tree.root().as_slice() != root || tree.size() != checkpoint.tree_size {
            findings.add(
                "hash_chain",
                &subject,
                "its root is not the tree of its heads",
            );
        }
        previous_root = root.as_slice().try_into().unwrap_or(GENESIS);
        checked += 1;
    }
    drop(heads_rows);
    // Each head names an event that still has the hash the checkpoint signed.
    let changed: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT h.checkpoint_id, h.aggregate_type, h.aggregate_id, h.sequence
           FROM ledger_checkpoint_heads h
           LEFT JOIN events e ON e.aggregate_type = h.aggregate_type
                             AND e.aggregate_id = h.aggregate_id AND e.sequence = h.sequence
          WHERE e.hash IS DISTINCT FROM h.hash
          ORDER BY h.checkpoint_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (id, t, i, s) in changed {
        findings.add(
            "hash_chain",
            event_name(&t, &i, s),
            format!("checkpoint {id} signed a different hash for it (or it is gone)"),
        );
    }
    Ok(checked)
}

/// Keep a run's report: `GET /api/audit/verify` answers the last one.
pub async fn record(pool: &PgPool, report: &Report) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_verifications (started_at, finished_at, passed, report)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(report.started_at)
    .bind(report.finished_at)
    .bind(report.passed)
    .bind(sqlx::types::Json(report))
    .execute(pool)
    .await?;
    Ok(())
}

/// The last run's report, if any.
pub async fn last(pool: &PgPool) -> Result<Option<Report>, sqlx::Error> {
    let report: Option<sqlx::types::Json<Report>> =
        sqlx::query_scalar("SELECT report FROM audit_verifications ORDER BY id DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    Ok(report.map(|r| r.0))
}
