//! The delivery loop: sends the notifications the `alerts` projection wrote
//! (`alert_notifications`) — one email to the user's address and, if they set one, one
//! signed webhook — and marks each channel done as soon as it is, so a restarted loop sends
//! nothing twice. One leader at a time (an advisory lock), in the sweeper role.
//!
//! A failed send is retried with exponential backoff (`alerts.retry_base_ms`, doubling up to
//! `alerts.retry_max_ms`) for up to `alerts.attempts_max` attempts, then given up
//! (`failed`). Only a crash between a send and its mark can send it again; the webhook's
//! event id (the same on every attempt) lets a receiver drop that repeat.

use chrono::{DateTime, Utc};
use hub_adapters::mail::OutgoingMail;
use hub_adapters::webhook::{self, WebhookClient};
use hub_domain::{Credits, UserId};
use hub_nats::leader::{self, Leadership};
use serde::Serialize;
use sqlx::FromRow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::Hub;

/// Notifications taken per round; the next round takes the rest.
const DUE_PER_ROUND_MAX: i64 = 100;
/// The advisory-lock role of the delivery loop.
const ROLE: &str = "alerts:delivery";
/// The longest error text kept on a notification.
const ERROR_CHARS_MAX: usize = 500;

/// A notification due for an attempt, with the user's webhook as it is now.
#[derive(Debug, FromRow)]
struct Due {
    id: String,
    account_id: Uuid,
    event_sequence: i64,
    available_micros: i64,
    threshold_micros: i64,
    crossed_at: DateTime<Utc>,
    email_state: String,
    webhook_state: String,
    attempts: i32,
    webhook_url: Option<String>,
    webhook_secret_nonce: Option<String>,
}

/// The webhook's body: the same bytes on every attempt.
#[derive(Debug, Serialize)]
struct WebhookEvent<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the balance fell below the threshold (unix seconds).
    created: i64,
    data: WebhookData,
}

#[derive(Debug, Serialize)]
struct WebhookData {
    user_id: Uuid,
    available_micros: i64,
    threshold_micros: i64,
    crossed_at: DateTime<Utc>,
    /// The credit account event that crossed: its aggregate and sequence.
    account_event: AccountEvent,
}

#[derive(Debug, Serialize)]
struct AccountEvent {
    aggregate_id: Uuid,
    sequence: i64,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    pub emails: usize,
    pub webhooks: usize,
    pub failures: usize,
}

/// Deliver until `stop` resolves, while this process holds the delivery lock.
pub async fn run(hub: Arc<Hub>, stop: impl Future<Output = ()>) {
    let interval = Duration::from_millis(hub.settings.alerts.delivery_interval_ms);
    leader::supervise(ROLE, interval, stop, || lead(&hub, interval)).await;
}

async fn lead(hub: &Hub, interval: Duration) -> anyhow::Result<()> {
    let Some(mut leadership) = Leadership::try_acquire(&hub.settings.database.url, ROLE).await?
    else {
        return Ok(()); // Another process delivers.
    };
    let client = WebhookClient::new(Duration::from_millis(
        hub.settings.alerts.webhook_timeout_ms,
    ))?;
    loop {
        if !leadership.still_held().await {
            anyhow::bail!("lost the alerts delivery lock's connection");
        }
        let delivered = deliver_once(hub, &client).await?;
        if delivered != Delivered::default() {
            tracing::debug!(?delivered, "delivered low-balance alerts");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Attempt every notification that is due.
pub async fn deliver_once(hub: &Hub, client: &WebhookClient) -> anyhow::Result<Delivered> {
    let now = hub.clock.now();
    let due: Vec<Due> = sqlx::query_as(
        "SELECT n.id, n.account_id, n.event_sequence, n.available_micros, n.threshold_micros,
                n.crossed_at, n.email_state, n.webhook_state, n.attempts,
                s.webhook_url, s.webhook_secret_nonce
           FROM alert_notifications n
           LEFT JOIN alert_settings s ON s.user_id = n.account_id
          WHERE n.done_at IS NULL AND n.next_attempt_at <= $1
          ORDER BY n.stream_sequence
          LIMIT $2",
    )
    .bind(now)
    .bind(DUE_PER_ROUND_MAX)
    .fetch_all(&hub.pool)
    .await?;
    let mut round = Delivered::default();
    for n in due {
        attempt(hub, client, n, &mut round).await?;
    }
    Ok(round)
}

/// One attempt at a notification's pending channels; each is marked as soon as it is sent.
async fn attempt(
    hub: &Hub,
    client: &WebhookClient,
    n: Due,
    round: &mut Delivered,
) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    let mut email = n.email_state.clone();
    if email == "pending" {
        match send_email(hub, &n).await {
            Ok(sent) => {
                email = if sent { "sent" } else { "skipped" }.to_string();
                mark(hub, &n.id, "email_state", &email).await?;
                round.emails += usize::from(sent);
            }
            Err(err) => errors.push(format!("email: {err:#}")),
        }
    }
    let mut hook = n.webhook_state.clone();
    if hook == "pending" {
        match (&n.webhook_url, &n.webhook_secret_nonce) {
            (Some(url), Some(nonce)) => {
                let secret =
                    webhook::signing_secret(&hub.settings.auth.jwt_secret, n.account_id, nonce);
                match client
                    .post(url, &n.id, webhook_body(&n)?, &secret, hub.clock.now())
                    .await
                {
                    Ok(()) => {
                        hook = "delivered".into();
                        mark(hub, &n.id, "webhook_state", &hook).await?;
                        round.webhooks += 1;
                    }
                    Err(err) => errors.push(format!("webhook: {err}")),
                }
            }
            // The user removed their webhook since.
            _ => {
                hook = "none".into();
                mark(hub, &n.id, "webhook_state", &hook).await?;
            }
        }
    }
    let attempts = n.attempts.saturating_add(1);
    if errors.is_empty() {
        sqlx::query(
            "UPDATE alert_notifications
                SET attempts = $2, done_at = clock_timestamp(), last_error = NULL
              WHERE id = $1",
        )
        .bind(&n.id)
        .bind(attempts)
        .execute(&hub.pool)
        .await?;
        return Ok(());
    }
    round.failures += 1;
    let error: String = errors.join("; ").chars().take(ERROR_CHARS_MAX).collect();
    let settings = &hub.settings.alerts;
    if u32::try_from(attempts).unwrap_or(u32::MAX) >= settings.attempts_max {
        tracing::warn!(notification = %n.id, attempts, error, "gave up a low-balance alert");
        sqlx::query(
            "UPDATE alert_notifications
                SET attempts = $2, last_error = $3, done_at = clock_timestamp(),
                    email_state = CASE email_state WHEN 'pending' THEN 'failed' ELSE email_state END,
                    webhook_state = CASE webhook_state WHEN 'pending' THEN 'failed' ELSE webhook_state END
              WHERE id = $1",
        )
        .bind(&n.id)
        .bind(attempts)
        .bind(&error)
        .execute(&hub.pool)
        .await?;
        return Ok(());
    }
    let wait = backoff(attempts, settings.retry_base_ms, settings.retry_max_ms);
    tracing::info!(notification = %n.id, attempts, retry_in_ms = wait.num_milliseconds(), error, "a low-balance alert will be retried");
    sqlx::query(
        "UPDATE alert_notifications
            SET attempts = $2, last_error = $3, next_attempt_at = $4
          WHERE id = $1",
    )
    .bind(&n.id)
    .bind(attempts)
    .bind(&error)
    .bind(hub.clock.now() + wait)
    .execute(&hub.pool)
    .await?;
    Ok(())
}

/// The wait after `attempts` failed attempts: `base`, doubled for each attempt after the
/// first, at most `max`.
fn backoff(attempts: i32, base_ms: u64, max_ms: u64) -> chrono::Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 32)).unwrap_or(32);
    let ms = base_ms
        .saturating_mul(1u64.checked_shl(doublings).unwrap_or(u64::MAX))
        .min(max_ms);
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Set one channel's state.
async fn mark(hub: &Hub, id: &str, column: &'static str, state: &str) -> anyhow::Result<()> {
    // `column` is one of two names fixed in this file, never input.
    sqlx::query(&format!(
        "UPDATE alert_notifications SET {column} = $2 WHERE id = $1"
    ))
    .bind(id)
    .bind(state)
    .execute(&hub.pool)
    .await?;
    Ok(())
}

fn webhook_body(n: &Due) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&WebhookEvent {
        id: &n.id,
        kind: "balance.low",
        created: n.crossed_at.timestamp(),
        data: WebhookData {
            user_id: n.account_id,
            available_micros: n.available_micros,
            threshold_micros: n.threshold_micros,
            crossed_at: n.crossed_at,
            account_event: AccountEvent {
                aggregate_id: n.account_id,
                sequence: n.event_sequence,
            },
        },
    })?)
}

/// Mail the user; answers whether a message went (a user without an address gets none).
async fn send_email(hub: &Hub, n: &Due) -> anyhow::Result<bool> {
    let user = hub.users.load(UserId(n.account_id)).await?;
    let Some(email) = user.email() else {
        return Ok(false);
    };
    let available = Credits::from_micros(n.available_micros);
    let threshold = Credits::from_micros(n.threshold_micros);
    hub.mailer
        .send(OutgoingMail {
            to: email.as_str().to_string(),
            subject: "Your Smart AI Hub balance is low".into(),
            text: format!(
                "Your available balance is {available} credits, below the {threshold} credits \
                 you asked to be warned at.\n\n\
                 Top up at {url} to keep your requests running. You will not be warned again \
                 until a top-up brings your balance back to the threshold.\n\n\
                 Change or turn off this warning in your account settings \
                 (PUT /api/alerts/low-balance).\n",
                url = hub.settings.auth.public_url,
            ),
        })
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn the_wait_doubles_from_the_base_up_to_the_most() {
        let waits: Vec<i64> = (1..=6)
            .map(|a| backoff(a, 1_000, 10_000).num_milliseconds())
            .collect();
        assert_eq!(waits, vec![1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        assert_eq!(backoff(i32::MAX, 1_000, 60_000).num_milliseconds(), 60_000);
    }
}
