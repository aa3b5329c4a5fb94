use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

use super::commands::{CreditCommand, KeyLimit, REASON_LEN_MAX};
use super::error::CreditError;
use super::events::{CreditEvent, LateSettlement};
use super::recent::RecentOutcomes;
use super::usage::UsageRecord;
use crate::decider::{cqrs_aggregate, Decider, Decision};
use crate::ids::{ApiKeyId, IdempotencyKey, RequestId};
use crate::money::{Credits, MoneyError};

/// Most active reservations one account may hold: bounds the state and each snapshot.
pub const RESERVATIONS_MAX: usize = 10_000;

/// Most reservations one `ExpireReservations` command expires; the sweeper comes back for
/// the rest.
pub const EXPIRE_BATCH_MAX: usize = 1_000;

/// The most one account may hold. A quarter of `i64` leaves room for sums across accounts
/// in reports and audits.
pub const BALANCE_MAX: Credits = Credits::from_micros(i64::MAX / 4);

/// A reservation still holding credits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ActiveReservation {
    amount: Credits,
    expires_at: DateTime<Utc>,
    /// The totals its `CreditsReserved` event reported, so a repeat returns the same outcome.
    balance_at_reserve: Credits,
    reserved_at_reserve: Credits,
    /// The API key the request was made with, and its limit then.
    #[serde(default)]
    api_key: Option<ApiKeyId>,
    #[serde(default)]
    key_limit: Option<Credits>,
}

/// What one API key has spent and holds on this account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpend {
    /// Charged by its settled requests (those settled before keys were named in
    /// reservations too, through their usage records).
    pub charged: Credits,
    /// Held by its active reservations.
    pub reserved: Credits,
    /// Its spending limit as its latest reservation gave it.
    pub limit: Option<Credits>,
}

impl KeySpend {
    /// `charged + reserved`: what counts against the limit.
    pub fn spent(&self) -> Credits {
        Credits::from_micros(self.charged.micros() + self.reserved.micros())
    }

    /// What the limit still allows; `None`: no limit.
    fn room(&self) -> Option<Credits> {
        self.limit
            .map(|limit| Credits::from_micros((limit.micros() - self.spent().micros()).max(0)))
    }
}

/// A refund's shortfall still owed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Debt {
    payment_id: IdempotencyKey,
    amount: Credits,
}

/// One user's credits. The state is what the rules need and no more.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreditAccount {
    opened: bool,
    balance: Credits,
    /// Sum of `reservations`' amounts.
    reserved: Credits,
    reservations: BTreeMap<RequestId, ActiveReservation>,
    recent: RecentOutcomes,
    /// Per API key that ever paid on this account (a few per user: each entry is small).
    keys: BTreeMap<ApiKeyId, KeySpend>,
    /// Sum of `debts`: refund shortfalls still owed.
    debt: Credits,
    /// Each refund's shortfall still owed, oldest first (repaid in that order).
    debts: VecDeque<Debt>,
}

/// Where a reservation stands, as far as this account remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Active,
    Settled,
    Released,
    Expired,
    /// Never made, or resolved longer ago than the account remembers.
    Unknown,
}

impl CreditAccount {
    pub fn is_open(&self) -> bool {
        self.opened
    }

    pub fn balance(&self) -> Credits {
        self.balance
    }

    pub fn reserved(&self) -> Credits {
        self.reserved
    }

    /// `balance - reserved`; never negative.
    pub fn available(&self) -> Credits {
        Credits::from_micros(self.balance.micros() - self.reserved.micros())
    }

    /// Refund shortfalls still owed; while it is above zero, nothing is available.
    pub fn debt(&self) -> Credits {
        self.debt
    }

    /// Sum of the debts per refund (equal to [`Self::debt`] whenever the rules hold).
    pub fn sum_of_debts(&self) -> Credits {
        Credits::from_micros(self.debts.iter().map(|d| d.amount.micros()).sum())
    }

    /// What an API key has charged and holds on this account.
    pub fn key_spend(&self, key: &ApiKeyId) -> KeySpend {
        self.keys.get(key).copied().unwrap_or_default()
    }

    pub fn active_reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Sum of the active reservations (equal to [`Self::reserved`] whenever the rules hold).
    pub fn sum_of_active_reservations(&self) -> Credits {
        Credits::from_micros(self.reservations.values().map(|r| r.amount.micros()).sum())
    }

    pub fn reservation_state(&self, request_id: &RequestId) -> ReservationState {
        if self.reservations.contains_key(request_id) {
            ReservationState::Active
        } else if self.recent.contains(&format!("settle:{request_id}")) {
            ReservationState::Settled
        } else if self.recent.contains(&format!("release:{request_id}")) {
            ReservationState::Released
        } else if self.recent.contains(&format!("expire:{request_id}")) {
            ReservationState::Expired
        } else {
            ReservationState::Unknown
        }
    }

    /// The first event written under this command's key, if the account remembers it.
    fn first_outcome(&self, command: &CreditCommand) -> Option<CreditEvent> {
        if let CreditCommand::ReserveCredits { request_id, .. } = command {
            if let Some(active) = self.reservations.get(request_id) {
                return Some(reserved_event(request_id, active));
            }
        }
        let key = command.idempotency_key()?;
        self.recent.get(&key).cloned()
    }

    fn credit(&self, amount: Credits) -> Result<Credits, CreditError> {
        Credits::positive(amount.micros())?;
        self.balance
            .checked_add(amount)
            .filter(|b| *b <= BALANCE_MAX)
            .ok_or(CreditError::BalanceOverflow)
    }

    fn reserve(
        &self,
        request_id: RequestId,
        amount: Credits,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        key: Option<KeyLimit>,
    ) -> Result<Decision<CreditEvent>, CreditError> {
        Credits::positive(amount.micros())?;
        if expires_at <= now {
            return Err(CreditError::ExpiryNotInFuture);
        }
        let mut events = self.expire_due(now, self.reserved);
        let expired = events.len();
        // What the expiries freed repays a debt before it holds anything new.
        let repaid = self.repayments(&events);
        events.extend(repaid);
        let (balance_before, reserved_before) = events
            .last()
            .map(CreditEvent::totals_after)
            .unwrap_or((self.balance, self.reserved));
        let still_active = self.reservations.len() - expired;
        if still_active >= RESERVATIONS_MAX {
            return Err(CreditError::TooManyReservations {
                max: RESERVATIONS_MAX,
            });
        }
        let available = Credits::from_micros(balance_before.micros() - reserved_before.micros());
        if amount > available {
            return Err(CreditError::InsufficientCredits {
                requested: amount,
                available,
            });
        }
        if let Some(KeyLimit {
            id,
            limit: Some(limit),
        }) = key
        {
            // Charged and held by the key, less what the expiries above just let go.
            let let_go: i64 = events
                .iter()
                .filter_map(|e| match e {
                    CreditEvent::ReservationExpired { request_id, .. } => {
                        self.reservations.get(request_id)
                    }
                    _ => None,
                })
                .filter(|r| r.api_key == Some(id))
                .map(|r| r.amount.micros())
                .sum();
            let spent = Credits::from_micros(self.key_spend(&id).spent().micros() - let_go);
            if spent.micros() + amount.micros() > limit.micros() {
                return Err(CreditError::KeySpendingLimit {
                    key: id,
                    limit,
                    spent,
                    requested: amount,
                });
            }
        }
        events.push(CreditEvent::CreditsReserved {
            request_id,
            amount,
            expires_at,
            balance_after: balance_before,
            reserved_after: Credits::from_micros(reserved_before.micros() + amount.micros()),
            api_key: key.map(|k| k.id),
            key_limit: key.and_then(|k| k.limit),
        });
        Ok(Decision::write(events))
    }

    /// `DebtRepaid` events that pay debts, oldest first, from what is available once
    /// `events` (this command's, not yet applied) are: none when nothing is owed or
    /// nothing is available. Repayments already among `events` are counted.
    fn repayments(&self, events: &[CreditEvent]) -> Vec<CreditEvent> {
        if self.debt.micros() == 0 {
            return Vec::new();
        }
        let (mut balance, reserved) = events
            .last()
            .map(CreditEvent::totals_after)
            .unwrap_or((self.balance, self.reserved));
        let mut already: i64 = events
            .iter()
            .map(|e| match e {
                CreditEvent::DebtRepaid { amount, .. } => amount.micros(),
                _ => 0,
            })
            .sum();
        let mut debt = self.debt.micros() - already;
        let mut repaid = Vec::new();
        for owed in &self.debts {
            let paid_before = already.min(owed.amount.micros());
            already -= paid_before;
            let still_owed = owed.amount.micros() - paid_before;
            let available = balance.micros() - reserved.micros();
            if available <= 0 {
                break;
            }
            if still_owed <= 0 {
                continue;
            }
            let amount = still_owed.min(available);
            balance = Credits::from_micros(balance.micros() - amount);
            debt -= amount;
            repaid.push(CreditEvent::DebtRepaid {
                payment_id: owed.payment_id.clone(),
                amount: Credits::from_micros(amount),
                balance_after: balance,
                reserved_after: reserved,
                debt_after: Credits::from_micros(debt),
            });
        }
        repaid
    }

    fn settle(
        &self,
        request_id: RequestId,
        charge: Credits,
        usage: Option<Box<UsageRecord>>,
    ) -> Result<Decision<CreditEvent>, CreditError> {
        let Some(active) = self.reservations.get(&request_id) else {
            return Err(self.not_active(request_id));
        };
        if charge.is_negative() {
            return Err(MoneyError::Negative(charge.micros()).into());
        }
        if charge > active.amount {
            return Err(CreditError::ChargeExceedsReservation {
                charge,
                reserved: active.amount,
            });
        }
        Ok(Decision::write(vec![CreditEvent::ReservationSettled {
            request_id,
            reserved: active.amount,
            charged: charge,
            balance_after: Credits::from_micros(self.balance.micros() - charge.micros()),
            reserved_after: Credits::from_micros(self.reserved.micros() - active.amount.micros()),
            usage,
            after_expiry: None,
        }]))
    }

    /// Settle a request whose reservation expired before its settlement arrived. The
    /// answer was delivered, so it is still charged: its cost capped at what had been
    /// reserved, taken from what is available now; what is not available is recorded as
    /// uncollected rather than overdrawing the account or passing its API key's limit.
    fn settle_after_expiry(
        &self,
        request_id: RequestId,
        reserved: Credits,
        usage: Box<UsageRecord>,
    ) -> Decision<CreditEvent> {
        let due = usage.cost.min(reserved).max(Credits::ZERO);
        // Capped too at what the key's limit still allows: its hold ended at the expiry.
        let key_room = usage
            .api_key
            .and_then(|key| self.key_spend(&key).room())
            .unwrap_or(due);
        let charged = due.min(self.available()).min(key_room);
        Decision::write(vec![CreditEvent::ReservationSettled {
            request_id,
            reserved,
            charged,
            balance_after: Credits::from_micros(self.balance.micros() - charged.micros()),
            reserved_after: self.reserved,
            usage: Some(usage),
            after_expiry: Some(LateSettlement {
                uncollected: Credits::from_micros(due.micros() - charged.micros()),
            }),
        }])
    }

    fn release(&self, request_id: RequestId) -> Result<Decision<CreditEvent>, CreditError> {
        let Some(active) = self.reservations.get(&request_id) else {
            return Err(self.not_active(request_id));
        };
        Ok(Decision::write(vec![CreditEvent::ReservationReleased {
            request_id,
            amount: active.amount,
            balance_after: self.balance,
            reserved_after: Credits::from_micros(self.reserved.micros() - active.amount.micros()),
        }]))
    }

    fn not_active(&self, request_id: RequestId) -> CreditError {
        match self.reservation_state(&request_id) {
            ReservationState::Settled => CreditError::ReservationSettled(request_id),
            ReservationState::Released => CreditError::ReservationReleased(request_id),
            ReservationState::Expired => CreditError::ReservationExpired(request_id),
            ReservationState::Active | ReservationState::Unknown => {
                CreditError::ReservationNotFound(request_id)
            }
        }
    }

    /// `ReservationExpired` for each reservation due at `now`, oldest expiry first.
    fn expire_due(&self, now: DateTime<Utc>, reserved: Credits) -> Vec<CreditEvent> {
        let mut due: Vec<(&RequestId, &ActiveReservation)> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .collect();
        due.sort_by_key(|(id, r)| (r.expires_at, (*id).clone()));
        let mut reserved = reserved;
        due.into_iter()
            .take(EXPIRE_BATCH_MAX)
            .map(|(request_id, r)| {
                reserved = Credits::from_micros(reserved.micros() - r.amount.micros());
                CreditEvent::ReservationExpired {
                    request_id: request_id.clone(),
                    amount: r.amount,
                    balance_after: self.balance,
                    reserved_after: reserved,
                }
            })
            .collect()
    }
}

fn reserved_event(request_id: &RequestId, active: &ActiveReservation) -> CreditEvent {
    CreditEvent::CreditsReserved {
        request_id: request_id.clone(),
        amount: active.amount,
        expires_at: active.expires_at,
        balance_after: active.balance_at_reserve,
        reserved_after: active.reserved_at_reserve,
        api_key: active.api_key,
        key_limit: active.key_limit,
    }
}

impl Decider for CreditAccount {
    const TYPE: &'static str = "CreditAccount";
    /// 2: API keys' spending and debts joined the state (older snapshots lack them, so
    /// the state is folded from the events again).
    const STATE_VERSION: i32 = 2;
    type Command = CreditCommand;
    type Event = CreditEvent;
    type Error = CreditError;

    /// Take back into memory keyed events the account no longer remembers (found in the
    /// event store by key), so that a repeat of an old command returns its first outcome and
    /// a settle of a long-released reservation says so. Totals are untouched.
    fn recall(&mut self, events: impl IntoIterator<Item = CreditEvent>) {
        for event in events {
            if let CreditEvent::CreditsReserved { request_id, .. } = &event {
                if self.reservations.contains_key(request_id) {
                    continue;
                }
            }
            if let Some(key) = event.idempotency_key() {
                self.recent.remember(key, event);
            }
        }
    }

    /// Decide what a command does to this account. Pure: the caller writes the events.
    fn decide(&self, command: CreditCommand) -> Result<Decision<CreditEvent>, CreditError> {
        if let CreditCommand::OpenAccount = command {
            return Ok(if self.opened {
                Decision::replay(CreditEvent::AccountOpened {})
            } else {
                Decision::write(vec![CreditEvent::AccountOpened {}])
            });
        }
        if !self.opened {
            return Err(CreditError::AccountNotOpen);
        }
        if let Some(first) = self.first_outcome(&command) {
            return Ok(Decision::replay(first));
        }
        let mut decision = self.decide_new(command)?;
        // Whatever the command freed repays a debt first.
        let repaid = self.repayments(&decision.events);
        decision.events.extend(repaid);
        Ok(decision)
    }

    /// Apply an event. Only assigns: every check happened in [`Decider::decide`].
    fn evolve(&mut self, event: CreditEvent) {
        self.evolve_event(event);
    }

    fn event_key(event: &CreditEvent) -> Option<String> {
        event.idempotency_key()
    }

    fn related_keys(command: &CreditCommand) -> Vec<String> {
        command.related_keys()
    }

    fn may_be_forgotten(refusal: &CreditError) -> bool {
        // A settle or release of a reservation resolved longer ago than the account
        // remembers: the store knows its outcome.
        matches!(refusal, CreditError::ReservationNotFound(_))
    }
}

impl CreditAccount {
    /// What a command, neither a repeat nor an opening, writes before any debt repayment.
    fn decide_new(&self, command: CreditCommand) -> Result<Decision<CreditEvent>, CreditError> {
        match command {
            CreditCommand::OpenAccount => Ok(Decision::replay(CreditEvent::AccountOpened {})),
            CreditCommand::GrantCredits {
                key,
                amount,
                reason,
                granted_by,
            } => {
                if reason.chars().count() > REASON_LEN_MAX {
                    return Err(CreditError::ReasonTooLong {
                        max: REASON_LEN_MAX,
                    });
                }
                let balance_after = self.credit(amount)?;
                Ok(Decision::write(vec![CreditEvent::CreditsGranted {
                    key,
                    amount,
                    reason,
                    granted_by,
                    balance_after,
                    reserved_after: self.reserved,
                }]))
            }
            CreditCommand::PurchaseCredits { payment_id, amount } => {
                let balance_after = self.credit(amount)?;
                Ok(Decision::write(vec![CreditEvent::CreditsPurchased {
                    payment_id,
                    amount,
                    balance_after,
                    reserved_after: self.reserved,
                }]))
            }
            CreditCommand::ApplyPromoCredits { code, amount } => {
                let balance_after = self.credit(amount)?;
                Ok(Decision::write(vec![CreditEvent::PromoCreditsApplied {
                    code,
                    amount,
                    balance_after,
                    reserved_after: self.reserved,
                }]))
            }
            CreditCommand::RevokeCredits {
                key,
                payment_id,
                amount,
            } => {
                let requested = Credits::positive(amount.micros())?;
                // Take what is available, never more: the rest was spent or is held by a
                // request, and the available balance must not go negative.
                // The rest is owed, repaid from the next credits that become available.
                let taken = requested.min(self.available());
                let shortfall = requested.micros() - taken.micros();
                let debt_after = self
                    .debt
                    .checked_add(Credits::from_micros(shortfall))
                    .ok_or(CreditError::BalanceOverflow)?;
                Ok(Decision::write(vec![CreditEvent::CreditsRevoked {
                    key,
                    payment_id,
                    requested,
                    taken,
                    balance_after: Credits::from_micros(self.balance.micros() - taken.micros()),
                    reserved_after: self.reserved,
                    debt_after,
                }]))
            }
            CreditCommand::ReserveCredits {
                request_id,
                amount,
                expires_at,
                now,
                key,
            } => self.reserve(request_id, amount, expires_at, now, key),
            CreditCommand::SettleReservation { request_id, charge } => {
                self.settle(request_id, charge, None)
            }
            CreditCommand::SettleUsage { request_id, usage } => {
                let Some(active) = self.reservations.get(&request_id) else {
                    if let Some(CreditEvent::ReservationExpired { amount, .. }) =
                        self.recent.get(&format!("expire:{request_id}"))
                    {
                        return Ok(self.settle_after_expiry(request_id, *amount, usage));
                    }
                    return Err(self.not_active(request_id));
                };
                // The hub caps output to what it reserved; an estimate that still fell
                // short is the hub's loss, never an overdraft.
                let charge = usage.cost.min(active.amount).max(Credits::ZERO);
                self.settle(request_id, charge, Some(usage))
            }
            CreditCommand::ReleaseReservation { request_id } => self.release(request_id),
            CreditCommand::ExpireReservations { now } => {
                Ok(Decision::write(self.expire_due(now, self.reserved)))
            }
        }
    }

    /// [`Decider::evolve`]: assigns what the event says, and keeps the per-key and
    /// per-debt sums it implies.
    fn evolve_event(&mut self, event: CreditEvent) {
        let (balance, reserved) = event.totals_after();
        match &event {
            CreditEvent::AccountOpened {} => {
                self.opened = true;
                return;
            }
            CreditEvent::CreditsReserved {
                request_id,
                amount,
                expires_at,
                balance_after,
                reserved_after,
                api_key,
                key_limit,
            } => {
                if let Some(key) = api_key {
                    let spend = self.keys.entry(*key).or_default();
                    spend.reserved =
                        Credits::from_micros(spend.reserved.micros() + amount.micros());
                    spend.limit = *key_limit;
                }
                self.reservations.insert(
                    request_id.clone(),
                    ActiveReservation {
                        amount: *amount,
                        expires_at: *expires_at,
                        balance_at_reserve: *balance_after,
                        reserved_at_reserve: *reserved_after,
                        api_key: *api_key,
                        key_limit: *key_limit,
                    },
                );
            }
            CreditEvent::ReservationSettled { request_id, .. }
            | CreditEvent::ReservationReleased { request_id, .. }
            | CreditEvent::ReservationExpired { request_id, .. } => {
                self.count_key_spend(&event);
                if let Some(active) = self.reservations.remove(request_id) {
                    let reserved_event = reserved_event(request_id, &active);
                    self.recent
                        .remember(format!("reserve:{request_id}"), reserved_event);
                }
                if let Some(key) = event.idempotency_key() {
                    self.recent.remember(key, event.clone());
                }
            }
            CreditEvent::CreditsRevoked {
                payment_id,
                debt_after,
                ..
            } => {
                let added = debt_after.micros() - self.debt.micros();
                if added > 0 {
                    match self.debts.back_mut() {
                        Some(last) if last.payment_id == *payment_id => {
                            last.amount = Credits::from_micros(last.amount.micros() + added);
                        }
                        _ => self.debts.push_back(Debt {
                            payment_id: payment_id.clone(),
                            amount: Credits::from_micros(added),
                        }),
                    }
                }
                self.debt = *debt_after;
                if let Some(key) = event.idempotency_key() {
                    self.recent.remember(key, event.clone());
                }
            }
            CreditEvent::DebtRepaid {
                amount, debt_after, ..
            } => {
                let mut left = amount.micros();
                while left > 0 {
                    let Some(oldest) = self.debts.front_mut() else {
                        break;
                    };
                    let paid = left.min(oldest.amount.micros());
                    oldest.amount = Credits::from_micros(oldest.amount.micros() - paid);
                    left -= paid;
                    if oldest.amount.micros() == 0 {
                        self.debts.pop_front();
                    }
                }
                self.debt = *debt_after;
            }
            CreditEvent::CreditsGranted { .. }
            | CreditEvent::CreditsPurchased { .. }
            | CreditEvent::PromoCreditsApplied { .. } => {
                if let Some(key) = event.idempotency_key() {
                    self.recent.remember(key, event.clone());
                }
            }
        }
        self.balance = balance;
        self.reserved = reserved;
    }

    /// A reservation's end moves its key's hold to its charge (or just ends the hold). A
    /// settlement whose reservation named no key (made before keys were named, or expired
    /// before it) is counted for the key its usage names.
    fn count_key_spend(&mut self, event: &CreditEvent) {
        let (request_id, charged, usage_key) = match event {
            CreditEvent::ReservationSettled {
                request_id,
                charged,
                usage,
                ..
            } => (request_id, *charged, usage.as_ref().and_then(|u| u.api_key)),
            CreditEvent::ReservationReleased { request_id, .. }
            | CreditEvent::ReservationExpired { request_id, .. } => {
                (request_id, Credits::ZERO, None)
            }
            _ => return,
        };
        let held = self
            .reservations
            .get(request_id)
            .and_then(|r| r.api_key.map(|key| (key, r.amount)));
        if let Some((key, amount)) = held {
            let spend = self.keys.entry(key).or_default();
            spend.reserved = Credits::from_micros(spend.reserved.micros() - amount.micros());
        }
        if let Some(key) = held.map(|(key, _)| key).or(usage_key) {
            let spend = self.keys.entry(key).or_default();
            spend.charged = Credits::from_micros(spend.charged.micros() + charged.micros());
        }
    }
}

cqrs_aggregate!(CreditAccount);
