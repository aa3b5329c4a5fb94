//! The `usage` read model: one row per settled inference request (`usage_records`), newest
//! first, with the filters every usage read shares, who may read whose usage, and one
//! request's whole story (its record, its ledger entries and its credit events).
//!
//! The summaries (from `usage_rollups`) and the export live in [`crate::analytics`].

use chrono::{DateTime, NaiveDate, Utc};
use hub_domain::Role;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::page::{CursorKey, Limits, Page, TimeCursor};
use crate::queries::QueryError;

/// Page size bounds for the usage listing, in rows.
pub const LIMITS: Limits = Limits {
    default: 50,
    max: 500,
};

/// The roles that read everyone's usage (auditors only read: every usage route is a read).
pub const READ_ALL_USAGE: [Role; 3] = [Role::Admin, Role::Analyst, Role::Auditor];

/// The longest model or provider name a filter takes.
const NAME_FILTER_MAX: usize = 200;

/// A filter that cannot be read: the field and why, for a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{field} must be an RFC 3339 time (2026-12-01T10:00:00Z) or a date (2026-12-01)")]
    Time { field: &'static str },
    #[error("{field} must be a UUID")]
    Uuid { field: &'static str },
    #[error("outcome must be one of: completed, cancelled, broken")]
    Outcome,
    #[error("{field} must be 1 to 200 characters")]
    Name { field: &'static str },
    #[error("from must be before to")]
    Range,
    #[error("reading another user's usage needs one of the roles: admin, analyst, auditor")]
    NotAllowed,
    #[error("group_by {0}")]
    GroupBy(String),
    #[error("format must be csv or ndjson")]
    Format,
}

/// The filters as a client sent them (query-string text), before they are read.
#[derive(Debug, Clone, Default)]
pub struct RawFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub outcome: Option<String>,
}

/// Which usage rows a read covers: `from` inclusive, `to` exclusive; `account` is set for a
/// reader who may read only their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub account: Option<Uuid>,
    pub api_key: Option<Uuid>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub outcome: Option<&'static str>,
}

/// Read a time: RFC 3339, or a date (its midnight, UTC).
pub fn parse_time(field: &'static str, raw: &str) -> Result<DateTime<Utc>, FilterError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(raw) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or(FilterError::Time { field })
}

fn parse_uuid(field: &'static str, raw: &str) -> Result<Uuid, FilterError> {
    raw.parse().map_err(|_| FilterError::Uuid { field })
}

fn parse_name(field: &'static str, raw: String) -> Result<String, FilterError> {
    if raw.is_empty() || raw.chars().count() > NAME_FILTER_MAX {
        return Err(FilterError::Name { field });
    }
    Ok(raw)
}

impl RawFilter {
    /// Read the filters for `reader`: one without [`READ_ALL_USAGE`] reads their own usage
    /// only (naming another user is refused), whatever else they ask.
    pub fn parse(self, reader: Uuid, roles: &[Role]) -> Result<UsageFilter, FilterError> {
        let from = self.from.map(|t| parse_time("from", &t)).transpose()?;
        let to = self.to.map(|t| parse_time("to", &t)).transpose()?;
        if let (Some(from), Some(to)) = (from, to) {
            if from >= to {
                return Err(FilterError::Range);
            }
        }
        let requested = self
            .user_id
            .map(|u| parse_uuid("user_id", &u))
            .transpose()?;
        let reads_all = READ_ALL_USAGE.iter().any(|r| roles.contains(r));
        let account = match requested {
            Some(other) if other != reader && !reads_all => return Err(FilterError::NotAllowed),
            Some(user) => Some(user),
            None if reads_all => None,
            None => Some(reader),
        };
        let outcome = match self.outcome.as_deref() {
            None => None,
            Some("completed") => Some("completed"),
            Some("cancelled") => Some("cancelled"),
            Some("broken") => Some("broken"),
            Some(_) => return Err(FilterError::Outcome),
        };
        Ok(UsageFilter {
            from,
            to,
            account,
            api_key: self
                .api_key_id
                .map(|k| parse_uuid("api_key_id", &k))
                .transpose()?,
            model: self.model.map(|m| parse_name("model", m)).transpose()?,
            provider: self
                .provider
                .map(|p| parse_name("provider", p))
                .transpose()?,
            outcome,
        })
    }
}

impl UsageFilter {
    /// Append ` AND …` for each filter set; `time` is the column the range applies to.
    pub(crate) fn push_where(&self, sql: &mut QueryBuilder<'_, Postgres>, time: &str) {
        if let Some(from) = self.from {
            sql.push(format_args!(" AND {time} >= ")).push_bind(from);
        }
        if let Some(to) = self.to {
            sql.push(format_args!(" AND {time} < ")).push_bind(to);
        }
        if let Some(account) = self.account {
            sql.push(" AND account_id = ").push_bind(account);
        }
        if let Some(key) = self.api_key {
            sql.push(" AND api_key_id = ").push_bind(key);
        }
        if let Some(model) = &self.model {
            sql.push(" AND model = ").push_bind(model.clone());
        }
        if let Some(provider) = &self.provider {
            sql.push(" AND provider = ").push_bind(provider.clone());
        }
        if let Some(outcome) = self.outcome {
            sql.push(" AND outcome = ").push_bind(outcome);
        }
    }
}

/// One settled request, as analysts see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UsageRecord {
    pub request_id: String,
    pub user_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub model: String,
    pub provider: String,
    pub outcome: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    /// `provider` (reported upstream) or `estimated` (counted by the hub).
    pub token_source: String,
    pub latency_ms: i64,
    pub first_token_ms: Option<i64>,
    /// What the price table says the request cost, in micro-credits.
    pub cost_micros: i64,
    /// What was taken from the balance (the cost, capped at the reservation).
    pub charged_micros: i64,
    pub price_version: String,
    pub stream_sequence: i64,
    pub recorded_at: DateTime<Utc>,
}

/// The columns [`UsageRecord::from_row`] reads, in order.
pub(crate) const RECORD_COLUMNS: &str =
    "request_id, account_id, api_key_id, model, provider, outcome, input_tokens, output_tokens,
     cached_input_tokens, token_source, latency_ms, first_token_ms, cost_micros, charged_micros,
     price_version, stream_sequence, recorded_at";

impl UsageRecord {
    pub(crate) fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(UsageRecord {
            request_id: row.try_get("request_id")?,
            user_id: row.try_get("account_id")?,
            api_key_id: row.try_get("api_key_id")?,
            model: row.try_get("model")?,
            provider: row.try_get("provider")?,
            outcome: row.try_get("outcome")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cached_input_tokens: row.try_get("cached_input_tokens")?,
            token_source: row.try_get("token_source")?,
            latency_ms: row.try_get("latency_ms")?,
            first_token_ms: row.try_get("first_token_ms")?,
            cost_micros: row.try_get("cost_micros")?,
            charged_micros: row.try_get("charged_micros")?,
            price_version: row.try_get("price_version")?,
            stream_sequence: row.try_get("stream_sequence")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

/// The tie-breaker after the time in a usage cursor: the record's stream sequence, unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSequence(pub i64);

impl CursorKey for StreamSequence {
    fn encode_key(&self) -> String {
        self.0.to_string()
    }
    fn decode_key(raw: &str) -> Option<Self> {
        raw.parse().ok().map(StreamSequence)
    }
}

/// One page of usage, newest first (by time, then stream sequence).
pub async fn page(
    pool: &PgPool,
    filter: &UsageFilter,
    limit: Option<i64>,
    cursor: Option<&str>,
) -> Result<Page<UsageRecord>, QueryError> {
    let request = LIMITS.request::<TimeCursor<StreamSequence>>(limit, cursor)?;
    let mut sql = QueryBuilder::new(format!(
        "SELECT {RECORD_COLUMNS} FROM usage_records WHERE true"
    ));
    filter.push_where(&mut sql, "recorded_at");
    if let Some(after) = &request.after {
        sql.push(" AND (recorded_at, stream_sequence) < (")
            .push_bind(after.at)
            .push(", ")
            .push_bind(after.key.0)
            .push(")");
    }
    sql.push(" ORDER BY recorded_at DESC, stream_sequence DESC LIMIT ")
        .push_bind(request.fetch_limit());
    let rows = sql.build().fetch_all(pool).await?;
    let records = rows
        .iter()
        .map(UsageRecord::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(request.page(records, |r| TimeCursor {
        at: r.recorded_at,
        key: StreamSequence(r.stream_sequence),
    }))
}

/// One request: its usage record, its ledger entries, and its credit events.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RequestStory {
    pub request_id: String,
    pub user_id: Uuid,
    /// `None` when the request settled without usage, or never settled (released, expired).
    pub usage: Option<UsageRecord>,
    pub ledger: Vec<crate::queries::ledger::LedgerEntry>,
    /// Reserve, then settle, release or expire, from the event store, in order.
    pub events: Vec<CreditEventRow>,
}

/// One credit event of a request, as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreditEventRow {
    pub sequence: i64,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// The credit account's aggregate type in the event store.
const CREDIT_ACCOUNT: &str = "CreditAccount";

/// The story of `request_id`, if `reader` may see it: a reader without
/// [`READ_ALL_USAGE`] looks in their own account only. `None`: no such request there.
pub async fn request_story(
    pool: &PgPool,
    reader: Uuid,
    roles: &[Role],
    request_id: &str,
) -> Result<Option<RequestStory>, sqlx::Error> {
    let reads_all = READ_ALL_USAGE.iter().any(|r| roles.contains(r));
    let usage = match sqlx::query(&format!(
        "SELECT {RECORD_COLUMNS} FROM usage_records
          WHERE request_id = $1 AND ($2::uuid IS NULL OR account_id = $2)
          LIMIT 1"
    ))
    .bind(request_id)
    .bind((!reads_all).then_some(reader))
    .fetch_optional(pool)
    .await?
    {
        Some(row) => Some(UsageRecord::from_row(&row)?),
        None => None,
    };
    // A request without usage (released, expired) is found in the reader's own events only.
    let account = usage.as_ref().map_or(reader, |u| u.user_id);
    let events = credit_events(pool, account, request_id).await?;
    if usage.is_none() && events.is_empty() {
        return Ok(None);
    }
    let ledger = crate::queries::ledger::for_request(pool, account, request_id).await?;
    Ok(Some(RequestStory {
        request_id: request_id.to_string(),
        user_id: account,
        usage,
        ledger,
        events,
    }))
}

/// The credit events of `account` that name `request_id`, in aggregate order.
async fn credit_events(
    pool: &PgPool,
    account: Uuid,
    request_id: &str,
) -> Result<Vec<CreditEventRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sequence, event_type, payload::jsonb AS payload, recorded_at
           FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2
            AND event_type IN ('CreditsReserved', 'ReservationSettled',
                               'ReservationReleased', 'ReservationExpired')
            AND payload::jsonb -> event_type ->> 'request_id' = $3
          ORDER BY sequence",
    )
    .bind(CREDIT_ACCOUNT)
    .bind(account.to_string())
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CreditEventRow {
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                payload: row.try_get("payload")?,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawFilter {
        RawFilter::default()
    }

    #[test]
    fn a_user_reads_only_their_own_usage_and_an_analyst_everyones() {
        let me = Uuid::new_v4();
        let other = Uuid::new_v4();
        let mine = raw().parse(me, &[Role::User]).expect("own usage");
        assert_eq!(mine.account, Some(me));
        let asked = RawFilter {
            user_id: Some(other.to_string()),
            ..raw()
        };
        assert_eq!(
            asked.clone().parse(me, &[Role::User]),
            Err(FilterError::NotAllowed)
        );
        assert_eq!(
            asked.parse(me, &[Role::Analyst]).map(|f| f.account),
            Ok(Some(other))
        );
        assert_eq!(
            raw().parse(me, &[Role::Auditor]).map(|f| f.account),
            Ok(None)
        );
    }

    #[test]
    fn bad_filters_name_the_field() {
        let me = Uuid::new_v4();
        let bad_time = RawFilter {
            from: Some("yesterday".into()),
            ..raw()
        };
        assert_eq!(
            bad_time.parse(me, &[Role::User]),
            Err(FilterError::Time { field: "from" })
        );
        let backwards = RawFilter {
            from: Some("2026-12-02".into()),
            to: Some("2026-12-01T00:00:00Z".into()),
            ..raw()
        };
        assert_eq!(backwards.parse(me, &[Role::User]), Err(FilterError::Range));
        let outcome = RawFilter {
            outcome: Some("failed".into()),
            ..raw()
        };
        assert_eq!(outcome.parse(me, &[Role::User]), Err(FilterError::Outcome));
    }
}
