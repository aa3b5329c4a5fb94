//! The `promos` projection: one row per promo code, with its redemption count, for admins'
//! listings.
//!
//! Each event is applied with one statement guarded by the row's version, so a message
//! applied twice changes nothing. A redemption carries the count after it: copied, never
//! recomputed.

use hub_domain::PromoEvent;
use hub_nats::EventEnvelope;
use sqlx::PgConnection;

pub(crate) async fn apply(
    conn: &mut PgConnection,
    messages: Vec<(EventEnvelope, u64)>,
) -> anyhow::Result<()> {
    for (envelope, _) in messages {
        if envelope.aggregate_type != "PromoCode" {
            continue;
        }
        let code = envelope.aggregate_id.as_str();
        let version = i64::try_from(envelope.sequence)?;
        let at = envelope.recorded_at;
        let event: PromoEvent = envelope.payload.decode()?;
        match &event {
            PromoEvent::PromoCodeCreated {
                credits,
                max_redemptions,
                valid_from,
                valid_until,
                active,
                created_by,
                created_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO promo_codes (code, credits_micros, max_redemptions, valid_from,
                                              valid_until, active, created_by, created_at,
                                              version, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (code) DO NOTHING",
                )
                .bind(code)
                .bind(credits.micros())
                .bind(i32::try_from(*max_redemptions)?)
                .bind(valid_from)
                .bind(valid_until)
                .bind(active)
                .bind(created_by)
                .bind(created_at)
                .bind(version)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PromoEvent::PromoCodeDisabled { .. } | PromoEvent::PromoCodeEnabled { .. } => {
                let active = matches!(event, PromoEvent::PromoCodeEnabled { .. });
                sqlx::query(
                    "UPDATE promo_codes SET active = $3, version = $2, updated_at = $4
                      WHERE code = $1 AND version < $2",
                )
                .bind(code)
                .bind(version)
                .bind(active)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PromoEvent::PromoCodeRedeemed {
                redemptions_after, ..
            } => {
                sqlx::query(
                    "UPDATE promo_codes SET redemptions = $3, version = $2, updated_at = $4
                      WHERE code = $1 AND version < $2",
                )
                .bind(code)
                .bind(version)
                .bind(i32::try_from(*redemptions_after)?)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}
