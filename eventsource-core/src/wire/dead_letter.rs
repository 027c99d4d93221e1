//! A dead letter's [`Failure`] as message headers (AMQP headers, Kafka
//! headers, Redis stream fields): one spelling for every broker,
//! `x-eventsource-{field}`.
//!
//! Dead letters written before this codec used three spellings: RabbitMQ
//! the same `x-eventsource-` names (with the routing key apart from the
//! source), Kafka `eventsource_{snake_case}` (with topic, partition and
//! offset apart), Redis bare `snake_case` fields. [`decode`] reads all of
//! them, so letters already stored still list and replay.

use chrono::{DateTime, Utc};

use crate::{DeadLetter, EventEnvelope, Failure, FailureKind};

/// The prefix of every header this codec writes.
pub const PREFIX: &str = "x-eventsource-";

/// The header saying whether the dead letter's body is the event
/// (`true`) or the raw message that did not decode (`false`).
pub const DECODED: &str = "x-eventsource-decoded";

/// Kafka's former prefix, still read.
const OLD_KAFKA_PREFIX: &str = "eventsource_";

/// Whether `name` is one of this codec's headers, in any spelling but the
/// bare Redis one (Redis keeps the raw message apart from its fields):
/// what replay strips before the message goes back.
pub fn is_failure_header(name: &str) -> bool {
    name.starts_with(PREFIX) || name.starts_with(OLD_KAFKA_PREFIX)
}

/// The headers for `failure`; `decoded` says whether the body is the event.
pub fn encode(failure: &Failure, decoded: bool) -> Vec<(String, String)> {
    let mut headers = vec![
        ("error", failure.error.clone()),
        ("kind", failure.kind.as_str().to_owned()),
        ("attempts", failure.attempts.to_string()),
        ("first-failed-at", failure.first_failed_at.to_rfc3339()),
        ("last-failed-at", failure.last_failed_at.to_rfc3339()),
        ("group", failure.group.clone()),
        ("source", failure.source.clone()),
        ("decoded", decoded.to_string()),
    ];
    if let Some(handler) = &failure.handler {
        headers.push(("handler", handler.clone()));
    }
    headers
        .into_iter()
        .map(|(name, value)| (format!("{PREFIX}{name}"), value))
        .collect()
}

/// A header this codec needs was missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingHeader(pub String);

impl std::fmt::Display for MissingHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "header `{}{}` missing or malformed", PREFIX, self.0)
    }
}

impl std::error::Error for MissingHeader {}

/// Reads a [`Failure`] and the `decoded` flag back from headers, in the
/// current spelling or a former one; `get` looks a header up by name.
/// Without a `decoded` header (former Redis letters), `decoded_default`.
pub fn decode<'h>(
    get: impl Fn(&str) -> Option<&'h str>,
    decoded_default: bool,
) -> Result<(Failure, bool), MissingHeader> {
    // `first-failed-at` -> x-eventsource-first-failed-at, eventsource_first_failed_at, first_failed_at
    let find = |name: &str| {
        let snake = name.replace('-', "_");
        get(&format!("{PREFIX}{name}"))
            .or_else(|| get(&format!("{OLD_KAFKA_PREFIX}{snake}")))
            .or_else(|| get(&snake))
    };
    let missing = |name: &str| MissingHeader(name.to_owned());
    let text = |name: &str| find(name).map(str::to_owned).ok_or_else(|| missing(name));
    let time = |name: &str| -> Result<DateTime<Utc>, MissingHeader> {
        find(name)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| missing(name))
    };
    let decoded = match find("decoded") {
        Some(d) => d == "true",
        None => decoded_default,
    };
    let source = match (find("source"), find("routing-key")) {
        // Former RabbitMQ letters: the queue, and the routing key apart.
        (Some(queue), Some(key)) => format!("{queue} ({key})"),
        (Some(source), None) => source.to_owned(),
        // Former Kafka letters: topic, partition and offset apart.
        (None, _) => format!(
            "{}[{}]@{}",
            text("topic").map_err(|_| missing("source"))?,
            text("partition")?,
            text("offset")?
        ),
    };
    let kind = match find("kind") {
        Some(k) => FailureKind::parse(k).ok_or_else(|| missing("kind"))?,
        None if decoded => FailureKind::Exhausted,
        None => FailureKind::Undecodable,
    };
    let failure = Failure {
        error: text("error")?,
        kind,
        attempts: text("attempts")?.parse().map_err(|_| missing("attempts"))?,
        first_failed_at: time("first-failed-at")?,
        last_failed_at: time("last-failed-at")?,
        group: text("group")?,
        source,
        handler: find("handler").map(str::to_owned),
    };
    Ok((failure, decoded))
}

/// A stored letter as the DLQ lists it, from a backend's reading of it:
/// its failure from the headers `get` looks up ([`decode`]), and, where
/// they say the body is the event, that event (`event`). A message that
/// did not decode is shown by its raw fields without the failure headers;
/// a letter that cannot be read (headers missing or malformed, an event
/// that no longer decodes) is [`FailureKind::Unreadable`] with all its raw
/// fields, dated `at` — never an error that would hide its group's other
/// letters. `raw` renders the raw fields that its argument keeps.
pub fn read_letter<'h>(
    id: String,
    group: &str,
    get: impl Fn(&str) -> Option<&'h str>,
    event: impl FnOnce() -> Result<EventEnvelope, String>,
    raw: impl Fn(&dyn Fn(&str) -> bool) -> String,
    at: impl FnOnce() -> DateTime<Utc>,
) -> DeadLetter {
    let read = decode(get, false)
        .map_err(|e| e.to_string())
        .and_then(|(failure, decoded)| {
            let envelope = if decoded {
                Some(event().map_err(|e| format!("the event does not decode: {e}"))?)
            } else {
                None
            };
            Ok((failure, envelope))
        });
    match read {
        Ok((failure, Some(envelope))) => DeadLetter::event(id, envelope, failure),
        Ok((failure, None)) => DeadLetter::raw(id, raw(&|k| !is_failure_header(k)), failure),
        Err(reason) => {
            let failure = Failure::unreadable(group, &id, reason, at());
            DeadLetter::raw(id, raw(&|_| true), failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn failure() -> Failure {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .expect("time")
            .with_timezone(&Utc);
        Failure {
            error: "boom".into(),
            kind: FailureKind::Permanent,
            attempts: 3,
            first_failed_at: at,
            last_failed_at: at + chrono::Duration::seconds(2),
            group: "billing".into(),
            source: "orders:events/1-0".into(),
            handler: Some("app::Billing".into()),
        }
    }

    fn decode_map(
        m: &BTreeMap<String, String>,
        default: bool,
    ) -> Result<(Failure, bool), MissingHeader> {
        decode(|k| m.get(k).map(String::as_str), default)
    }

    #[test]
    fn round_trips_in_one_spelling() {
        let headers: BTreeMap<String, String> = encode(&failure(), false).into_iter().collect();
        assert!(headers
            .keys()
            .all(|k| k.starts_with(PREFIX) && is_failure_header(k)));
        assert_eq!(decode_map(&headers, true), Ok((failure(), false)));
    }

    #[test]
    fn reads_former_spellings() {
        let f = failure();
        let common = |prefix: &str, sep: &str| -> BTreeMap<String, String> {
            [
                ("error", "boom".to_owned()),
                ("attempts", "3".to_owned()),
                ("first?failed?at", f.first_failed_at.to_rfc3339()),
                ("last?failed?at", f.last_failed_at.to_rfc3339()),
                ("group", "billing".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{}", k.replace('?', sep)), v))
            .collect()
        };
        let expect = |source: &str, kind| Failure {
            kind,
            source: source.into(),
            handler: None,
            ..failure()
        };
        // RabbitMQ: same prefix, routing key apart, a decoded flag.
        let mut rabbit = common("x-eventsource-", "-");
        rabbit.insert("x-eventsource-source".into(), "ns.billing".into());
        rabbit.insert("x-eventsource-routing-key".into(), "Order.Placed".into());
        rabbit.insert("x-eventsource-decoded".into(), "true".into());
        assert_eq!(
            decode_map(&rabbit, false),
            Ok((
                expect("ns.billing (Order.Placed)", FailureKind::Exhausted),
                true
            ))
        );
        // Kafka: eventsource_ prefix, topic/partition/offset apart.
        let mut kafka = common("eventsource_", "_");
        for (k, v) in [("topic", "ns.events"), ("partition", "2"), ("offset", "41")] {
            kafka.insert(format!("eventsource_{k}"), v.into());
        }
        kafka.insert("eventsource_decoded".into(), "false".into());
        assert_eq!(
            decode_map(&kafka, true),
            Ok((expect("ns.events[2]@41", FailureKind::Undecodable), false))
        );
        // Redis: bare fields, no decoded flag (the body field says).
        let mut redis = common("", "_");
        redis.insert("source".into(), "orders:events/1-0".into());
        assert_eq!(
            decode_map(&redis, true),
            Ok((expect("orders:events/1-0", FailureKind::Exhausted), true))
        );
    }

    #[test]
    fn names_the_header_that_is_missing() {
        let mut headers: BTreeMap<String, String> = encode(&failure(), true).into_iter().collect();
        headers.insert(format!("{PREFIX}attempts"), "many".into());
        let err = decode_map(&headers, true).expect_err("malformed");
        assert_eq!(
            err.to_string(),
            "header `x-eventsource-attempts` missing or malformed"
        );
    }
}
