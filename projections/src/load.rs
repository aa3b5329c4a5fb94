//! A rebuild of `usage` loads its two big tables without their keys
//! ([`crate::ProjectionKind::loads_without_keys`]): `usage_records` rows go in without the
//! primary-key check, and each batch's hourly sums go into `usage_rollups` as new rows
//! without looking for the row of the same hour, account, key, model, provider and outcome.
//! Checking a key costs a random index probe per row, more than the row's insert; building
//! the key once at the end costs one sort.
//!
//! Before the keys are built again ([`finish`], called by `crate::indexes::restore` in its
//! transaction), what shares a key is made one:
//!
//! - `usage_records`' primary key is built first, in a savepoint: it fails only if the
//!   stream held a settlement twice (published again after JetStream's duplicate window).
//!   Then each request keeps its first record, as the live projection's
//!   `ON CONFLICT DO NOTHING` does, and since the rollups counted both, they are derived
//!   again from the records;
//! - otherwise only an hour whose requests straddle two batches has more than one rollup
//!   row, and those rows are added together. A rebuild knows which hours its batches
//!   shared ([`SplitHours`]) and looks only at those; finishing a rebuild that died looks
//!   at every row.
//!
//! The global rollups keep their keys: they are small, and each batch adds to them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashSet};

use crate::model::ProjectionKind;
use crate::rollups::BOUNDS_MS;

/// The hours whose usage more than one batch of a rebuild loaded: the only ones whose
/// rollup rows can be split.
#[derive(Debug, Default)]
pub(crate) struct SplitHours {
    seen: HashSet<DateTime<Utc>>,
    split: BTreeSet<DateTime<Utc>>,
}

impl SplitHours {
    /// Note the hours of one batch.
    pub fn batch(&mut self, hours: &BTreeSet<DateTime<Utc>>) {
        for hour in hours {
            if !self.seen.insert(*hour) {
                self.split.insert(*hour);
            }
        }
    }
}

/// Which rollup rows may share a key.
pub(crate) enum Suspects<'a> {
    /// Those of these hours (a rebuild that saw every batch).
    Hours(&'a SplitHours),
    /// Any (finishing a rebuild that died).
    All,
}

/// `usage_records`' primary key, as migration 0008 made it.
const RECORDS_KEY: &str = "ALTER TABLE usage_records
                               ADD CONSTRAINT usage_records_pkey PRIMARY KEY (account_id, request_id)";

/// Make the rows of `kind`'s tables that share a key one, where a key is missing, building
/// `usage_records`' key on the way: a no-op for a projection that loads with its keys, or
/// whose keys are there.
pub(crate) async fn finish(
    conn: &mut PgConnection,
    kind: ProjectionKind,
    suspects: Suspects<'_>,
) -> anyhow::Result<()> {
    if !kind.loads_without_keys() {
        return Ok(());
    }
    if !has_key(conn, "usage_records").await? {
        sqlx::query("SAVEPOINT usage_records_key")
            .execute(&mut *conn)
            .await?;
        match sqlx::query(RECORDS_KEY).execute(&mut *conn).await {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT usage_records_key")
                    .execute(&mut *conn)
                    .await?;
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                sqlx::query("ROLLBACK TO SAVEPOINT usage_records_key")
                    .execute(&mut *conn)
                    .await?;
                remove_repeated_records(conn).await?;
                sqlx::query(RECORDS_KEY).execute(&mut *conn).await?;
                return derive_rollups(conn).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !has_key(conn, "usage_rollups").await? {
        merge_rollups(conn, suspects).await?;
    }
    Ok(())
}

/// Whether `table` (as the `search_path` finds it) has a primary key or unique constraint.
async fn has_key(conn: &mut PgConnection, table: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint
                         WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u'))",
    )
    .bind(table)
    .fetch_one(conn)
    .await
}

/// Delete every record but the first (lowest stream sequence) of a request.
async fn remove_repeated_records(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM usage_records r
          USING (SELECT ctid AS row,
                        row_number() OVER (PARTITION BY account_id, request_id
                                               ORDER BY stream_sequence, ctid) AS n
                   FROM usage_records
                  WHERE (account_id, request_id) IN
                        (SELECT account_id, request_id FROM usage_records
                          GROUP BY account_id, request_id HAVING count(*) > 1)) AS d
          WHERE r.ctid = d.row AND d.n > 1",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The columns every rollup table shares after its time column.
const SUMS: &str = "requests, input_tokens, output_tokens, cached_input_tokens, cost_micros,
                    charged_micros, latency_hist, ttft_hist";

/// Those columns added up over a group of rollup rows.
const ADDED: &str = "sum(requests)::bigint, sum(input_tokens)::bigint,
                     sum(output_tokens)::bigint, sum(cached_input_tokens)::bigint,
                     sum(cost_micros)::bigint, sum(charged_micros)::bigint,
                     usage_hist_merge_all(latency_hist), usage_hist_merge_all(ttft_hist)";

/// Add together the `usage_rollups` rows that share a key, looking among `suspects`.
async fn merge_rollups(conn: &mut PgConnection, suspects: Suspects<'_>) -> anyhow::Result<()> {
    let hours: Option<Vec<DateTime<Utc>>> = match suspects {
        Suspects::Hours(split) if split.split.is_empty() => return Ok(()),
        Suspects::Hours(split) => Some(split.split.iter().copied().collect()),
        Suspects::All => None,
    };
    // A NULL key (no API key) matches a NULL key; the nil UUID is never a key's id, and
    // unlike `IS NOT DISTINCT FROM` it lets the join hash.
    sqlx::query(&format!(
        "WITH repeated AS (
             SELECT hour, account_id, api_key_id, model, provider, outcome
               FROM usage_rollups
              WHERE $1::timestamptz[] IS NULL OR hour = ANY($1)
              GROUP BY hour, account_id, api_key_id, model, provider, outcome
             HAVING count(*) > 1),
         parts AS (
             DELETE FROM usage_rollups r
              USING repeated d
              WHERE r.hour = d.hour AND r.account_id = d.account_id
                AND coalesce(r.api_key_id, '00000000-0000-0000-0000-000000000000')
                  = coalesce(d.api_key_id, '00000000-0000-0000-0000-000000000000')
                AND r.model = d.model AND r.provider = d.provider AND r.outcome = d.outcome
             RETURNING r.*)
         INSERT INTO usage_rollups (hour, account_id, api_key_id, model, provider, outcome,
                                    {SUMS})
         SELECT hour, account_id, api_key_id, model, provider, outcome, {ADDED}
           FROM parts
          GROUP BY hour, account_id, api_key_id, model, provider, outcome"
    ))
    .bind(hours)
    .execute(conn)
    .await?;
    Ok(())
}

/// Derive the three rollup tables from `usage_records` afresh.
async fn derive_rollups(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE usage_rollups, usage_rollups_global, usage_rollups_global_daily")
        .execute(&mut *conn)
        .await?;
    // `width_bucket` over the lower bounds is `rollups::bucket_of`. Most groups hold one
    // bucket, which needs no list.
    sqlx::query(&format!(
        "INSERT INTO usage_rollups (hour, account_id, api_key_id, model, provider, outcome,
                                    {SUMS})
         SELECT hour, account_id, api_key_id, model, provider, outcome, count(*),
                sum(input_tokens)::bigint, sum(output_tokens)::bigint,
                sum(cached_input_tokens)::bigint, sum(cost_micros)::bigint,
                sum(charged_micros)::bigint,
                CASE WHEN min(lb) = max(lb) THEN ARRAY[min(lb), count(*)]
                     ELSE usage_hist_of(array_agg(lb)) END,
                CASE WHEN count(tb) = 0 THEN '{{}}'::bigint[]
                     WHEN min(tb) = max(tb) THEN ARRAY[min(tb), count(tb)]
                     ELSE usage_hist_of(array_agg(tb)) END
           FROM (SELECT date_trunc('hour', recorded_at, 'UTC') AS hour, account_id,
                        api_key_id, model, provider, outcome, input_tokens, output_tokens,
                        cached_input_tokens, cost_micros, charged_micros,
                        width_bucket(latency_ms, $1::int8[]) AS lb,
                        width_bucket(first_token_ms, $1::int8[]) AS tb
                   FROM usage_records) AS r
          GROUP BY hour, account_id, api_key_id, model, provider, outcome"
    ))
    .bind(&BOUNDS_MS[..])
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO usage_rollups_global (hour, model, provider, outcome, {SUMS})
         SELECT hour, model, provider, outcome, {ADDED}
           FROM usage_rollups
          GROUP BY hour, model, provider, outcome"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO usage_rollups_global_daily (day, model, provider, outcome, {SUMS})
         SELECT date_trunc('day', hour, 'UTC'), model, provider, outcome, {ADDED}
           FROM usage_rollups_global
          GROUP BY 1, model, provider, outcome"
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
