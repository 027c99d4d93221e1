//! A dead letter as a message: the one written to a group's DLQ queue
//! (the event or raw message with the failure headers), the letter read
//! back from one, and the message that replays it.

use std::collections::BTreeMap;

use eventsource_core::driver::Letter;
use eventsource_core::wire::dead_letter;
use eventsource_core::{DeadLetter, Failure};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::client::Outgoing;
use crate::{wire, RabbitBusConfig};

/// A message that did not decode, as it came: its properties and body.
pub(crate) struct RawMessage {
    pub(crate) properties: BasicProperties,
    pub(crate) body: Vec<u8>,
}

/// What a dead letter carries: the event, or the message that did not decode.
pub(crate) type LetterToWrite = Letter<RawMessage>;

/// The message that goes to `group`'s DLQ: the original (re-encoded) event
/// or raw message, with the failure in the core codec's headers and a
/// fresh message id, the dead letter's id.
pub(crate) fn dead_letter_message<'a>(
    config: &RabbitBusConfig,
    body: &LetterToWrite,
    failure: &Failure,
    dlq: &'a str,
) -> Outgoing<'a> {
    let (properties, payload) = match body {
        Letter::Event(e) => wire::encode(e, &config.source),
        Letter::Raw(raw) => (raw.properties.clone(), raw.body.clone()),
    };
    let mut h = properties.headers().clone().unwrap_or_default();
    let decoded = matches!(body, Letter::Event(_));
    for (name, value) in dead_letter::encode(failure, decoded) {
        h.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    let properties = properties
        .with_headers(h)
        .with_delivery_mode(2)
        .with_message_id(uuid::Uuid::now_v7().to_string().into());
    Outgoing {
        // The default exchange routes by queue name: straight to this DLQ.
        exchange: "",
        routing_key: dlq.to_owned(),
        properties,
        body: payload,
    }
}

/// The id of a letter stored without a message id: a name-based UUID
/// (v5) of its headers and body, the same at every listing.
fn content_id(headers: &BTreeMap<String, String>, body: &[u8]) -> String {
    let mut content = serde_json::to_vec(headers).expect("a string map serializes");
    content.push(0);
    content.extend_from_slice(body);
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &content).to_string()
}

/// A letter as stored; one whose headers or event cannot be read is
/// listed as [`FailureKind::Unreadable`](eventsource_core::FailureKind::Unreadable)
/// with its raw headers and body, never an error that hides the group's
/// others.
pub(super) fn parse_letter(group: &str, properties: &BasicProperties, body: &[u8]) -> DeadLetter {
    let h = wire::headers_as_text(properties);
    // A message without an id (put there by another tool) gets one from
    // its content: stable across listings, so it can be shown, replayed
    // and deleted like any other.
    let id = properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| content_id(&h, body));
    let raw_of = |keep: &dyn Fn(&str) -> bool| {
        let raw: BTreeMap<&str, String> = [("body", String::from_utf8_lossy(body).into_owned())]
            .into_iter()
            .chain(
                h.iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.as_str(), v.clone())),
            )
            .collect();
        serde_json::to_string(&raw).expect("a string map serializes")
    };
    dead_letter::read_letter(
        format!("{group}/{id}"),
        group,
        |k| h.get(k).map(String::as_str),
        || wire::decode(properties, body).map_err(|e| e.to_string()),
        raw_of,
        || {
            properties
                .timestamp()
                .and_then(|t| i64::try_from(t).ok())
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .unwrap_or_else(chrono::Utc::now)
        },
    )
}

/// The message that replays `letter` (stored with `properties` and
/// `body`): the event marked as replayed (see `REPLAYED_FROM`), or a
/// message that did not decode as it came, to the group's queue — in
/// partitioned mode, to the queue of its aggregate's partition.
pub(super) fn replay_message(
    config: &RabbitBusConfig,
    group: &str,
    letter: &DeadLetter,
    properties: &BasicProperties,
    body: &[u8],
) -> Outgoing<'static> {
    let (properties, body) = match letter.replayed_envelope() {
        Some(envelope) => wire::encode(&envelope, &config.source),
        None => {
            let h = properties.headers().clone().unwrap_or_default();
            let cleaned: BTreeMap<ShortString, AMQPValue> = h
                .inner()
                .iter()
                .filter(|(k, _)| !dead_letter::is_failure_header(k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (
                properties.clone().with_headers(FieldTable::from(cleaned)),
                body.to_vec(),
            )
        }
    };
    let queue = match (config.partitions, letter.envelope()) {
        (Some(n), Some(event)) => config.partition_queue(
            group,
            eventsource_core::partition_of(&event.aggregate_id, n),
        ),
        (Some(_), None) => config.partition_queue(group, 0),
        (None, _) => config.queue(group),
    };
    Outgoing {
        exchange: "",
        routing_key: queue,
        properties,
        body,
    }
}
