//! What inference counts, by model and provider (docs/operations.md): recorded by the
//! worker when a request ends and by the router as it retries, falls back and cools
//! providers down. Every label is a configured name or a fixed code, so the number of
//! series is bounded by the configuration.

use hub_domain::{UsageOutcome, UsageRecord};
use metrics::Label;

/// Requests a worker ended, by `model`, `provider` (`none` when no provider took it) and
/// `outcome` (`completed`, `cancelled`, `broken`, `failed`).
pub const REQUESTS: &str = "aihub_inference_requests_total";
/// Requests that ended with no answer, by `model` and `code` (`expired`, `unknown_model`,
/// `unavailable` or the last provider error's code).
pub const FAILURES: &str = "aihub_inference_failures_total";
/// Prompt tokens charged, by `model` and `provider`.
pub const INPUT_TOKENS: &str = "aihub_inference_input_tokens_total";
/// Output tokens charged (reasoning included), by `model` and `provider`.
pub const OUTPUT_TOKENS: &str = "aihub_inference_output_tokens_total";
/// What the usage cost at the model's price, in micro-credits, by `model` and `provider`.
pub const COST_MICROS: &str = "aihub_inference_cost_micros_total";
/// Time from the worker taking the request to the first token, by `model` and `provider`.
pub const TIME_TO_FIRST_TOKEN: &str = "aihub_inference_time_to_first_token_seconds";
/// Time from the worker taking the request to its end, by `model` and `provider`.
pub const DURATION: &str = "aihub_inference_duration_seconds";
/// Upstream calls that failed (before the first token, or a stream that broke after it),
/// by `model`, `provider` and `code`.
pub const UPSTREAM_ERRORS: &str = "aihub_inference_upstream_errors_total";
/// Requests sent on to a provider after an earlier one of the model failed or was cooling
/// down, by `model` and `provider` (the one fallen back to).
pub const FALLBACKS: &str = "aihub_inference_fallbacks_total";
/// Times a provider was put to cool down after failing, by `model` and `provider`.
pub const COOLDOWNS: &str = "aihub_inference_cooldowns_total";
/// Settlements Postgres did not take in time, handed to JetStream for the settlers.
pub const SETTLEMENTS_DEFERRED: &str = "aihub_inference_settlements_deferred_total";

fn outcome_label(outcome: UsageOutcome) -> &'static str {
    match outcome {
        UsageOutcome::Completed => "completed",
        UsageOutcome::Cancelled => "cancelled",
        UsageOutcome::Broken => "broken",
    }
}

/// A request a provider accepted, ended: its usage as settled.
pub(crate) fn settled(record: &UsageRecord) {
    let labels = [
        Label::new("model", record.model.clone()),
        Label::new("provider", record.provider.clone()),
    ];
    metrics::counter!(REQUESTS, "model" => record.model.clone(), "provider" => record.provider.clone(), "outcome" => outcome_label(record.outcome))
        .increment(1);
    metrics::counter!(INPUT_TOKENS, labels.iter()).increment(record.input_tokens);
    metrics::counter!(OUTPUT_TOKENS, labels.iter()).increment(record.output_tokens);
    metrics::counter!(COST_MICROS, labels.iter())
        .increment(u64::try_from(record.cost.micros()).unwrap_or(0));
    if let Some(ms) = record.first_token_ms {
        metrics::histogram!(TIME_TO_FIRST_TOKEN, labels.iter()).record(ms as f64 / 1_000.0);
    }
    metrics::histogram!(DURATION, labels.iter()).record(record.latency_ms as f64 / 1_000.0);
}

/// A request no provider answered (`code` says why), or that the client left before any
/// provider had it (`code` `None`: counted as cancelled, not as a failure).
pub(crate) fn unanswered(model: &str, code: Option<&'static str>) {
    let outcome = if code.is_some() {
        "failed"
    } else {
        "cancelled"
    };
    metrics::counter!(REQUESTS, "model" => model.to_owned(), "provider" => "none", "outcome" => outcome)
        .increment(1);
    if let Some(code) = code {
        metrics::counter!(FAILURES, "model" => model.to_owned(), "code" => code).increment(1);
    }
}

/// An upstream call failed.
pub(crate) fn upstream_error(model: &str, provider: &str, code: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS, "model" => model.to_owned(), "provider" => provider.to_owned(), "code" => code)
        .increment(1);
}

/// A request went on to `provider` after an earlier provider of `model` failed or cooled.
pub(crate) fn fallback(model: &str, provider: &str) {
    metrics::counter!(FALLBACKS, "model" => model.to_owned(), "provider" => provider.to_owned())
        .increment(1);
}

/// `provider` of `model` cools down.
pub(crate) fn cooldown(model: &str, provider: &str) {
    metrics::counter!(COOLDOWNS, "model" => model.to_owned(), "provider" => provider.to_owned())
        .increment(1);
}

/// A settlement went to JetStream instead of Postgres.
pub(crate) fn settlement_deferred() {
    metrics::counter!(SETTLEMENTS_DEFERRED).increment(1);
}
