//! Failures that are not an outage leave the circuit breaker closed: a webhook failing 30% of
//! requests at random is handled by the tiers, and one refusing everything with 422 dead-letters
//! as it would without a breaker. Both tests assert the breaker never opened, which is why they
//! may share this binary's process-wide metrics recorder, and no other test may.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, free_local_port, metric_sample, note, produce_notes, read_all,
    scrape_metrics, unique_prefix, wait_for, wait_for_http_ok, wait_for_records,
};

/// The header naming a dead letter's error kind (the header contract's `retry.error.kind`).
const ERROR_KIND_HEADER: &str = "retry.error.kind";

/// A random-looking but repeatable choice of 30% of the requests.
fn fails_at_random(note_id: &str, attempt: usize) -> bool {
    let mut hasher = DefaultHasher::new();
    (note_id, attempt).hash(&mut hasher);
    hasher.finish() % 100 < 30
}

fn assert_never_opened(metrics: &str) {
    assert_eq!(
        metric_sample(metrics, "rebound_consumer_breaker_state"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_sample(metrics, "rebound_consumer_breaker_transitions_total{to=\"open\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_sample(metrics, "rebound_consumer_paused"),
        Some(0.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_30_percent_at_random_keeps_the_breaker_closed() {
    const NOTES: usize = 300;
    let prefix = unique_prefix("flaky30");
    create_test_topics(&prefix, &["notes", "retry-1s", "retry-2s", "dlq"], 2).await;
    // 30% of first and second attempts fail; a third attempt is answered, so nothing runs out
    // of tiers and every note must arrive.
    let sink = ScriptedHttpSink::start(|note_id, attempt| {
        if attempt <= 2 && fails_at_random(note_id, attempt) {
            503
        } else {
            200
        }
    })
    .await;
    let sink_url = sink.url();
    let listen = format!("127.0.0.1:{}", free_local_port());
    let tiers = ["--tier", "retry-1s:500ms", "--tier", "retry-2s:1s"];
    let mut consumer_flags = vec![
        "--topic-prefix",
        prefix.as_str(),
        "--sink",
        &sink_url,
        "--metrics-listen",
        &listen,
    ];
    consumer_flags.extend_from_slice(&tiers);
    let mut scheduler_flags = vec!["--topic-prefix", prefix.as_str()];
    scheduler_flags.extend_from_slice(&tiers);
    let notes: Vec<_> = (0..NOTES).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&scheduler_flags);
    let metrics_url = format!("http://{listen}/metrics");
    wait_for_http_ok(&metrics_url, Duration::from_secs(30)).await;

    wait_for("every note applied", Duration::from_secs(25), || async {
        let applied: BTreeSet<String> = sink
            .requests()
            .into_iter()
            .filter(|request| request.status == 200)
            .map(|request| request.note_id)
            .collect();
        (applied.len() == NOTES).then_some(())
    })
    .await;
    let failed = sink.requests().iter().filter(|request| request.status == 503).count();
    let tier_records =
        read_all(&format!("{prefix}retry-1s")).await.len() + read_all(&format!("{prefix}retry-2s")).await.len();
    println!("30% random failures: {failed} requests answered 503, {tier_records} tier records");
    assert!(failed >= NOTES / 5, "about 30% of first attempts fail: {failed}");
    assert_eq!(tier_records, failed, "every failure went to a tier, none was held");
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
    assert_never_opened(&scrape_metrics(&metrics_url).await);
    consumer.stop().await;
    scheduler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_refusing_everything_with_422_dead_letters_as_without_a_breaker() {
    const NOTES: usize = 100;
    let prefix = unique_prefix("refuse422");
    create_test_topics(&prefix, &["notes", "retry-1s", "retry-2s", "dlq"], 2).await;
    let sink = ScriptedHttpSink::start(|_, _| 422).await;
    let sink_url = sink.url();
    let listen = format!("127.0.0.1:{}", free_local_port());
    let consumer = start_consumer(&[
        "--topic-prefix",
        prefix.as_str(),
        "--sink",
        &sink_url,
        "--metrics-listen",
        &listen,
        "--tier",
        "retry-1s:1s",
        "--tier",
        "retry-2s:2s",
    ]);
    let metrics_url = format!("http://{listen}/metrics");
    wait_for_http_ok(&metrics_url, Duration::from_secs(30)).await;
    let notes: Vec<_> = (0..NOTES).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;

    let dead_letters = wait_for_records(&format!("{prefix}dlq"), NOTES, Duration::from_secs(25)).await;
    assert_eq!(dead_letters.len(), NOTES);
    assert!(dead_letters.iter().all(|letter| {
        letter
            .headers
            .get_str(ERROR_KIND_HEADER)
            .is_some_and(|kind| kind == "permanent")
    }));
    assert!(read_all(&format!("{prefix}retry-1s")).await.is_empty());
    assert_eq!(sink.requests().len(), NOTES, "each note tried once");
    assert_never_opened(&scrape_metrics(&metrics_url).await);
    consumer.stop().await;
}
