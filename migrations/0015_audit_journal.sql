-- Auditors' queries (issue 16): the double-entry journal, and indexes for reading the
-- ledger across accounts.

-- The `journal` read model: every movement of credit posted as balanced legs between the
-- user's two accounts (`user:available`, `user:held`, the user being `account_id`) and the
-- hub's system accounts (`system:grants`, `system:stripe`, ...). Built by the `journal`
-- projection from `CreditAccount` events, in the same transaction as `balances` and `ledger`
-- and its own checkpoint; `aihub replay journal` rebuilds it. Each event's legs balance:
-- the sum of its debits equals the sum of its credits. What each event posts is in
-- `projections/src/journal.rs` and docs/audit.md.
CREATE TABLE journal
(
    -- The credit account (user) whose event this is.
    account_id      uuid        NOT NULL,
    -- The event's aggregate sequence, and the leg's place among the event's legs.
    sequence        bigint      NOT NULL,
    leg             smallint    NOT NULL CHECK (leg >= 0),
    -- `user:available`, `user:held` (of `account_id`), or a `system:` account.
    ledger_account  text        NOT NULL CHECK (ledger_account IN ('user:available', 'user:held')
                                                 OR ledger_account LIKE 'system:%'),
    -- Exactly one of the two is positive.
    debit_micros    bigint      NOT NULL CHECK (debit_micros >= 0),
    credit_micros   bigint      NOT NULL CHECK (credit_micros >= 0),
    -- What the event was: grant, purchase, promo, refund, reserve, charge, release, expiry,
    -- debt_repayment.
    kind            text        NOT NULL,
    -- What caused it, as in the ledger: grant, payment, promo, request.
    cause_type      text        NOT NULL,
    cause_id        text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (account_id, sequence, leg),
    CHECK ((debit_micros > 0) <> (credit_micros > 0))
);
-- The trial balance as of a time sums the legs recorded up to it.
CREATE INDEX journal_by_time ON journal (recorded_at);
-- Payment reconciliation sums each session's legs.
CREATE INDEX journal_by_cause ON journal (cause_type, cause_id);

-- `GET /api/audit/ledger` pages every account's entries newest first by stream sequence,
-- and filters by time and by cause.
CREATE INDEX ledger_by_stream_sequence ON ledger (stream_sequence);
CREATE INDEX ledger_by_time ON ledger (recorded_at);
CREATE INDEX ledger_by_cause ON ledger (cause_type, cause_id);

-- `GET /api/audit/admin-actions` reads the admins' events from the event store, newest
-- first: a partial index keeps that a short read however long the history grows.
CREATE INDEX events_admin_actions ON events (recorded_at)
    WHERE event_type IN ('CreditsGranted', 'RoleGranted', 'RoleRevoked', 'UserSuspended',
                         'UserUnsuspended', 'PromoCodeCreated', 'PromoCodeDisabled',
                         'PromoCodeEnabled', 'ApiKeyRevoked');
-- `GET /api/audit/accounts/{id}?as_of=` folds one account's events recorded up to a time:
-- the primary key (aggregate_type, aggregate_id, sequence) already serves it.
