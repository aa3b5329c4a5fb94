-- One INSERT per transaction into bench_insert(id bigserial primary key, payload json):
-- the commit rate Postgres itself sustains here, the ceiling for one event per command.
-- The payload is about the size of a CreditsReserved event. Used by `aihub-bench ledger`
-- (embedded at build time) and by hand: see docs/benchmarks.md.
INSERT INTO bench_insert (payload) VALUES ('{"CreditsReserved":{"request_id":"b12-3456","amount":123456,"expires_at":"2030-01-01T00:00:00Z","balance_after":1000000000000,"reserved_after":123456}}');
