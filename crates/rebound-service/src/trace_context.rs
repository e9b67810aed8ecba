//! W3C trace context across Kafka hops: every service continues the trace a record carries in
//! its `traceparent` header, and replaces that header on the copies it produces with its own
//! span, so one trace shows every hop of one note: producer, consumer, tier, scheduler, DLQ.
//!
//! The header is replaced, never appended, like the retry contract's keys. Without a tracing
//! pipeline (no `--otlp-endpoint`) spans have no context to give, and a record's incoming
//! `traceparent` travels on unchanged.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rebound_retry::RecordHeaders;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C trace state header.
pub const TRACESTATE: &str = "tracestate";

struct HeaderExtractor<'headers>(&'headers RecordHeaders);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|header| header.key.as_str()).collect()
    }
}

struct HeaderInjector<'headers>(&'headers mut RecordHeaders);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set(key, value);
    }
}

/// Makes `span` a child of the trace context in `headers`, if they carry a valid one.
pub fn continue_trace(span: &tracing::Span, headers: &RecordHeaders) {
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into `headers`, replacing any earlier one. Does nothing when
/// the span has no valid context (no tracing pipeline installed).
pub fn inject_trace(span: &tracing::Span, headers: &mut RecordHeaders) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// `span`'s `traceparent` value, for storing beside a record that is sent later (the outbox).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut headers = RecordHeaders::new();
    inject_trace(span, &mut headers);
    headers.get_str(TRACEPARENT).map(str::to_owned)
}

/// Headers holding just a stored `traceparent`, to continue a trace from it.
pub fn headers_with_traceparent(traceparent: Option<&str>) -> RecordHeaders {
    let mut headers = RecordHeaders::new();
    if let Some(traceparent) = traceparent {
        headers.set(TRACEPARENT, traceparent);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_tracing_pipeline_headers_are_left_as_they_are() {
        let mut headers = RecordHeaders::new();
        headers.set(TRACEPARENT, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let span = tracing::info_span!("test");
        continue_trace(&span, &headers);
        inject_trace(&span, &mut headers);
        assert_eq!(
            headers.get_str(TRACEPARENT),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(headers.count(TRACEPARENT), 1);
    }
}
