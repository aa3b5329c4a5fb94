//! The `Payment` aggregate: one per Stripe Checkout Session, under the session id as its
//! id.
//!
//! The hub starts a checkout for a user and a credit package; Stripe's webhooks then say
//! what became of it: completed (paid, or awaiting an asynchronous payment), paid later,
//! failed, expired, refunded. See [`PaymentStatus`] for the state machine.
//!
//! Rules kept here, for every order and repetition of Stripe's deliveries:
//! - `PaymentCompleted` is written at most once per session, ever (key `paid`); it is what
//!   credits the account, so credits are granted at most once;
//! - money wins: once Stripe says "paid", the payment is paid, whatever failed or expired
//!   before, and nothing moves it back;
//! - every other transition only moves forward; one already past writes nothing (`expired`
//!   after `paid`, `paid` twice, `unpaid` after `failed`, a refund no larger than the
//!   refunds so far);
//! - a Stripe event that wrote an event writes nothing when delivered again: the payment
//!   remembers the last [`STRIPE_EVENTS_KEPT`] of them, and the event store's unique index
//!   on each event's key holds the rule beyond;
//! - a `completed` for a session whose start was never recorded is accepted, with the user,
//!   package and credits of the session's metadata; one that disagrees with a recorded
//!   start is refused ([`PaymentError::CheckoutMismatch`]);
//! - refunds never exceed what was paid, and the credits taken back over all refunds are
//!   `credits × refunded / paid` rounded down: never more than were bought;
//! - a completion that paid less than the package's price, or in another currency, is held
//!   (`PaymentHeld`), never credited: the recorded start's price is the reference, else the
//!   package's price as configured;
//! - a dispute takes back its share of the credits (with refunds, never more than were
//!   bought) once; a dispute the hub wins gives them back once.
//!
//! # Idempotency keys
//!
//! `CheckoutStarted` → `checkout`; `PaymentCompleted` → `paid`; `PaymentRefunded` →
//! `refunded:<cumulative cents>`; `CheckoutAwaitingPayment`, `PaymentFailed`,
//! `CheckoutExpired` → `stripe-event:<Stripe event id>`. The first three are stronger than
//! the Stripe event's id: two different Stripe events saying "paid" (`completed` and
//! `async_payment_succeeded`) still credit once.
//!
//! # How a payment becomes credits
//!
//! A process manager in `commands/` follows `PaymentCompleted` and sends
//! `CreditCommand::PurchaseCredits { payment_id: session_id, amount: credits }` to the
//! user's account (key `payment:<session id>`, see [`StripeId::to_idempotency_key`]); both
//! steps are idempotent, so a crash between them is completed by retrying. `PaymentRefunded`
//! carries `credits_to_take_back` for the refund's ledger entry on the credit side, whose
//! key is best `refund:<session id>:<refunded_cents_total>`; how much of it can be taken
//! when the credits are already spent is the credit account's policy.
//!
//! # Refusals that a redelivery may cure
//!
//! Stripe does not deliver in order. A `paid`, `failed`, `expired` or refund for a session
//! the hub knows nothing of is refused ([`PaymentError::UnknownSession`]: only a start or a
//! completion names the user), and a refund before the payment is refused
//! ([`PaymentError::NotPaid`]). The webhook answers them with an error, so Stripe delivers
//! them again later, after the events they overtook.

mod aggregate;
mod commands;
mod error;
mod events;
mod seen;
mod values;

#[cfg(test)]
mod tests;

pub use aggregate::{Payment, PaymentStatus};
pub use commands::{
    ListPrice, PaymentCommand, AMOUNT_CENTS_MAX, FAILURE_REASON_LEN_MAX, PACKAGE_ID_LEN_MAX,
};
pub use error::PaymentError;
pub use events::{
    dispute_closed_key, disputed_key, refunded_key, stripe_event_key, Checkout, PaymentEvent,
    CHECKOUT_KEY, PAID_KEY,
};
pub use seen::STRIPE_EVENTS_KEPT;
pub use values::StripeId;
