//! One page of a listing: its size bounds, its opaque cursor, and how the next cursor is made.
//!
//! Every paginated listing (the ledger, payment history, users, promo codes) pages by keyset:
//! the cursor names the last row of the previous page, and the next page starts strictly
//! after it in the listing's order. A listing asks for one row more than its limit; that
//! extra row only says whether a next page exists.
//!
//! Cursors are opaque to clients. Two shapes exist, and both are kept as clients have seen
//! them: a ledger sequence (`"42"`), and a time plus a key (`"<unix micros>_<key>"`).

use chrono::{DateTime, Utc};

/// A listing's page size bounds, in rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows per page when the caller names no limit.
    pub default: i64,
    /// The most rows a page may have.
    pub max: i64,
}

/// Why a page cannot be read as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The limit is outside `1..=max`.
    #[error("limit must be between 1 and {max}")]
    InvalidLimit { max: i64 },
    /// The cursor is not one a listing of this kind returned.
    #[error("the cursor is not one this listing returned")]
    InvalidCursor,
}

/// A position in a listing that can be handed to a client and read back.
pub trait Cursor: Sized {
    /// The text a client sees as `next_cursor`.
    fn encode(&self) -> String;
    /// Read back a cursor from [`Cursor::encode`]; `None` for any other text.
    fn decode(raw: &str) -> Option<Self>;
}

/// The key that follows the time in a [`TimeCursor`].
pub trait CursorKey: Sized {
    fn encode_key(&self) -> String;
    fn decode_key(raw: &str) -> Option<Self>;
}

/// A position after the row of time `at` and key `key` (the listing orders by both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeCursor<K> {
    pub at: DateTime<Utc>,
    pub key: K,
}

impl<K: CursorKey> Cursor for TimeCursor<K> {
    fn encode(&self) -> String {
        format!("{}_{}", self.at.timestamp_micros(), self.key.encode_key())
    }

    fn decode(raw: &str) -> Option<Self> {
        let (micros, key) = raw.split_once('_')?;
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(TimeCursor {
            at,
            key: K::decode_key(key)?,
        })
    }
}

/// A position before the ledger row of this (positive) sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceCursor(pub i64);

impl Cursor for SequenceCursor {
    fn encode(&self) -> String {
        self.0.to_string()
    }

    fn decode(raw: &str) -> Option<Self> {
        raw.parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(SequenceCursor)
    }
}

/// A validated request for one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// Rows on the page, within the listing's [`Limits`].
    pub limit: i64,
    /// Where the previous page ended; `None` for the first page.
    pub after: Option<C>,
}

impl Limits {
    /// Check a client's `limit` and `cursor` (the limit first).
    pub fn request<C: Cursor>(
        &self,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<PageRequest<C>, PageError> {
        let limit = limit.unwrap_or(self.default);
        if !(1..=self.max).contains(&limit) {
            return Err(PageError::InvalidLimit { max: self.max });
        }
        let after = cursor
            .map(|raw| C::decode(raw).ok_or(PageError::InvalidCursor))
            .transpose()?;
        Ok(PageRequest { limit, after })
    }
}

impl<C> PageRequest<C> {
    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.limit.saturating_add(1)
    }

    /// Cut the fetched `rows` to the page, with the cursor of its last row if more follow.
    pub fn page<T>(&self, mut rows: Vec<T>, cursor_of: impl Fn(&T) -> C) -> Page<T>
    where
        C: Cursor,
    {
        let next_cursor = next_cursor(&mut rows, self.limit, cursor_of);
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// Drop the extra row fetched past `limit`, if any, and name the page's last row as the
/// next cursor; `None` when the rows were the last.
pub fn next_cursor<T, C: Cursor>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> C,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|row| cursor_of(row).encode())
    } else {
        None
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CursorKey for String {
        fn encode_key(&self) -> String {
            self.clone()
        }
        fn decode_key(raw: &str) -> Option<Self> {
            Some(raw.to_string())
        }
    }

    const LIMITS: Limits = Limits { default: 2, max: 5 };

    #[test]
    fn a_time_cursor_reads_back_what_it_wrote() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("a valid time");
        let cursor = TimeCursor {
            at,
            key: "cs_test_1".to_string(),
        };
        assert_eq!(cursor.encode(), "1700000000123456_cs_test_1");
        assert_eq!(TimeCursor::<String>::decode(&cursor.encode()), Some(cursor));
    }

    #[test]
    fn a_sequence_cursor_must_be_a_positive_number() {
        assert_eq!(SequenceCursor::decode("42"), Some(SequenceCursor(42)));
        assert_eq!(SequenceCursor::decode("0"), None);
        assert_eq!(SequenceCursor::decode("abc"), None);
    }

    #[test]
    fn a_limit_outside_its_bounds_is_refused_before_the_cursor_is_read() {
        assert_eq!(
            LIMITS.request::<SequenceCursor>(Some(6), Some("abc")),
            Err(PageError::InvalidLimit { max: 5 })
        );
        assert_eq!(
            LIMITS.request::<SequenceCursor>(Some(0), None),
            Err(PageError::InvalidLimit { max: 5 })
        );
        assert_eq!(
            LIMITS.request::<SequenceCursor>(None, Some("abc")),
            Err(PageError::InvalidCursor)
        );
        assert_eq!(
            LIMITS.request::<SequenceCursor>(None, None),
            Ok(PageRequest {
                limit: 2,
                after: None
            })
        );
    }

    #[test]
    fn the_extra_row_is_dropped_and_names_the_next_page() {
        let request = PageRequest::<SequenceCursor> {
            limit: 2,
            after: None,
        };
        let page = request.page(vec![9, 8, 7], |n| SequenceCursor(*n));
        assert_eq!(page.items, vec![9, 8]);
        assert_eq!(page.next_cursor.as_deref(), Some("8"));
        let last = request.page(vec![9, 8], |n| SequenceCursor(*n));
        assert_eq!(last.next_cursor, None);
    }
}
