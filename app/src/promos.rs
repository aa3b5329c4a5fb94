//! Promo codes: admins create, disable and enable them; users redeem them for credits.
//! Codes are trimmed and case-insensitive. Each change's answer waits (a bounded while)
//! until the read model shows it.

use chrono::{DateTime, Utc};
use hub_commands::{CommandError, RedeemError, StoreError};
use hub_domain::{Credits, PromoCode, PromoCodeValue, PromoCommand, PromoError, UserId};
use serde::Serialize;
use uuid::Uuid;

use crate::credits::read_your_writes_wait;
use crate::queries::{self, balances::Balance};
use crate::Hub;

/// Why a promo code was not created, changed or redeemed.
#[derive(Debug, thiserror::Error)]
pub enum PromoFlowError {
    /// A new code's name is not a valid code.
    #[error("{0}")]
    InvalidCode(String),
    /// The text names no code.
    #[error("unknown promo code")]
    UnknownCode,
    #[error(transparent)]
    Command(#[from] CommandError<PromoError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redeem(#[from] RedeemError),
    #[error("could not read the read model")]
    Database(#[from] sqlx::Error),
}

/// A string that names no code is an unknown code.
fn existing_code(raw: &str) -> Result<PromoCodeValue, PromoFlowError> {
    PromoCodeValue::parse(raw).map_err(|_| PromoFlowError::UnknownCode)
}

/// A promo code as its aggregate has it now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PromoView {
    pub code: String,
    /// Credits each redemption gives.
    pub credits_micros: i64,
    pub max_redemptions: u32,
    pub redemptions: u32,
    pub remaining: u32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
}

impl PromoView {
    fn of(code: &PromoCodeValue, promo: &PromoCode) -> Self {
        PromoView {
            code: code.to_string(),
            credits_micros: promo.credits().micros(),
            max_redemptions: promo.max_redemptions(),
            redemptions: promo.redemptions(),
            remaining: promo.remaining(),
            valid_from: promo.valid_from(),
            valid_until: promo.valid_until(),
            active: promo.is_active(),
        }
    }
}

/// A code after a change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PromoChanged {
    pub promo: PromoView,
    /// Whether the list of codes shows the change yet (waited up to
    /// `credits.read_your_writes_wait_ms`).
    pub visible: bool,
}

/// The code as it is after the change that left it at `version`, once the read model shows
/// it (or the wait ran out).
async fn changed(
    hub: &Hub,
    code: &PromoCodeValue,
    version: usize,
) -> Result<PromoChanged, PromoFlowError> {
    let promo = hub.promos.load(code).await?;
    let visible =
        queries::promos::wait_for_version(&hub.pool, code, version, read_your_writes_wait(hub))
            .await?;
    Ok(PromoChanged {
        promo: PromoView::of(code, &promo),
        visible,
    })
}

/// A new code as an admin describes it.
#[derive(Debug, Clone)]
pub struct NewPromo {
    /// 3 to 64 of `[A-Za-z0-9_-]`; stored uppercase.
    pub code: String,
    /// Credits each redemption gives, in micro-credits.
    pub credits_micros: i64,
    /// How many users may redeem it in all.
    pub max_redemptions: u32,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub active: bool,
}

/// Create a code, as `admin`.
pub async fn create(hub: &Hub, admin: Uuid, new: NewPromo) -> Result<PromoChanged, PromoFlowError> {
    let code =
        PromoCodeValue::parse(&new.code).map_err(|e| PromoFlowError::InvalidCode(e.to_string()))?;
    let committed = hub
        .promos
        .execute(
            &code,
            PromoCommand::CreatePromoCode {
                code: code.clone(),
                credits: Credits::from_micros(new.credits_micros),
                max_redemptions: new.max_redemptions,
                valid_from: new.valid_from,
                valid_until: new.valid_until,
                active: new.active,
                created_by: admin.to_string(),
                now: hub.clock.now(),
            },
            &format!("user:{admin}"),
        )
        .await?;
    changed(hub, &code, committed.version).await
}

/// Whether a code may be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Disable,
    Enable,
}

/// Disable or enable `code`, as `admin`. Asking for the state a code is in changes nothing.
pub async fn set_active(
    hub: &Hub,
    admin: Uuid,
    code: &str,
    activation: Activation,
) -> Result<PromoChanged, PromoFlowError> {
    let code = existing_code(code)?;
    let (by, now) = (admin.to_string(), hub.clock.now());
    let command = match activation {
        Activation::Disable => PromoCommand::DisablePromoCode { by, now },
        Activation::Enable => PromoCommand::EnablePromoCode { by, now },
    };
    let committed = hub
        .promos
        .execute(&code, command, &format!("user:{admin}"))
        .await?;
    changed(hub, &code, committed.version).await
}

/// A redemption done.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Redeemed {
    pub code: String,
    pub user_id: Uuid,
    pub credits_micros: i64,
    /// The code's redemptions after this one.
    pub redemptions_after: Option<u32>,
    /// The balance right after the credits, from their event.
    pub balance_after_micros: i64,
    /// The balance as `GET /api/credits/balance` now shows it.
    pub balance: Balance,
    /// Whether the read model caught up within the wait bound.
    pub visible: bool,
}

/// Redeem `code` for `user`'s own account. Each user redeems a code once; a retry after a
/// failure completes the first redemption.
pub async fn redeem(hub: &Hub, user: Uuid, code: &str) -> Result<Redeemed, PromoFlowError> {
    let code = existing_code(code)?;
    let redemption = hub
        .promos
        .redeem(&hub.credits, &code, UserId(user), hub.clock.now())
        .await?;
    let after = queries::balances::after_write(
        &hub.pool,
        user,
        redemption.account_version,
        read_your_writes_wait(hub),
    )
    .await?;
    Ok(Redeemed {
        code: code.to_string(),
        user_id: user,
        credits_micros: redemption.credits.micros(),
        redemptions_after: redemption.redemptions_after,
        balance_after_micros: redemption.balance_after.micros(),
        balance: after.balance,
        visible: after.visible,
    })
}
