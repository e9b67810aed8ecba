//! Log and trace set-up: human-readable or JSON log lines on stderr, filtered by `RUST_LOG`
//! (default `info`), and, with `--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! spans exported over OTLP/HTTP. The other OpenTelemetry conventions hold too:
//! `OTEL_SERVICE_NAME` names the service in its spans, `OTEL_TRACES_SAMPLER` (and `_ARG`) picks
//! the sampler, and a JSON log line written inside a traced span carries its `trace_id`.

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {error}");
        }
    }
}

/// Whether log lines are coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The standard variable of the OTLP collector's base URL (`/v1/traces` is appended).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable of the trace endpoint itself (used as it is).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The standard variable naming the service in exported spans.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The URL spans are posted to, if any: `--otlp-endpoint` (`REBOUND_OTLP_ENDPOINT`) when given,
/// as the project's own flag is the more specific setting, else the standard variables, the
/// trace-specific one first (as the OpenTelemetry specification orders them). A base URL gets
/// `/v1/traces` appended; an empty value counts as unset.
pub fn otlp_traces_url(flag: Option<&str>, base_env: Option<&str>, traces_env: Option<&str>) -> Option<String> {
    fn given(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|value| !value.is_empty())
    }
    if let Some(base) = given(flag) {
        return Some(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    if let Some(traces) = given(traces_env) {
        return Some(traces.to_owned());
    }
    given(base_env).map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// Installs the global log subscriber (and the span exporter when `otlp_endpoint` is given,
/// e.g. `http://127.0.0.1:4318`, or the `OTEL_EXPORTER_OTLP_*` variables name one). Logs go to
/// stderr so that commands whose stdout is data stay pipeable. Calling it twice is harmless: the
/// second call changes nothing.
pub fn init_telemetry(format: LogFormat, otlp_endpoint: Option<&str>, service_name: &'static str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal who has not asked for none; log files and pipes
    // get plain text.
    let ansi = use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // Log lines are events only. Every record has a span (for trace export), and formatting
    // each span's fields for the log layer, only to print them as context of the few events
    // inside it, cost a consumer about a fifth of its time per record; the events that matter
    // (retried, dead-lettered, republished) carry topic, partition and offset themselves.
    let events_only = || tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event());
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi)
                    .with_filter(events_only()),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonWithTraceId)
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(std::io::stderr)
                    .with_filter(events_only()),
            ),
        ),
    };
    let mut guard = TelemetryGuard::default();
    let mut export_error = None;
    let traces_url = otlp_traces_url(
        otlp_endpoint,
        std::env::var(OTEL_EXPORTER_OTLP_ENDPOINT).ok().as_deref(),
        std::env::var(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).ok().as_deref(),
    );
    let otel = traces_url.and_then(|url| match build_provider(&url, service_name) {
        Ok(provider) => {
            let tracer = provider.tracer(service_name);
            guard.provider = Some(provider);
            crate::trace_context::mark_spans_exported();
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        Err(error) => {
            export_error = Some(error);
            None
        }
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    if let Some(error) = export_error {
        tracing::error!(%error, "traces will not be exported");
    }
    guard
}

fn build_provider(traces_url: &str, service_name: &'static str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url)
        .build()
        .map_err(|error| {
            format!(
                "cannot build the OTLP exporter for {}: {error}",
                crate::redact::redact_url(traces_url)
            )
        })?;
    // The builder's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the service's
    // own name is only the default.
    let named_by_environment = std::env::var(OTEL_SERVICE_NAME).is_ok_and(|name| !name.trim().is_empty());
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named_by_environment {
        resource = resource.with_service_name(service_name);
    }
    // The sampler is the SDK's default, which follows OTEL_TRACES_SAMPLER and
    // OTEL_TRACES_SAMPLER_ARG (parent-based always-on when unset).
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The JSON log line format, with the `trace_id` of the span the event was written in when that
/// span is traced, so a log line can be found from a trace and the other way round.
#[derive(Debug)]
struct JsonWithTraceId;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonWithTraceId
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
    N: for<'writer> tracing_subscriber::fmt::FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let json = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false);
        let mut line = String::new();
        json.format_event(context, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        // The log layer sees no spans (it formats events only): the trace context is the one
        // the OpenTelemetry layer makes current when a traced span is entered (none without it).
        let current = opentelemetry::Context::current();
        let span_context = current.span().span_context().clone();
        match line.strip_prefix('{') {
            Some(rest) if span_context.is_valid() => {
                write!(writer, "{{\"trace_id\":\"{}\",{rest}", span_context.trace_id())
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(
            use_colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn the_flag_wins_then_the_trace_endpoint_then_the_base_url() {
        let url = |flag, base, traces| otlp_traces_url(flag, base, traces);
        assert_eq!(url(None, None, None), None);
        assert_eq!(url(None, Some(" "), Some("")), None, "empty values are unset");
        assert_eq!(
            url(None, Some("http://collector:4318/"), None).as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            url(None, Some("http://collector:4318"), Some("http://traces:4318/custom")).as_deref(),
            Some("http://traces:4318/custom")
        );
        assert_eq!(
            url(
                Some("http://flag:4318"),
                Some("http://collector:4318"),
                Some("http://traces:4318/x")
            )
            .as_deref(),
            Some("http://flag:4318/v1/traces")
        );
    }

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_inside_a_traced_span_carries_its_trace_id() {
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonWithTraceId)
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .with_writer(move || writer.clone())
                    .with_filter(tracing_subscriber::filter::filter_fn(|metadata| metadata.is_event())),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let trace_id = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(outside = true, "before any span");
            let span = tracing::info_span!("consumer.process");
            let _entered = span.enter();
            tracing::info!(key = "n-1", "applied");
            span.context().span().span_context().trace_id().to_string()
        });
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
            .collect();
        assert_eq!(parsed.len(), 2, "{text}");
        assert!(parsed[0].get("trace_id").is_none(), "no span, no trace id: {text}");
        assert_eq!(parsed[1]["trace_id"], trace_id.as_str(), "{text}");
        assert_eq!(parsed[1]["key"], "n-1", "the event's own fields stay: {text}");
        assert_eq!(parsed[1]["message"], "applied", "{text}");
    }
}
