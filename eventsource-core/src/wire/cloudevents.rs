//! The CloudEvents 1.0 attributes of an envelope, for backends that carry
//! them as headers or fields (binary content mode): each backend adds its
//! own prefix (`ce_` on Kafka, `cloudEvents:` on AMQP, none on Redis).

use std::collections::BTreeMap;
use std::convert::Infallible;

use chrono::{DateTime, Utc};

use crate::EventEnvelope;

/// The attributes of `envelope` (without a prefix): `specversion`, `id`,
/// `type`, `source`, `subject` (the aggregate id), `time`, and the
/// extensions `aggregatetype`, `aggregateversion`, `schemaversion`,
/// `correlationid`, `causationid`, `traceparent` (from the metadata, else
/// the current span; see [`crate::trace`]) and
/// `metadata` (all metadata headers as a JSON object). The payload travels
/// as the message body, `datacontenttype` as the backend's content type.
pub fn to_attributes(envelope: &EventEnvelope, source: &str) -> Vec<(&'static str, String)> {
    let mut attributes = Vec::with_capacity(12);
    let Ok(()) = each_attribute::<Infallible>(envelope, source, |name, value| {
        attributes.push((name, value.to_owned()));
        Ok(())
    });
    attributes
}

/// Hands `each` the attributes of [`to_attributes`], in the same order,
/// each value borrowed from the envelope or formatted on the stack: for a
/// backend that writes them straight into its message, without a `String`
/// for each (the id, the versions and the text attributes are not copied).
/// Stops at the first error `each` returns.
pub fn each_attribute<E>(
    envelope: &EventEnvelope,
    source: &str,
    mut each: impl FnMut(&'static str, &str) -> Result<(), E>,
) -> Result<(), E> {
    let mut id = uuid::Uuid::encode_buffer();
    let (mut version, mut schema) = (itoa::Buffer::new(), itoa::Buffer::new());
    each("specversion", "1.0")?;
    each("id", envelope.event_id.hyphenated().encode_lower(&mut id))?;
    each("type", &envelope.event_type)?;
    each("source", source)?;
    each("subject", &envelope.aggregate_id)?;
    let mut time = [0; super::time::LEN];
    match super::time::rfc3339(&envelope.occurred_at, &mut time) {
        Some(time) => each("time", time)?,
        None => each("time", &envelope.occurred_at.to_rfc3339())?,
    }
    each("aggregatetype", &envelope.aggregate_type)?;
    each(
        "aggregateversion",
        version.format(envelope.aggregate_version),
    )?;
    each("schemaversion", schema.format(envelope.schema_version))?;
    if let Some(c) = &envelope.correlation_id {
        each("correlationid", c)?;
    }
    if let Some(c) = &envelope.causation_id {
        each("causationid", c)?;
    }
    // Stamped by the publish pipeline (driver::publish::stamped).
    if let Some(t) = envelope.metadata.get(crate::trace::TRACEPARENT) {
        each("traceparent", t)?;
    }
    if !envelope.metadata.is_empty() {
        let metadata = serde_json::to_string(&envelope.metadata).expect("a string map serializes");
        each("metadata", &metadata)?;
    }
    Ok(())
}

/// Rebuilds an envelope from attributes looked up as `{prefix}{name}` in
/// `attributes` and the JSON `data`; the error says which attribute (or
/// `data_name`) is missing or malformed.
pub fn from_attributes(
    prefix: &str,
    attributes: &BTreeMap<String, String>,
    data_name: &str,
    data: Option<&[u8]>,
) -> Result<EventEnvelope, String> {
    from_lookup(
        prefix,
        |name| {
            attributes
                .get(&format!("{prefix}{name}"))
                .map(String::as_str)
        },
        || {
            let data = data.ok_or_else(|| format!("no {data_name}"))?;
            serde_json::from_slice(data).map_err(|e| format!("{data_name} is not JSON: {e}"))
        },
    )
}

/// Rebuilds an envelope from attributes found by `lookup` (given the
/// name without a prefix) and the payload `payload` gives (asked for once
/// the attributes passed), for a backend that reads the attributes some
/// other way than from a map of strings (NATS parses a structured-mode
/// body straight into its fields). Errors name the attribute as
/// `{prefix}{name}`; a payload error is passed on as it is.
pub fn from_lookup<'a>(
    prefix: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
    payload: impl FnOnce() -> Result<serde_json::Value, String>,
) -> Result<EventEnvelope, String> {
    let get = |name: &str| lookup(name).ok_or_else(|| format!("no `{prefix}{name}` attribute"));
    let bad = |name: &str, e: &dyn std::fmt::Display| format!("`{prefix}{name}` is malformed: {e}");
    let event_id = get("id")?.parse().map_err(|e| bad("id", &e))?;
    let occurred_at: DateTime<Utc> = DateTime::parse_from_rfc3339(get("time")?)
        .map_err(|e| bad("time", &e))?
        .with_timezone(&Utc);
    let schema_version = match lookup("schemaversion") {
        Some(v) => v.parse().map_err(|e| bad("schemaversion", &e))?,
        None => 1,
    };
    let mut metadata: BTreeMap<String, String> = match lookup("metadata") {
        Some(m) => serde_json::from_str(m).map_err(|e| bad("metadata", &e))?,
        None => BTreeMap::new(),
    };
    if let Some(tp) = lookup("traceparent") {
        metadata
            .entry(crate::trace::TRACEPARENT.to_owned())
            .or_insert_with(|| tp.to_owned());
    }
    let payload = payload()?;
    Ok(EventEnvelope {
        event_id,
        event_type: get("type")?.to_owned(),
        schema_version,
        aggregate_type: get("aggregatetype")?.to_owned(),
        aggregate_id: get("subject")?.to_owned(),
        aggregate_version: get("aggregateversion")?
            .parse()
            .map_err(|e| bad("aggregateversion", &e))?,
        occurred_at,
        correlation_id: lookup("correlationid").map(str::to_owned),
        causation_id: lookup("causationid").map(str::to_owned),
        metadata,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Registered {
        name: String,
    }
    impl DomainEvent for Registered {
        fn event_type(&self) -> &str {
            "registered"
        }
        const AGGREGATE_TYPE: &'static str = "user";
    }

    #[test]
    fn round_trips_with_any_prefix_and_names_what_is_wrong() {
        let env = EventEnvelope::new("u-1", 2, &Registered { name: "ada".into() })
            .expect("encode")
            .with_correlation_id("c")
            .with_metadata(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            );
        let attrs: BTreeMap<String, String> = to_attributes(&env, "svc")
            .into_iter()
            .map(|(k, v)| (format!("ce_{k}"), v))
            .collect();
        assert_eq!(attrs["ce_subject"], "u-1");
        assert!(attrs["ce_traceparent"].starts_with("00-"));
        let data = env.payload.to_string();
        assert_eq!(
            from_attributes("ce_", &attrs, "value", Some(data.as_bytes())).expect("decode"),
            env
        );
        let err = from_attributes("ce_", &attrs, "value", Some(b"{")).expect_err("bad data");
        assert!(err.starts_with("value is not JSON"), "{err}");
        let mut broken = attrs.clone();
        broken.insert("ce_id".into(), "nope".into());
        assert!(
            from_attributes("ce_", &broken, "value", Some(data.as_bytes()))
                .expect_err("bad id")
                .contains("`ce_id`")
        );
        let mut broken = attrs.clone();
        broken.remove("ce_time");
        assert!(from_attributes("ce_", &broken, "value", None)
            .expect_err("no time")
            .contains("`ce_time`"));
    }
}
