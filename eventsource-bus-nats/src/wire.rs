//! The message format: CloudEvents 1.0 in structured content mode — the
//! attributes and `data` in one JSON object as the body
//! (`application/cloudevents+json`), with the event id as `Nats-Msg-Id`
//! for the stream's duplicate window. Structured, not binary, mode: a NATS
//! header value cannot hold a line break, and an aggregate id or metadata
//! value may.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use eventsource_core::wire::cloudevents;
use eventsource_core::EventEnvelope;
use serde_json::{Map, Value};

/// The content type of an event's body.
pub(crate) const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The headers (`Nats-Msg-Id`, `content-type`) and body of an envelope.
pub(crate) fn encode(envelope: &EventEnvelope, source: &str) -> (HeaderMap, Vec<u8>) {
    let mut object: Map<String, Value> = cloudevents::to_attributes(envelope, source)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    object.insert("datacontenttype".to_owned(), "application/json".into());
    object.insert("data".to_owned(), envelope.payload.clone());
    let body = serde_json::to_vec(&object).expect("a JSON object serializes");
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        envelope.event_id.to_string().as_str(),
    );
    headers.insert("content-type", CONTENT_TYPE);
    (headers, body)
}

/// Decodes a body into an envelope, or says what is wrong.
pub(crate) fn decode(body: &[u8]) -> Result<EventEnvelope, String> {
    let mut object: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err("the body is not a JSON object".to_owned()),
        Err(e) => return Err(format!("the body is not JSON: {e}")),
    };
    let data = object
        .remove("data")
        .map(|d| serde_json::to_vec(&d).expect("a JSON value serializes"));
    let attributes: BTreeMap<String, String> = object
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect();
    cloudevents::from_attributes("", &attributes, "`data`", data.as_deref())
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
        assert_eq!(decode(&body).expect("decode"), env);
        assert!(decode(b"{x").expect_err("bad").contains("not JSON"));
        assert!(decode(b"[]")
            .expect_err("array")
            .contains("not a JSON object"));
        assert!(decode(br#"{"type":"t"}"#)
            .expect_err("no id")
            .contains("`id`"));
    }
}
