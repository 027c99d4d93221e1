//! The message format: CloudEvents 1.0 binary content mode for AMQP — the
//! attributes in `cloudEvents:`-prefixed application properties (headers),
//! the payload as the JSON body.

use std::collections::BTreeMap;

use eventsource_core::wire::cloudevents;
use eventsource_core::EventEnvelope;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

const PREFIX: &str = "cloudEvents:";

fn put(headers: &mut FieldTable, name: &str, value: impl Into<String>) {
    let value: String = value.into();
    headers.insert(
        ShortString::from(format!("{PREFIX}{name}")),
        AMQPValue::LongString(LongString::from(value)),
    );
}

/// Properties (persistent, JSON, message id = event id) and body.
pub(crate) fn encode(envelope: &EventEnvelope, source: &str) -> (BasicProperties, Vec<u8>) {
    let mut h = FieldTable::default();
    for (name, value) in cloudevents::to_attributes(envelope, source) {
        put(&mut h, name, value);
    }
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(envelope.event_id.to_string().into())
        .with_headers(h);
    // AMQP short strings hold 255 bytes; the full values travel in the
    // cloudEvents: headers either way.
    if let Ok(t) = ShortString::try_new(envelope.event_type.clone()) {
        props = props.with_type(t);
    }
    if let Ok(app) = ShortString::try_new(source) {
        props = props.with_app_id(app);
    }
    (props, envelope.payload.to_string().into_bytes())
}

/// Room in a frame for what is not the properties: the frame header and
/// end, the content header's class, weight, body size and flags.
const CONTENT_HEADER_OVERHEAD: usize = 32;

/// About how many bytes the content header frame of a message with
/// `props` takes (an upper bound: every short-string property counted at
/// its longest). AMQP carries all the properties — the headers among them
/// — in one frame, which must fit the negotiated `frame_max`; a larger
/// one is a connection error (FRAME_ERROR) that closes the connection.
pub(crate) fn content_header_size(props: &BasicProperties) -> usize {
    let table = props.headers().as_ref().map_or(0, |h| {
        h.inner()
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
                    AMQPValue::ShortString(s) => 1 + s.as_str().len(),
                    _ => 16,
                };
                1 + k.as_str().len() + 1 + value
            })
            .sum::<usize>()
            + 4
    });
    // Up to 13 short strings of at most 256 bytes, the timestamp and such.
    CONTENT_HEADER_OVERHEAD + table + 13 * 256 + 16
}

/// The headers as text, for dead letters of messages that do not decode.
pub(crate) fn headers_as_text(props: &BasicProperties) -> BTreeMap<String, String> {
    props
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), value_text(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// Decodes a message into an envelope, or says what is wrong.
pub(crate) fn decode(props: &BasicProperties, body: &[u8]) -> Result<EventEnvelope, String> {
    cloudevents::from_attributes(PREFIX, &headers_as_text(props), "body", Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_testkit::probe;

    #[test]
    fn round_trips_in_binary_mode() {
        let env = probe("u-1", 2, 1).with_causation_id("cmd-9").with_metadata(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let (props, body) = encode(&env, "svc");
        let h = headers_as_text(&props);
        assert_eq!(h["cloudEvents:type"], "Created");
        assert_eq!(h["cloudEvents:source"], "svc");
        assert!(h["cloudEvents:traceparent"].starts_with("00-"));
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(decode(&props, &body).expect("decode"), env);
        let err = decode(&props, b"{oops").expect_err("bad body");
        assert!(err.contains("body is not JSON"), "{err}");
        let err = decode(&BasicProperties::default(), &body).expect_err("no headers");
        assert!(err.contains("cloudEvents:id"), "{err}");

        // A type longer than an AMQP short string neither panics nor is lost.
        let long = "é".repeat(200);
        let mut env = env.clone();
        env.event_type = long.clone();
        let (props, body) = encode(&env, &long);
        assert!(props.kind().is_none());
        assert_eq!(decode(&props, &body).expect("decode").event_type, long);
    }
}
