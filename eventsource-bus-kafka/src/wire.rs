//! The record format: CloudEvents 1.0 binary content mode for Kafka — the
//! attributes in `ce_` headers, the payload as the JSON value, the
//! aggregate id as the key.

use std::collections::BTreeMap;

use eventsource_core::wire::cloudevents;
use eventsource_core::EventEnvelope;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Headers (the CloudEvents attributes with `ce_`, and `content-type`)
/// and payload of an envelope.
pub(crate) fn encode(envelope: &EventEnvelope, source: &str) -> (OwnedHeaders, Vec<u8>) {
    let attributes = cloudevents::to_attributes(envelope, source);
    let names: Vec<(String, &str)> = attributes
        .iter()
        .map(|(k, v)| (format!("ce_{k}"), v.as_str()))
        .collect();
    let pairs = names
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .chain([("content-type", "application/json")]);
    (headers(pairs), envelope.payload.to_string().into_bytes())
}

/// Builds owned headers from pairs.
pub(crate) fn headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs.into_iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v),
        })
    })
}

/// Headers as text (binary values lossily).
pub(crate) fn headers_as_text<H: Headers>(h: Option<&H>) -> BTreeMap<String, String> {
    h.map(|h| {
        h.iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    h.value
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default(),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Decodes a record into an envelope, or says what is wrong.
pub(crate) fn decode(
    h: &BTreeMap<String, String>,
    payload: Option<&[u8]>,
) -> Result<EventEnvelope, String> {
    cloudevents::from_attributes("ce_", h, "value", payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_testkit::probe;

    #[test]
    fn round_trips_in_binary_mode() {
        let env = probe("u-1", 2, 1).with_correlation_id("c-1").with_metadata(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let (h, payload) = encode(&env, "svc");
        let text = headers_as_text(Some(&h));
        assert_eq!(text["ce_type"], "Created");
        assert_eq!(text["ce_subject"], "u-1");
        assert!(text["ce_traceparent"].starts_with("00-"));
        assert_eq!(decode(&text, Some(&payload)).expect("decode"), env);
        assert!(decode(&text, Some(b"{x"))
            .expect_err("bad value")
            .contains("value is not JSON"));
        assert!(decode(&BTreeMap::new(), Some(&payload))
            .expect_err("no headers")
            .contains("ce_id"));
    }
}
