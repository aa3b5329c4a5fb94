-- Payments that Stripe reports paid for less than their price (or in another currency)
-- are held, never credited; disputes take credits back and, when won, give them back.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('started', 'awaiting_payment', 'paid', 'partially_refunded', 'refunded',
                      'failed', 'expired', 'held', 'disputed', 'dispute_lost'));
