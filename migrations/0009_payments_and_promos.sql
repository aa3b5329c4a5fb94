-- Payments (Stripe Checkout) and promo codes.
--
-- The `Payment` and `PromoCode` aggregates (events in `events`) are the truth. This adds:
-- the ledger kind of a refund, the one lookup table the webhook needs that no aggregate can
-- answer, and the two read models built from the stream by their projections.

-- A refund takes credits back: `CreditsRevoked` becomes a ledger row of kind 'refund' whose
-- cause is the payment (cause_type 'payment' already exists).
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('grant', 'purchase', 'promo', 'charge', 'refund'));

-- Stripe objects that name no Checkout Session, mapped to the session they belong to:
-- a payment intent (`payment_intent.payment_failed`, and a charge's `payment_intent`), a
-- charge (`charge.refunded`), and the hub's own checkout reference (put in the payment
-- intent's metadata at checkout, before Stripe has named the session's payment intent).
-- Immutable claims written by the API: the first mapping of a reference is kept.
CREATE TABLE stripe_refs
(
    ref_id     text PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('payment_intent', 'charge', 'checkout')),
    session_id text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX stripe_refs_by_session ON stripe_refs (session_id);

-- The `payments` read model: one row per Checkout Session, from `Payment` events (the
-- `payments` projection). What `GET /api/payments/history` lists.
CREATE TABLE payments
(
    session_id          text PRIMARY KEY,
    user_id             uuid        NOT NULL,
    package_id          text        NOT NULL,
    credits_micros      bigint      NOT NULL,
    amount_cents        bigint      NOT NULL,
    currency            text        NOT NULL,
    status              text        NOT NULL CHECK (status IN ('started', 'awaiting_payment',
                            'paid', 'partially_refunded', 'refunded', 'failed', 'expired')),
    payment_intent      text,
    refunded_cents      bigint      NOT NULL DEFAULT 0,
    credits_taken_back_micros bigint NOT NULL DEFAULT 0,
    failure_reason      text,
    -- When the checkout started (or, if its start was never recorded, was first reported).
    created_at          timestamptz NOT NULL,
    paid_at             timestamptz,
    -- The aggregate sequence of the last event applied.
    version             bigint      NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX payments_by_user ON payments (user_id, created_at DESC, session_id DESC);

-- The `promos` read model: one row per promo code with its redemption count, from
-- `PromoCode` events (the `promos` projection). What admins list.
CREATE TABLE promo_codes
(
    code            text PRIMARY KEY,
    credits_micros  bigint      NOT NULL,
    max_redemptions integer     NOT NULL,
    redemptions     integer     NOT NULL DEFAULT 0,
    valid_from      timestamptz,
    valid_until     timestamptz,
    active          boolean     NOT NULL,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    -- The aggregate sequence of the last event applied.
    version         bigint      NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX promo_codes_by_creation ON promo_codes (created_at, code);
