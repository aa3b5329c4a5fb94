//! Several chats at once for one connection (the WebSocket): each chat, named by the client,
//! runs as its own task and reports its [`Progress`] through the connection's one outbox.
//! Cancelling a chat, or dropping the session (the client left), drops its [`Submission`],
//! which stops its worker; what was produced is charged. At shutdown the connection waits
//! for its chats ([`ChatSession::running`], [`ChatSession::finished`]) and cuts those still
//! running at the deadline ([`ChatSession::stop_all`]).
//!
//! [`Submission`]: super::Submission

use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::{submit, Chat, ChatFailure, Payer, Progress};
use crate::hub::Hub;

/// Chats one connection may run at once.
pub const CHATS_MAX: usize = 16;

/// What one chat of a session has to say, for the connection to frame and send.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatUpdate {
    /// The client's id for the chat.
    pub chat: String,
    pub progress: Progress,
}

/// The chats of one connection. `M` is the connection's outgoing message, built from each
/// [`ChatUpdate`].
pub struct ChatSession<M> {
    hub: Arc<Hub>,
    payer: Payer,
    out: mpsc::Sender<M>,
    chats: HashMap<String, JoinHandle<()>>,
    /// Told each time a chat ends by itself.
    finished: Arc<Notify>,
}

impl<M: From<ChatUpdate> + Send + 'static> ChatSession<M> {
    pub fn new(hub: Arc<Hub>, payer: Payer, out: mpsc::Sender<M>) -> Self {
        ChatSession {
            hub,
            payer,
            out,
            chats: HashMap::new(),
            finished: Arc::new(Notify::new()),
        }
    }

    /// Starts chat `id`; refused when a chat of that id is still running or too many are.
    pub fn start(&mut self, id: String, chat: Chat) -> Result<(), ChatFailure> {
        self.forget_finished();
        if self.chats.contains_key(&id) {
            return Err(ChatFailure::new(
                "duplicate_id",
                "a chat with this id is running",
                400,
            ));
        }
        if self.chats.len() >= CHATS_MAX {
            return Err(ChatFailure::new(
                "too_many_chats",
                "too many chats at once on this connection",
                429,
            ));
        }
        let chat = run(
            self.hub.clone(),
            self.payer.clone(),
            id.clone(),
            chat,
            self.out.clone(),
        );
        let finished = self.finished.clone();
        // The chat's own span: its log lines name it, and it is the root of its trace.
        let span = tracing::info_span!("chat", chat = %id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                chat.await;
                finished.notify_one();
            },
            span,
        ));
        self.chats.insert(id, task);
        Ok(())
    }

    /// Stops chat `id` if it is still running, and says so to the client.
    pub async fn cancel(&mut self, id: &str) {
        self.forget_finished();
        if let Some(task) = self.chats.remove(id) {
            task.abort();
            let cancelled = ChatFailure::new("cancelled", "cancelled by the client", 499);
            let _ = self.out.send(update(id, Progress::Failed(cancelled))).await;
        }
    }

    /// Chats still running.
    pub fn running(&mut self) -> usize {
        self.forget_finished();
        self.chats.len()
    }

    /// Notified each time a chat ends by itself (a permit is kept when no one waits).
    pub fn finished(&self) -> Arc<Notify> {
        self.finished.clone()
    }

    /// Stops every chat still running and tells the client why, with `failure` for each
    /// (each is charged what it produced).
    pub async fn stop_all(&mut self, failure: &ChatFailure) {
        self.forget_finished();
        for (id, task) in self.chats.drain() {
            task.abort();
            let _ = self
                .out
                .send(update(&id, Progress::Failed(failure.clone())))
                .await;
        }
    }

    fn forget_finished(&mut self) {
        self.chats.retain(|_, task| !task.is_finished());
    }
}

impl<M> Drop for ChatSession<M> {
    /// The client left: stop every chat still running (each is charged what it produced).
    fn drop(&mut self) {
        for (_, task) in self.chats.drain() {
            task.abort();
        }
    }
}

fn update<M: From<ChatUpdate>>(id: &str, progress: Progress) -> M {
    M::from(ChatUpdate {
        chat: id.to_string(),
        progress,
    })
}

/// One chat: submit, then pass each piece of the answer on until the last.
async fn run<M: From<ChatUpdate>>(
    hub: Arc<Hub>,
    payer: Payer,
    id: String,
    chat: Chat,
    out: mpsc::Sender<M>,
) {
    let mut submission = match submit(&hub, &payer, chat).await {
        Ok(submission) => submission,
        Err(err) => {
            let refused = Progress::Failed(ChatFailure::from(&err));
            let _ = out.send(update(&id, refused)).await;
            return;
        }
    };
    loop {
        let progress = submission.progress().await;
        let last = matches!(
            progress,
            Progress::Finished(_) | Progress::Failed(_) | Progress::Lost
        );
        // A closed outbox: the connection is gone; dropping the submission cancels the chat.
        if out.send(update(&id, progress)).await.is_err() || last {
            return;
        }
    }
}
