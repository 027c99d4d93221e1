//! W3C trace context across brokers.
//!
//! With the `opentelemetry` feature, and a `tracing-opentelemetry` layer in
//! the subscriber, every published event carries the `traceparent` of the
//! span it was published (or saved) in — as the CloudEvents `traceparent`
//! attribute on the wire and in the envelope's metadata — and the
//! `eventsource.handle` span of each handler becomes its child, across
//! processes and brokers. Without the feature these functions do nothing.

use crate::EventEnvelope;

/// The metadata key (and CloudEvents extension) of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span, if it belongs to a valid trace.
#[cfg(feature = "opentelemetry")]
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The `traceparent` of the current span (always `None` without the
/// `opentelemetry` feature).
#[cfg(not(feature = "opentelemetry"))]
pub fn current_traceparent() -> Option<String> {
    None
}

/// Stamps the current span's trace context on `envelope` unless it has one.
pub fn stamp(envelope: &mut EventEnvelope) {
    if !envelope.metadata.contains_key(TRACEPARENT) {
        if let Some(tp) = current_traceparent() {
            envelope.metadata.insert(TRACEPARENT.to_owned(), tp);
        }
    }
}

/// Parses a W3C `traceparent` (`00-{trace id}-{span id}-{flags}`).
#[cfg(feature = "opentelemetry")]
pub fn parse_traceparent(value: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00"
        || parts.next().is_some()
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the span that published `envelope`, if the
/// envelope carries a valid `traceparent`.
#[cfg(feature = "opentelemetry")]
pub fn set_parent(span: &tracing::Span, envelope: &EventEnvelope) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(sc) = envelope
        .metadata
        .get(TRACEPARENT)
        .and_then(|tp| parse_traceparent(tp))
    {
        if let Err(e) = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc))
        {
            tracing::debug!(error = %e, "could not link the handle span to the publisher's trace");
        }
    }
}

/// Does nothing without the `opentelemetry` feature.
#[cfg(not(feature = "opentelemetry"))]
pub fn set_parent(_span: &tracing::Span, _envelope: &EventEnvelope) {}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents_only() {
        let sc = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .expect("valid");
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-xyz-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
