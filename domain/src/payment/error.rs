use crate::money::MoneyError;

/// A command a payment refuses. Each is a rule, not a fault: nothing was written. A webhook
/// refused with [`PaymentError::UnknownSession`] or [`PaymentError::NotPaid`] may succeed
/// when Stripe delivers it again, after the events it overtook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// No checkout is known for this session: neither started nor completed. Only a start
    /// or a completion (which names the user) can make one known.
    #[error("no checkout is known for this session")]
    UnknownSession,
    /// A refund for a payment whose money has not come (yet).
    #[error("the payment has not been paid, so nothing can be refunded")]
    NotPaid,
    /// A start or completion disagrees with what the session recorded.
    #[error("the checkout's {field} does not match the session's")]
    CheckoutMismatch { field: &'static str },
    /// A checkout must buy a positive amount of credits.
    #[error("invalid credits for a checkout: {0}")]
    InvalidCredits(MoneyError),
    /// An amount paid must be positive and at most [`super::AMOUNT_CENTS_MAX`].
    #[error("an amount must be 1 to {max} in the currency's smallest unit, got {0}", max = super::AMOUNT_CENTS_MAX)]
    InvalidAmountCents(i64),
    /// A refunded amount is never negative.
    #[error("a refunded amount must not be negative, got {0}")]
    NegativeRefund(i64),
    /// Stripe never refunds more than it charged.
    #[error("refunded {refunded_cents} exceeds the {amount_cents} paid")]
    RefundExceedsPayment {
        refunded_cents: i64,
        amount_cents: i64,
    },
    /// A currency is a three-letter ISO 4217 code.
    #[error("a currency must be a three-letter ISO 4217 code")]
    InvalidCurrency,
    /// A package id is given, printable and short.
    #[error("a package id must be 1 to {max} printable characters")]
    InvalidPackageId { max: usize },
}
