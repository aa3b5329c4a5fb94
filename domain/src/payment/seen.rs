use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

use super::values::StripeId;

/// How many Stripe event ids a payment remembers in its own state. A payment sees a handful
/// of events (completed, async success or failure, a few refunds); older ids are still
/// unique through the event store's index, and the state machine ignores every transition
/// already past, so a forgotten duplicate changes nothing either.
pub const STRIPE_EVENTS_KEPT: usize = 64;

/// The ids of the Stripe events that wrote the most recent events, oldest evicted first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<StripeId>", into = "Vec<StripeId>")]
pub(crate) struct SeenStripeEvents {
    order: VecDeque<StripeId>,
    ids: HashSet<StripeId>,
}

impl SeenStripeEvents {
    pub(crate) fn contains(&self, id: &StripeId) -> bool {
        self.ids.contains(id)
    }

    pub(crate) fn remember(&mut self, id: StripeId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > STRIPE_EVENTS_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

impl From<Vec<StripeId>> for SeenStripeEvents {
    fn from(ids: Vec<StripeId>) -> Self {
        let mut seen = SeenStripeEvents::default();
        for id in ids {
            seen.remember(id);
        }
        seen
    }
}

impl From<SeenStripeEvents> for Vec<StripeId> {
    fn from(seen: SeenStripeEvents) -> Self {
        seen.order.into_iter().collect()
    }
}
