use chrono::{DateTime, Utc};
use hub_domain::CreditEvent;
use hub_nats::EventEnvelope;
use sqlx::PgConnection;
use uuid::Uuid;

/// The projections the hub keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectionKind {
    /// `balances` and `active_reservations`: where each account stands.
    Balances,
    /// `ledger`: one row per movement of a balance, with its cause.
    Ledger,
}

/// Unknown projection name.
#[derive(Debug, thiserror::Error)]
#[error("unknown projection {0:?} (known: balances, ledger)")]
pub struct UnknownProjection(pub String);

impl std::str::FromStr for ProjectionKind {
    type Err = UnknownProjection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "balances" => Ok(ProjectionKind::Balances),
            "ledger" => Ok(ProjectionKind::Ledger),
            other => Err(UnknownProjection(other.to_string())),
        }
    }
}

impl ProjectionKind {
    pub const ALL: [ProjectionKind; 2] = [ProjectionKind::Balances, ProjectionKind::Ledger];

    pub fn name(self) -> &'static str {
        match self {
            ProjectionKind::Balances => "balances",
            ProjectionKind::Ledger => "ledger",
        }
    }

    /// The aggregate type whose events it reads.
    pub fn aggregate_type(self) -> &'static str {
        "CreditAccount"
    }

    /// The tables it owns (emptied by a replay).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            ProjectionKind::Balances => &["balances", "active_reservations"],
            ProjectionKind::Ledger => &["ledger"],
        }
    }

    /// Apply one event inside the caller's transaction. Idempotent per event.
    pub async fn apply(
        self,
        conn: &mut PgConnection,
        envelope: &EventEnvelope,
        stream_sequence: u64,
    ) -> anyhow::Result<()> {
        if envelope.aggregate_type != self.aggregate_type() {
            return Ok(());
        }
        let account: Uuid = envelope.aggregate_id.parse()?;
        let event: CreditEvent = serde_json::from_value(envelope.payload.clone())?;
        let sequence = i64::try_from(envelope.sequence)?;
        match self {
            ProjectionKind::Balances => {
                apply_balance(conn, account, sequence, envelope.recorded_at, &event).await
            }
            ProjectionKind::Ledger => {
                apply_ledger(
                    conn,
                    account,
                    sequence,
                    i64::try_from(stream_sequence)?,
                    envelope,
                    &event,
                )
                .await
            }
        }
    }
}

async fn apply_balance(
    conn: &mut PgConnection,
    account: Uuid,
    sequence: i64,
    recorded_at: DateTime<Utc>,
    event: &CreditEvent,
) -> anyhow::Result<()> {
    let (balance, reserved) = event.totals_after();
    // `version <` keeps an older event from overwriting a newer one.
    sqlx::query(
        "INSERT INTO balances (account_id, balance_micros, reserved_micros, version, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (account_id) DO UPDATE
            SET balance_micros = excluded.balance_micros,
                reserved_micros = excluded.reserved_micros,
                version = excluded.version,
                updated_at = excluded.updated_at
          WHERE balances.version < excluded.version",
    )
    .bind(account)
    .bind(balance.micros())
    .bind(reserved.micros())
    .bind(sequence)
    .bind(recorded_at)
    .execute(&mut *conn)
    .await?;
    match event {
        CreditEvent::CreditsReserved {
            request_id,
            amount,
            expires_at,
            ..
        } => {
            sqlx::query(
                "INSERT INTO active_reservations (account_id, request_id, amount_micros, expires_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(account)
            .bind(request_id.as_str())
            .bind(amount.micros())
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        }
        CreditEvent::ReservationSettled { request_id, .. }
        | CreditEvent::ReservationReleased { request_id, .. }
        | CreditEvent::ReservationExpired { request_id, .. } => {
            sqlx::query(
                "DELETE FROM active_reservations WHERE account_id = $1 AND request_id = $2",
            )
            .bind(account)
            .bind(request_id.as_str())
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// One ledger row: kind, signed amount, balance after, cause.
struct Movement<'a> {
    kind: &'static str,
    amount: i64,
    balance_after: i64,
    cause_type: &'static str,
    cause_id: &'a str,
    description: Option<&'a str>,
    actor: Option<&'a str>,
}

fn movement(event: &CreditEvent) -> Option<Movement<'_>> {
    match event {
        CreditEvent::CreditsGranted {
            key,
            amount,
            reason,
            granted_by,
            balance_after,
            ..
        } => Some(Movement {
            kind: "grant",
            amount: amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "grant",
            cause_id: key.as_str(),
            description: Some(reason.as_str()),
            actor: Some(granted_by.as_str()),
        }),
        CreditEvent::CreditsPurchased {
            payment_id,
            amount,
            balance_after,
            ..
        } => Some(Movement {
            kind: "purchase",
            amount: amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "payment",
            cause_id: payment_id.as_str(),
            description: None,
            actor: None,
        }),
        CreditEvent::PromoCreditsApplied {
            code,
            amount,
            balance_after,
            ..
        } => Some(Movement {
            kind: "promo",
            amount: amount.micros(),
            balance_after: balance_after.micros(),
            cause_type: "promo",
            cause_id: code.as_str(),
            description: None,
            actor: None,
        }),
        CreditEvent::ReservationSettled {
            request_id,
            charged,
            balance_after,
            ..
        } => Some(Movement {
            kind: "charge",
            amount: -charged.micros(),
            balance_after: balance_after.micros(),
            cause_type: "request",
            cause_id: request_id.as_str(),
            description: None,
            actor: None,
        }),
        CreditEvent::AccountOpened {}
        | CreditEvent::CreditsReserved { .. }
        | CreditEvent::ReservationReleased { .. }
        | CreditEvent::ReservationExpired { .. } => None,
    }
}

async fn apply_ledger(
    conn: &mut PgConnection,
    account: Uuid,
    sequence: i64,
    stream_sequence: i64,
    envelope: &EventEnvelope,
    event: &CreditEvent,
) -> anyhow::Result<()> {
    let Some(m) = movement(event) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO ledger (account_id, sequence, kind, amount_micros, balance_after_micros,
                             cause_type, cause_id, description, actor, stream_sequence, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (account_id, sequence) DO NOTHING",
    )
    .bind(account)
    .bind(sequence)
    .bind(m.kind)
    .bind(m.amount)
    .bind(m.balance_after)
    .bind(m.cause_type)
    .bind(m.cause_id)
    .bind(m.description)
    .bind(m.actor)
    .bind(stream_sequence)
    .bind(envelope.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
