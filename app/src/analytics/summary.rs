//! `usage_rollups` summed by an optional time grain and any of user, API key, model and
//! provider: totals and series of requests, tokens, cost, charge, error rate, and latency
//! and time-to-first-token percentiles read from the rollups' histograms. A summary that
//! names no user and no key (as a filter or a dimension) reads `usage_rollups_global`, the
//! same sums without account and key, and, by day, week or month,
//! `usage_rollups_global_daily` for the whole days of its range; the rows read are added
//! up here.
//!
//! Rollups are hourly, so a summary covers whole hours: `from` is rounded down and `to` up
//! to the hour (UTC), and the summary says which range it covered. A percentile is the
//! upper bound of the histogram bucket it falls in (see [`hub_projections::rollups`]): the
//! exact value is below it and at or above the bucket's lower bound.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::TryStreamExt;
use hub_projections::rollups::{bucket_range, from_sparse, BUCKETS};
use serde::Serialize;
use sqlx::{PgPool, QueryBuilder, Row};
use std::collections::hash_map::{Entry, HashMap};
use uuid::Uuid;

use crate::queries::usage::{FilterError, UsageFilter};

/// The most groups a summary returns; more is refused (narrow the range or the grouping).
pub const GROUPS_MAX: usize = 10_000;

/// A summary's time grain (UTC; a week starts on Monday).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
    Week,
    Month,
}

/// A dimension a summary may group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    User,
    ApiKey,
    Model,
    Provider,
}

/// At most one time grain plus any dimensions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub grain: Option<Grain>,
    pub dimensions: Vec<Dimension>,
}

impl GroupBy {
    /// Read `hour|day|week|month|user|api_key|model|provider`, comma-separated.
    pub fn parse(raw: Option<&str>) -> Result<Self, FilterError> {
        let mut group = GroupBy::default();
        for part in raw.unwrap_or("").split(',').map(str::trim) {
            let grain = match part {
                "" => continue,
                "hour" => Some(Grain::Hour),
                "day" => Some(Grain::Day),
                "week" => Some(Grain::Week),
                "month" => Some(Grain::Month),
                _ => None,
            };
            if let Some(grain) = grain {
                if group.grain.replace(grain).is_some() {
                    return Err(FilterError::GroupBy("takes one time grain at most".into()));
                }
                continue;
            }
            let dimension = match part {
                "user" => Dimension::User,
                "api_key" => Dimension::ApiKey,
                "model" => Dimension::Model,
                "provider" => Dimension::Provider,
                other => {
                    return Err(FilterError::GroupBy(format!(
                        "{other:?} is not one of: hour, day, week, month, user, api_key, model, provider"
                    )))
                }
            };
            if group.dimensions.contains(&dimension) {
                return Err(FilterError::GroupBy(format!("names {part:?} twice")));
            }
            group.dimensions.push(dimension);
        }
        Ok(group)
    }

    /// The names, in the order given: time grain first.
    pub fn names(&self) -> Vec<&'static str> {
        let grain = self.grain.map(|g| match g {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
        });
        grain
            .into_iter()
            .chain(self.dimensions.iter().map(|d| match d {
                Dimension::User => "user",
                Dimension::ApiKey => "api_key",
                Dimension::Model => "model",
                Dimension::Provider => "provider",
            }))
            .collect()
    }
}

/// Percentiles in milliseconds: each the upper bound of its histogram bucket (the last
/// bucket's lower bound: it has none). `None` without a single measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub p99: Option<i64>,
}

/// What a group (or the whole range) adds up to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Metrics {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cost_micros: i64,
    pub charged_micros: i64,
    /// Requests whose stream broke upstream (`outcome: broken`).
    pub errors: i64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
    pub latency_ms: Percentiles,
    /// Over the requests that had a first token.
    pub ttft_ms: Percentiles,
}

/// The key of one group: only the parts grouped by are present.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// `Some(None)`: the requests made without an API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Option<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// One group of a series.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Group {
    #[serde(flatten)]
    pub key: GroupKey,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// A summary: the range it covered (whole hours), totals, and one entry per group.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub group_by: Vec<&'static str>,
    pub totals: Metrics,
    /// Ordered by period, then by the dimensions.
    pub series: Vec<Group>,
}

/// Why a summary could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("more than {GROUPS_MAX} groups: narrow the range or the grouping")]
    TooManyGroups,
    #[error("a bucket bound is out of range")]
    Bound(#[from] chrono::RoundingError),
    #[error("could not read the usage rollups")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Histogram(#[from] hub_projections::rollups::MalformedHistogram),
}

/// Sums of one group as read, before percentiles.
struct Sums {
    key: GroupKey,
    requests: i64,
    input: i64,
    output: i64,
    cached: i64,
    cost: i64,
    charged: i64,
    errors: i64,
    latency: Vec<i64>,
    ttft: Vec<i64>,
}

/// Summarise the rollups under `filter`, grouped by `group`.
pub async fn summary(
    pool: &PgPool,
    filter: &UsageFilter,
    group: &GroupBy,
) -> Result<Summary, SummaryError> {
    let hour = TimeDelta::hours(1);
    let mut filter = filter.clone();
    filter.from = filter.from.map(|t| t.duration_trunc(hour)).transpose()?;
    filter.to = filter
        .to
        .map(|t| {
            let down = t.duration_trunc(hour)?;
            Ok::<_, chrono::RoundingError>(if down < t { down + hour } else { down })
        })
        .transpose()?;
    let groups = read_groups(pool, &filter, group).await?;
    let mut all = Sums {
        key: GroupKey::none(),
        requests: 0,
        input: 0,
        output: 0,
        cached: 0,
        cost: 0,
        charged: 0,
        errors: 0,
        latency: vec![0; BUCKETS],
        ttft: vec![0; BUCKETS],
    };
    for g in &groups {
        all.add(g);
    }
    Ok(Summary {
        from: filter.from,
        to: filter.to,
        group_by: group.names(),
        totals: all.metrics(),
        series: groups
            .into_iter()
            .map(|g| Group {
                metrics: g.metrics(),
                key: g.key,
            })
            .collect(),
    })
}

async fn read_groups(
    pool: &PgPool,
    filter: &UsageFilter,
    group: &GroupBy,
) -> Result<Vec<Sums>, SummaryError> {
    let has = |d: Dimension| group.dimensions.contains(&d);
    // A summary that names no account and no key reads the sums kept without them: a month
    // of those is thousands of rows whatever the number of accounts.
    let global = !has(Dimension::User)
        && !has(Dimension::ApiKey)
        && filter.account.is_none()
        && filter.api_key.is_none();
    // By day, week or month, whole days come from the daily sums and only the range's
    // ragged ends from the hourly ones.
    let daily = global && group.grain != Some(Grain::Hour);
    // Only fixed text goes into the statement; values are bound.
    let period = match group.grain {
        None => "NULL::timestamptz",
        Some(Grain::Hour) => "hour",
        Some(Grain::Day) => "date_trunc('day', hour, 'UTC')",
        Some(Grain::Week) => "date_trunc('week', hour, 'UTC')",
        Some(Grain::Month) => "date_trunc('month', hour, 'UTC')",
    };
    let pick = |d, column: &'static str, null: &'static str| if has(d) { column } else { null };
    // The rows are added up here, histograms included: Postgres has no element-wise sum of
    // arrays as fast as a loop over them.
    let mut sql = QueryBuilder::new(format!(
        "SELECT {period} AS period, {} AS user_id, {} AS api_key_id, {} AS model,
                {} AS provider, requests, input_tokens, output_tokens, cached_input_tokens,
                cost_micros, charged_micros, outcome = 'broken' AS broken, latency_hist,
                ttft_hist
           FROM ",
        pick(Dimension::User, "account_id", "NULL::uuid"),
        pick(Dimension::ApiKey, "api_key_id", "NULL::uuid"),
        pick(Dimension::Model, "model", "NULL::text"),
        pick(Dimension::Provider, "provider", "NULL::text"),
    ));
    if daily {
        const COLUMNS: &str = "model, provider, outcome, requests, input_tokens, output_tokens,
                               cached_input_tokens, cost_micros, charged_micros, latency_hist,
                               ttft_hist";
        let day = TimeDelta::days(1);
        let first_whole_day = match filter.from {
            Some(from) => {
                let down = from.duration_trunc(day)?;
                if down < from {
                    down + day
                } else {
                    down
                }
            }
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        let end_of_whole_days = match filter.to {
            Some(to) => to.duration_trunc(day)?,
            None => DateTime::<Utc>::UNIX_EPOCH + TimeDelta::days(365 * 8_000),
        };
        sql.push(format_args!(
            "(SELECT hour, {COLUMNS} FROM usage_rollups_global WHERE hour < "
        ))
        .push_bind(first_whole_day)
        .push(" OR hour >= ")
        .push_bind(end_of_whole_days)
        .push(format_args!(
            " UNION ALL SELECT day AS hour, {COLUMNS} FROM usage_rollups_global_daily
               WHERE day >= "
        ))
        .push_bind(first_whole_day)
        .push(" AND day < ")
        .push_bind(end_of_whole_days)
        .push(") r WHERE true");
    } else if global {
        sql.push("usage_rollups_global WHERE true");
    } else {
        sql.push("usage_rollups WHERE true");
    }
    filter.push_where(&mut sql, "hour");
    let mut groups: HashMap<GroupKey, Sums> = HashMap::new();
    {
        let mut rows = sql.build().fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let key = GroupKey {
                period: row.try_get("period")?,
                user_id: row.try_get("user_id")?,
                api_key_id: has(Dimension::ApiKey)
                    .then(|| row.try_get("api_key_id"))
                    .transpose()?,
                model: row.try_get("model")?,
                provider: row.try_get("provider")?,
            };
            if !groups.contains_key(&key) && groups.len() == GROUPS_MAX {
                return Err(SummaryError::TooManyGroups);
            }
            let requests: i64 = row.try_get("requests")?;
            let latency = from_sparse(&row.try_get::<Vec<i64>, _>("latency_hist")?)?.to_vec();
            let ttft = from_sparse(&row.try_get::<Vec<i64>, _>("ttft_hist")?)?.to_vec();
            let sums = Sums {
                key: key.clone(),
                requests,
                input: row.try_get("input_tokens")?,
                output: row.try_get("output_tokens")?,
                cached: row.try_get("cached_input_tokens")?,
                cost: row.try_get("cost_micros")?,
                charged: row.try_get("charged_micros")?,
                errors: if row.try_get::<bool, _>("broken")? {
                    requests
                } else {
                    0
                },
                latency,
                ttft,
            };
            match groups.entry(key) {
                Entry::Occupied(mut at) => at.get_mut().add(&sums),
                Entry::Vacant(at) => {
                    at.insert(sums);
                }
            }
        }
    }
    let mut groups: Vec<Sums> = groups.into_values().collect();
    // As `ORDER BY` would: each part ascending, nothing (no key) after everything.
    groups.sort_by(|a, b| a.key.order(&b.key));
    Ok(groups)
}

/// `a` before `b` as SQL orders them ascending: `None` last.
fn nulls_last<T: Ord>(a: &Option<T>, b: &Option<T>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    }
}

impl GroupKey {
    fn order(&self, other: &GroupKey) -> std::cmp::Ordering {
        nulls_last(&self.period, &other.period)
            .then_with(|| nulls_last(&self.user_id, &other.user_id))
            .then_with(|| {
                nulls_last(
                    &self
                        .api_key_id
                        .map(|k| k.map_or((true, Uuid::nil()), |k| (false, k))),
                    &other
                        .api_key_id
                        .map(|k| k.map_or((true, Uuid::nil()), |k| (false, k))),
                )
            })
            .then_with(|| nulls_last(&self.model, &other.model))
            .then_with(|| nulls_last(&self.provider, &other.provider))
    }

    fn none() -> Self {
        GroupKey {
            period: None,
            user_id: None,
            api_key_id: None,
            model: None,
            provider: None,
        }
    }
}

impl Sums {
    fn add(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.input += other.input;
        self.output += other.output;
        self.cached += other.cached;
        self.cost += other.cost;
        self.charged += other.charged;
        self.errors += other.errors;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
        for (a, b) in self.ttft.iter_mut().zip(&other.ttft) {
            *a += b;
        }
    }

    fn metrics(&self) -> Metrics {
        Metrics {
            requests: self.requests,
            input_tokens: self.input,
            output_tokens: self.output,
            cached_input_tokens: self.cached,
            cost_micros: self.cost,
            charged_micros: self.charged,
            errors: self.errors,
            error_rate: match self.requests {
                0 => 0.0,
                n => self.errors as f64 / n as f64,
            },
            latency_ms: percentiles(&self.latency),
            ttft_ms: percentiles(&self.ttft),
        }
    }
}

fn percentiles(histogram: &[i64]) -> Percentiles {
    Percentiles {
        p50: percentile(histogram, 50),
        p95: percentile(histogram, 95),
        p99: percentile(histogram, 99),
    }
}

/// The `pct`-th percentile (nearest rank) as the upper bound of the bucket it falls in.
pub fn percentile(histogram: &[i64], pct: i64) -> Option<i64> {
    let total: i64 = histogram.iter().sum();
    if total <= 0 {
        return None;
    }
    // Nearest rank: the smallest rank r with r >= pct% of total (1-based).
    let rank = (total * pct + 99) / 100;
    let mut seen = 0;
    for (i, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank.max(1) {
            let (lower, upper) = bucket_range(i);
            return Some(upper.unwrap_or(lower));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_projections::rollups::bucket_of;

    #[test]
    fn a_percentile_from_the_histogram_bounds_the_exact_one_within_its_bucket() {
        // Durations spread over the buckets, deterministic.
        let mut durations: Vec<i64> = (0..997).map(|i| (i * i * 7919) % 40_000).collect();
        durations.sort_unstable();
        let mut histogram = vec![0; BUCKETS];
        for d in &durations {
            histogram[bucket_of(*d)] += 1;
        }
        for pct in [1, 50, 95, 99, 100] {
            let rank = (durations.len() as i64 * pct + 99) / 100;
            let exact = durations[usize::try_from(rank - 1).expect("a rank")];
            let reported = percentile(&histogram, pct).expect("a percentile");
            let (lower, upper) = bucket_range(bucket_of(exact));
            assert_eq!(Some(reported), upper, "p{pct}: exact {exact}");
            assert!(lower <= exact && exact < reported, "p{pct}");
        }
    }

    #[test]
    fn an_empty_histogram_has_no_percentiles() {
        assert_eq!(percentile(&vec![0; BUCKETS], 50), None);
    }

    #[test]
    fn group_by_takes_one_grain_and_distinct_dimensions() {
        let group = GroupBy::parse(Some("day,model,user")).expect("valid");
        assert_eq!(group.grain, Some(Grain::Day));
        assert_eq!(group.names(), vec!["day", "model", "user"]);
        assert!(GroupBy::parse(Some("day,hour")).is_err());
        assert!(GroupBy::parse(Some("model,model")).is_err());
        assert!(GroupBy::parse(Some("colour")).is_err());
        assert_eq!(GroupBy::parse(None), Ok(GroupBy::default()));
    }
}
