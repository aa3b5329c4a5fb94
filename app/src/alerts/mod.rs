//! Low-balance alerts (docs/alerts.md): each user's threshold and webhook, and the delivery
//! of the notifications the `alerts` projection leaves ([`delivery`]).
//!
//! A user's settings live in `alert_settings`, written here (a setting, like a password's
//! throttle, not a read model: no event carries it); a user without a row has the default
//! threshold of `alerts.low_balance_default_micros`, which [`publish_default`] writes to
//! `alert_defaults` for the projection.

pub mod delivery;

use hub_adapters::webhook;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Hub;

/// The largest threshold taken, in micro-credits (a billion credits): far above any balance,
/// and far below where sums of micro-credits overflow.
pub const THRESHOLD_MICROS_MAX: i64 = 1_000_000_000 * 1_000_000;

/// A user's low-balance alert, as `GET /api/alerts/low-balance` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LowBalanceAlert {
    /// Alert when the available balance falls below this, in micro-credits (0: never).
    pub threshold_micros: i64,
    /// Whether the threshold is the hub's default (the user has not set one).
    pub is_default: bool,
    /// Where the signed webhook goes, if anywhere.
    pub webhook_url: Option<String>,
    /// The webhook's signing secret: only in the answer of the change that made it (a new
    /// URL, or a rotation); never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// What a user asks for: the whole setting, replacing the one before.
#[derive(Debug, Clone, Default)]
pub struct NewLowBalanceAlert {
    /// `None`: the default threshold.
    pub threshold_micros: Option<i64>,
    /// `None`: no webhook.
    pub webhook_url: Option<String>,
    /// Issue a new signing secret even though the URL did not change.
    pub rotate_webhook_secret: bool,
}

/// Why a setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertSettingsError {
    #[error("threshold_micros must be between 0 and {THRESHOLD_MICROS_MAX}")]
    InvalidThreshold,
    #[error(transparent)]
    InvalidWebhookUrl(#[from] webhook::InvalidWebhookUrl),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A row of `alert_settings`: threshold, URL, nonce.
type SettingsRow = (Option<i64>, Option<String>, Option<String>);

/// The user's alert as it stands.
pub async fn low_balance(hub: &Hub, user: Uuid) -> Result<LowBalanceAlert, AlertSettingsError> {
    let row: Option<SettingsRow> = sqlx::query_as(
        "SELECT threshold_micros, webhook_url, webhook_secret_nonce
           FROM alert_settings WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(&hub.pool)
    .await?;
    let (threshold, url, _) = row.unwrap_or((None, None, None));
    Ok(LowBalanceAlert {
        threshold_micros: threshold.unwrap_or(hub.settings.alerts.low_balance_default_micros),
        is_default: threshold.is_none(),
        webhook_url: url,
        webhook_secret: None,
    })
}

/// Replace the user's alert. A new webhook URL (or `rotate_webhook_secret`) issues a new
/// signing secret, answered this once; the previous one stops signing at once.
pub async fn set_low_balance(
    hub: &Hub,
    user: Uuid,
    new: NewLowBalanceAlert,
) -> Result<LowBalanceAlert, AlertSettingsError> {
    if new
        .threshold_micros
        .is_some_and(|t| !(0..=THRESHOLD_MICROS_MAX).contains(&t))
    {
        return Err(AlertSettingsError::InvalidThreshold);
    }
    let url = new
        .webhook_url
        .as_deref()
        .map(webhook::parse_url)
        .transpose()?;
    let mut tx = hub.pool.begin().await?;
    let before: Option<SettingsRow> = sqlx::query_as(
        "SELECT threshold_micros, webhook_url, webhook_secret_nonce
           FROM alert_settings WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let (_, old_url, old_nonce) = before.unwrap_or((None, None, None));
    let (nonce, issued) = match (&url, old_nonce) {
        (None, _) => (None, false),
        (Some(url), Some(nonce))
            if old_url.as_deref() == Some(url.as_str()) && !new.rotate_webhook_secret =>
        {
            (Some(nonce), false)
        }
        (Some(_), _) => (
            Some(hub_adapters::secrets::random_token::<NONCE_BYTES>()),
            true,
        ),
    };
    sqlx::query(
        "INSERT INTO alert_settings (user_id, threshold_micros, webhook_url, webhook_secret_nonce)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
            SET threshold_micros = excluded.threshold_micros,
                webhook_url = excluded.webhook_url,
                webhook_secret_nonce = excluded.webhook_secret_nonce,
                updated_at = clock_timestamp()",
    )
    .bind(user)
    .bind(new.threshold_micros)
    .bind(&url)
    .bind(&nonce)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(LowBalanceAlert {
        threshold_micros: new
            .threshold_micros
            .unwrap_or(hub.settings.alerts.low_balance_default_micros),
        is_default: new.threshold_micros.is_none(),
        webhook_url: url,
        webhook_secret: nonce
            .filter(|_| issued)
            .map(|n| webhook::signing_secret(&hub.settings.auth.jwt_secret, user, &n)),
    })
}

/// Random bytes in a webhook secret's nonce.
const NONCE_BYTES: usize = 16;

/// Write the settings' default threshold where the `alerts` projection reads it. The process
/// that runs the projections calls it before they start.
pub async fn publish_default(pool: &PgPool, threshold_micros: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_defaults (id, threshold_micros) VALUES (true, $1)
         ON CONFLICT (id) DO UPDATE SET threshold_micros = excluded.threshold_micros",
    )
    .bind(threshold_micros)
    .execute(pool)
    .await?;
    Ok(())
}
