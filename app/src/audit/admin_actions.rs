//! `GET /api/audit/admin-actions`: what admins did, newest first, read from the event store
//! itself: credit grants, roles granted and revoked, suspensions and their lifting, promo
//! codes created, disabled and enabled, and API keys revoked by someone other than their
//! owner (the hub's own sign-up grants are left out). Who (the event's `actor` metadata, and the admin the event names), when (the
//! time the event was recorded), what, and why (the reason the admin gave, where the action
//! takes one).

use chrono::{DateTime, Utc};
use hub_domain::{CreditEvent, PromoEvent, UserEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::{parse_range, parse_text, AuditError, CREDIT_ACCOUNT};
use crate::page::{CursorKey, Limits, Page, TimeCursor};

/// Page size bounds, in actions.
pub const LIMITS: Limits = Limits {
    default: 100,
    max: 1_000,
};

/// The event that recorded an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EventRef {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
}

/// One admin action.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminAction {
    /// When its event was recorded.
    pub at: DateTime<Utc>,
    /// `credits_granted`, `role_granted`, `role_revoked`, `user_suspended`,
    /// `user_unsuspended`, `promo_created`, `promo_disabled`, `promo_enabled`,
    /// `api_key_revoked`.
    pub action: &'static str,
    /// Who: the `actor` the command was run as (`user:<id>` for a person).
    pub actor: Option<String>,
    /// The admin the event itself names (`granted_by`, `revoked_by`, ...), when it does.
    pub by: Option<String>,
    /// Whom or what it was done to: `user:<id>`, `account:<id>` or `promo:<code>`.
    pub target: String,
    /// What was done (amounts in micro-credits).
    pub what: serde_json::Value,
    /// Why, as the admin wrote it; `null` for actions that take no reason.
    pub why: Option<String>,
    pub event: EventRef,
}

/// The tie-breaker after the time in a cursor: the event's place in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    pub aggregate_type: String,
    pub sequence: i64,
    pub aggregate_id: String,
}

impl CursorKey for EventKey {
    fn encode_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.aggregate_type, self.sequence, self.aggregate_id
        )
    }
    fn decode_key(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(3, '/');
        let aggregate_type = parts.next()?.to_string();
        let sequence = parts.next()?.parse().ok()?;
        let aggregate_id = parts.next()?.to_string();
        Some(EventKey {
            aggregate_type,
            sequence,
            aggregate_id,
        })
    }
}

/// The filters as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct RawActionFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    /// The `actor` metadata, exactly (`user:<id>`).
    pub actor: Option<String>,
}

/// One page of actions, newest first.
pub async fn page(
    pool: &PgPool,
    filter: RawActionFilter,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<AdminAction>, AuditError> {
    let (from, to) = parse_range(filter.from.as_deref(), filter.to.as_deref())?;
    let actor = filter.actor.map(|a| parse_text("actor", a)).transpose()?;
    let request = LIMITS.request::<TimeCursor<EventKey>>(limit, cursor)?;
    let mut sql: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, payload,
                metadata ->> 'actor' AS actor, recorded_at
           FROM events
          WHERE ",
    );
    // The index's predicate, written out, so the planner sees that the index applies.
    sql.push(
        "event_type IN ('CreditsGranted', 'RoleGranted', 'RoleRevoked', 'UserSuspended',
                             'UserUnsuspended', 'PromoCodeCreated', 'PromoCodeDisabled',
                             'PromoCodeEnabled', 'ApiKeyRevoked')",
    );
    // A key its owner revoked is the owner's business, not an admin action.
    sql.push(
        " AND NOT (event_type = 'ApiKeyRevoked'
                   AND COALESCE(metadata ->> 'actor', '') IN (aggregate_id, 'user:' || aggregate_id))",
    );
    // The sign-up grant is the hub's own, given on registration, not an admin's.
    sql.push(
        " AND NOT (event_type = 'CreditsGranted'
                   AND COALESCE(metadata ->> 'actor', '') = 'signup')",
    );
    if let Some(from) = from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = to {
        sql.push(" AND recorded_at < ").push_bind(to);
    }
    if let Some(actor) = actor {
        sql.push(" AND metadata ->> 'actor' = ").push_bind(actor);
    }
    if let Some(after) = &request.after {
        sql.push(" AND (recorded_at, aggregate_type, sequence, aggregate_id) < (")
            .push_bind(after.at)
            .push(", ")
            .push_bind(after.key.aggregate_type.clone())
            .push(", ")
            .push_bind(after.key.sequence)
            .push(", ")
            .push_bind(after.key.aggregate_id.clone())
            .push(")");
    }
    sql.push(
        " ORDER BY recorded_at DESC, aggregate_type DESC, sequence DESC, aggregate_id DESC LIMIT ",
    )
    .push_bind(request.fetch_limit());
    let rows = sql.build().fetch_all(pool).await?;
    let mut actions = Vec::with_capacity(rows.len());
    for row in &rows {
        actions.push(action(row)?);
    }
    Ok(request.page(actions, |a| TimeCursor {
        at: a.at,
        key: EventKey {
            aggregate_type: a.event.aggregate_type.clone(),
            sequence: a.event.sequence,
            aggregate_id: a.event.aggregate_id.clone(),
        },
    }))
}

fn decode<E: DeserializeOwned>(
    event: &EventRef,
    payload: serde_json::Value,
) -> Result<E, AuditError> {
    serde_json::from_value(payload).map_err(|source| AuditError::UnreadableEvent {
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
        source,
    })
}

/// What, why and by whom, from one event.
type Described = (
    &'static str,
    Option<String>,
    serde_json::Value,
    Option<String>,
);

fn action(row: &sqlx::postgres::PgRow) -> Result<AdminAction, AuditError> {
    let event = EventRef {
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
    };
    let payload: serde_json::Value = row.try_get("payload")?;
    let (target, described): (String, Described) = match event.aggregate_type.as_str() {
        CREDIT_ACCOUNT => (
            format!("account:{}", event.aggregate_id),
            credit(decode(&event, payload)?),
        ),
        "User" => (
            format!("user:{}", event.aggregate_id),
            user(decode(&event, payload)?),
        ),
        "PromoCode" => (
            format!("promo:{}", event.aggregate_id),
            promo(decode(&event, payload)?),
        ),
        _ => (
            event.aggregate_id.clone(),
            ("unknown", None, serde_json::Value::Null, None),
        ),
    };
    let (action, by, what, why) = described;
    Ok(AdminAction {
        at: row.try_get("recorded_at")?,
        action,
        actor: row.try_get("actor")?,
        by,
        target,
        what,
        why,
        event,
    })
}

fn credit(event: CreditEvent) -> Described {
    match event {
        CreditEvent::CreditsGranted {
            key,
            amount,
            reason,
            granted_by,
            balance_after,
            ..
        } => (
            "credits_granted",
            Some(granted_by),
            json!({
                "amount_micros": amount.micros(),
                "idempotency_key": key.as_str(),
                "balance_after_micros": balance_after.micros(),
            }),
            Some(reason),
        ),
        _ => ("unknown", None, serde_json::Value::Null, None),
    }
}

fn user(event: UserEvent) -> Described {
    match event {
        UserEvent::RoleGranted {
            role,
            granted_by,
            roles_after,
        } => (
            "role_granted",
            Some(granted_by),
            json!({ "role": role.as_str(), "roles_after": roles_after.iter().map(|r| r.as_str()).collect::<Vec<_>>() }),
            None,
        ),
        UserEvent::RoleRevoked {
            role,
            revoked_by,
            roles_after,
        } => (
            "role_revoked",
            Some(revoked_by),
            json!({ "role": role.as_str(), "roles_after": roles_after.iter().map(|r| r.as_str()).collect::<Vec<_>>() }),
            None,
        ),
        UserEvent::UserSuspended {
            reason,
            suspended_by,
            ..
        } => (
            "user_suspended",
            Some(suspended_by),
            json!({}),
            Some(reason.to_string()),
        ),
        UserEvent::UserUnsuspended {
            reason,
            unsuspended_by,
            ..
        } => (
            "user_unsuspended",
            Some(unsuspended_by),
            json!({}),
            Some(reason.to_string()),
        ),
        UserEvent::ApiKeyRevoked { key_id, .. } => {
            ("api_key_revoked", None, json!({ "key_id": key_id.0 }), None)
        }
        _ => ("unknown", None, serde_json::Value::Null, None),
    }
}

fn promo(event: PromoEvent) -> Described {
    match event {
        PromoEvent::PromoCodeCreated {
            code,
            credits,
            max_redemptions,
            valid_from,
            valid_until,
            active,
            created_by,
            ..
        } => (
            "promo_created",
            Some(created_by),
            json!({
                "code": code.to_string(),
                "credits_micros": credits.micros(),
                "max_redemptions": max_redemptions,
                "valid_from": valid_from,
                "valid_until": valid_until,
                "active": active,
            }),
            None,
        ),
        PromoEvent::PromoCodeDisabled { disabled_by, .. } => {
            ("promo_disabled", Some(disabled_by), json!({}), None)
        }
        PromoEvent::PromoCodeEnabled { enabled_by, .. } => {
            ("promo_enabled", Some(enabled_by), json!({}), None)
        }
        _ => ("unknown", None, serde_json::Value::Null, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::Cursor;

    #[test]
    fn an_event_cursor_reads_back_whatever_the_id_holds() {
        let cursor = TimeCursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_000_001).expect("a time"),
            key: EventKey {
                aggregate_type: "PromoCode".into(),
                sequence: 3,
                aggregate_id: "A/B_C".into(),
            },
        };
        assert_eq!(
            TimeCursor::<EventKey>::decode(&cursor.encode()),
            Some(cursor)
        );
    }
}
