//! The `alerts` projection: when an account's available balance (balance minus held
//! reservations, what `balances` calls available) falls below its owner's low-balance
//! threshold, one notification row, in the batch's transaction.
//!
//! An account's alert is *armed* by a top-up (a grant, a purchase, promo credits) that leaves
//! the available balance at or above the threshold, and fires at the first event that leaves
//! it below, which disarms it: once per crossing. A reservation's end (settled, released,
//! expired) gives held credits back but does not re-arm: otherwise a balance hovering just
//! above the threshold would alert at every request, whose reservation dips below it.
//!
//! Thresholds are read when an event is applied (`alert_settings`, else `alert_defaults`).
//! Notifications are keyed by the crossing event (`lowbal_<account>_<sequence>`) and are
//! only written for events past `alert_notified_through`, which a replay does not reset:
//! rebuilding the projection never notifies an old crossing again.

use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::model::Projected;
use hub_domain::CreditEvent;

/// An account's alert as the projection keeps it.
#[derive(Debug, Clone, Copy)]
struct State {
    armed: bool,
    available: i64,
    /// The last event applied (0: none).
    version: i64,
}

/// What the projection reads per account: its state, threshold and whether a webhook is set.
type AccountRow = (Uuid, Option<bool>, Option<i64>, Option<i64>, i64, bool);

/// A crossing to notify.
struct Crossing {
    account: Uuid,
    sequence: i64,
    stream_sequence: i64,
    available: i64,
    threshold: i64,
    at: chrono::DateTime<chrono::Utc>,
    webhook: bool,
}

/// The notification id of a crossing: the event that crossed, by account and sequence.
pub fn notification_id(account: Uuid, sequence: i64) -> String {
    format!("lowbal_{}_{sequence}", account.simple())
}

/// Whether an event adds credits the account did not have (a top-up), which may re-arm it.
fn tops_up(event: &CreditEvent) -> bool {
    matches!(
        event,
        CreditEvent::CreditsGranted { .. }
            | CreditEvent::CreditsPurchased { .. }
            | CreditEvent::PromoCreditsApplied { .. }
    )
}

pub(crate) async fn apply(conn: &mut PgConnection, events: &[Projected]) -> anyhow::Result<()> {
    // Each account's events in its own order (the stream keeps it; sorting costs nothing).
    let mut by_account: BTreeMap<Uuid, Vec<&Projected>> = BTreeMap::new();
    for e in events {
        by_account.entry(e.account).or_default().push(e);
    }
    let accounts: Vec<Uuid> = by_account.keys().copied().collect();
    let rows: Vec<AccountRow> = sqlx::query_as(
        "SELECT a.id, s.armed, s.available_micros, s.version,
                coalesce(c.threshold_micros, d.threshold_micros),
                c.webhook_url IS NOT NULL
           FROM UNNEST($1::uuid[]) AS a(id)
          CROSS JOIN alert_defaults d
           LEFT JOIN low_balance_state s ON s.account_id = a.id
           LEFT JOIN alert_settings c ON c.user_id = a.id",
    )
    .bind(&accounts)
    .fetch_all(&mut *conn)
    .await?;
    let through: i64 =
        sqlx::query_scalar("SELECT stream_sequence FROM alert_notified_through FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;

    let mut states: Vec<(Uuid, State)> = Vec::with_capacity(rows.len());
    let mut crossings = Vec::new();
    let mut last_seen = through;
    for (account, armed, available, version, threshold, webhook) in rows {
        let mut state = State {
            armed: armed.unwrap_or(false),
            available: available.unwrap_or(0),
            version: version.unwrap_or(0),
        };
        let Some(mut account_events) = by_account.remove(&account) else {
            continue;
        };
        account_events.sort_by_key(|e| e.sequence);
        for e in account_events {
            last_seen = last_seen.max(e.stream_sequence);
            if e.sequence <= state.version {
                continue; // Applied before.
            }
            let (balance, reserved) = e.event.totals_after();
            let now_available = balance.micros() - reserved.micros();
            if state.armed && now_available < threshold {
                state.armed = false;
                if e.stream_sequence > through {
                    crossings.push(Crossing {
                        account,
                        sequence: e.sequence,
                        stream_sequence: e.stream_sequence,
                        available: now_available,
                        threshold,
                        at: e.recorded_at,
                        webhook,
                    });
                }
            } else if !state.armed && now_available >= threshold && tops_up(&e.event) {
                state.armed = true;
            }
            state.available = now_available;
            state.version = e.sequence;
        }
        states.push((account, state));
    }

    let (mut ids, mut armed, mut available, mut versions) = (
        Vec::with_capacity(states.len()),
        Vec::with_capacity(states.len()),
        Vec::with_capacity(states.len()),
        Vec::with_capacity(states.len()),
    );
    for (account, state) in &states {
        ids.push(*account);
        armed.push(state.armed);
        available.push(state.available);
        versions.push(state.version);
    }
    sqlx::query(
        "INSERT INTO low_balance_state (account_id, armed, available_micros, version)
         SELECT * FROM UNNEST($1::uuid[], $2::bool[], $3::int8[], $4::int8[])
         ON CONFLICT (account_id) DO UPDATE
            SET armed = excluded.armed,
                available_micros = excluded.available_micros,
                version = excluded.version
          WHERE low_balance_state.version < excluded.version",
    )
    .bind(&ids)
    .bind(&armed)
    .bind(&available)
    .bind(&versions)
    .execute(&mut *conn)
    .await?;

    if !crossings.is_empty() {
        let mut n = NotificationRows::default();
        for c in &crossings {
            n.ids.push(notification_id(c.account, c.sequence));
            n.accounts.push(c.account);
            n.sequences.push(c.sequence);
            n.stream_sequences.push(c.stream_sequence);
            n.available.push(c.available);
            n.thresholds.push(c.threshold);
            n.at.push(c.at);
            n.webhook.push(if c.webhook { "pending" } else { "none" });
        }
        // A crossing already written (a redelivered batch) stays as it was: sent or not.
        sqlx::query(
            "INSERT INTO alert_notifications (id, account_id, event_sequence, stream_sequence,
                                              available_micros, threshold_micros, crossed_at,
                                              webhook_state)
             SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::int8[], $4::int8[], $5::int8[],
                                  $6::int8[], $7::timestamptz[], $8::text[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&n.ids)
        .bind(&n.accounts)
        .bind(&n.sequences)
        .bind(&n.stream_sequences)
        .bind(&n.available)
        .bind(&n.thresholds)
        .bind(&n.at)
        .bind(&n.webhook)
        .execute(&mut *conn)
        .await?;
    }
    if last_seen > through {
        sqlx::query("UPDATE alert_notified_through SET stream_sequence = $1")
            .bind(last_seen)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Notification rows as columns, for one `UNNEST` insert.
#[derive(Default)]
struct NotificationRows {
    ids: Vec<String>,
    accounts: Vec<Uuid>,
    sequences: Vec<i64>,
    stream_sequences: Vec<i64>,
    available: Vec<i64>,
    thresholds: Vec<i64>,
    at: Vec<chrono::DateTime<chrono::Utc>>,
    webhook: Vec<&'static str>,
}
