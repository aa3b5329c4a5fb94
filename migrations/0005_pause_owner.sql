-- Who paused a projection: the backend pid of the replay's own session. A replay killed
-- with SIGKILL cannot clear its pause, but its session ends with it, so a pause whose owner
-- is no longer in pg_stat_activity is void and the live projector carries on.
ALTER TABLE projection_checkpoints ADD COLUMN paused_by integer;
