-- The janitor (app/src/janitor.rs) deletes expired refresh tokens and spent throttle rows
-- in batches; these indexes keep each batch from scanning the whole table.
CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at);
CREATE INDEX login_throttle_by_first_failure ON login_throttle (first_failed);
