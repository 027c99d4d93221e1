//! Schemas checked at publish: an event whose payload does not fit its
//! schema is refused with [`Error::InvalidEvent`], before anything of its
//! batch reaches the broker.
//!
//! A schema is the Rust type the payload must deserialize into, plus the
//! rules serde cannot say (an email has an `@`, an age is not negative).
//!
//! ```
//! use std::sync::Arc;
//! use eventsource_core::schema::Schemas;
//! use eventsource_core::{EventBus, EventEnvelope};
//! # use eventsource_core::{BusStats, DeadLetterQueue, Result, ShutdownReport, Subscription, SubscriptionHandle};
//! # struct Nowhere;
//! # #[async_trait::async_trait]
//! # impl EventBus for Nowhere {
//! #     fn backend(&self) -> &'static str { "nowhere" }
//! #     async fn publish(&self, _: &[EventEnvelope]) -> Result<()> { Ok(()) }
//! #     async fn subscribe(&self, _: Subscription) -> Result<SubscriptionHandle> { unimplemented!() }
//! #     fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> { unimplemented!() }
//! #     async fn stats(&self) -> Result<BusStats> { unimplemented!() }
//! #     async fn shutdown(&self, _: std::time::Duration) -> Result<ShutdownReport> { unimplemented!() }
//! # }
//!
//! #[derive(serde::Deserialize)]
//! struct Registered {
//!     email: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let bus: Arc<dyn EventBus> = Arc::new(Nowhere);
//! let bus = Schemas::new()
//!     .typed("user.registered", |r: &Registered| {
//!         if r.email.contains('@') { Ok(()) } else { Err(format!("email `{}` has no @", r.email)) }
//!     })
//!     .check_on(bus);
//! let bad = EventEnvelope::from_json("user", "u-1", 1, "registered", serde_json::json!({ "email": "nope" }));
//! let err = bus.publish(&[bad]).await.unwrap_err();
//! assert!(err.to_string().contains("email `nope` has no @"), "{err}");
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::{
    BusStats, DeadLetterQueue, Error, EventBus, EventEnvelope, GroupStats, Result, ShutdownReport,
    Subscription, SubscriptionHandle,
};

type Check = Arc<dyn Fn(&EventEnvelope) -> std::result::Result<(), String> + Send + Sync>;

/// The schemas of events, by routing key (`{aggregate_type}.{event_type}`).
/// Events of other routing keys pass unchecked.
#[derive(Clone, Default)]
pub struct Schemas {
    checks: HashMap<String, Check>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.checks.keys().collect();
        keys.sort();
        f.debug_struct("Schemas")
            .field("routing_keys", &keys)
            .finish()
    }
}

impl Schemas {
    /// No schemas yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events with `routing_key` must deserialize into `T` (the field
    /// that is missing or of the wrong type is named), then pass `rules`.
    #[must_use]
    pub fn typed<T: DeserializeOwned>(
        mut self,
        routing_key: impl Into<String>,
        rules: impl Fn(&T) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let check: Check = Arc::new(move |event: &EventEnvelope| {
            let value: T =
                serde_json::from_value(event.payload.clone()).map_err(|e| e.to_string())?;
            rules(&value)
        });
        self.checks.insert(routing_key.into(), check);
        self
    }

    /// Checks `event` against its schema, if it has one.
    pub fn check(&self, event: &EventEnvelope) -> Result<()> {
        let routing_key = event.routing_key();
        match self.checks.get(&routing_key) {
            Some(check) => check(event).map_err(|reason| Error::InvalidEvent {
                routing_key,
                aggregate_id: event.aggregate_id.clone(),
                event_id: event.event_id,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// `bus`, with every publish checked first: one invalid event refuses
    /// its whole batch.
    pub fn check_on(self, bus: Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        Arc::new(CheckedBus { schemas: self, bus })
    }
}

/// A bus whose publishes are checked against [`Schemas`]; the rest is the
/// inner bus's.
struct CheckedBus {
    schemas: Schemas,
    bus: Arc<dyn EventBus>,
}

#[async_trait]
impl EventBus for CheckedBus {
    fn backend(&self) -> &'static str {
        self.bus.backend()
    }

    async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
        for event in events {
            self.schemas.check(event)?;
        }
        self.bus.publish(events).await
    }

    async fn publish_shared(&self, events: &[Arc<EventEnvelope>]) -> Result<()> {
        for event in events {
            self.schemas.check(event)?;
        }
        self.bus.publish_shared(events).await
    }

    async fn subscribe(&self, subscription: Subscription) -> Result<SubscriptionHandle> {
        self.bus.subscribe(subscription).await
    }

    fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
        self.bus.dead_letters()
    }

    async fn stats(&self) -> Result<BusStats> {
        self.bus.stats().await
    }

    async fn group_stats(&self, group: &str) -> Result<Option<GroupStats>> {
        self.bus.group_stats(group).await
    }

    async fn watch(&self, filter: crate::EventFilter) -> Result<crate::EventWatch> {
        self.bus.watch(filter).await
    }

    async fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport> {
        self.bus.shutdown(timeout).await
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;

    /// Records what reaches it.
    #[derive(Default)]
    struct Recording(Mutex<Vec<EventEnvelope>>);

    #[async_trait]
    impl EventBus for Recording {
        fn backend(&self) -> &'static str {
            "recording"
        }
        async fn publish(&self, events: &[EventEnvelope]) -> Result<()> {
            self.0.lock().extend_from_slice(events);
            Ok(())
        }
        async fn subscribe(&self, _: Subscription) -> Result<SubscriptionHandle> {
            Err(Error::config("not here"))
        }
        fn dead_letters(&self) -> Arc<dyn DeadLetterQueue> {
            unimplemented!("not used")
        }
        async fn stats(&self) -> Result<BusStats> {
            Err(Error::config("not here"))
        }
        async fn shutdown(&self, _: Duration) -> Result<ShutdownReport> {
            Err(Error::config("not here"))
        }
    }

    #[derive(serde::Deserialize)]
    struct Registered {
        #[allow(dead_code)]
        email: String,
        age: i64,
    }

    fn registered(payload: serde_json::Value) -> EventEnvelope {
        EventEnvelope::from_json("user", "u-1", 1, "registered", payload)
    }

    #[tokio::test]
    async fn one_invalid_event_refuses_its_batch_and_says_why() {
        let recording = Arc::new(Recording::default());
        let bus = Schemas::new()
            .typed("user.registered", |r: &Registered| {
                (r.age >= 0)
                    .then_some(())
                    .ok_or_else(|| "age is negative".to_owned())
            })
            .check_on(Arc::clone(&recording) as Arc<dyn EventBus>);
        let good = registered(serde_json::json!({ "email": "a@b", "age": 3 }));
        let missing = registered(serde_json::json!({ "age": 3 }));
        let negative = registered(serde_json::json!({ "email": "a@b", "age": -1 }));
        let other = EventEnvelope::from_json("order", "o-1", 1, "placed", serde_json::json!(1));
        let err = bus
            .publish(&[good.clone(), missing])
            .await
            .expect_err("missing field");
        assert!(
            matches!(&err, Error::InvalidEvent { routing_key, .. } if routing_key == "user.registered"),
            "{err}"
        );
        assert!(err.to_string().contains("missing field `email`"), "{err}");
        let err = bus
            .publish(std::slice::from_ref(&negative))
            .await
            .expect_err("rule");
        assert!(err.to_string().contains("age is negative"), "{err}");
        let err = bus
            .publish_shared(&[Arc::new(negative)])
            .await
            .expect_err("shared events are checked too");
        assert!(err.to_string().contains("age is negative"), "{err}");
        assert!(
            recording.0.lock().is_empty(),
            "nothing of a refused batch is published"
        );
        bus.publish(&[good, other])
            .await
            .expect("valid, and no schema");
        assert_eq!(recording.0.lock().len(), 2);
    }
}
