//! A v1 event published by an old service decodes in a v3 handler,
//! through registered upcasters.

use std::time::Duration;

use eventsource_bus_memory::MemoryBus;
use eventsource_core::upcast::register_upcaster;
use eventsource_core::{handler_for, DomainEvent, EventBus, EventEnvelope, Subscription};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Shipped {
    carrier: String,
    tracking: String,
}

impl DomainEvent for Shipped {
    fn event_type(&self) -> &str {
        "Shipped"
    }
    const AGGREGATE_TYPE: &'static str = "Parcel";
    fn schema_version(&self) -> u32 {
        3
    }
}

#[tokio::test]
async fn a_v1_event_from_an_old_service_decodes_in_a_v3_handler() {
    // v1: {"by": ...}; v2: renamed `carrier`; v3: added `tracking`.
    register_upcaster("Parcel", "Shipped", 1, |mut v| {
        let by = v
            .get_mut("by")
            .map(serde_json::Value::take)
            .ok_or("no `by`")?;
        v["carrier"] = by;
        Ok(v)
    });
    register_upcaster("Parcel", "Shipped", 2, |mut v| {
        v["tracking"] = json!("unknown");
        Ok(v)
    });
    let bus = MemoryBus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _s = bus
        .subscribe(
            Subscription::builder("notify")
                .handler(handler_for(move |e: Shipped, _meta| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(e);
                        Ok(())
                    }
                }))
                .build()
                .expect("valid"),
        )
        .await
        .expect("subscribe");
    let mut old = EventEnvelope::new(
        "p-1",
        1,
        &Shipped {
            carrier: String::new(),
            tracking: String::new(),
        },
    )
    .expect("encode");
    old.schema_version = 1;
    old.payload = json!({ "by": "dhl" });
    bus.publish(&[old]).await.expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("handled within 5 s")
        .expect("open");
    assert_eq!(
        got,
        Shipped {
            carrier: "dhl".into(),
            tracking: "unknown".into()
        }
    );
}
