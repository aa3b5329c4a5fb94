-- Read models, built only from the JetStream stream by `projections/`.
-- Every column is derived from events, so a replay rebuilds the same rows.

-- Where each projection is in the stream; written in the same transaction as its rows.
CREATE TABLE projection_checkpoints
(
    projection      text PRIMARY KEY,
    stream_sequence bigint      NOT NULL CHECK (stream_sequence >= 0),
    -- Set by `aihub replay` while it rebuilds; the live projector stands aside meanwhile.
    paused          boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Amounts are integer micro-credits (1 credit = 1,000,000).
CREATE TABLE balances
(
    account_id      uuid PRIMARY KEY,
    balance_micros  bigint      NOT NULL,
    reserved_micros bigint      NOT NULL,
    available_micros bigint GENERATED ALWAYS AS (balance_micros - reserved_micros) STORED,
    -- The aggregate sequence of the last event applied: read-your-writes waits on it.
    version         bigint      NOT NULL,
    -- When that event was recorded.
    updated_at      timestamptz NOT NULL
);

-- Reservations still holding credits; the expiry sweeper reads it.
CREATE TABLE active_reservations
(
    account_id    uuid        NOT NULL,
    request_id    text        NOT NULL,
    amount_micros bigint      NOT NULL,
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, request_id)
);
CREATE INDEX active_reservations_by_expiry ON active_reservations (expires_at);

-- One row per movement of a balance, with its cause and the balance after it.
CREATE TABLE ledger
(
    account_id          uuid        NOT NULL,
    -- The aggregate sequence of the event: orders an account's entries, and is the cursor.
    sequence            bigint      NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('grant', 'purchase', 'promo', 'charge')),
    amount_micros       bigint      NOT NULL,
    balance_after_micros bigint     NOT NULL CHECK (balance_after_micros >= 0),
    cause_type          text        NOT NULL CHECK (cause_type IN ('grant', 'payment', 'promo', 'request')),
    cause_id            text        NOT NULL,
    -- Free text from the event (a grant's reason), if any.
    description         text,
    -- Who caused it, when known (the admin who granted).
    actor               text,
    stream_sequence     bigint      NOT NULL,
    recorded_at         timestamptz NOT NULL,
    PRIMARY KEY (account_id, sequence)
);
