//! Delivering stored events again to one consumer group
//! ([`EventBus::redeliver`](crate::EventBus::redeliver)): what the copies
//! carry, so that the other groups skip them and an inbox can tell them
//! from the first delivery.

use crate::{EventEnvelope, REPLAYED_FOR};

/// The metadata key of a copy delivered again by a targeted replay: the
/// replay's id. Handlers may read it; an inbox skips a copy of an event
/// it already handled unless the copy also carries [`REPROCESS`].
pub const REPLAY_ID: &str = "eventsource-replay-id";

/// The metadata key (value `"true"`) of a replayed copy meant to be
/// handled again even where the group's inbox has handled the event: an
/// inbox records it under the event id and [`REPLAY_ID`] instead.
pub const REPROCESS: &str = "eventsource-reprocess";

/// `envelope` as a copy for `group` alone: marked
/// [`REPLAYED_FOR`] `group`, which every backend's consumers of other
/// groups skip, and which watches do not show. Backends call it in
/// [`EventBus::redeliver`](crate::EventBus::redeliver).
pub fn copy_for(envelope: &EventEnvelope, group: &str) -> EventEnvelope {
    let mut copy = envelope.clone();
    copy.metadata
        .insert(REPLAYED_FOR.to_owned(), group.to_owned());
    copy
}

/// Whether `envelope` is a targeted replay's copy meant to be handled
/// again ([`REPROCESS`]); its replay id, then.
pub fn reprocessing(envelope: &EventEnvelope) -> Option<&str> {
    let replay = envelope.metadata.get(REPLAY_ID)?;
    (envelope.metadata.get(REPROCESS).map(String::as_str) == Some("true")).then_some(replay)
}
