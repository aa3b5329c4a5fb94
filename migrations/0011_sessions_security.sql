-- Suspension in the admin listing, WebSocket tickets, and Google sign-ins bound to the
-- browser that started them (issue 14, findings 15 and 19).

-- Set while the user is suspended (the `users` projection copies it from `UserSuspended`;
-- the User aggregate, not this column, is what requests are checked against).
ALTER TABLE users ADD COLUMN suspended_at timestamptz;

-- One-use tickets for opening the chat WebSocket from a browser without putting an access
-- token in the URL: 256 random bits, stored as SHA-256, alive for seconds, consumed by the
-- first connection that presents them. A ticket carries the credential it was issued for,
-- so the socket is checked as if that access token had opened it.
CREATE TABLE ws_tickets
(
    ticket_hash     text PRIMARY KEY CHECK (ticket_hash ~ '^[0-9a-f]{64}$'),
    user_id         uuid        NOT NULL,
    roles           text[]      NOT NULL,
    -- The access token's expiry and session version.
    token_expires_at timestamptz NOT NULL,
    session_version bigint      NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX ws_tickets_by_expiry ON ws_tickets (expires_at);

-- The SHA-256 of the nonce the browser that started the sign-in holds in a cookie; the
-- callback must present the same nonce. Sign-ins in flight before this column have none
-- and are refused (they last ten minutes).
ALTER TABLE oidc_logins ADD COLUMN browser_hash text;
