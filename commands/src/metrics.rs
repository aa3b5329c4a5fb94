//! What the credit accounts count: every credit event a command wrote, by kind, and the
//! micro-credits it moved (docs/operations.md). Recorded from the events a command
//! committed, so a repeated key (whose first outcome is answered again) counts once.

use hub_domain::CreditEvent;

/// Credit events written, by `event`.
pub const CREDIT_EVENTS: &str = "aihub_credit_events_total";
/// Micro-credits they moved, by `event`: the amount granted, bought, applied, revoked
/// (taken), reserved, settled (charged), released, expired or repaid.
pub const CREDIT_MICROS: &str = "aihub_credit_micros_total";

/// Count `events`, just committed.
pub(crate) fn record(events: &[CreditEvent]) {
    for event in events {
        let (kind, micros) = match event {
            CreditEvent::AccountOpened {} => continue,
            CreditEvent::CreditsGranted { amount, .. } => ("granted", amount.micros()),
            CreditEvent::CreditsPurchased { amount, .. } => ("purchased", amount.micros()),
            CreditEvent::PromoCreditsApplied { amount, .. } => ("promo", amount.micros()),
            CreditEvent::CreditsRevoked { taken, .. } => ("revoked", taken.micros()),
            CreditEvent::CreditsReserved { amount, .. } => ("reserved", amount.micros()),
            CreditEvent::ReservationSettled { charged, .. } => ("settled", charged.micros()),
            CreditEvent::ReservationReleased { amount, .. } => ("released", amount.micros()),
            CreditEvent::ReservationExpired { amount, .. } => ("expired", amount.micros()),
            CreditEvent::DebtRepaid { amount, .. } => ("debt_repaid", amount.micros()),
        };
        metrics::counter!(CREDIT_EVENTS, "event" => kind).increment(1);
        metrics::counter!(CREDIT_MICROS, "event" => kind)
            .increment(u64::try_from(micros).unwrap_or(0));
    }
}
