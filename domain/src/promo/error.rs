use chrono::{DateTime, Utc};

use crate::money::{Credits, MoneyError};

/// A command a promo code refuses. Each is a rule, not a fault: nothing was written. The
/// six refusals of a redemption are distinct, so the API gives each its own error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoError {
    /// No code by this name was created.
    #[error("unknown promo code")]
    Unknown,
    /// A code by this name exists already.
    #[error("a promo code by this name already exists")]
    AlreadyExists,
    /// A code must give a positive amount.
    #[error("invalid credits for a promo code: {0}")]
    InvalidCredits(MoneyError),
    /// A code allows between one and this many redemptions.
    #[error("a promo code allows 1 to {max} redemptions")]
    MaxRedemptionsOutOfRange { max: u32 },
    /// The end of the validity window must come after its start.
    #[error("a promo code's validity must end after it starts")]
    ValidityWindowEmpty,
    /// The end of the validity window must be in the future.
    #[error("a promo code's validity must end in the future")]
    ValidUntilNotInFuture,
    /// "By whom" must be given, and short.
    #[error("the actor must be 1 to {max} characters")]
    ActorInvalid { max: usize },
    /// The code may not be redeemed before its validity starts.
    #[error("the promo code is not valid yet (valid from {valid_from})")]
    NotYetValid { valid_from: DateTime<Utc> },
    /// The code's validity ended.
    #[error("the promo code expired at {valid_until}")]
    Expired { valid_until: DateTime<Utc> },
    /// An admin disabled the code.
    #[error("the promo code is disabled")]
    Disabled,
    /// Every redemption the code allows was taken.
    #[error("the promo code was redeemed the most times it allows ({max_redemptions})")]
    Exhausted { max_redemptions: u32 },
    /// This user redeemed the code already. It carries the credits of that redemption, so
    /// a caller that crashed before crediting them can complete `ApplyPromoCredits` (which
    /// credits at most once).
    #[error("this user has already redeemed the promo code")]
    AlreadyRedeemed { credits: Credits },
}
