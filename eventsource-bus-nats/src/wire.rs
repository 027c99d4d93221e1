//! The message format: CloudEvents 1.0 in structured content mode — the
//! attributes and `data` in one JSON object as the body
//! (`application/cloudevents+json`), with the event id as `Nats-Msg-Id`
//! for the stream's duplicate window. Structured, not binary, mode: a NATS
//! header value cannot hold a line break, and an aggregate id or metadata
//! value may.

use std::borrow::Cow;
use std::collections::BTreeMap;

use async_nats::{HeaderMap, HeaderName};
use eventsource_core::wire::cloudevents;
use eventsource_core::EventEnvelope;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The content type of an event's body.
pub(crate) const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The headers (`Nats-Msg-Id`, `content-type`) and body of an envelope.
pub(crate) fn encode(envelope: &EventEnvelope, source: &str) -> (HeaderMap, Vec<u8>) {
    (headers(envelope), body(envelope, source))
}

/// The body of an envelope: CloudEvents JSON, structured mode.
pub(crate) fn body(envelope: &EventEnvelope, source: &str) -> Vec<u8> {
    // Room for a small event at once, not grown step by step from
    // serde_json's 128 bytes as the attributes are written.
    let mut body = Vec::with_capacity(BODY_CAPACITY);
    serde_json::to_writer(&mut body, &Outgoing { envelope, source })
        .expect("strings and a JSON value serialize");
    body
}

/// A body's first capacity: an event with short ids, a small payload and
/// no metadata takes 300 to 400 bytes.
const BODY_CAPACITY: usize = 512;

/// The headers of an envelope's message: its id as `Nats-Msg-Id` (the
/// stream's duplicate window) and the structured mode's `content-type`.
pub(crate) fn headers(envelope: &EventEnvelope) -> HeaderMap {
    // A name made once, not checked and copied for each message; the id
    // moved in, not copied again.
    const CONTENT_TYPE_HEADER: HeaderName = HeaderName::from_static("content-type");
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        envelope.event_id.to_string(),
    );
    headers.insert(CONTENT_TYPE_HEADER, CONTENT_TYPE);
    headers
}

/// A structured-mode body as written: the attributes, each written
/// straight from the envelope ([`cloudevents::each_attribute`]), then
/// `data` (the envelope's payload, serialized in place).
struct Outgoing<'a> {
    envelope: &'a EventEnvelope,
    source: &'a str,
}

impl Serialize for Outgoing<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        cloudevents::each_attribute(self.envelope, self.source, |name, value| {
            map.serialize_entry(name, value)
        })?;
        map.serialize_entry("datacontenttype", "application/json")?;
        map.serialize_entry("data", &self.envelope.payload)?;
        map.end()
    }
}

/// A structured-mode body as read: the attributes an envelope needs
/// (borrowed from the body where they hold no escapes) and `data` parsed
/// once, straight into the payload; other attributes are skipped.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(borrow, default)]
    time: Option<Text<'a>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<Text<'a>>,
    #[serde(borrow, default)]
    subject: Option<Text<'a>>,
    #[serde(borrow, default)]
    aggregatetype: Option<Text<'a>>,
    #[serde(borrow, default)]
    aggregateversion: Option<Text<'a>>,
    #[serde(borrow, default)]
    schemaversion: Option<Text<'a>>,
    #[serde(borrow, default)]
    correlationid: Option<Text<'a>>,
    #[serde(borrow, default)]
    causationid: Option<Text<'a>>,
    #[serde(borrow, default)]
    traceparent: Option<Text<'a>>,
    #[serde(borrow, default)]
    metadata: Option<Text<'a>>,
    /// `Some(Value::Null)` for `"data": null`, `None` when absent.
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
}

/// An attribute's value, borrowed from the body unless it holds an
/// escape. (Serde borrows a `Cow<str>` field only where the field's type
/// is the `Cow` itself; inside an `Option` every value would be copied
/// into a `String` of its own.)
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Incoming<'_> {
    fn attribute(&self, name: &str) -> Option<&str> {
        let value = match name {
            "id" => &self.id,
            "time" => &self.time,
            "type" => &self.event_type,
            "subject" => &self.subject,
            "aggregatetype" => &self.aggregatetype,
            "aggregateversion" => &self.aggregateversion,
            "schemaversion" => &self.schemaversion,
            "correlationid" => &self.correlationid,
            "causationid" => &self.causationid,
            "traceparent" => &self.traceparent,
            "metadata" => &self.metadata,
            _ => return None,
        };
        value.as_ref().map(|text| text.0.as_ref())
    }
}

/// Decodes a body into an envelope, or says what is wrong.
pub(crate) fn decode(body: &[u8]) -> Result<EventEnvelope, String> {
    // (A struct also deserializes from a JSON array, field by field.)
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<Value>(body).is_ok() {
        return Err("the body is not a JSON object".to_owned());
    }
    // Checked as UTF-8 once, whole: parsed from a `str`, serde_json does
    // not check each string again (from bytes it checks every one, and
    // that was a fifth of the parse).
    let body = std::str::from_utf8(body)
        .map_err(|e| format!("the body is not JSON: it is not UTF-8 ({e})"))?;
    let mut incoming: Incoming<'_> = match serde_json::from_str(body) {
        Ok(incoming) => incoming,
        Err(e) if e.is_syntax() || e.is_eof() => return Err(format!("the body is not JSON: {e}")),
        Err(e) => return Err(format!("the body is not a CloudEvent in JSON: {e}")),
    };
    let data = incoming.data.take();
    cloudevents::from_lookup(
        "",
        |name| incoming.attribute(name),
        || data.ok_or_else(|| "no `data`".to_owned()),
    )
}

/// Headers as text (the last value of each).
pub(crate) fn headers_as_text(headers: Option<&HeaderMap>) -> BTreeMap<String, String> {
    headers
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.last()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_testkit::probe;

    #[test]
    fn round_trips_in_structured_mode_line_breaks_included() {
        let env = probe("u-1\r\nx", 2, 1)
            .with_correlation_id("c-1")
            .with_metadata("note", "two\nlines");
        let (headers, body) = encode(&env, "svc");
        assert_eq!(
            headers_as_text(Some(&headers))["Nats-Msg-Id"],
            env.event_id.to_string()
        );
        assert_eq!(
            headers_as_text(Some(&headers))["content-type"],
            CONTENT_TYPE
        );
        assert_eq!(decode(&body).expect("decode"), env);
        assert!(decode(b"{x").expect_err("bad").contains("not JSON"));
        // Invalid UTF-8 inside a string is refused as not JSON, as
        // `from_slice` refused it, though the parse now runs on a `str`.
        let mut latin1 = body.clone();
        let at = latin1.windows(3).position(|w| w == b"u-1").expect("the id");
        latin1[at] = 0xE9;
        assert!(decode(&latin1)
            .expect_err("not UTF-8")
            .contains("not JSON: it is not UTF-8"));
        assert!(decode(b"[]")
            .expect_err("array")
            .contains("not a JSON object"));
        assert!(decode(br#"{"id":1}"#)
            .expect_err("a number")
            .contains("not a CloudEvent"));
        assert!(decode(br#"{"type":"t"}"#)
            .expect_err("no id")
            .contains("`id`"));
    }

    #[test]
    fn attributes_are_borrowed_from_the_body_unless_escaped() {
        let incoming: Incoming<'_> =
            serde_json::from_str(r#"{"id":"e-1","subject":"two\nlines"}"#).expect("parse");
        assert!(matches!(incoming.id.expect("id").0, Cow::Borrowed("e-1")));
        assert!(matches!(
            incoming.subject.expect("subject").0,
            Cow::Owned(ref s) if s == "two\nlines"
        ));
    }
}
