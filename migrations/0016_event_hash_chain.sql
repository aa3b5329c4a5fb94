-- Tamper evidence (docs/audit.md): every event carries a hash chained to the previous event
-- of its aggregate, and checkpoints sign a Merkle tree over every aggregate's head.
--
--   digest(e) = SHA-256(canonical bytes of e)
--   hash(e)   = SHA-256(hash(previous event of the aggregate) || digest(e))
--
-- with 32 zero bytes before an aggregate's first event. The canonical bytes are, in order:
-- aggregate_type, aggregate_id, event_type, event_version, payload and metadata (each as
-- an 8-byte big-endian length followed by its UTF-8 bytes; payload and metadata exactly as
-- stored), then the sequence and recorded_at in microseconds since the Unix epoch (each an
-- 8-byte big-endian signed integer). Chaining the digest rather than the bytes keeps a
-- proof short: later events of the aggregate enter it as 32-byte digests.
--
-- The writer computes the hash as it appends (hub_commands::chain, with the time it
-- stores), so the commit path pays a SHA-256 in Rust and no extra lookup;
-- `aihub audit verify` recomputes every one from the stored fields. The SQL function below
-- computes the same digest, for the events stored before this migration.

CREATE FUNCTION event_digest(aggregate_type text, aggregate_id text, event_type text,
                             event_version text, payload json, metadata json,
                             sequence bigint, recorded_at timestamptz)
    RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS
$$
SELECT sha256(
           int8send(octet_length(convert_to(aggregate_type, 'UTF8'))) || convert_to(aggregate_type, 'UTF8')
        || int8send(octet_length(convert_to(aggregate_id, 'UTF8'))) || convert_to(aggregate_id, 'UTF8')
        || int8send(octet_length(convert_to(event_type, 'UTF8'))) || convert_to(event_type, 'UTF8')
        || int8send(octet_length(convert_to(event_version, 'UTF8'))) || convert_to(event_version, 'UTF8')
        || int8send(octet_length(convert_to(payload::text, 'UTF8'))) || convert_to(payload::text, 'UTF8')
        || int8send(octet_length(convert_to(metadata::text, 'UTF8'))) || convert_to(metadata::text, 'UTF8')
        || int8send(sequence)
        || int8send((extract(epoch FROM recorded_at) * 1000000)::bigint))
$$;

ALTER TABLE events ADD COLUMN hash bytea;

-- Events written before this migration: chained in aggregate order (the immutability
-- trigger stands aside for this one statement's transaction).
ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete;
DO
$$
DECLARE
    e record;
    previous bytea;
    last_type text := NULL;
    last_id text := NULL;
BEGIN
    FOR e IN SELECT aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, recorded_at
               FROM events
              ORDER BY aggregate_type, aggregate_id, sequence
    LOOP
        IF last_type IS DISTINCT FROM e.aggregate_type OR last_id IS DISTINCT FROM e.aggregate_id THEN
            previous := decode(repeat('00', 32), 'hex');
        END IF;
        previous := sha256(previous || event_digest(e.aggregate_type, e.aggregate_id,
                                                    e.event_type, e.event_version, e.payload,
                                                    e.metadata, e.sequence, e.recorded_at));
        UPDATE events SET hash = previous
         WHERE aggregate_type = e.aggregate_type AND aggregate_id = e.aggregate_id
           AND sequence = e.sequence;
        last_type := e.aggregate_type;
        last_id := e.aggregate_id;
    END LOOP;
END
$$;
ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete;

-- Every event from now on is hashed by the writer (hub_commands::chain) as it is
-- appended; an event without a hash is refused.
ALTER TABLE events ALTER COLUMN hash SET NOT NULL,
    ADD CONSTRAINT events_hash_is_sha256 CHECK (octet_length(hash) = 32);

-- Signed checkpoints: a Merkle tree (RFC 9162's hashing) over every aggregate's head as of
-- one snapshot of the database, its root signed with the operator's Ed25519 key.
CREATE TABLE ledger_checkpoints
(
    id          bigint PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    -- Aggregates (leaves) in the tree.
    tree_size   bigint      NOT NULL CHECK (tree_size >= 0),
    root        bytea       NOT NULL,
    -- The previous checkpoint's root (32 zero bytes for the first): checkpoints chain too.
    previous    bytea       NOT NULL,
    -- Ed25519 over the checkpoint's signed statement (docs/audit.md).
    signature   bytea       NOT NULL,
    -- SHA-256 of the public key, hex: which key signed it.
    key_id      text        NOT NULL,
    -- Copied to the HUB_CHECKPOINTS stream (done after the commit, retried until it is).
    published   boolean     NOT NULL DEFAULT false
);

-- The heads each checkpoint saw, written only for aggregates that moved since the one
-- before: an aggregate's head at checkpoint c is its row with the greatest checkpoint <= c.
CREATE TABLE ledger_checkpoint_heads
(
    checkpoint_id  bigint NOT NULL REFERENCES ledger_checkpoints (id),
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    hash           bytea  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, checkpoint_id)
);

CREATE INDEX ledger_checkpoint_heads_by_checkpoint
    ON ledger_checkpoint_heads (checkpoint_id);

-- The reports of `aihub audit verify` (GET /api/audit/verify shows the last).
CREATE TABLE audit_verifications
(
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    passed      boolean     NOT NULL,
    report      jsonb       NOT NULL
);
