-- The event store: postgres-es's `events` table, plus what the hub needs around it.

CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- When the row was written (not when its transaction began: clock_timestamp()).
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- An idempotency key is used at most once per aggregate, ever. postgres-es reports the
-- violation as an optimistic-lock conflict; the command layer then finds the first outcome.
CREATE UNIQUE INDEX events_idempotency_key
    ON events (aggregate_type, aggregate_id, (metadata ->> 'idempotency_key'))
    WHERE (metadata ->> 'idempotency_key') IS NOT NULL;

-- Events are immutable: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE FUNCTION events_are_immutable() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'events are immutable (% refused)', TG_OP;
END
$$;

CREATE TRIGGER events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

-- Our snapshots (not postgres-es's: its 0.5.0 path applies new events twice). One row per
-- aggregate, replaced only by a later sequence. A snapshot whose state_version differs from
-- the code's is ignored and the aggregate is folded from its events.
CREATE TABLE aggregate_snapshots
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    last_sequence  bigint      NOT NULL CHECK (last_sequence > 0),
    state_version  integer     NOT NULL,
    payload        json        NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
