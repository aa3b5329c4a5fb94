//! `usage_rollups`: the hourly sums analysts' summaries read, kept beside `usage_records`;
//! and `usage_rollups_global`, the same sums without the account and the key, which the
//! summaries that name neither read (a month of it is thousands of rows, whatever the
//! number of accounts).
//!
//! A settlement adds to its rollup row only when its `usage_records` row is new (the insert
//! answers which rows it wrote), in the same transaction, so a redelivered or replayed
//! event never counts twice, and a replay of `usage` rebuilds both tables.
//!
//! Latency and time to first token are kept as fixed log-bucket histograms: bucket 0 is
//! `[0, 1)` ms, bucket `i` is `[BOUNDS_MS[i-1], BOUNDS_MS[i])` ms and the last is
//! `[524288 ms, ∞)`. The bounds grow by about √2 (rounded to whole milliseconds), so a
//! percentile read from a histogram is known within one bucket: within about 41 %. A row
//! stores them sparse ([`to_sparse`]): the buckets that hold requests, as `{bucket, count,
//! ...}` pairs in bucket order; most hourly per-account rows count a request or two.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::model::Writes;

/// The lower bounds, in milliseconds, of buckets 1 to 38 (bucket 0 starts at 0):
/// `round(2^(k/2))` without the repeats at the low end. Fixed forever: rollups already
/// written count by them (the migration checks the length).
pub const BOUNDS_MS: [i64; 38] = [
    1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048,
    2896, 4096, 5793, 8192, 11585, 16384, 23170, 32768, 46341, 65536, 92682, 131072, 185364,
    262144, 370728, 524288,
];

/// Buckets per histogram.
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// The bucket a duration falls in.
pub fn bucket_of(ms: i64) -> usize {
    BOUNDS_MS.partition_point(|bound| *bound <= ms)
}

/// The milliseconds bucket `i` covers: `[lower, upper)`, `upper` `None` for the last.
pub fn bucket_range(i: usize) -> (i64, Option<i64>) {
    let lower = match i {
        0 => 0,
        _ => BOUNDS_MS.get(i - 1).copied().unwrap_or(i64::MAX),
    };
    (lower, BOUNDS_MS.get(i).copied())
}

/// A stored histogram that is not `{bucket, count, ...}` pairs of known buckets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stored histogram is malformed: {0:?}")]
pub struct MalformedHistogram(pub Vec<i64>);

/// Append the buckets of `dense` that hold requests to `out`, as `bucket, count` pairs in
/// bucket order: how a row stores a histogram.
pub fn to_sparse(dense: &[i64; BUCKETS], out: &mut Vec<i64>) {
    for (bucket, &count) in (0i64..).zip(dense) {
        if count != 0 {
            out.extend_from_slice(&[bucket, count]);
        }
    }
}

/// A stored histogram (`bucket, count` pairs) with every bucket: the counts in bucket order.
pub fn from_sparse(sparse: &[i64]) -> Result<[i64; BUCKETS], MalformedHistogram> {
    let mut dense = [0; BUCKETS];
    let (pairs, rest) = sparse.as_chunks::<2>();
    if !rest.is_empty() {
        return Err(MalformedHistogram(sparse.to_vec()));
    }
    for &[bucket, count] in pairs {
        let slot = usize::try_from(bucket)
            .ok()
            .and_then(|b| dense.get_mut(b))
            .ok_or_else(|| MalformedHistogram(sparse.to_vec()))?;
        *slot += count;
    }
    Ok(dense)
}

/// Histograms of many rows for one `UNNEST`: their pairs end to end, and each row's
/// 1-based, inclusive bounds in them (`lower > upper`: an empty histogram).
#[derive(Default)]
struct Packed {
    values: Vec<i64>,
    lower: Vec<i32>,
    upper: Vec<i32>,
}

impl Packed {
    fn push(&mut self, dense: &[i64; BUCKETS]) -> anyhow::Result<()> {
        self.lower.push(i32::try_from(self.values.len() + 1)?);
        to_sparse(dense, &mut self.values);
        self.upper.push(i32::try_from(self.values.len())?);
        Ok(())
    }
}

/// One new usage record, as much of it as the rollups need.
pub(crate) struct NewUsage<'a> {
    pub account: Uuid,
    pub api_key: Option<Uuid>,
    pub model: &'a str,
    pub provider: &'a str,
    pub outcome: &'static str,
    pub recorded_at: DateTime<Utc>,
    pub input: i64,
    pub output: i64,
    pub cached: i64,
    pub cost: i64,
    pub charged: i64,
    pub latency_ms: i64,
    pub first_token_ms: Option<i64>,
}

type Key<'a> = (
    DateTime<Utc>,
    Uuid,
    Option<Uuid>,
    &'a str,
    &'a str,
    &'static str,
);

struct Sums {
    requests: i64,
    input: i64,
    output: i64,
    cached: i64,
    cost: i64,
    charged: i64,
    latency: [i64; BUCKETS],
    ttft: [i64; BUCKETS],
}

type GlobalKey<'a> = (DateTime<Utc>, &'a str, &'a str, &'static str);

impl Sums {
    fn zero() -> Sums {
        Sums {
            requests: 0,
            input: 0,
            output: 0,
            cached: 0,
            cost: 0,
            charged: 0,
            latency: [0; BUCKETS],
            ttft: [0; BUCKETS],
        }
    }

    fn add(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.input += other.input;
        self.output += other.output;
        self.cached += other.cached;
        self.cost += other.cost;
        self.charged += other.charged;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
        for (a, b) in self.ttft.iter_mut().zip(&other.ttft) {
            *a += b;
        }
    }
}

/// Add the same sums, without account and key, to `usage_rollups_global` (by hour) or
/// `usage_rollups_global_daily` (by day), rows in key order so two writers never deadlock.
/// `table` and `time` are fixed names from this module, never input.
async fn add_global(
    conn: &mut PgConnection,
    table: &'static str,
    time: &'static str,
    sums: BTreeMap<GlobalKey<'_>, Sums>,
) -> anyhow::Result<()> {
    let n = sums.len();
    let mut hours = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    let mut providers = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    let mut columns: [Vec<i64>; 6] = Default::default();
    let (mut latency, mut ttft) = (Packed::default(), Packed::default());
    for ((hour, model, provider, outcome), s) in sums {
        hours.push(hour);
        models.push(model);
        providers.push(provider);
        outcomes.push(outcome);
        for (column, value) in columns
            .iter_mut()
            .zip([s.requests, s.input, s.output, s.cached, s.cost, s.charged])
        {
            column.push(value);
        }
        latency.push(&s.latency)?;
        ttft.push(&s.ttft)?;
    }
    let [requests, input, output, cached, cost, charged] = columns;
    sqlx::query(&format!(
        "INSERT INTO {table} AS r ({time}, model, provider, outcome, requests,
                                   input_tokens, output_tokens, cached_input_tokens,
                                   cost_micros, charged_micros, latency_hist, ttft_hist)
         SELECT u.hour, u.model, u.provider, u.outcome,
                u.requests, u.input, u.output, u.cached, u.cost, u.charged,
                ($11::int8[])[u.latency_lower : u.latency_upper],
                ($12::int8[])[u.ttft_lower : u.ttft_upper]
           FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int8[],
                       $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                       $13::int4[], $14::int4[], $15::int4[], $16::int4[])
                AS u(hour, model, provider, outcome, requests, input, output, cached, cost,
                     charged, latency_lower, latency_upper, ttft_lower, ttft_upper)
         ON CONFLICT ({time}, model, provider, outcome) DO UPDATE {ADD_TO_EXISTING}"
    ))
    .bind(&hours)
    .bind(&models)
    .bind(&providers)
    .bind(&outcomes)
    .bind(&requests)
    .bind(&input)
    .bind(&output)
    .bind(&cached)
    .bind(&cost)
    .bind(&charged)
    .bind(&latency.values)
    .bind(&ttft.values)
    .bind(&latency.lower)
    .bind(&latency.upper)
    .bind(&ttft.lower)
    .bind(&ttft.upper)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What a rollup row already there becomes when more is added to it (`r` the row,
/// `excluded` what is added).
const ADD_TO_EXISTING: &str = "
            SET requests = r.requests + excluded.requests,
                input_tokens = r.input_tokens + excluded.input_tokens,
                output_tokens = r.output_tokens + excluded.output_tokens,
                cached_input_tokens = r.cached_input_tokens + excluded.cached_input_tokens,
                cost_micros = r.cost_micros + excluded.cost_micros,
                charged_micros = r.charged_micros + excluded.charged_micros,
                latency_hist = usage_hist_merge(r.latency_hist, excluded.latency_hist),
                ttft_hist = usage_hist_merge(r.ttft_hist, excluded.ttft_hist)";

/// Add new records to their hours' rollups (one statement, rows in key order). Loading
/// (`crate::load`), the batch's sums of an hour are a row of their own.
pub(crate) async fn add(
    conn: &mut PgConnection,
    records: &[NewUsage<'_>],
    writes: Writes,
) -> anyhow::Result<()> {
    let mut sums: BTreeMap<Key<'_>, Sums> = BTreeMap::new();
    for r in records {
        let hour = r.recorded_at.duration_trunc(TimeDelta::hours(1))?;
        let key = (hour, r.account, r.api_key, r.model, r.provider, r.outcome);
        let s = sums.entry(key).or_insert_with(Sums::zero);
        s.requests += 1;
        s.input += r.input;
        s.output += r.output;
        s.cached += r.cached;
        s.cost += r.cost;
        s.charged += r.charged;
        s.latency[bucket_of(r.latency_ms)] += 1;
        if let Some(ttft) = r.first_token_ms {
            s.ttft[bucket_of(ttft)] += 1;
        }
    }
    if sums.is_empty() {
        return Ok(());
    }
    let mut global: BTreeMap<GlobalKey<'_>, Sums> = BTreeMap::new();
    for ((hour, _, _, model, provider, outcome), s) in &sums {
        global
            .entry((*hour, *model, *provider, *outcome))
            .or_insert_with(Sums::zero)
            .add(s);
    }
    let mut daily: BTreeMap<GlobalKey<'_>, Sums> = BTreeMap::new();
    for ((hour, model, provider, outcome), s) in &global {
        let day = hour.duration_trunc(TimeDelta::days(1))?;
        daily
            .entry((day, *model, *provider, *outcome))
            .or_insert_with(Sums::zero)
            .add(s);
    }
    add_global(conn, "usage_rollups_global", "hour", global).await?;
    add_global(conn, "usage_rollups_global_daily", "day", daily).await?;
    let n = sums.len();
    let (mut hours, mut accounts, mut keys, mut models, mut providers, mut outcomes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut requests, mut input, mut output, mut cached, mut cost, mut charged) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let conflict = match writes {
        Writes::Live => {
            format!("ON CONFLICT ON CONSTRAINT usage_rollups_key DO UPDATE {ADD_TO_EXISTING}")
        }
        Writes::Load => String::new(),
    };
    let (mut latency, mut ttft) = (Packed::default(), Packed::default());
    for ((hour, account, key, model, provider, outcome), s) in sums {
        hours.push(hour);
        accounts.push(account);
        keys.push(key);
        models.push(model);
        providers.push(provider);
        outcomes.push(outcome);
        requests.push(s.requests);
        input.push(s.input);
        output.push(s.output);
        cached.push(s.cached);
        cost.push(s.cost);
        charged.push(s.charged);
        latency.push(&s.latency)?;
        ttft.push(&s.ttft)?;
    }
    sqlx::query(&format!(
        "INSERT INTO usage_rollups AS r (hour, account_id, api_key_id, model, provider, outcome,
                                         requests, input_tokens, output_tokens,
                                         cached_input_tokens, cost_micros, charged_micros,
                                         latency_hist, ttft_hist)
         SELECT u.hour, u.account_id, u.api_key_id, u.model, u.provider, u.outcome,
                u.requests, u.input, u.output, u.cached, u.cost, u.charged,
                ($13::int8[])[u.latency_lower : u.latency_upper],
                ($14::int8[])[u.ttft_lower : u.ttft_upper]
           FROM UNNEST($1::timestamptz[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                       $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                       $11::int8[], $12::int8[], $15::int4[], $16::int4[], $17::int4[],
                       $18::int4[])
                AS u(hour, account_id, api_key_id, model, provider, outcome, requests, input,
                     output, cached, cost, charged, latency_lower, latency_upper, ttft_lower,
                     ttft_upper)
         {conflict}"
    ))
    .bind(&hours)
    .bind(&accounts)
    .bind(&keys)
    .bind(&models)
    .bind(&providers)
    .bind(&outcomes)
    .bind(&requests)
    .bind(&input)
    .bind(&output)
    .bind(&cached)
    .bind(&cost)
    .bind(&charged)
    .bind(&latency.values)
    .bind(&ttft.values)
    .bind(&latency.lower)
    .bind(&latency.upper)
    .bind(&ttft.lower)
    .bind(&ttft.upper)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_grow_by_about_the_square_root_of_two() {
        assert!(BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
        for w in BOUNDS_MS.windows(2).skip(6) {
            let ratio = w[1] as f64 / w[0] as f64;
            assert!((1.38..1.46).contains(&ratio), "{w:?}");
        }
    }

    #[test]
    fn every_duration_falls_in_the_bucket_whose_range_holds_it() {
        for ms in (0..2_000).chain([524_287, 524_288, 10_000_000]) {
            let (lower, upper) = bucket_range(bucket_of(ms));
            assert!(lower <= ms, "{ms} below its bucket");
            assert!(upper.is_none_or(|u| ms < u), "{ms} above its bucket");
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 1);
        assert_eq!(bucket_of(10_000_000), BUCKETS - 1);
    }

    #[test]
    fn a_histogram_stored_sparse_reads_back_whole() {
        let mut dense = [0; BUCKETS];
        dense[0] = 3;
        dense[7] = 1;
        dense[BUCKETS - 1] = 12;
        let mut sparse = vec![];
        to_sparse(&dense, &mut sparse);
        assert_eq!(sparse, [0, 3, 7, 1, 38, 12]);
        assert_eq!(from_sparse(&sparse), Ok(dense));
        let mut empty = vec![];
        to_sparse(&[0; BUCKETS], &mut empty);
        assert!(empty.is_empty());
        assert_eq!(from_sparse(&empty), Ok([0; BUCKETS]));
    }

    #[test]
    fn a_malformed_stored_histogram_is_an_error() {
        for bad in [&[1][..], &[39, 1], &[-1, 1], &[2, 1, 3]] {
            assert!(from_sparse(bad).is_err(), "{bad:?}");
        }
    }
}
