//! Aggregates in decider style: `handle` decides, `apply` evolves.

use crate::DomainEvent;

/// A consistency boundary whose state is the fold of its events.
///
/// `handle` looks at the current state and a command and decides which
/// events happen (or rejects the command); `apply` evolves the state by one
/// event and must not fail. The [`Repository`](crate::Repository) tracks the
/// id, the version and the events not yet saved.
///
/// Its type (the name its streams and routing keys carry) is the one its
/// event declares ([`DomainEvent::AGGREGATE_TYPE`], `#[event(aggregate =
/// "…")]`): written once, it cannot differ between the two.
///
/// ```
/// use eventsource_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
/// #[event(aggregate = "Counter")]
/// #[serde(tag = "type")]
/// enum CounterEvent { Incremented { by: u32 } }
///
/// #[derive(Default)]
/// struct Counter { value: u32 }
///
/// impl Aggregate for Counter {
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
///
/// An aggregate has no type name of its own to get wrong:
///
/// ```compile_fail,E0438
/// # use eventsource_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize, DomainEvent)]
/// # #[event(aggregate = "Counter")]
/// # struct Incremented;
/// # #[derive(Default)] struct Counter;
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "Countr"; // error: not a member of `Aggregate`
///     type Event = Incremented;
///     type Command = ();
///     type Error = std::io::Error;
///     fn apply(&mut self, _: &Incremented) {}
///     fn handle(&self, _: ()) -> Result<Vec<Incremented>, Self::Error> { Ok(vec![]) }
/// }
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The events it records; their
    /// [`AGGREGATE_TYPE`](DomainEvent::AGGREGATE_TYPE) is the aggregate's
    /// type.
    type Event: DomainEvent;
    /// The commands it accepts. `Clone`, because
    /// [`Repository::execute`](crate::Repository::execute) decides a
    /// command again when another writer saved first (add
    /// `#[derive(Clone)]`).
    type Command: Clone + Send;
    /// Why it rejects a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Evolves the state by one event.
    fn apply(&mut self, event: &Self::Event);

    /// Decides which events a command produces, or rejects it.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}
