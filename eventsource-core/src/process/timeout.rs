//! Timeouts as inputs: the event a due timeout delivers to its instance.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::EventEnvelope;

/// The event type of a fired timeout.
pub const TIMEOUT_EVENT_TYPE: &str = "ProcessTimeout";

/// The header naming the timeout on a fired timeout's envelope.
pub const TIMEOUT_HEADER: &str = "es-timeout";

/// The envelope that delivers timeout `name` of instance `instance` of
/// process `process`: event id `id` (the timeout's, so a timeout fired
/// twice is one input), aggregate type `process`, aggregate id and
/// correlation id `instance`, the name in [`TIMEOUT_HEADER`] and the
/// payload.
pub fn timeout_envelope(
    process: &str,
    instance: &str,
    name: &str,
    id: Uuid,
    due_at: DateTime<Utc>,
) -> EventEnvelope {
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert(TIMEOUT_HEADER.to_owned(), name.to_owned());
    EventEnvelope {
        event_id: id,
        event_type: TIMEOUT_EVENT_TYPE.to_owned(),
        schema_version: 1,
        aggregate_type: process.to_owned(),
        aggregate_id: instance.to_owned(),
        aggregate_version: 0,
        occurred_at: due_at,
        correlation_id: Some(instance.to_owned()),
        causation_id: None,
        metadata,
        payload: serde_json::json!({ "name": name }),
    }
}

/// The timeout's name when `input` is a fired timeout.
pub fn timeout_name(input: &EventEnvelope) -> Option<&str> {
    if input.event_type != TIMEOUT_EVENT_TYPE {
        return None;
    }
    input.metadata.get(TIMEOUT_HEADER).map(String::as_str)
}
