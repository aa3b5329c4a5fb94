-- The rollups' latency and time-to-first-token histograms, stored sparse: the buckets that
-- hold requests, as pairs `{bucket, count, bucket, count, ...}` in bucket order (an empty
-- array: no request). The 39 buckets are unchanged (`hub_projections::rollups::BOUNDS_MS`).
-- Most hourly per-account rows count one or two requests: stored whole, their two 39-slot
-- arrays made them ~760 bytes and most of what the projector wrote (docs/benchmarks.md,
-- "The analysts' read side"); sparse, they are ~220.

ALTER TABLE usage_rollups
    DROP CONSTRAINT usage_rollups_latency_hist_check,
    DROP CONSTRAINT usage_rollups_ttft_hist_check;
ALTER TABLE usage_rollups_global
    DROP CONSTRAINT usage_rollups_global_latency_hist_check,
    DROP CONSTRAINT usage_rollups_global_ttft_hist_check;
ALTER TABLE usage_rollups_global_daily
    DROP CONSTRAINT usage_rollups_global_daily_latency_hist_check,
    DROP CONSTRAINT usage_rollups_global_daily_ttft_hist_check;

-- A whole histogram (one count per bucket, bucket i at position i + 1) as pairs.
CREATE FUNCTION pg_temp.usage_hist_sparse(dense bigint[]) RETURNS bigint[]
    LANGUAGE sql
    IMMUTABLE AS
$$
SELECT coalesce(array_agg(v ORDER BY i, k), '{}')
  FROM unnest(dense) WITH ORDINALITY AS d(n, i),
       LATERAL (VALUES (1, i - 1), (2, n)) AS p(k, v)
 WHERE n > 0
$$;

UPDATE usage_rollups
   SET latency_hist = pg_temp.usage_hist_sparse(latency_hist),
       ttft_hist = pg_temp.usage_hist_sparse(ttft_hist);
UPDATE usage_rollups_global
   SET latency_hist = pg_temp.usage_hist_sparse(latency_hist),
       ttft_hist = pg_temp.usage_hist_sparse(ttft_hist);
UPDATE usage_rollups_global_daily
   SET latency_hist = pg_temp.usage_hist_sparse(latency_hist),
       ttft_hist = pg_temp.usage_hist_sparse(ttft_hist);

ALTER TABLE usage_rollups
    ADD CONSTRAINT usage_rollups_latency_hist_check CHECK (cardinality(latency_hist) % 2 = 0),
    ADD CONSTRAINT usage_rollups_ttft_hist_check CHECK (cardinality(ttft_hist) % 2 = 0);
ALTER TABLE usage_rollups_global
    ADD CONSTRAINT usage_rollups_global_latency_hist_check CHECK (cardinality(latency_hist) % 2 = 0),
    ADD CONSTRAINT usage_rollups_global_ttft_hist_check CHECK (cardinality(ttft_hist) % 2 = 0);
ALTER TABLE usage_rollups_global_daily
    ADD CONSTRAINT usage_rollups_global_daily_latency_hist_check CHECK (cardinality(latency_hist) % 2 = 0),
    ADD CONSTRAINT usage_rollups_global_daily_ttft_hist_check CHECK (cardinality(ttft_hist) % 2 = 0);

DROP AGGREGATE usage_hist_sum(bigint[]);
DROP FUNCTION usage_hist_add(bigint[], bigint[]);

-- Two sparse histograms added up, sparse: what a rollup row already there becomes when a
-- batch adds to it (`ON CONFLICT ... DO UPDATE`).
CREATE FUNCTION usage_hist_merge(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE AS
$$
SELECT coalesce(array_agg(v ORDER BY bucket, k), '{}')
  FROM (SELECT h[2 * i - 1] AS bucket, sum(h[2 * i])::bigint AS n
          FROM (VALUES (a), (b)) AS t(h),
               generate_series(1, coalesce(cardinality(h), 0) / 2) AS i
         GROUP BY 1) AS s,
       LATERAL (VALUES (1, bucket), (2, n)) AS p(k, v)
$$;
