//! The clock every time-based decision reads, passed in so tests can move time instead of
//! sleeping through it.
//!
//! Aggregates never read a clock: the time a rule is checked against comes in with the
//! command (`now`), and the command is built by a caller that holds a [`Clock`].

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tells the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock: what production runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock moved ahead by an offset that only grows: time still flows, and a test
/// can jump over a lifetime (a token's, a code's, a reservation's) with [`advance`].
///
/// [`advance`]: ShiftedClock::advance
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_ms: AtomicI64,
}

impl ShiftedClock {
    pub fn new() -> Arc<ShiftedClock> {
        Arc::new(ShiftedClock::default())
    }

    /// Move this clock `by` ahead of where it was.
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(by_ms, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst));
        Utc::now() + offset
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_clock_runs_ahead_by_what_it_was_advanced() {
        let clock = ShiftedClock::new();
        let before = Utc::now();
        clock.advance(Duration::from_secs(3_600));
        let shifted = clock.now();
        assert!(shifted >= before + chrono::Duration::seconds(3_600));
        assert!(shifted < Utc::now() + chrono::Duration::seconds(3_601));
    }
}
