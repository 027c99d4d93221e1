//! Forgetting a person on the in-process bus: what it keeps (its dead and
//! parked letters) holds personal data only sealed.

use std::sync::Arc;
use std::time::Duration;

use eventsource_bus_memory::MemoryBus;
use eventsource_core::{DeadLetterQuery, EventBus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_sealed_on_the_bus() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let dlq = bus.dead_letters();
    let raw = move || {
        let dlq = dlq.clone();
        Box::pin(async move {
            let letters = dlq.list(&DeadLetterQuery::all()).await.expect("list");
            serde_json::to_vec(&letters).expect("json")
        }) as _
    };
    eventsource_testkit::personal_data_is_sealed_on_the_bus(bus, &raw, Duration::from_secs(15))
        .await;
}
