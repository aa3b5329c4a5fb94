use crate::ids::{ApiKeyId, RequestId};
use crate::money::{Credits, MoneyError};

/// A command a credit account refuses. Each is a rule, not a fault: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// The account has not been opened.
    #[error("the credit account is not open")]
    AccountNotOpen,
    /// The amount is out of range.
    #[error(transparent)]
    InvalidAmount(#[from] MoneyError),
    /// The balance would overflow.
    #[error("the balance would exceed the largest amount an account may hold")]
    BalanceOverflow,
    /// The available balance cannot cover the reservation.
    #[error("insufficient credits: requested {requested} micro-credits, available {available}", requested = .requested.micros(), available = .available.micros())]
    InsufficientCredits {
        requested: Credits,
        available: Credits,
    },
    /// The API key's charges plus its active reservations plus this one would pass the
    /// key's spending limit.
    #[error("the spending limit of API key {key} would be exceeded: limit {limit} micro-credits, {spent} charged or held, {requested} requested", limit = .limit.micros(), spent = .spent.micros(), requested = .requested.micros())]
    KeySpendingLimit {
        key: ApiKeyId,
        limit: Credits,
        spent: Credits,
        requested: Credits,
    },
    /// A reservation's expiry must be later than now.
    #[error("a reservation must expire in the future")]
    ExpiryNotInFuture,
    /// An account holds at most this many active reservations.
    #[error("too many active reservations (at most {max})")]
    TooManyReservations { max: usize },
    /// No reservation with this request id is known.
    #[error("no reservation for request {0}")]
    ReservationNotFound(RequestId),
    /// The reservation was released; it can no longer be settled.
    #[error("the reservation for request {0} was released")]
    ReservationReleased(RequestId),
    /// The reservation expired; it can no longer be settled or released.
    #[error("the reservation for request {0} expired")]
    ReservationExpired(RequestId),
    /// The reservation was settled; it can no longer be released.
    #[error("the reservation for request {0} was settled")]
    ReservationSettled(RequestId),
    /// A settlement may charge at most what was reserved.
    #[error("charge of {charge} micro-credits exceeds the {reserved} reserved", charge = .charge.micros(), reserved = .reserved.micros())]
    ChargeExceedsReservation { charge: Credits, reserved: Credits },
    /// A grant's reason is too long.
    #[error("the reason must be at most {max} characters")]
    ReasonTooLong { max: usize },
}
