//! Upcasting: an old event payload is turned into the current shape when
//! it is decoded, so stored events and events from older services keep
//! working after an event type changes.
//!
//! Register one step per schema version, from that version to the next;
//! [`EventEnvelope::decode`](crate::EventEnvelope::decode) applies the
//! chain from the envelope's `schema_version` on. The steps registered
//! here are the process's default; [`Upcasters`] holds steps as a value,
//! for [`EventEnvelope::decode_with`](crate::EventEnvelope::decode_with). Every path that decodes
//! goes through it: repository loads (and so snapshots' tails), catch-up
//! projections and bus handlers.
//!
//! ```
//! use eventsource_core::upcast::register_upcaster;
//! use serde_json::json;
//!
//! // v1 had `owner`; v2 calls it `holder`.
//! register_upcaster("Account", "Opened", 1, |mut v| {
//!     let owner = v["owner"].take();
//!     v["holder"] = owner;
//!     Ok(v)
//! });
//! // v3 adds a currency, EUR for everything older.
//! register_upcaster("Account", "Opened", 2, |mut v| {
//!     v["currency"] = json!("EUR");
//!     Ok(v)
//! });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use serde_json::Value;

/// One step: a payload at some version into the next version's shape, or
/// why it cannot be.
type Step = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Steps by (aggregate type, event type, from version).
type Steps = HashMap<(String, String, u32), Step>;

/// A set of upcasting steps as a value: what
/// [`EventEnvelope::decode_with`](crate::EventEnvelope::decode_with)
/// applies, for code that wants its own steps — a test, or two schemas
/// side by side — rather than the process-wide ones that
/// [`register_upcaster`] adds to and
/// [`EventEnvelope::decode`](crate::EventEnvelope::decode) applies.
///
/// ```
/// use eventsource_core::upcast::Upcasters;
///
/// let upcasters = Upcasters::new().with("Account", "Opened", 1, |mut v| {
///     let owner = v["owner"].take();
///     v["holder"] = owner;
///     Ok(v)
/// });
/// assert_eq!(upcasters.len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: Steps,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcasters")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl Upcasters {
    /// No steps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds how a payload of `event_type` (of `aggregate_type`) at schema
    /// version `from_version` becomes version `from_version + 1`; the same
    /// step again replaces it.
    pub fn register<F>(
        &mut self,
        aggregate_type: &str,
        event_type: &str,
        from_version: u32,
        step: F,
    ) where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.steps.insert(
            (
                aggregate_type.to_owned(),
                event_type.to_owned(),
                from_version,
            ),
            Arc::new(step),
        );
    }

    /// [`register`](Self::register), chained.
    #[must_use]
    pub fn with<F>(
        mut self,
        aggregate_type: &str,
        event_type: &str,
        from_version: u32,
        step: F,
    ) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.register(aggregate_type, event_type, from_version, step);
        self
    }

    /// Every step, as `(aggregate type, event type, from version)`, sorted.
    pub fn steps(&self) -> Vec<(String, String, u32)> {
        let mut steps: Vec<_> = self.steps.keys().cloned().collect();
        steps.sort();
        steps
    }

    /// How many steps there are.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Applies the steps from `version` on. `Ok(None)` when no step starts
    /// at `version` (the payload is current); otherwise the upcast payload
    /// and its version.
    pub fn upcast(
        &self,
        aggregate_type: &str,
        event_type: &str,
        version: u32,
        payload: &Value,
    ) -> Result<Option<(Value, u32)>, String> {
        let key = |v: u32| (aggregate_type.to_owned(), event_type.to_owned(), v);
        if !self.steps.contains_key(&key(version)) {
            return Ok(None);
        }
        let (mut payload, mut version) = (payload.clone(), version);
        while let Some(step) = self.steps.get(&key(version)) {
            if version >= MAX_STEPS {
                return Err(format!(
                    "upcasting stopped at schema version {version}: a loop?"
                ));
            }
            payload = step(payload)
                .map_err(|e| format!("upcasting from schema version {version} failed: {e}"))?;
            version += 1;
        }
        Ok(Some((payload, version)))
    }
}

/// The process-wide steps.
fn global() -> &'static RwLock<Upcasters> {
    static STEPS: OnceLock<RwLock<Upcasters>> = OnceLock::new();
    STEPS.get_or_init(Default::default)
}

/// The longest chain followed, against a step registered in a loop.
const MAX_STEPS: u32 = 1_000;

/// Registers, for this process, how a payload of `event_type` (of
/// `aggregate_type`) at schema version `from_version` becomes version
/// `from_version + 1`. Registering the same step again replaces it.
pub fn register_upcaster<F>(aggregate_type: &str, event_type: &str, from_version: u32, step: F)
where
    F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
{
    global()
        .write()
        .register(aggregate_type, event_type, from_version, step);
}

/// A copy of the process-wide steps (for a schema manifest).
pub fn registered() -> Upcasters {
    global().read().clone()
}

/// Applies the process-wide steps (see [`Upcasters::upcast`]).
pub(crate) fn apply(
    aggregate_type: &str,
    event_type: &str,
    version: u32,
    payload: &Value,
) -> Result<Option<(Value, u32)>, String> {
    global()
        .read()
        .upcast(aggregate_type, event_type, version, payload)
}
