-- The `usage` read model: one row per settled inference request, from the usage recorded
-- in its `ReservationSettled` event. What analysts query and export; rebuilt by
-- `aihub replay usage`.
CREATE TABLE usage_records
(
    account_id          uuid        NOT NULL,
    request_id          text        NOT NULL,
    api_key_id          uuid,
    model               text        NOT NULL,
    provider            text        NOT NULL,
    input_tokens        bigint      NOT NULL CHECK (input_tokens >= 0),
    output_tokens       bigint      NOT NULL CHECK (output_tokens >= 0),
    cached_input_tokens bigint      NOT NULL CHECK (cached_input_tokens >= 0),
    token_source        text        NOT NULL CHECK (token_source IN ('provider', 'estimated')),
    latency_ms          bigint      NOT NULL,
    first_token_ms      bigint,
    cost_micros         bigint      NOT NULL,
    charged_micros      bigint      NOT NULL,
    price_version       text        NOT NULL,
    outcome             text        NOT NULL CHECK (outcome IN ('completed', 'cancelled', 'broken')),
    stream_sequence     bigint      NOT NULL,
    recorded_at         timestamptz NOT NULL,
    PRIMARY KEY (account_id, request_id)
);
CREATE INDEX usage_records_by_time ON usage_records (recorded_at);
CREATE INDEX usage_records_by_account ON usage_records (account_id, recorded_at);
