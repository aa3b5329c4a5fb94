-- The outbox the relay drains to JetStream.
--
-- The events table has no global order a reader could follow (identity values commit out of
-- order), so every committed event leaves a row here, written by a trigger in the same
-- transaction. The relay publishes rows and then deletes them; a row is never skipped
-- because it committed late. Within one aggregate, rows appear in sequence order: event n+1
-- can only be written once event n has committed.
CREATE TABLE event_outbox
(
    id             bigserial PRIMARY KEY,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL
);

CREATE FUNCTION events_to_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
    -- Wakes the relay at commit; identical notifications in one transaction are folded.
    PERFORM pg_notify('aihub_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_outbox
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_to_outbox();
