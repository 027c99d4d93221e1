//! Trace context crosses NATS: the testkit's scenario (its own test
//! binary: it installs the global tracing subscriber).

mod common;

use std::sync::Arc;

use eventsource_core::EventBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_span_joins_the_publishers_trace() {
    let bus = common::connect(common::config(&common::nats_url())).await;
    eventsource_testkit::handler_span_joins_the_publishers_trace(Arc::new(bus) as Arc<dyn EventBus>)
        .await;
}
