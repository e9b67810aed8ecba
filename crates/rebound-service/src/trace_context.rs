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

/// Set once the span exporter is installed (`init_telemetry` with an OTLP endpoint).
static SPANS_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans go anywhere: a span exporter is installed.
pub fn spans_exported() -> bool {
    SPANS_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Says that spans are exported, so per-record spans are made: `init_telemetry` calls it when
/// it installs its exporter, and a process that installs its own tracing pipeline (an embedding
/// application, a test with an in-memory exporter) calls it too.
pub fn mark_spans_exported() {
    SPANS_EXPORTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The span of one record's (or one note's) trip through a service, made by `make` only when
/// spans are exported, and a disabled span otherwise. Without an exporter such a span carries
/// nothing (the log layers print events only, and there is no trace context to pass on), yet
/// creating one per record was 9 to 14% of the consumer's time with the null sink.
pub fn record_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    record_span_if(spans_exported(), make)
}

fn record_span_if(exported: bool, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if exported { make() } else { tracing::Span::none() }
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
    fn record_spans_are_made_only_when_spans_are_exported() {
        let mut made = 0;
        let span = record_span_if(false, || {
            made += 1;
            tracing::info_span!("not made")
        });
        assert!(span.is_none() && made == 0, "no exporter: no span made");
        let _ = record_span_if(true, || {
            made += 1;
            tracing::info_span!("made")
        });
        assert_eq!(made, 1, "with an exporter the span is made");
    }

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
