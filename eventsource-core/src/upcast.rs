//! Upcasting: an old event payload is turned into the current shape when
//! it is decoded, so stored events and events from older services keep
//! working after an event type changes.
//!
//! Register one step per schema version, from that version to the next;
//! [`EventEnvelope::decode`](crate::EventEnvelope::decode) applies the
//! chain from the envelope's `schema_version` on. Every path that decodes
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

fn steps() -> &'static RwLock<Steps> {
    static STEPS: OnceLock<RwLock<Steps>> = OnceLock::new();
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
    steps().write().insert(
        (
            aggregate_type.to_owned(),
            event_type.to_owned(),
            from_version,
        ),
        Arc::new(step),
    );
}

/// Applies the registered steps from `version` on. `Ok(None)` when no step
/// starts at `version` (the payload is current); otherwise the upcast
/// payload and its version.
pub(crate) fn apply(
    aggregate_type: &str,
    event_type: &str,
    version: u32,
    payload: &Value,
) -> Result<Option<(Value, u32)>, String> {
    let steps = steps().read();
    let key = |v: u32| (aggregate_type.to_owned(), event_type.to_owned(), v);
    if !steps.contains_key(&key(version)) {
        return Ok(None);
    }
    let (mut payload, mut version) = (payload.clone(), version);
    while let Some(step) = steps.get(&key(version)) {
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
