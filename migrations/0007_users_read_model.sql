-- The `users` read model, built from `User` events by the `users` projection: what admins
-- list and search. It holds no secret: no password hash, no code, no key hash.
CREATE TABLE users
(
    user_id        uuid PRIMARY KEY,
    email          text        NOT NULL,
    display_name   text,
    roles          text[]      NOT NULL,
    email_verified boolean     NOT NULL DEFAULT false,
    has_password   boolean     NOT NULL,
    google_linked  boolean     NOT NULL DEFAULT false,
    api_keys_live  integer     NOT NULL DEFAULT 0,
    registered_at  timestamptz NOT NULL,
    -- The aggregate sequence of the last event applied.
    version        bigint      NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX users_by_registration ON users (registered_at, user_id);
