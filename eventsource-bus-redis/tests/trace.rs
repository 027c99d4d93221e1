//! Trace context crosses the broker: a handler's span belongs to the trace
//! of the span that published the event. (Its own test binary: it installs
//! the global tracing subscriber.)

mod common;

use std::time::Duration;

use eventsource_core::{handler_fn, EventBus, Subscription};
use eventsource_testkit::probe;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn trace_id_of(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_span_joins_the_publishers_trace() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("eventsource-test")));
    tracing::subscriber::set_global_default(subscriber)
        .expect("first and only subscriber of this binary");

    let bus = common::connect(common::config(&common::redis_url())).await;
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
    bus.shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
