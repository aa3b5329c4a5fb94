-- Low-balance alerts (docs/alerts.md): what each user asked for, the `alerts` projection's
-- state, and the notifications it leaves for the delivery loop.

-- A user's alert settings, written by `PUT /api/alerts/low-balance`. A setting, not a read
-- model (no event carries it), like the sign-in throttle: a user without a row gets
-- `alert_defaults`. The webhook's signing secret is not stored: it is derived from the
-- server secret and `webhook_secret_nonce`, which a new URL (or a rotation) replaces.
CREATE TABLE alert_settings
(
    user_id              uuid PRIMARY KEY,
    -- NULL: the default threshold.
    threshold_micros     bigint CHECK (threshold_micros >= 0),
    webhook_url          text,
    webhook_secret_nonce text,
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((webhook_url IS NULL) = (webhook_secret_nonce IS NULL))
);

-- The settings' default threshold (`alerts.low_balance_default_micros`), written by the
-- process that runs the projections before they start, so that whichever process projects
-- uses the one value.
CREATE TABLE alert_defaults
(
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    threshold_micros bigint NOT NULL CHECK (threshold_micros >= 0)
);
INSERT INTO alert_defaults (threshold_micros) VALUES (1000000);

-- The `alerts` projection: per account, whether the next fall below the threshold alerts
-- (armed by a top-up that leaves the available balance at or above it), and the last event
-- applied. Emptied and rebuilt by `aihub replay alerts`.
CREATE TABLE low_balance_state
(
    account_id       uuid PRIMARY KEY,
    armed            boolean NOT NULL,
    available_micros bigint  NOT NULL,
    version          bigint  NOT NULL
);

-- One notification per crossing, keyed by the event that crossed, written by the projection
-- in its batch's transaction; the delivery loop (sweeper role) sends and marks it. Never
-- emptied by a replay: it is the record of what was sent.
CREATE TABLE alert_notifications
(
    -- `lowbal_<account>_<sequence>`: the crossing event's identity, sent with the webhook.
    id               text PRIMARY KEY,
    account_id       uuid        NOT NULL,
    event_sequence   bigint      NOT NULL,
    stream_sequence  bigint      NOT NULL,
    available_micros bigint      NOT NULL,
    threshold_micros bigint      NOT NULL,
    crossed_at       timestamptz NOT NULL,
    email_state      text        NOT NULL DEFAULT 'pending'
        CHECK (email_state IN ('pending', 'sent', 'skipped', 'failed')),
    webhook_state    text        NOT NULL
        CHECK (webhook_state IN ('pending', 'delivered', 'none', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT '-infinity',
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    done_at          timestamptz
);
CREATE INDEX alert_notifications_due ON alert_notifications (next_attempt_at)
    WHERE done_at IS NULL;

-- The highest stream sequence the alerts projection has considered for a notification. A
-- replay starts its checkpoint again from 0 but not this: the crossings it finds again at or
-- below it were notified (or were history before alerts existed) and are not sent twice.
CREATE TABLE alert_notified_through
(
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    stream_sequence bigint NOT NULL CHECK (stream_sequence >= 0)
);
-- A hub that already has history: what the balances projection has applied is history.
INSERT INTO alert_notified_through (stream_sequence)
SELECT coalesce(max(stream_sequence), 0)
  FROM projection_checkpoints
 WHERE projection = 'balances';
