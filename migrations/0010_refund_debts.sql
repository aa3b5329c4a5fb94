-- A refund's shortfall (credits already spent or held when it landed) is owed as a debt,
-- repaid first from the next credits that become available (`DebtRepaid`).

-- The debt still owed, from the latest event that changed it (`CreditsRevoked`,
-- `DebtRepaid`); zero for accounts that never owed.
ALTER TABLE balances ADD COLUMN debt_micros bigint NOT NULL DEFAULT 0 CHECK (debt_micros >= 0);
-- The aggregate sequence of that event: an older one never overwrites a newer one.
ALTER TABLE balances ADD COLUMN debt_version bigint NOT NULL DEFAULT 0;

-- A repayment is a ledger row of its own, caused by the refunded payment it repays.
ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('grant', 'purchase', 'promo', 'charge', 'refund', 'debt_repayment'));
