use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

use super::events::CreditEvent;

/// How many idempotency keys an account remembers in its own state. Older keys are still
/// unique (the event store's index refuses a second event under one key), and the command
/// layer finds their first outcome there; keeping this small keeps snapshots small.
pub const RECENT_KEYS_MAX: usize = 128;

/// The decisive events of the most recent keyed commands, oldest evicted first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    from = "Vec<(String, CreditEvent)>",
    into = "Vec<(String, CreditEvent)>"
)]
pub(crate) struct RecentOutcomes {
    order: VecDeque<String>,
    by_key: HashMap<String, CreditEvent>,
}

impl RecentOutcomes {
    pub(crate) fn get(&self, key: &str) -> Option<&CreditEvent> {
        self.by_key.get(key)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    pub(crate) fn remember(&mut self, key: String, event: CreditEvent) {
        if self.by_key.insert(key.clone(), event).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_KEYS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.by_key.remove(&oldest);
            }
        }
    }
}

impl From<Vec<(String, CreditEvent)>> for RecentOutcomes {
    fn from(pairs: Vec<(String, CreditEvent)>) -> Self {
        let mut recent = RecentOutcomes::default();
        for (key, event) in pairs {
            recent.remember(key, event);
        }
        recent
    }
}

impl From<RecentOutcomes> for Vec<(String, CreditEvent)> {
    fn from(mut recent: RecentOutcomes) -> Self {
        recent
            .order
            .into_iter()
            .filter_map(|key| recent.by_key.remove(&key).map(|event| (key, event)))
            .collect()
    }
}
