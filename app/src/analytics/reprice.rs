//! What the usage of a range would have cost under another price table.
//!
//! The usage records of `[from, to)` are read with one streaming query and each is priced
//! again with [`hub_domain::Price::cost`], the formula settlements use (the three parts
//! summed, divided once, rounded up to the micro-credit). Memory grows with the number of
//! models and users in the range, never with the number of records (at most
//! [`GROUPS_MAX`] users). Nothing is written anywhere.
//!
//! **No cap.** A live charge is the cost capped at the request's reservation (and, for a
//! settlement after its reservation expired, at what was available). A reservation was
//! sized by the price table of its day, so it says nothing of what a request would have
//! reserved under another: `repriced_micros` is the new table's cost, uncapped. With the
//! live table, the difference is therefore zero except for requests whose charge was
//! capped, where it is what the cap let go.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hub_domain::{Price, TokenUsage};
use hub_workers::config::{PriceSettings, MODELS_MAX, PRICE_PER_MILLION_MAX_MICROS};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Most users one re-pricing reports on (each is a line of the answer).
pub const GROUPS_MAX: usize = 100_000;

/// A price table in the shape of the configured models' prices: model name → its
/// `price` (`input_per_million_micros`, `output_per_million_micros`,
/// `cached_input_per_million_micros`).
pub type PriceTable = BTreeMap<String, PriceSettings>;

/// Why a re-pricing was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RepriceError {
    #[error("prices: {0}")]
    Prices(String),
    #[error("from must be before to")]
    Range,
    #[error("more than {GROUPS_MAX} users in the range: narrow it")]
    TooManyGroups,
    #[error("a repriced cost is too large: {0}")]
    Money(#[from] hub_domain::MoneyError),
    #[error("could not read the usage records")]
    Database(#[from] sqlx::Error),
}

/// Read a price table from a file: JSON when its name ends in `.json`, TOML otherwise
/// (`[mock-1]` then `input_per_million_micros = 1000000`, ...).
pub fn load_price_table(path: &std::path::Path) -> Result<PriceTable, RepriceError> {
    let unreadable =
        |e: &dyn std::fmt::Display| RepriceError::Prices(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(&e))?;
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| unreadable(&e))
    } else {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(&text))
            .extract()
            .map_err(|e| unreadable(&e))
    }
}

/// Checks a price table as the settings check the configured prices: 1 to [`MODELS_MAX`]
/// models, names of 1 to 200 characters, each price within 0 and
/// [`PRICE_PER_MILLION_MAX_MICROS`].
pub fn price_table(table: &PriceTable) -> Result<BTreeMap<String, Price>, RepriceError> {
    if table.is_empty() || table.len() > MODELS_MAX {
        return Err(RepriceError::Prices(format!(
            "must name 1 to {MODELS_MAX} models"
        )));
    }
    let mut prices = BTreeMap::new();
    for (model, price) in table {
        if model.is_empty() || model.chars().count() > 200 {
            return Err(RepriceError::Prices(
                "a model name must be 1 to 200 characters".into(),
            ));
        }
        let parts = [
            price.input_per_million_micros,
            price.output_per_million_micros,
            price.cached_input_per_million_micros,
        ];
        if parts
            .iter()
            .any(|p| !(0..=PRICE_PER_MILLION_MAX_MICROS).contains(p))
        {
            return Err(RepriceError::Prices(format!(
                "{model}: every price must be between 0 and {PRICE_PER_MILLION_MAX_MICROS}"
            )));
        }
        prices.insert(model.clone(), price.price());
    }
    Ok(prices)
}

/// Sums over a set of usage records, in micro-credits.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Amounts {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    /// What the price table of the day said each request cost.
    pub cost_micros: i64,
    /// What was taken: the cost, capped at the reservation.
    pub charged_micros: i64,
    /// What the new table would have charged (no cap).
    pub repriced_micros: i64,
    /// `repriced_micros − charged_micros`: positive, the new table charges more.
    pub difference_micros: i64,
}

impl Amounts {
    fn add(&mut self, r: &Amounts) {
        for (sum, part) in [
            (&mut self.requests, r.requests),
            (&mut self.input_tokens, r.input_tokens),
            (&mut self.output_tokens, r.output_tokens),
            (&mut self.cached_input_tokens, r.cached_input_tokens),
            (&mut self.cost_micros, r.cost_micros),
            (&mut self.charged_micros, r.charged_micros),
            (&mut self.repriced_micros, r.repriced_micros),
            (&mut self.difference_micros, r.difference_micros),
        ] {
            *sum = sum.saturating_add(part);
        }
    }
}

/// One model's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ModelLine {
    pub model: String,
    /// Whether the new table names the model; when it does not, its requests keep what
    /// they were charged (no difference).
    pub priced: bool,
    #[serde(flatten)]
    pub amounts: Amounts,
}

/// One user's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UserLine {
    pub user_id: Uuid,
    #[serde(flatten)]
    pub amounts: Amounts,
}

/// A re-pricing's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Repricing {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// By model name, in name order.
    pub by_model: Vec<ModelLine>,
    /// By user, in id order.
    pub by_user: Vec<UserLine>,
    pub totals: Amounts,
}

/// Price the usage records of `[from, to)` again under `prices` (see the module's doc).
pub async fn reprice(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    prices: &BTreeMap<String, Price>,
) -> Result<Repricing, RepriceError> {
    if from >= to {
        return Err(RepriceError::Range);
    }
    let mut rows = sqlx::query(
        "SELECT account_id, model, input_tokens, output_tokens, cached_input_tokens,
                cost_micros, charged_micros
           FROM usage_records WHERE recorded_at >= $1 AND recorded_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch(pool);
    let mut by_model: BTreeMap<String, Amounts> = BTreeMap::new();
    let mut by_user: BTreeMap<Uuid, Amounts> = BTreeMap::new();
    let mut totals = Amounts::default();
    while let Some(row) = rows.next().await {
        let row = row?;
        let model: String = row.try_get("model")?;
        let record = repriced(&row, prices.get(&model))?;
        let user: Uuid = row.try_get("account_id")?;
        if !by_user.contains_key(&user) && by_user.len() >= GROUPS_MAX {
            return Err(RepriceError::TooManyGroups);
        }
        by_user.entry(user).or_default().add(&record);
        by_model.entry(model).or_default().add(&record);
        totals.add(&record);
    }
    Ok(Repricing {
        from,
        to,
        by_model: by_model
            .into_iter()
            .map(|(model, amounts)| ModelLine {
                priced: prices.contains_key(&model),
                model,
                amounts,
            })
            .collect(),
        by_user: by_user
            .into_iter()
            .map(|(user_id, amounts)| UserLine { user_id, amounts })
            .collect(),
        totals,
    })
}

/// One record's amounts under `price` (`None`: a model the table does not name, which keeps
/// its charge).
fn repriced(row: &sqlx::postgres::PgRow, price: Option<&Price>) -> Result<Amounts, RepriceError> {
    let input: i64 = row.try_get("input_tokens")?;
    let output: i64 = row.try_get("output_tokens")?;
    let cached: i64 = row.try_get("cached_input_tokens")?;
    let charged: i64 = row.try_get("charged_micros")?;
    let repriced = match price {
        Some(price) => price
            .cost(&TokenUsage {
                input_tokens: u64::try_from(input).unwrap_or(0),
                output_tokens: u64::try_from(output).unwrap_or(0),
                cached_input_tokens: u64::try_from(cached).unwrap_or(0),
                reasoning_tokens: 0,
            })?
            .micros(),
        None => charged,
    };
    Ok(Amounts {
        requests: 1,
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        cost_micros: row.try_get("cost_micros")?,
        charged_micros: charged,
        repriced_micros: repriced,
        difference_micros: repriced - charged,
    })
}
