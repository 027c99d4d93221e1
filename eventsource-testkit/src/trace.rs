//! Trace context crosses the broker (feature `trace`): a handler's span
//! belongs to the trace of the span that published the event, and a
//! replayed dead letter's to that trace too. Every broker backend runs it
//! in a test binary of its own (it installs the global subscriber).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventsource_core::{
    handler_fn, DeadLetterQuery, EventBus, HandlerError, RetryPolicy, Subscription,
};
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::fixtures::{dead_letters_of, probe};

fn trace_id_of(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

/// Installs the global `tracing` subscriber with an OpenTelemetry layer
/// (run it in a test binary of its own), then on `bus`: a handler's
/// `eventsource.handle` span is in the trace of the span that published
/// the event, whose `traceparent` the envelope carries; and a dead letter
/// keeps that context, so its replay is handled in the same trace.
pub async fn handler_span_joins_the_publishers_trace(bus: Arc<dyn EventBus>) {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("eventsource-test")));
    tracing::subscriber::set_global_default(subscriber)
        .expect("first and only subscriber of this binary");

    let (tx, mut seen) = mpsc::unbounded_channel();
    bus.subscribe(
        Subscription::builder("traced")
            .handler(handler_fn(move |e| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((
                        trace_id_of(&tracing::Span::current()),
                        e.metadata.get("traceparent").cloned(),
                    ));
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");
    // A group that fails the event until it is fixed, then handles its replay.
    let fixed = Arc::new(AtomicBool::new(false));
    let (replay_tx, mut replayed) = mpsc::unbounded_channel();
    let f = Arc::clone(&fixed);
    bus.subscribe(
        Subscription::builder("traced-later")
            .retry(RetryPolicy::no_retry())
            .handler(handler_fn(move |_e| {
                let (tx, f) = (replay_tx.clone(), Arc::clone(&f));
                async move {
                    if !f.load(Ordering::SeqCst) {
                        return Err(HandlerError::transient("not fixed yet"));
                    }
                    let _ = tx.send(trace_id_of(&tracing::Span::current()));
                    Ok(())
                }
            }))
            .build()
            .expect("valid"),
    )
    .await
    .expect("subscribe");

    let request = tracing::info_span!("http.request");
    let publisher_trace = trace_id_of(&request);
    assert_ne!(
        publisher_trace, "00000000000000000000000000000000",
        "the test subscriber makes real traces"
    );
    bus.publish(&[probe("agg-1", 1, 1)])
        .instrument(request)
        .await
        .expect("publish");

    let (handler_trace, traceparent) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("handled")
        .expect("open");
    let traceparent = traceparent.expect("the envelope carries the traceparent");
    assert!(traceparent.contains(&publisher_trace), "{traceparent}");
    assert_eq!(
        handler_trace, publisher_trace,
        "the handle span is in the publisher's trace"
    );

    // The dead letter keeps the context: its replay is handled in the same trace.
    dead_letters_of(&bus, "traced-later", 1, Duration::from_secs(10)).await;
    fixed.store(true, Ordering::SeqCst);
    let replays = bus
        .dead_letters()
        .replay_all(&DeadLetterQuery::group("traced-later"))
        .instrument(tracing::info_span!("operator.replay"))
        .await
        .expect("replay");
    assert_eq!(replays, 1);
    let replay_trace = tokio::time::timeout(Duration::from_secs(10), replayed.recv())
        .await
        .expect("replay handled")
        .expect("open");
    assert_eq!(
        replay_trace, publisher_trace,
        "a replayed event is handled in the trace it was published in"
    );
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
