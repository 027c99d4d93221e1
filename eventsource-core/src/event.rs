//! Domain events: the facts an aggregate records.

use serde::{de::DeserializeOwned, Serialize};

/// A typed domain event.
///
/// Usually an enum with one variant per fact. The whole value is serialized
/// with serde into the envelope's `payload`, so decoding it back is
/// `serde_json::from_value` — an internally tagged enum is a good fit.
///
/// Derive it (default feature `derive`): the event type is the variant's
/// (or struct's) name unless renamed, the aggregate type and the schema
/// version come from `#[event(...)]`:
///
/// ```
/// use eventsource_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, DomainEvent)]
/// #[event(aggregate = "Order", version = 2)]
/// #[serde(tag = "type")]
/// enum OrderEvent {
///     Placed { customer: String, total_cents: u64 },
///     #[event(rename = "Dispatched")]
///     Shipped,
/// }
///
/// let shipped = OrderEvent::Shipped;
/// assert_eq!(shipped.event_type(), "Dispatched");
/// assert_eq!(OrderEvent::AGGREGATE_TYPE, "Order");
/// assert_eq!(shipped.schema_version(), 2);
/// ```
///
/// Through the `eventsource` facade (`eventsource::DomainEvent`) the derive
/// is the same, with nothing to add. Written by hand it is:
///
/// ```
/// use eventsource_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// #[serde(tag = "type")]
/// enum OrderEvent {
///     Placed { customer: String, total_cents: u64 },
///     Shipped,
/// }
///
/// impl DomainEvent for OrderEvent {
///     fn event_type(&self) -> &str {
///         match self {
///             OrderEvent::Placed { .. } => "Placed",
///             OrderEvent::Shipped => "Shipped",
///         }
///     }
///     const AGGREGATE_TYPE: &'static str = "Order";
/// }
///
/// assert_eq!(OrderEvent::Shipped.event_type(), "Shipped");
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The type of aggregate that records this event, e.g. `Order`: the
    /// one place it is declared. An [`Aggregate`](crate::Aggregate) takes
    /// its type from its event, so the two cannot differ.
    const AGGREGATE_TYPE: &'static str;

    /// The event's type name, e.g. `Placed`. Together with
    /// [`AGGREGATE_TYPE`](Self::AGGREGATE_TYPE) it forms the routing key
    /// `{aggregate_type}.{event_type}`, so it should not contain `.`.
    fn event_type(&self) -> &str;

    /// The schema version this type writes (default 1); the derive sets
    /// it from `#[event(version = N)]`.
    const SCHEMA_VERSION: u32 = 1;

    /// The schema version of this event's payload (default
    /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION)). Bump it when the payload
    /// changes shape so consumers and snapshots can tell. A hand-written
    /// impl sets [`SCHEMA_VERSION`](Self::SCHEMA_VERSION) rather than
    /// overriding this: consumers judge by it whether an event is newer
    /// than they know ([`Error::NewerVersion`](crate::Error::NewerVersion)).
    fn schema_version(&self) -> u32 {
        Self::SCHEMA_VERSION
    }

    /// Every event type this Rust type can be (default: none listed; the
    /// derive lists a struct's one and an enum's variants), for a
    /// [`SchemaManifest`](crate::manifest::SchemaManifest).
    fn event_types() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }

    /// The personal data this event holds, and whose (default: none).
    /// Events that return some are sealed by a
    /// [`Shredder`](crate::personal::Shredder) before they leave the
    /// process; the derive implements it from `#[personal_data]` and
    /// `#[data_subject]` fields. See [`personal`](crate::personal).
    fn personal_data(&self) -> Option<crate::personal::PersonalData> {
        None
    }
}
