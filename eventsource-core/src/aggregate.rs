//! Aggregates in decider style: `handle` decides, `apply` evolves.

use crate::DomainEvent;

/// A consistency boundary whose state is the fold of its events.
///
/// `handle` looks at the current state and a command and decides which
/// events happen (or rejects the command); `apply` evolves the state by one
/// event and must not fail. The [`Repository`](crate::Repository) tracks the
/// id, the version and the events not yet saved.
///
/// ```
/// use eventsource_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// #[serde(tag = "type")]
/// enum CounterEvent { Incremented { by: u32 } }
/// impl DomainEvent for CounterEvent {
///     fn event_type(&self) -> &str { "Incremented" }
///     fn aggregate_type(&self) -> &str { "Counter" }
/// }
///
/// #[derive(Default)]
/// struct Counter { value: u32 }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "Counter";
///     type Event = CounterEvent;
///     type Command = u32;
///     type Error = std::io::Error;
///     fn apply(&mut self, event: &CounterEvent) {
///         let CounterEvent::Incremented { by } = event;
///         self.value += by;
///     }
///     fn handle(&self, by: u32) -> Result<Vec<CounterEvent>, Self::Error> {
///         Ok(vec![CounterEvent::Incremented { by }])
///     }
/// }
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type, as in [`DomainEvent::aggregate_type`].
    const TYPE: &'static str;
    /// The events it records.
    type Event: DomainEvent;
    /// The commands it accepts.
    type Command: Send;
    /// Why it rejects a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Evolves the state by one event.
    fn apply(&mut self, event: &Self::Event);

    /// Decides which events a command produces, or rejects it.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}
