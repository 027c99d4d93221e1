//! The envelope: what travels on the bus and what is stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{DomainEvent, Error, Result};

/// An event with everything needed to route, store, order and trace it.
///
/// Built from a typed event with [`EventEnvelope::new`] and read back with
/// [`EventEnvelope::decode`].
///
/// ```
/// # use eventsource_core::{DomainEvent, EventEnvelope};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Registered { name: String }
/// # impl DomainEvent for Registered {
/// #     fn event_type(&self) -> &str { "registered" }
/// #     const AGGREGATE_TYPE: &'static str = "user";
/// # }
/// let event = Registered { name: "ada".into() };
/// let envelope = EventEnvelope::new("user-1", 1, &event)?
///     .with_correlation_id("req-42");
/// assert_eq!(envelope.routing_key(), "user.registered");
/// assert_eq!(envelope.decode::<Registered>()?, event);
/// # Ok::<(), eventsource_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Unique id of this event (UUID v7, so ids sort by creation time).
    pub event_id: Uuid,
    /// The event's type, e.g. `Placed`.
    pub event_type: String,
    /// The schema version of `payload`.
    pub schema_version: u32,
    /// The aggregate's type, e.g. `Order`.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The aggregate's version after this event (the first event is 1).
    pub aggregate_version: u64,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// Groups every event caused by one request or workflow.
    pub correlation_id: Option<String>,
    /// The id of the message (command or event) that caused this one.
    pub causation_id: Option<String>,
    /// Free-form string headers: trace context, tenant, user headers.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The serialized event.
    pub payload: serde_json::Value,
}

impl EventEnvelope {
    /// Wraps a typed event for `aggregate_id` at `aggregate_version`.
    ///
    /// Fails with [`Error::Encode`] if the event does not serialize.
    pub fn new<E: DomainEvent>(
        aggregate_id: impl Into<String>,
        aggregate_version: u64,
        event: &E,
    ) -> Result<Self> {
        let payload = serde_json::to_value(event).map_err(|e| Error::Encode {
            event_type: event.event_type().to_owned(),
            reason: e.to_string(),
        })?;
        let mut envelope = Self::from_json(
            E::AGGREGATE_TYPE,
            aggregate_id,
            aggregate_version,
            event.event_type(),
            payload,
        );
        envelope.schema_version = event.schema_version();
        Ok(envelope)
    }

    /// An envelope for an event with no Rust type: its type name and a
    /// JSON payload (schema version 1), for services that publish events
    /// they do not model as types (`INVOICE_CREATED`, a webhook's body).
    ///
    /// ```
    /// use eventsource_core::EventEnvelope;
    ///
    /// let e = EventEnvelope::from_json(
    ///     "Invoice",
    ///     "inv-1",
    ///     1,
    ///     "INVOICE_CREATED",
    ///     serde_json::json!({ "amount_cents": 12_900 }),
    /// );
    /// assert_eq!(e.routing_key(), "Invoice.INVOICE_CREATED");
    /// assert_eq!(e.payload["amount_cents"], 12_900);
    /// ```
    pub fn from_json(
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        aggregate_version: u64,
        event_type: impl Into<String>,
        payload: serde_json::Value,
    ) -> Self {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            aggregate_version,
            occurred_at: Utc::now(),
            correlation_id: None,
            causation_id: None,
            metadata: BTreeMap::new(),
            payload,
        }
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Adds one metadata header.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The routing key `{aggregate_type}.{event_type}` that subscriptions
    /// match patterns against.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.aggregate_type, self.event_type)
    }

    /// The event-store stream this event belongs to: `{aggregate_type}-{aggregate_id}`.
    pub fn stream_name(&self) -> String {
        stream_name(&self.aggregate_type, &self.aggregate_id)
    }

    /// Decodes the payload into a typed event.
    ///
    /// Fails with [`Error::Decode`] when the payload does not deserialize
    /// into `E`, or when it does but the decoded event announces a different
    /// event type than the envelope. A handler that returns this error with
    /// `?` sends the message straight to the dead-letter queue: retrying
    /// cannot make it decode.
    pub fn decode<E: DomainEvent>(&self) -> Result<E> {
        // An older schema version is brought up to date first, by the
        // process-wide steps (see `upcast`).
        self.decode_upcast(crate::upcast::apply(
            &self.aggregate_type,
            &self.event_type,
            self.schema_version,
            &self.payload,
        ))
    }

    /// [`decode`](Self::decode), upcasting an older schema version with
    /// `upcasters` instead of the process-wide steps.
    pub fn decode_with<E: DomainEvent>(&self, upcasters: &crate::upcast::Upcasters) -> Result<E> {
        self.decode_upcast(upcasters.upcast(
            &self.aggregate_type,
            &self.event_type,
            self.schema_version,
            &self.payload,
        ))
    }

    fn decode_upcast<E: DomainEvent>(
        &self,
        upcast: std::result::Result<Option<(serde_json::Value, u32)>, String>,
    ) -> Result<E> {
        let fail = |reason: String| Error::Decode {
            event_id: self.event_id.to_string(),
            event_type: self.event_type.clone(),
            target: std::any::type_name::<E>(),
            reason,
        };
        let newer = |known: u32| Error::NewerVersion {
            event_id: self.event_id.to_string(),
            aggregate_type: self.aggregate_type.clone(),
            event_type: self.event_type.clone(),
            version: self.schema_version,
            known,
            target: std::any::type_name::<E>(),
        };
        // Written by a newer producer: whatever it decodes as, this type
        // does not know what the payload means now. A hand-written impl
        // that overrides only `schema_version()` is asked by its decoded
        // value.
        let maybe_newer = self.schema_version > E::SCHEMA_VERSION;
        // Read from the payload where it lies: a copy of the whole tree
        // (and freeing it) cost more than the reading.
        let decoded = match upcast.map_err(fail)? {
            Some((current, _)) => E::deserialize(current),
            None => E::deserialize(&self.payload),
        };
        let event: E = match decoded {
            Ok(event) => event,
            Err(_) if maybe_newer => return Err(newer(E::SCHEMA_VERSION)),
            Err(e) => return Err(fail(e.to_string())),
        };
        if maybe_newer && event.schema_version() < self.schema_version {
            return Err(newer(event.schema_version()));
        }
        if event.event_type() != self.event_type {
            return Err(fail(format!(
                "payload decodes as event type `{}`",
                event.event_type()
            )));
        }
        Ok(event)
    }
}

/// The stream name of an aggregate: `{aggregate_type}-{aggregate_id}`.
pub fn stream_name(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}-{aggregate_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Account {
        Opened { owner: String },
        Closed,
    }

    impl DomainEvent for Account {
        fn event_type(&self) -> &str {
            match self {
                Account::Opened { .. } => "Opened",
                Account::Closed => "Closed",
            }
        }
        const AGGREGATE_TYPE: &'static str = "Account";
        const SCHEMA_VERSION: u32 = 2;
    }

    #[test]
    fn envelope_carries_event_fields_and_round_trips() {
        let env = EventEnvelope::new(
            "a-1",
            3,
            &Account::Opened {
                owner: "ada".into(),
            },
        )
        .expect("encode")
        .with_causation_id("cmd-1")
        .with_metadata("tenant", "t1");
        assert_eq!(env.event_type, "Opened");
        assert_eq!(env.aggregate_type, "Account");
        assert_eq!(env.schema_version, 2);
        assert_eq!(env.aggregate_version, 3);
        assert_eq!(env.event_id.get_version_num(), 7);
        assert_eq!(env.stream_name(), "Account-a-1");
        assert_eq!(env.metadata.get("tenant").map(String::as_str), Some("t1"));
        let json = serde_json::to_string(&env).expect("serialize");
        let back: EventEnvelope = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, env);
        assert_eq!(
            back.decode::<Account>().expect("decode"),
            Account::Opened {
                owner: "ada".into()
            }
        );
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        name: String,
    }

    impl DomainEvent for Renamed {
        fn event_type(&self) -> &str {
            "Renamed"
        }
        const AGGREGATE_TYPE: &'static str = "Account";
        const SCHEMA_VERSION: u32 = 2;
    }

    /// A payload written at a version newer than the type knows is
    /// `NewerVersion`, whether or not it happens to deserialize; at the
    /// type's own version it decodes.
    #[test]
    fn decode_tells_a_newer_version_from_a_broken_payload() {
        let mut env = EventEnvelope::new("a-1", 1, &Renamed { name: "x".into() }).expect("encode");
        assert_eq!(env.schema_version, 2);
        assert_eq!(env.decode::<Renamed>().expect("v2 knows v2").name, "x");
        env.schema_version = 3;
        let err = env.decode::<Renamed>().expect_err("v3 is newer");
        assert!(
            matches!(
                err,
                Error::NewerVersion {
                    version: 3,
                    known: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("`Account.Renamed`"), "{err}");
        env.payload = serde_json::json!({"full_name": "x"});
        let err = env.decode::<Renamed>().expect_err("v3 in a new shape");
        assert!(matches!(err, Error::NewerVersion { .. }), "{err}");
        env.schema_version = 2;
        let err = env.decode::<Renamed>().expect_err("v2 in a wrong shape");
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn decode_rejects_mismatched_payload_with_typed_error() {
        let mut env = EventEnvelope::new("a-1", 1, &Account::Closed).expect("encode");
        env.payload = serde_json::json!({"type": "Nope"});
        let err = env.decode::<Account>().expect_err("must not decode");
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(err.to_string().contains("Closed"), "{err}");

        let mut env = EventEnvelope::new("a-1", 1, &Account::Closed).expect("encode");
        env.event_type = "Opened".into();
        let err = env.decode::<Account>().expect_err("type mismatch");
        assert!(
            err.to_string()
                .contains("payload decodes as event type `Closed`"),
            "{err}"
        );
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = EventEnvelope::new("a", 1, &Account::Closed).expect("encode");
        let b = EventEnvelope::new("a", 2, &Account::Closed).expect("encode");
        assert!(a.event_id < b.event_id);
    }
}
