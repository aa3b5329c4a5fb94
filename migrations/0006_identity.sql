-- Identity: what the User aggregate cannot answer by itself, and the sessions around it.
--
-- The User aggregate (events in `events`, aggregate_type 'User') is the truth about a
-- user. These tables are either immutable claims that make a value unique across users
-- (an aggregate only sees itself), or short-lived session state that is not a fact about
-- the user worth keeping forever (refresh tokens, login throttling, sign-in attempts).

-- One user per email address. `email` is stored normalised (trimmed, lowercased), so the
-- primary key makes addresses unique case-insensitively, even under concurrent
-- registration. A claim is never moved to another user: a registration that died after
-- claiming is completed by the next registration of the same address, as the same user.
CREATE TABLE user_emails
(
    email      text PRIMARY KEY CHECK (email = lower(btrim(email))),
    user_id    uuid        NOT NULL UNIQUE,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One user per Google account (the ID token's `sub`), claimed the same way.
CREATE TABLE user_google_subjects
(
    subject    text PRIMARY KEY,
    user_id    uuid        NOT NULL UNIQUE,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Finds the owner of an API key from the prefix the key carries; the key itself (its hash,
-- name, limit, expiry, revocation) lives in the owner's User aggregate.
CREATE TABLE api_key_index
(
    prefix     text PRIMARY KEY,
    key_id     uuid        NOT NULL UNIQUE,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Refresh tokens: opaque, stored as SHA-256 hex, rotated on every use. A family is one
-- sign-in; presenting a token that was already rotated revokes the whole family.
CREATE TABLE refresh_tokens
(
    token_hash  text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    family_id   uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    -- Set when this token was exchanged for its successor.
    rotated_at  timestamptz,
    -- Set when its family was revoked (logout, reuse, password reset).
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

-- Failed logins, per account (the normalised email, known or not) and per client address.
CREATE TABLE login_throttle
(
    scope        text        NOT NULL CHECK (scope IN ('account', 'ip')),
    key          text        NOT NULL,
    failures     integer     NOT NULL,
    first_failed timestamptz NOT NULL,
    locked_until timestamptz,
    PRIMARY KEY (scope, key)
);

-- Google sign-ins in flight: created by GET /google, consumed once by the callback.
CREATE TABLE oidc_logins
(
    state         text PRIMARY KEY,
    nonce         text        NOT NULL,
    pkce_verifier text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz NOT NULL
);
