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
//! - a settlement the stream holds twice (published again after JetStream's duplicate
//!   window) keeps its first record, as the live projection's `ON CONFLICT DO NOTHING`
//!   does; since the rollups counted both, they are then derived again from the records;
//! - otherwise only an hour whose requests straddle two batches has more than one rollup
//!   row, and those rows are added together.
//!
//! The global rollups keep their keys: they are small, and each batch adds to them.

use sqlx::PgConnection;

use crate::model::ProjectionKind;
use crate::rollups::BOUNDS_MS;

/// Make the rows of `kind`'s tables that share a key one, where a key is missing: a
/// no-op for a projection that loads with its keys, or whose keys are there.
pub(crate) async fn finish(conn: &mut PgConnection, kind: ProjectionKind) -> anyhow::Result<()> {
    if !kind.loads_without_keys() {
        return Ok(());
    }
    if !has_key(conn, "usage_records").await? && remove_repeated_records(conn).await? > 0 {
        return derive_rollups(conn).await;
    }
    if !has_key(conn, "usage_rollups").await? {
        merge_rollups(conn).await?;
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

/// Delete every record but the first (lowest stream sequence) of a request; returns how
/// many were deleted.
async fn remove_repeated_records(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
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
    Ok(done.rows_affected())
}

/// The columns every rollup table shares after its time column.
const SUMS: &str = "requests, input_tokens, output_tokens, cached_input_tokens, cost_micros,
                    charged_micros, latency_hist, ttft_hist";

/// Those columns added up over a group of rollup rows.
const ADDED: &str = "sum(requests)::bigint, sum(input_tokens)::bigint,
                     sum(output_tokens)::bigint, sum(cached_input_tokens)::bigint,
                     sum(cost_micros)::bigint, sum(charged_micros)::bigint,
                     usage_hist_merge_all(latency_hist), usage_hist_merge_all(ttft_hist)";

/// Add together the `usage_rollups` rows that share a key.
async fn merge_rollups(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // A NULL key (no API key) matches a NULL key; the nil UUID is never a key's id, and
    // unlike `IS NOT DISTINCT FROM` it lets the join hash.
    sqlx::query(&format!(
        "WITH repeated AS (
             SELECT hour, account_id, api_key_id, model, provider, outcome
               FROM usage_rollups
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
