//! The answers to this process's requests, taken from NATS with one subscription and handed to
//! each waiting request. Subscribing per request would change the server's interest graph
//! twice per request, which costs the server more than the answer.
//!
//! Subject names come from [`hub_nats::Topology`]: this module only holds the inbox it was
//! given.

use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use uuid::Uuid;

/// This process's inbox and the requests waiting on it.
pub struct Replies {
    topology: hub_nats::Topology,
    inbox: String,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Bytes>>>,
}

impl Replies {
    /// Subscribes to a fresh inbox and spawns the task that dispatches its messages.
    pub async fn start(
        nats: &async_nats::Client,
        topology: &hub_nats::Topology,
    ) -> Result<Arc<Replies>, async_nats::SubscribeError> {
        let inbox = topology.inference_reply_inbox(&Uuid::new_v4().simple().to_string());
        let mut subscription = nats
            .subscribe(topology.inference_inbox_replies(&inbox))
            .await?;
        let replies = Arc::new(Replies {
            topology: topology.clone(),
            inbox,
            waiting: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&replies);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(replies) = weak.upgrade() else {
                    break;
                };
                replies.dispatch(message.subject.as_str(), message.payload);
            }
        });
        Ok(replies)
    }

    /// Hands an answer to the request waiting for it.
    fn dispatch(&self, subject: &str, payload: Bytes) {
        let Some(request_id) = self.topology.inference_inbox_request_id(subject) else {
            return;
        };
        let waiting = self
            .waiting
            .lock()
            .ok()
            .and_then(|waiting| waiting.get(request_id).cloned());
        // No one waiting: the client went away and its cancellation is on its way.
        if let Some(sender) = waiting {
            let _ = sender.send(payload);
        }
    }

    /// The reply subject for `request_id`, and its answers until the registration drops.
    pub(crate) fn register(self: &Arc<Self>, request_id: &str) -> Registration {
        let (sender, receiver) = mpsc::unbounded_channel();
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(request_id.to_string(), sender);
        }
        Registration {
            subject: self
                .topology
                .inference_inbox_reply_subject(&self.inbox, request_id),
            answers: receiver,
            replies: self.clone(),
            request_id: request_id.to_string(),
        }
    }
}

/// A request waiting for its answer; dropping it stops the dispatch to it.
pub(crate) struct Registration {
    /// Where the worker sends the answer.
    pub(crate) subject: String,
    /// The answer's chunks, as sent.
    pub(crate) answers: mpsc::UnboundedReceiver<Bytes>,
    replies: Arc<Replies>,
    request_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.replies.waiting.lock() {
            waiting.remove(&self.request_id);
        }
    }
}
