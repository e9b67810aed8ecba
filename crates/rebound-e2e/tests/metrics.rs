//! The consumer's and scheduler's `/metrics` and `/readyz` against a real broker: failures
//! driven through the pipeline move the counters they should. Alone in its test binary, so no
//! other test's records reach the process-wide metrics recorder.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, free_local_port, metric_sample, note, produce_notes, scrape_metrics,
    unique_prefix, wait_for, wait_for_http_ok,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_driven_through_the_pipeline_move_the_counters() {
    let prefix = unique_prefix("metrics");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 2).await;
    let sink = ScriptedHttpSink::start(|note_id, attempt| match note_id {
        "rejected" => 422,
        "flaky" if attempt == 1 => 503,
        _ => 200,
    })
    .await;
    let consumer_port = free_local_port();
    let scheduler_port = free_local_port();
    let consumer_listen = format!("127.0.0.1:{consumer_port}");
    let scheduler_listen = format!("127.0.0.1:{scheduler_port}");
    let sink_url = sink.url();
    let tiers = ["--tier", "retry-5s:300ms", "--tier", "retry-1m:600ms"];
    let mut consumer_flags = vec![
        "--topic-prefix",
        prefix.as_str(),
        "--sink",
        &sink_url,
        "--metrics-listen",
        &consumer_listen,
    ];
    consumer_flags.extend_from_slice(&tiers);
    let mut scheduler_flags = vec!["--topic-prefix", prefix.as_str(), "--metrics-listen", &scheduler_listen];
    scheduler_flags.extend_from_slice(&tiers);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&scheduler_flags);
    let consumer_url = format!("http://{consumer_listen}");
    let scheduler_url = format!("http://{scheduler_listen}");
    wait_for_http_ok(&format!("{consumer_url}/healthz"), Duration::from_secs(30)).await;
    wait_for_http_ok(&format!("{consumer_url}/readyz"), Duration::from_secs(60)).await;
    wait_for_http_ok(&format!("{scheduler_url}/readyz"), Duration::from_secs(60)).await;

    let notes: Vec<_> = ["fine-1", "fine-2", "fine-3", "rejected", "flaky"]
        .iter()
        .map(|note_id| note(note_id, 1))
        .collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;

    let retried_series = format!("rebound_consumer_records_total{{outcome=\"retried\",tier=\"{prefix}retry-5s\"}}");
    let metrics = wait_for(
        "applied, retried and dead-lettered counters",
        Duration::from_secs(60),
        || async {
            let metrics = scrape_metrics(&format!("{consumer_url}/metrics")).await;
            let applied_first = metric_sample(
                &metrics,
                "rebound_consumer_records_total{outcome=\"applied\",after=\"first_try\"}",
            );
            let applied_retry = metric_sample(
                &metrics,
                "rebound_consumer_records_total{outcome=\"applied\",after=\"retry\"}",
            );
            let dead = metric_sample(
                &metrics,
                "rebound_consumer_records_total{outcome=\"dead_lettered\",kind=\"permanent\"}",
            );
            // Nothing in flight once all is settled: with exactly-once delivery a transaction
            // may still be committing the last batch when the counters are already there.
            let in_flight = metric_sample(&metrics, "rebound_consumer_in_flight_records");
            (applied_first == Some(3.0) && applied_retry == Some(1.0) && dead == Some(1.0) && in_flight == Some(0.0))
                .then_some(metrics)
        },
    )
    .await;
    assert_eq!(metric_sample(&metrics, &retried_series), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("rebound_consumer_sink_duration_seconds_bucket"),
        "{metrics}"
    );

    let scheduler_metrics = scrape_metrics(&format!("{scheduler_url}/metrics")).await;
    let republished = format!("rebound_scheduler_republished_total{{tier=\"{prefix}retry-5s\"}}");
    assert_eq!(
        metric_sample(&scheduler_metrics, &republished),
        Some(1.0),
        "{scheduler_metrics}"
    );
    let lag_count = format!("rebound_scheduler_retry_lag_seconds_count{{tier=\"{prefix}retry-5s\"}}");
    assert_eq!(
        metric_sample(&scheduler_metrics, &lag_count),
        Some(1.0),
        "{scheduler_metrics}"
    );
    // Lag of the source topic reaches 0 once everything is committed (statistics every 5 s).
    let lag_series = format!("rebound_consumer_lag_records{{topic=\"{prefix}notes\"}}");
    wait_for("the consumer lag gauge at 0", Duration::from_secs(30), || async {
        let metrics = scrape_metrics(&format!("{consumer_url}/metrics")).await;
        (metric_sample(&metrics, &lag_series) == Some(0.0)).then_some(())
    })
    .await;
    consumer.stop().await;
    scheduler.stop().await;
}
