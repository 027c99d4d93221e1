//! The stream entry format: CloudEvents 1.0 attributes as entry fields.

use std::collections::{BTreeMap, HashMap};

use eventsource_core::wire::cloudevents;
use eventsource_core::EventEnvelope;
use redis::Value;

/// Encodes an envelope as stream entry fields: the CloudEvents attributes
/// (see [`eventsource_core::wire::cloudevents`]), `datacontenttype`, and `data`
/// (the JSON payload).
pub(crate) fn encode(envelope: &EventEnvelope, source: &str) -> Vec<(&'static str, String)> {
    let mut fields = cloudevents::to_attributes(envelope, source);
    fields.push(("datacontenttype", "application/json".to_owned()));
    fields.push(("data", envelope.payload.to_string()));
    fields
}

/// The entry's fields as text (binary values are replaced lossily).
pub(crate) fn fields_as_text(map: &HashMap<String, Value>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Decodes entry fields into an envelope, or says what is wrong.
pub(crate) fn decode(fields: &BTreeMap<String, String>) -> Result<EventEnvelope, String> {
    let data = fields.get("data").map(String::as_bytes);
    cloudevents::from_attributes("", fields, "field `data`", data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_testkit::probe;

    fn as_map(fields: Vec<(&'static str, String)>) -> BTreeMap<String, String> {
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn round_trips_with_cloudevents_names() {
        let env = probe("u-1", 4, 1).with_correlation_id("c").with_metadata(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let fields = as_map(encode(&env, "svc"));
        assert_eq!(fields["type"], "Created");
        assert_eq!(fields["subject"], "u-1");
        assert_eq!(fields["source"], "svc");
        assert!(fields["traceparent"].starts_with("00-"));
        assert_eq!(decode(&fields).expect("decode"), env);
    }

    #[test]
    fn bad_entries_say_which_field() {
        let env = probe("u-1", 1, 1);
        let mut fields = as_map(encode(&env, "svc"));
        fields.insert("data".into(), "{not json".into());
        assert!(decode(&fields)
            .expect_err("bad data")
            .contains("field `data` is not JSON"));
        fields.remove("id");
        assert!(decode(&fields).expect_err("no id").contains("`id`"));
    }
}
