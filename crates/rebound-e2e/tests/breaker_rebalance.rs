//! A consumer whose circuit breaker is open keeps its source partitions paused across
//! rebalances: librdkafka resumes a partition when it is assigned, so without pausing again the
//! consumer would read (and hold) every record of a re-assigned partition once more. Alone in its
//! test binary: it reads the process-wide metrics recorder.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::start_consumer;
use rebound_kafka::{ConsumerSettings, RecordConsumer};
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, free_local_port, kafka_args, metric_sample, note, produce_notes,
    scrape_metrics, unique_prefix, wait_for, wait_for_http_ok,
};

async fn held_and_paused(url: &str) -> (f64, f64) {
    let metrics = scrape_metrics(url).await;
    (
        metric_sample(&metrics, "rebound_consumer_breaker_held_records").unwrap_or(-1.0),
        metric_sample(&metrics, "rebound_consumer_paused").unwrap_or(-1.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_stay_paused_across_rebalances_while_the_breaker_is_open() {
    const NOTES: usize = 20;
    let prefix = unique_prefix("rebalance");
    create_test_topics(&prefix, &["notes", "retry-1s", "dlq"], 2).await;
    let sink = ScriptedHttpSink::start(|_, _| 503).await;
    let sink_url = sink.url();
    let listen = format!("127.0.0.1:{}", free_local_port());
    let group = format!("{prefix}consumer");
    let consumer = start_consumer(&[
        "--topic-prefix",
        prefix.as_str(),
        "--group",
        &group,
        "--sink",
        &sink_url,
        "--metrics-listen",
        &listen,
        "--tier",
        "retry-1s:1s",
        "--breaker-probe-interval",
        "60s",
    ]);
    let metrics_url = format!("http://{listen}/metrics");
    wait_for_http_ok(&metrics_url, Duration::from_secs(30)).await;
    let source = format!("{prefix}notes");
    let notes: Vec<_> = (0..NOTES).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&source, &notes).await;
    // The breaker opens after a run of failures; what failed before it opened went to the tier.
    let held_before = wait_for(
        "the breaker open, both partitions paused",
        Duration::from_secs(60),
        || async {
            let metrics = scrape_metrics(&metrics_url).await;
            let open = metric_sample(&metrics, "rebound_consumer_breaker_state") == Some(2.0);
            let (held, paused) = held_and_paused(&metrics_url).await;
            (open && paused == 2.0 && held >= 1.0).then_some(held)
        },
    )
    .await;

    // A second member joins: both partitions are revoked and one is assigned back.
    let other = RecordConsumer::subscribe(
        &kafka_args(),
        &ConsumerSettings::new(group.clone(), vec![source.clone()]),
    )
    .expect("second member");
    let polling = tokio::spawn(async move {
        // Serve the rebalance; whatever it receives it never stores, so nothing is committed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), other.recv()).await;
        }
        other
    });
    wait_for("one partition left, paused", Duration::from_secs(30), || async {
        (held_and_paused(&metrics_url).await.1 == 1.0).then_some(())
    })
    .await;
    // The second member leaves: both partitions come back, and must be paused again.
    let other = polling.await.expect("second member polled");
    other
        .commit_and_close(Duration::from_secs(10))
        .await
        .expect("left the group");
    wait_for("both partitions back, paused", Duration::from_secs(60), || async {
        (held_and_paused(&metrics_url).await.1 == 2.0).then_some(())
    })
    .await;
    // New records and the re-assigned partitions' old ones are not read while paused: nothing
    // more is held than before (a resumed partition would be read again from its start).
    let later: Vec<_> = (0..10).map(|index| note(&format!("later-{index}"), 1)).collect();
    produce_notes(&source, &later).await;
    // What is asserted is an absence (nothing more read), so no condition can end the wait: the
    // window gives a resumed partition several fetch rounds to show itself. A slow machine can
    // only make this test miss the bug, never fail a correct consumer.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (held, paused) = held_and_paused(&metrics_url).await;
    assert_eq!(paused, 2.0);
    println!("held before the rebalances {held_before}, after {held}");
    assert!(
        held <= held_before,
        "held {held} > {held_before}: a re-assigned partition was read again"
    );
    assert!(
        sink.requests()
            .iter()
            .all(|request| request.note_id.starts_with("note-")),
        "no later note reached the sink"
    );
    consumer.stop().await;
}
