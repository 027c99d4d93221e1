//! Publish and handle spans follow the OpenTelemetry messaging semantic
//! conventions, so APM messaging views recognise them. (Its own test
//! binary: it installs a thread's tracing subscriber.)

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_bus_memory::MemoryBus;
use eventsource_core::{handler_fn, EventBus, HandlerError, RetryPolicy, Subscription};
use eventsource_testkit::{probe, SpanCapture};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "current_thread")]
async fn spans_carry_the_messaging_conventions() {
    let capture = SpanCapture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let bus = MemoryBus::new();
    let (tx, mut handled) = mpsc::unbounded_channel();
    let tries = Arc::new(AtomicU32::new(0));
    let sub = Subscription::builder("billing")
        .retry(RetryPolicy::fixed(3, Duration::from_millis(1)).expect("valid"))
        .handler(handler_fn(move |e| {
            let (tx, tries) = (tx.clone(), Arc::clone(&tries));
            async move {
                // Fails once, so the span shows the second attempt.
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::transient("first try fails"));
                }
                let _ = tx.send(e.event_id);
                Ok(())
            }
        }))
        .build()
        .expect("valid");
    let _member = bus.subscribe(sub).await.expect("subscribe");
    let mut event = probe("order-1", 1, 1);
    event.correlation_id = Some("checkout-7".into());
    bus.publish(std::slice::from_ref(&event))
        .await
        .expect("publish");
    tokio::time::timeout(Duration::from_secs(5), handled.recv())
        .await
        .expect("handled")
        .expect("open");
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");

    let publish = &capture.named("eventsource.publish")[0];
    for (field, want) in [
        ("otel.name", "send groups"),
        ("otel.kind", "producer"),
        ("messaging.system", "memory"),
        ("messaging.operation.type", "send"),
        ("messaging.destination.name", "groups"),
        ("messaging.batch.message_count", "1"),
    ] {
        assert_eq!(publish.field(field), Some(want), "{field}: {publish:?}");
    }
    // One span per attempt: the retry is scheduled, not slept inside the
    // first attempt's span.
    let handles = capture.named("eventsource.handle");
    assert_eq!(handles.len(), 2, "a span per attempt: {handles:?}");
    assert_eq!(handles[0].field("attempt"), Some("1"), "{:?}", handles[0]);
    let handle = &handles[1];
    let id = event.event_id.to_string();
    for (field, want) in [
        ("otel.name", "process billing"),
        ("otel.kind", "consumer"),
        ("messaging.system", "memory"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "billing"),
        ("messaging.consumer.group.name", "billing"),
        ("messaging.message.id", id.as_str()),
        ("messaging.message.conversation_id", "checkout-7"),
        ("attempt", "2"),
    ] {
        assert_eq!(handle.field(field), Some(want), "{field}: {handle:?}");
    }
}
