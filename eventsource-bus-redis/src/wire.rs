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

/// One stream entry as read: its id and its fields as text, in the
/// entry's order (a map is built only for a dead letter: building one
/// per entry cost about a tenth of the reader's CPU).
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(String, String)>,
}

impl From<redis::streams::StreamId> for Entry {
    fn from(entry: redis::streams::StreamId) -> Self {
        Entry {
            fields: fields_as_text(entry.map),
            id: entry.id,
        }
    }
}

/// An XREAD or XREADGROUP reply, per stream its entries, taken apart
/// without copying: the reply's strings become the entries' (the typed
/// `StreamReadReply` first copies every field into a map of values, which
/// cost a fifth of the reader's CPU per event). RESP2 (an array of
/// `[stream, entries]` pairs) and RESP3 (a map); `Nil` when a BLOCK ran out.
pub(crate) fn read_reply(reply: Value) -> Vec<(String, Vec<Entry>)> {
    let streams: Vec<(Value, Value)> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|pair| match pair {
                Value::Array(pair) => {
                    let mut pair = pair.into_iter();
                    Some((pair.next()?, pair.next()?))
                }
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .map(|(key, entries)| {
            let entries = match entries {
                Value::Array(entries) => entries.into_iter().filter_map(entry).collect(),
                _ => Vec::new(),
            };
            (text(key), entries)
        })
        .collect()
}

/// `[id, [field, value, …]]`; `None` for an entry deleted while pending
/// (its fields are nil).
fn entry(value: Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id = text(parts.next()?);
    let Some(Value::Array(flat)) = parts.next() else {
        return None;
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
        fields.push((text(k), text(v)));
    }
    Some(Entry { id, fields })
}

/// A reply value as text: a bulk string without a copy when it is UTF-8
/// (binary values are replaced lossily).
fn text(value: Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Value::SimpleString(s) => s,
        Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// The entry's fields as text (binary values are replaced lossily),
/// taking the values over rather than copying them, into a map or a list.
pub(crate) fn fields_as_text<C: FromIterator<(String, String)>>(map: HashMap<String, Value>) -> C {
    map.into_iter().map(|(k, v)| (k, text(v))).collect()
}

/// Decodes entry fields into an envelope, or says what is wrong.
pub(crate) fn decode(fields: &BTreeMap<String, String>) -> Result<EventEnvelope, String> {
    decode_by(|name| fields.get(name).map(String::as_str))
}

/// [`decode`] of the fields as read, in order; a field given twice
/// counts as the map would keep it, the last.
pub(crate) fn decode_entry(fields: &[(String, String)]) -> Result<EventEnvelope, String> {
    decode_by(|name| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })
}

fn decode_by<'a>(field: impl Fn(&str) -> Option<&'a str>) -> Result<EventEnvelope, String> {
    let data = field("data");
    cloudevents::from_lookup("", field, || {
        let data = data.ok_or("no field `data`")?;
        serde_json::from_str(data).map_err(|e| format!("field `data` is not JSON: {e}"))
    })
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
        // As read, in order: the same envelope; a field given twice is
        // taken as a map would keep it, the last.
        let mut read: Vec<(String, String)> = fields.into_iter().collect();
        read.insert(0, ("type".into(), "Stale".into()));
        assert_eq!(decode_entry(&read).expect("decode"), env);
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry_value(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(flat)])
    }

    #[test]
    fn a_read_reply_is_taken_apart_in_either_protocol() {
        let entries = || {
            Value::Array(vec![
                entry_value("1-0", &[("type", "Created"), ("data", "{}")]),
                // Deleted while pending: no fields; skipped.
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                entry_value("3-0", &[("type", "Renamed")]),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("ns:events"), entries()])]);
        let resp3 = Value::Map(vec![(bulk("ns:events"), entries())]);
        for reply in [resp2, resp3] {
            let streams = read_reply(reply);
            assert_eq!(streams.len(), 1);
            let (key, got) = &streams[0];
            assert_eq!(key, "ns:events");
            let ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["1-0", "3-0"]);
            let field = |e: &Entry, name: &str| {
                e.fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(field(&got[0], "type").as_deref(), Some("Created"));
            assert_eq!(field(&got[0], "data").as_deref(), Some("{}"));
            assert_eq!(got[1].fields.len(), 1);
        }
        assert!(read_reply(Value::Nil).is_empty(), "a BLOCK that ran out");
    }

    #[test]
    fn bad_entries_say_which_field() {
        let env = probe("u-1", 1, 1);
        let mut fields = as_map(encode(&env, "svc"));
        fields.insert("data".into(), "{not json".into());
        assert!(decode(&fields)
            .expect_err("bad data")
            .contains("field `data` is not JSON"));
        let read: Vec<(String, String)> = fields.clone().into_iter().collect();
        assert!(decode_entry(&read)
            .expect_err("bad data")
            .contains("field `data` is not JSON"));
        fields.remove("id");
        assert!(decode(&fields).expect_err("no id").contains("`id`"));
        let mut fields = as_map(encode(&env, "svc"));
        fields.remove("data");
        assert_eq!(decode(&fields).expect_err("no data"), "no field `data`");
    }
}
