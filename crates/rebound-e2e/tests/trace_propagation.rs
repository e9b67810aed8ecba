//! One trace follows a note through every hop: accepted by the producer, published, consumed
//! and failed, parked in a tier, republished by the scheduler, failed again and dead-lettered.
//! Spans are collected by an in-process exporter; this test is alone in its binary because it
//! installs the process-wide tracing subscriber.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use clap::Parser as _;
use common::{start_consumer, start_scheduler};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rebound_service::trace_context::TRACEPARENT;
use rebound_testkit::{
    RunningService, ScriptedHttpSink, broker, create_test_topics, free_local_port, unique_prefix, wait_for,
    wait_for_http_ok, wait_for_records,
};
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_producer_consumer_scheduler_and_dlq() {
    let exporter = InMemorySpanExporter::default();
    // Per-record spans are made only when something exports them.
    rebound_service::trace_context::mark_spans_exported();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber of this process");

    let prefix = unique_prefix("trace");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 1).await;
    let sink = ScriptedHttpSink::start(|_, _| 503).await;
    let sink_url = sink.url();
    let consumer = start_consumer(&[
        "--topic-prefix",
        &prefix,
        "--sink",
        &sink_url,
        "--tier",
        "retry-5s:300ms",
    ]);
    let scheduler = start_scheduler(&["--topic-prefix", &prefix, "--tier", "retry-5s:300ms"]);

    let outbox = tempfile::tempdir().expect("tempdir");
    let port = free_local_port();
    let listen = format!("127.0.0.1:{port}");
    let outbox_dir = outbox.path().to_string_lossy().into_owned();
    let broker = broker();
    let producer_args = rebound_producer::ProducerArgs::parse_from([
        "rebound-producer",
        "--brokers",
        &broker,
        "--topic-prefix",
        &prefix,
        "serve",
        "--listen",
        &listen,
        "--outbox-dir",
        &outbox_dir,
    ]);
    let producer_config = producer_args.into_config().expect("valid producer flags");
    let producer = RunningService::spawn("producer", |shutdown| rebound_producer::run(producer_config, shutdown));
    wait_for_http_ok(&format!("http://{listen}/healthz"), Duration::from_secs(30)).await;
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/v1/notes"))
        .json(&serde_json::json!({
            "note_id": "traced", "user_id": "u", "device_id": "d", "version": 1,
            "title": "t", "body": "b", "updated_at": 1_764_000_000_000_i64,
        }))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 202);

    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    producer.stop().await;
    consumer.stop().await;
    scheduler.stop().await;
    assert_eq!(sink.requests_for("traced").len(), 2, "failed twice");

    let spans = wait_for("every hop's span exported", Duration::from_secs(10), || async {
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().expect("spans");
        let names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
        let complete = names.contains(&"producer.accept")
            && names.contains(&"producer.publish")
            && names.iter().filter(|name| **name == "consumer.process").count() >= 2
            && names.iter().filter(|name| **name == "consumer.route").count() >= 2
            && names.contains(&"scheduler.republish");
        complete.then_some(spans)
    })
    .await;
    let accept = spans
        .iter()
        .find(|span| span.name == "producer.accept")
        .expect("accept span");
    let trace_id = accept.span_context.trace_id();
    for name in [
        "producer.publish",
        "consumer.process",
        "consumer.route",
        "scheduler.republish",
    ] {
        let hops: Vec<_> = spans.iter().filter(|span| span.name == name).collect();
        assert!(!hops.is_empty(), "{name} exported");
        for hop in hops {
            assert_eq!(
                hop.span_context.trace_id(),
                trace_id,
                "{name} belongs to the note's trace"
            );
        }
    }
    let dead_letter_route = spans
        .iter()
        .filter(|span| span.name == "consumer.route")
        .find(|span| {
            span.attributes
                .iter()
                .any(|attribute| attribute.value.as_str().ends_with(&format!("{prefix}dlq")))
        })
        .expect("a route span towards the DLQ");
    assert_eq!(dead_letter_route.span_context.trace_id(), trace_id);
    let header = dead_letters[0]
        .headers
        .get_str(TRACEPARENT)
        .expect("the dead letter carries trace context");
    assert!(
        header.contains(&trace_id.to_string()),
        "{header} continues trace {trace_id}"
    );
}
