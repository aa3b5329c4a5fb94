//! What analysts read beyond single records: summaries from the hourly rollups, and the
//! streamed export of usage records.
//!
//! # Layout
//!
//! - [`summary`]: totals and series by time grain and dimensions, with latency and
//!   time-to-first-token percentiles from the rollups' histograms; never a scan of
//!   `usage_records`.
//! - [`export`]: usage records of a range as CSV (RFC 4180) or NDJSON, encoded as they are
//!   read, in chunks of bounded size.
//! - [`events`]: the raw history of a time range (the events `HUB_EVENTS` stored), as
//!   NDJSON, read with an ordered consumer.
//! - [`reprice`]: what the usage records of a range would have cost under another price
//!   table, per model and per user, streamed over the records; nothing is written.
//!
//! The filters and who reads whose usage are [`crate::queries::usage`]'s.

pub mod events;
pub mod export;
pub mod reprice;
pub mod summary;
