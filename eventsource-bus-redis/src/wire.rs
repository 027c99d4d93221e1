//! The stream entry format: CloudEvents 1.0 attributes as entry fields.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use eventsource_core::EventEnvelope;
use redis::Value;

/// Encodes an envelope as stream entry fields.
///
/// `id`, `type`, `source`, `subject` (aggregate id), `time`,
/// `datacontenttype`, the extensions `aggregatetype`, `aggregateversion`,
/// `schemaversion`, `correlationid`, `causationid`, `traceparent`, then
/// `metadata` (a JSON object of the remaining headers) and `data` (the
/// JSON payload).
pub(crate) fn encode(envelope: &EventEnvelope, source: &str) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("specversion", "1.0".to_owned()),
        ("id", envelope.event_id.to_string()),
        ("type", envelope.event_type.clone()),
        ("source", source.to_owned()),
        ("subject", envelope.aggregate_id.clone()),
        ("time", envelope.occurred_at.to_rfc3339()),
        ("datacontenttype", "application/json".to_owned()),
        ("aggregatetype", envelope.aggregate_type.clone()),
        ("aggregateversion", envelope.aggregate_version.to_string()),
        ("schemaversion", envelope.schema_version.to_string()),
    ];
    if let Some(c) = &envelope.correlation_id {
        fields.push(("correlationid", c.clone()));
    }
    if let Some(c) = &envelope.causation_id {
        fields.push(("causationid", c.clone()));
    }
    if let Some(t) = envelope.metadata.get("traceparent") {
        fields.push(("traceparent", t.clone()));
    }
    if !envelope.metadata.is_empty() {
        fields.push((
            "metadata",
            serde_json::to_string(&envelope.metadata).expect("a string map serializes"),
        ));
    }
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
    let get = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| format!("entry has no `{name}` field"))
    };
    let event_id = get("id")?
        .parse()
        .map_err(|e| format!("`id` is not a UUID: {e}"))?;
    let occurred_at: DateTime<Utc> = DateTime::parse_from_rfc3339(get("time")?)
        .map_err(|e| format!("`time` is not RFC 3339: {e}"))?
        .with_timezone(&Utc);
    let aggregate_version = get("aggregateversion")?
        .parse()
        .map_err(|e| format!("`aggregateversion` is not a number: {e}"))?;
    let schema_version = match fields.get("schemaversion") {
        Some(v) => v
            .parse()
            .map_err(|e| format!("`schemaversion` is not a number: {e}"))?,
        None => 1,
    };
    let metadata = match fields.get("metadata") {
        Some(m) => serde_json::from_str(m)
            .map_err(|e| format!("`metadata` is not a JSON string map: {e}"))?,
        None => BTreeMap::new(),
    };
    let payload =
        serde_json::from_str(get("data")?).map_err(|e| format!("`data` is not JSON: {e}"))?;
    Ok(EventEnvelope {
        event_id,
        event_type: get("type")?.clone(),
        schema_version,
        aggregate_type: get("aggregatetype")?.clone(),
        aggregate_id: get("subject")?.clone(),
        aggregate_version,
        occurred_at,
        correlation_id: fields.get("correlationid").cloned(),
        causation_id: fields.get("causationid").cloned(),
        metadata,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsource_core::DomainEvent;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Registered {
        name: String,
    }
    impl DomainEvent for Registered {
        fn event_type(&self) -> &str {
            "registered"
        }
        fn aggregate_type(&self) -> &str {
            "user"
        }
    }

    fn as_map(fields: Vec<(&'static str, String)>) -> BTreeMap<String, String> {
        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn round_trips_with_cloudevents_names() {
        let env = EventEnvelope::new("u-1", 4, &Registered { name: "ada".into() })
            .expect("encode")
            .with_correlation_id("c")
            .with_metadata(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
        let fields = as_map(encode(&env, "svc"));
        assert_eq!(fields["type"], "registered");
        assert_eq!(fields["subject"], "u-1");
        assert_eq!(fields["source"], "svc");
        assert!(fields["traceparent"].starts_with("00-"));
        assert_eq!(decode(&fields).expect("decode"), env);
    }

    #[test]
    fn bad_entries_say_which_field() {
        let env = EventEnvelope::new("u-1", 1, &Registered { name: "x".into() }).expect("encode");
        let mut fields = as_map(encode(&env, "svc"));
        fields.insert("data".into(), "{not json".into());
        assert!(decode(&fields).expect_err("bad data").contains("`data`"));
        fields.remove("id");
        assert!(decode(&fields).expect_err("no id").contains("`id`"));
    }
}
