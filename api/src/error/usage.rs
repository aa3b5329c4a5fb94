//! The usage routes' failures as HTTP.

use hub_app::analytics::reprice::RepriceError;
use hub_app::analytics::summary::SummaryError;
use hub_app::queries::usage::FilterError;

use super::ApiError;

impl From<FilterError> for ApiError {
    fn from(err: FilterError) -> Self {
        let code = match &err {
            FilterError::NotAllowed => return ApiError::forbidden("admin, analyst, auditor"),
            FilterError::GroupBy(_) => "invalid_group_by",
            FilterError::Format => "invalid_format",
            FilterError::Time { .. }
            | FilterError::Uuid { .. }
            | FilterError::Outcome
            | FilterError::Name { .. }
            | FilterError::Range => "invalid_filter",
        };
        ApiError::bad_request(code, err.to_string())
    }
}

impl From<SummaryError> for ApiError {
    fn from(err: SummaryError) -> Self {
        match err {
            SummaryError::TooManyGroups => {
                ApiError::bad_request("too_many_groups", err.to_string())
            }
            SummaryError::Bound(_) => ApiError::bad_request("invalid_filter", err.to_string()),
            SummaryError::Database(err) => err.into(),
            SummaryError::Histogram(err) => ApiError::internal(err),
        }
    }
}

impl From<hub_app::analytics::events::EventsFilterError> for ApiError {
    fn from(err: hub_app::analytics::events::EventsFilterError) -> Self {
        ApiError::bad_request("invalid_filter", err.to_string())
    }
}

impl From<hub_app::analytics::events::HistoryError> for ApiError {
    fn from(err: hub_app::analytics::events::HistoryError) -> Self {
        use hub_app::analytics::events::HistoryError;
        match err {
            HistoryError::BadAggregateId(_) | HistoryError::BadTime(_) => {
                ApiError::bad_request("invalid_filter", err.to_string())
            }
            HistoryError::Stream(_) => {
                tracing::warn!(error = %format!("{:#}", anyhow::Error::from(err)), "event history unavailable");
                ApiError::unavailable("the event stream is unavailable")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<RepriceError> for ApiError {
    fn from(err: RepriceError) -> Self {
        let code = match err {
            RepriceError::Database(db) => return db.into(),
            RepriceError::Prices(_) | RepriceError::Money(_) => "invalid_prices",
            RepriceError::Range => "invalid_filter",
            RepriceError::TooManyGroups => "too_many_groups",
        };
        ApiError::bad_request(code, err.to_string())
    }
}
