-- Hourly usage rollups for analysts, kept by the `usage` projection in the same transaction
-- as `usage_records` and its checkpoint (a record adds to its hour's rollup only when it is
-- new, so a redelivered event counts once), and rebuilt with it by `aihub replay usage`.
-- `GET /api/usage/summary` reads only this table.

-- One row per hour (UTC, truncated) × account × API key × model × provider × outcome.
CREATE TABLE usage_rollups
(
    hour                timestamptz NOT NULL,
    account_id          uuid        NOT NULL,
    -- NULL: requests made without an API key (a signed-in person).
    api_key_id          uuid,
    model               text        NOT NULL,
    provider            text        NOT NULL,
    outcome             text        NOT NULL CHECK (outcome IN ('completed', 'cancelled', 'broken')),
    requests            bigint      NOT NULL CHECK (requests > 0),
    input_tokens        bigint      NOT NULL,
    output_tokens       bigint      NOT NULL,
    cached_input_tokens bigint      NOT NULL,
    cost_micros         bigint      NOT NULL,
    charged_micros      bigint      NOT NULL,
    -- Counts per latency / time-to-first-token bucket. The 39 buckets are fixed (see
    -- `hub_projections::rollups::BOUNDS_MS`): bucket 0 is [0, 1) ms, bucket i is
    -- [BOUNDS_MS[i-1], BOUNDS_MS[i]) ms, the last is [524288 ms, ∞); the bounds grow by
    -- about √2, so a percentile read from them is known within one bucket. A request without
    -- a first token counts in no TTFT bucket.
    latency_hist        bigint[]    NOT NULL CHECK (cardinality(latency_hist) = 39),
    ttft_hist           bigint[]    NOT NULL CHECK (cardinality(ttft_hist) = 39),
    CONSTRAINT usage_rollups_key UNIQUE NULLS NOT DISTINCT
        (hour, account_id, api_key_id, model, provider, outcome)
);
CREATE INDEX usage_rollups_by_account ON usage_rollups (account_id, hour);

-- Element-wise sum of two histograms (NULL is the empty one); and its aggregate.
CREATE FUNCTION usage_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql
    IMMUTABLE
    PARALLEL SAFE AS
$$
SELECT CASE
           WHEN a IS NULL THEN b
           WHEN b IS NULL THEN a
           ELSE ARRAY(SELECT coalesce(x, 0) + coalesce(y, 0)
                        FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
                       ORDER BY i)
       END
$$;

CREATE AGGREGATE usage_hist_sum(bigint[]) (
    SFUNC = usage_hist_add,
    STYPE = bigint[]
    );

-- The filters of `GET /api/usage` and the request lookup.
CREATE INDEX usage_records_by_api_key ON usage_records (api_key_id, recorded_at);
CREATE INDEX usage_records_by_request ON usage_records (request_id);
