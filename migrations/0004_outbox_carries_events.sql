-- The outbox carries the whole event, and commits no longer notify.
--
-- 1. `pg_notify` in the outbox trigger serialised every commit: Postgres takes one global
--    lock on the notification queue from pre-commit until the commit is durable, so writers
--    queued behind each other's WAL flush (3.0k against 6.4k one-row commits/s on the
--    development machine, docs/benchmarks.md). The relay is now woken by the writer after
--    its commit, over core NATS (`<subject_prefix>.outbox.committed`), and polls as a
--    fallback.
-- 2. The relay read each row by joining `events`, whose plan degraded to a scan as the table
--    grew. The row now holds what the relay publishes, so neither the relay nor its lag
--    query touches `events`.

ALTER TABLE event_outbox
    ADD COLUMN event_type    text,
    ADD COLUMN event_version text,
    ADD COLUMN payload       json,
    ADD COLUMN metadata      json,
    ADD COLUMN recorded_at   timestamptz;

-- Rows written before this migration.
UPDATE event_outbox o
   SET event_type = e.event_type,
       event_version = e.event_version,
       payload = e.payload,
       metadata = e.metadata,
       recorded_at = e.recorded_at
  FROM events e
 WHERE e.aggregate_type = o.aggregate_type
   AND e.aggregate_id = o.aggregate_id
   AND e.sequence = o.sequence;

ALTER TABLE event_outbox
    ALTER COLUMN event_type SET NOT NULL,
    ALTER COLUMN event_version SET NOT NULL,
    ALTER COLUMN payload SET NOT NULL,
    ALTER COLUMN metadata SET NOT NULL,
    ALTER COLUMN recorded_at SET NOT NULL;

CREATE OR REPLACE FUNCTION events_to_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence,
                              event_type, event_version, payload, metadata, recorded_at)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
            NEW.event_type, NEW.event_version, NEW.payload, NEW.metadata, NEW.recorded_at);
    RETURN NULL;
END
$$;
