-- What a rebuild of the `usage` projection needs to load its tables without their keys
-- (`hub_projections::load`): rows go in without a uniqueness check, and at the end the
-- rows that share a key are added together before the keys are built again.

-- Sparse histograms (`{bucket, count, ...}` pairs, migration 0020) added up over rows.
CREATE AGGREGATE usage_hist_merge_all(bigint[]) (
    SFUNC = usage_hist_merge,
    STYPE = bigint[],
    INITCOND = '{}'
    );

-- The sparse histogram of a list of bucket numbers (NULLs left out): how a rollup is
-- derived from the records themselves.
CREATE FUNCTION usage_hist_of(buckets int[]) RETURNS bigint[]
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE AS
$$
SELECT coalesce(array_agg(v ORDER BY b, k), '{}')
  FROM (SELECT b, count(*) AS n FROM unnest(buckets) AS b WHERE b IS NOT NULL GROUP BY b) AS s,
       LATERAL (VALUES (1, b::bigint), (2, n)) AS p(k, v)
$$;
