//! The Grafana dashboard `deploy/grafana/rebound.json` asks only for metrics the services
//! export: the producer, consumer, scheduler and `rebound dlq watch` run against a real broker,
//! notes go through every path a dashboard panel shows (applied, retried, republished,
//! dead-lettered), and every metric name in a panel query must then be in `/metrics`. Alone in
//! its test binary, so the process-wide recorder holds only what these services recorded.

#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use common::{start_consumer, start_scheduler};
use rebound_cli::{Cli, Command as CliCommand, DlqCommand};
use rebound_testkit::{
    RunningService, ScriptedHttpSink, broker, create_test_topics, free_local_port, kafka_args, unique_prefix, wait_for,
    wait_for_http_ok, wait_for_records,
};

/// Metrics the dashboard shows that are counted only when something fails in a way this test
/// cannot provoke on a healthy broker (a refused copy, a receive error, a fatal producer error,
/// a resend after a failed send, a tier record the scheduler cannot route back).
/// Each must still be a metric name of `rebound_service::events`, the one place metrics are
/// emitted.
const COUNTED_ONLY_ON_FAILURE: [&str; 8] = [
    "rebound_consumer_copies_refused_total",
    "rebound_scheduler_republish_refused_total",
    "rebound_scheduler_due_too_far_ahead_total",
    "rebound_scheduler_dead_lettered_total",
    "rebound_kafka_receive_errors_total",
    "rebound_offset_store_failures_total",
    "rebound_producer_failed_for_good_total",
    "rebound_producer_resend_attempts_total",
];

/// Metrics of work that has not landed yet: the dashboard shows them already, and this list is
/// the one place that says so. Remove a name once its metric exists.
const EXPECTED_PENDING: [&str; 1] = [
    // The consumer's sink circuit breaker.
    "rebound_consumer_breaker_state",
];

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// Every metric name in the dashboard's panel queries.
fn dashboard_metric_names() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/rebound.json")).expect("the dashboard is JSON");
    let mut expressions = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            expressions.push(target["expr"].as_str().expect("a query expression").to_owned());
        }
    }
    assert!(
        expressions.len() > 20,
        "the dashboard's queries were found: {expressions:?}"
    );
    expressions
        .iter()
        .flat_map(|expression| expression.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')))
        .filter(|token| token.starts_with("rebound_") || token.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The metric names of an exposition (a histogram's `_bucket`, `_sum` and `_count` included).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_exempt_lists_name_dashboard_metrics_and_failure_metrics_are_events() {
    let names = dashboard_metric_names();
    let events = repo_file("crates/rebound-service/src/events.rs");
    for name in COUNTED_ONLY_ON_FAILURE.iter().chain(&EXPECTED_PENDING) {
        assert!(names.contains(*name), "{name} is exempt but not on the dashboard");
    }
    for name in COUNTED_ONLY_ON_FAILURE {
        assert!(
            events.contains(&format!("\"{name}\"")),
            "{name} is no metric of rebound_service::events"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_is_exported() {
    // The process-wide recorder exists before any service starts, as in a service binary that
    // serves /metrics, so no service records a metric before there is a recorder to keep it.
    rebound_service::metrics_handle();
    let prefix = unique_prefix("dashboard");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 1).await;
    // "poison" is refused for good (dead-lettered at once), "flaky" fails once (retried,
    // republished, then applied), every other note is applied at the first try.
    let sink = ScriptedHttpSink::start(|note_id, attempt| match note_id {
        "poison" => 422,
        "flaky" if attempt == 1 => 503,
        _ => 200,
    })
    .await;
    let sink_url = sink.url();
    let consumer_listen = format!("127.0.0.1:{}", free_local_port());
    let consumer = start_consumer(&[
        "--topic-prefix",
        &prefix,
        "--sink",
        &sink_url,
        "--tier",
        "retry-5s:300ms",
        "--metrics-listen",
        &consumer_listen,
    ]);
    let scheduler = start_scheduler(&["--topic-prefix", &prefix, "--tier", "retry-5s:300ms"]);

    let broker = broker();
    let outbox = tempfile::tempdir().expect("tempdir");
    let outbox_dir = outbox.path().to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{}", free_local_port());
    let producer_config = rebound_producer::ProducerArgs::parse_from([
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
    ])
    .into_config()
    .expect("valid producer flags");
    let producer = RunningService::spawn("producer", |shutdown| rebound_producer::run(producer_config, shutdown));

    let cli = Cli::parse_from([
        "rebound",
        "--brokers",
        &broker,
        "dlq",
        "watch",
        "--topic-prefix",
        &prefix,
        "--interval",
        "200ms",
    ]);
    let CliCommand::Dlq(DlqCommand::Watch(watch_args)) = cli.command else {
        panic!("parsed dlq watch");
    };
    let watcher = RunningService::spawn("dlq watch", |shutdown| async move {
        rebound_cli::watch_dead_letters(&kafka_args(), &watch_args, shutdown).await
    });

    wait_for_http_ok(&format!("http://{listen}/healthz"), Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    for note_id in ["fine", "flaky", "poison"] {
        let response = client
            .post(format!("http://{listen}/v1/notes"))
            .json(&serde_json::json!({
                "note_id": note_id, "user_id": "u", "device_id": "d", "version": 1,
                "updated_at": 1_764_000_000_000_i64,
            }))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status().as_u16(), 202, "{note_id} accepted");
    }
    wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for(
        "the flaky note applied on its retry",
        Duration::from_secs(60),
        || async { (sink.requests_for("flaky").len() >= 2).then_some(()) },
    )
    .await;

    let wanted: BTreeSet<String> = dashboard_metric_names()
        .into_iter()
        .filter(|name| !COUNTED_ONLY_ON_FAILURE.contains(&name.as_str()) && !EXPECTED_PENDING.contains(&name.as_str()))
        .collect();
    let metrics_url = format!("http://{consumer_listen}/metrics");
    // Gauges such as the DLQ depth and the outbox state are set by loops that run every few
    // hundred milliseconds: wait until each has reported once, then name whatever is missing.
    let mut missing = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let exposition = client
            .get(&metrics_url)
            .send()
            .await
            .expect("scraped")
            .text()
            .await
            .expect("text");
        let exposed = exposed_names(&exposition);
        missing = wanted.difference(&exposed).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    watcher.stop().await;
    producer.stop().await;
    consumer.stop().await;
    scheduler.stop().await;
    assert!(
        missing.is_empty(),
        "dashboard metrics not in /metrics: {missing:?} (of {wanted:?})"
    );
}
