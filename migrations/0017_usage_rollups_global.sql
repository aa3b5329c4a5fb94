-- The hourly usage sums without the account and the API key: what a summary that names
-- neither (the whole hub by day, by model, by provider) reads. A month of it is
-- hours × models × providers × outcomes rows, whatever the number of accounts, where
-- `usage_rollups` holds up to one row per request when accounts are many and quiet.
-- Kept by the `usage` projection in the same transaction as `usage_rollups`.
CREATE TABLE usage_rollups_global
(
    hour                timestamptz NOT NULL,
    model               text        NOT NULL,
    provider            text        NOT NULL,
    outcome             text        NOT NULL CHECK (outcome IN ('completed', 'cancelled', 'broken')),
    requests            bigint      NOT NULL CHECK (requests > 0),
    input_tokens        bigint      NOT NULL,
    output_tokens       bigint      NOT NULL,
    cached_input_tokens bigint      NOT NULL,
    cost_micros         bigint      NOT NULL,
    charged_micros      bigint      NOT NULL,
    latency_hist        bigint[]    NOT NULL CHECK (cardinality(latency_hist) = 39),
    ttft_hist           bigint[]    NOT NULL CHECK (cardinality(ttft_hist) = 39),
    PRIMARY KEY (hour, model, provider, outcome)
);

-- The rollups written before this migration.
INSERT INTO usage_rollups_global
SELECT hour, model, provider, outcome, sum(requests), sum(input_tokens), sum(output_tokens),
       sum(cached_input_tokens), sum(cost_micros), sum(charged_micros),
       usage_hist_sum(latency_hist), usage_hist_sum(ttft_hist)
  FROM usage_rollups
 GROUP BY hour, model, provider, outcome;

-- The same sums by day (UTC): a summary by day, week or month over a month reads a row per
-- day × model × provider × outcome, and hours only at the range's ragged ends.
CREATE TABLE usage_rollups_global_daily
(
    day                 timestamptz NOT NULL,
    model               text        NOT NULL,
    provider            text        NOT NULL,
    outcome             text        NOT NULL CHECK (outcome IN ('completed', 'cancelled', 'broken')),
    requests            bigint      NOT NULL CHECK (requests > 0),
    input_tokens        bigint      NOT NULL,
    output_tokens       bigint      NOT NULL,
    cached_input_tokens bigint      NOT NULL,
    cost_micros         bigint      NOT NULL,
    charged_micros      bigint      NOT NULL,
    latency_hist        bigint[]    NOT NULL CHECK (cardinality(latency_hist) = 39),
    ttft_hist           bigint[]    NOT NULL CHECK (cardinality(ttft_hist) = 39),
    PRIMARY KEY (day, model, provider, outcome)
);

INSERT INTO usage_rollups_global_daily
SELECT date_trunc('day', hour, 'UTC'), model, provider, outcome, sum(requests),
       sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(cost_micros),
       sum(charged_micros), usage_hist_sum(latency_hist), usage_hist_sum(ttft_hist)
  FROM usage_rollups_global
 GROUP BY 1, model, provider, outcome;
