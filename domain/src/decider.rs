//! The contract every aggregate keeps: [`Decider`], and the [`Decision`] it returns.
//!
//! An aggregate is a fold of its events ([`Decider::evolve`]) and a pure function from its
//! state and a command to new events ([`Decider::decide`]). Idempotency is part of the
//! contract: a command may carry a key, each event may be written under one, and a repeat
//! of a key returns the first outcome and writes nothing. The state remembers only recent
//! keys; the write side finds older ones in the event store by
//! [`Decider::related_keys`] and hands them back through [`Decider::recall`].
//!
//! The cqrs-es `Aggregate` of each aggregate is written from this contract by
//! `cqrs_aggregate!` (a blanket impl of a foreign trait is not allowed), so the glue
//! between the two exists once.

/// What a command decided: the events to write, or — for a repeated key — the first event
/// written under it (then no events). No events and no replay: the command asked for what
/// already holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<E> {
    pub events: Vec<E>,
    pub replay_of: Option<E>,
}

impl<E> Decision<E> {
    /// Write these events (none: nothing changes).
    pub fn write(events: Vec<E>) -> Self {
        Decision {
            events,
            replay_of: None,
        }
    }

    /// A repeat: write nothing, answer with the first event written under the key.
    pub fn replay(event: E) -> Self {
        Decision {
            events: Vec::new(),
            replay_of: Some(event),
        }
    }

    /// The event a caller wants to hear about: the repeated one, or the last one written.
    pub fn decisive(&self) -> Option<&E> {
        self.replay_of.as_ref().or(self.events.last())
    }
}

/// One aggregate's rules: pure, synchronous, no I/O.
pub trait Decider: Default {
    /// The aggregate's name, stored in every event row and subject: fixed forever.
    const TYPE: &'static str;
    /// Version of the serialized state. Bump when the state changes shape: snapshots of
    /// another version are then ignored and the state is folded from the events again.
    const STATE_VERSION: i32;

    type Command;
    type Event;
    /// A refusal: a rule the command broke, reported to the caller as is.
    type Error;

    /// Decide what `command` does to this state. Pure: the caller writes the events.
    fn decide(&self, command: Self::Command) -> Result<Decision<Self::Event>, Self::Error>;

    /// Apply an event. Only assigns: every check happened in [`Decider::decide`].
    fn evolve(&mut self, event: Self::Event);

    /// Take back into memory keyed events the state no longer remembers (found in the event
    /// store by [`Decider::related_keys`]), so a repeat of an old command is answered as a
    /// repeat. Never changes what the events' fold counts (totals, statuses).
    fn recall(&mut self, events: impl IntoIterator<Item = Self::Event>);

    /// The key under which `event` is unique within its aggregate, if any (the event
    /// store's unique index holds it).
    fn event_key(event: &Self::Event) -> Option<String>;

    /// Keys whose first events decide a repeat of `command` (or why it is refused) when the
    /// state has forgotten them.
    fn related_keys(command: &Self::Command) -> Vec<String>;

    /// Whether `refusal` might be a repeat the state forgot, so the write side recalls the
    /// command's keys from the store and decides again before refusing.
    fn may_be_forgotten(refusal: &Self::Error) -> bool;
}

/// Write cqrs-es's `Aggregate` for a [`Decider`]: `handle` writes what `decide` decided
/// (a repeat writes nothing), `apply` is `evolve`, and the types and name are the
/// decider's.
macro_rules! cqrs_aggregate {
    ($decider:ty) => {
        impl ::cqrs_es::Aggregate for $decider {
            const TYPE: &'static str = <$decider as $crate::Decider>::TYPE;
            type Command = <$decider as $crate::Decider>::Command;
            type Event = <$decider as $crate::Decider>::Event;
            type Error = <$decider as $crate::Decider>::Error;
            type Services = ();

            async fn handle(
                &mut self,
                command: <$decider as $crate::Decider>::Command,
                _services: &(),
                sink: &::cqrs_es::event_sink::EventSink<Self>,
            ) -> ::std::result::Result<(), <$decider as $crate::Decider>::Error> {
                let decision = <$decider as $crate::Decider>::decide(self, command)?;
                for event in decision.events {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: <$decider as $crate::Decider>::Event) {
                <$decider as $crate::Decider>::evolve(self, event);
            }
        }
    };
}

pub(crate) use cqrs_aggregate;
