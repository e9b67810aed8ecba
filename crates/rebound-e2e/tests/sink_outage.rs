//! A webhook down for 90 s, with tiers of 1 s and 2 s: the consumer's circuit breaker opens,
//! pauses the source partitions and holds what it has in hand, so nothing is dead-lettered
//! because of the outage and tier traffic stays bounded; once the sink answers again every note
//! is applied. Alone in its test binary: it reads the process-wide metrics recorder.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{start_consumer, start_scheduler};
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, free_local_port, metric_sample, note, produce_notes, read_all,
    scrape_metrics, unique_prefix, wait_for, wait_for_http_ok,
};

const OUTAGE: Duration = Duration::from_secs(90);
const NOTES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_down_for_90_seconds_dead_letters_nothing_and_every_note_arrives() {
    let prefix = unique_prefix("outage");
    create_test_topics(&prefix, &["notes", "retry-1s", "retry-2s", "dlq"], 2).await;
    let outage_started = Instant::now();
    let sink = ScriptedHttpSink::start(move |_, _| if outage_started.elapsed() < OUTAGE { 503 } else { 200 }).await;
    let sink_url = sink.url();
    let listen = format!("127.0.0.1:{}", free_local_port());
    let tiers = ["--tier", "retry-1s:1s", "--tier", "retry-2s:2s"];
    let mut consumer_flags = vec![
        "--topic-prefix",
        prefix.as_str(),
        "--sink",
        &sink_url,
        "--metrics-listen",
        &listen,
        "--breaker-probe-interval",
        "2s",
        "--breaker-probe-max",
        "5s",
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

    // During the outage: the breaker opens and the source partitions are paused.
    let open_series = "rebound_consumer_breaker_transitions_total{to=\"open\"}";
    wait_for("the breaker to open", Duration::from_secs(60), || async {
        let metrics = scrape_metrics(&metrics_url).await;
        (metric_sample(&metrics, "rebound_consumer_breaker_state") == Some(2.0)
            && metric_sample(&metrics, "rebound_consumer_paused").is_some_and(|paused| paused >= 1.0))
        .then_some(())
    })
    .await;
    // Sample the held records until the outage ends.
    let mut most_held = 0.0_f64;
    while outage_started.elapsed() < OUTAGE {
        let metrics = scrape_metrics(&metrics_url).await;
        let held = metric_sample(&metrics, "rebound_consumer_breaker_held_records").unwrap_or(0.0);
        most_held = most_held.max(held);
        assert_eq!(
            metric_sample(&metrics, "rebound_consumer_breaker_state"),
            Some(2.0),
            "open for the whole outage: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tier_records_during_outage =
        read_all(&format!("{prefix}retry-1s")).await.len() + read_all(&format!("{prefix}retry-2s")).await.len();
    let recovered_at = Instant::now();

    // After the outage: every note applied, the breaker closed and the partitions resumed.
    wait_for("every note applied", Duration::from_secs(60), || async {
        let applied: BTreeSet<String> = sink
            .requests()
            .into_iter()
            .filter(|request| request.status == 200)
            .map(|request| request.note_id)
            .collect();
        (applied.len() == NOTES).then_some(())
    })
    .await;
    let drained_in = recovered_at.elapsed();
    let metrics = wait_for("the breaker closed", Duration::from_secs(30), || async {
        let metrics = scrape_metrics(&metrics_url).await;
        (metric_sample(&metrics, "rebound_consumer_breaker_state") == Some(0.0)
            && metric_sample(&metrics, "rebound_consumer_paused") == Some(0.0))
        .then_some(metrics)
    })
    .await;
    let dead_letters = read_all(&format!("{prefix}dlq")).await;
    let tier_records =
        read_all(&format!("{prefix}retry-1s")).await.len() + read_all(&format!("{prefix}retry-2s")).await.len();
    let requests = sink.requests();
    let failed_requests = requests.iter().filter(|request| request.status == 503).count();
    let opened = metric_sample(&metrics, open_series).unwrap_or(0.0);
    let probes_failed =
        metric_sample(&metrics, "rebound_consumer_breaker_probes_total{outcome=\"failed\"}").unwrap_or(0.0);
    println!(
        "outage {OUTAGE:?}: {NOTES} notes, most held {most_held}, tier records {tier_records} \
         ({tier_records_during_outage} during the outage), dead letters {}, sink requests {} \
         ({failed_requests} answered 503), breaker opened {opened} time(s), failed probes \
         {probes_failed}, every note applied {drained_in:?} after the sink recovered",
        dead_letters.len(),
        requests.len(),
    );
    assert!(dead_letters.is_empty(), "{} dead letters", dead_letters.len());
    // Tier traffic is bounded by what reached the tiers before the breaker opened (at most a
    // run of `--breaker-consecutive` failures), not by the outage's length.
    assert!(tier_records <= 20, "{tier_records} tier records");
    assert!(most_held >= 1.0, "records were held: {most_held}");
    // A 503 for each of 200 notes through 2 tiers would be 600 failed requests; the breaker
    // keeps them to the first batches and one probe every few seconds.
    assert!(failed_requests < 2 * NOTES, "{failed_requests} requests answered 503");
    consumer.stop().await;
    scheduler.stop().await;
}
