//! Per-key order during retries against a real broker, with the consumer and the scheduler
//! in-process and a scripted webhook on loopback: a key's later versions wait behind its first
//! while it walks the tiers, follow it to the DLQ when it is dead-lettered (or are applied, as
//! configured), and other keys are not held up meanwhile.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_retry::contract;
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, note, produce_notes, read_all, required_header as header, unique_prefix,
    wait_for, wait_for_records,
};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];
const SHORT_TIERS: [&str; 4] = ["--tier", "retry-5s:1s", "--tier", "retry-1m:2s"];

/// The versions the sink received for `note_id`, in arrival order, with its answers.
fn versions_received(sink: &ScriptedHttpSink, note_id: &str) -> Vec<(i64, u16)> {
    sink.requests_for(note_id)
        .iter()
        .map(|request| (request.version, request.status))
        .collect()
}

/// Every entry of the state topic is a tombstone by now: nothing is blocked or parked.
async fn assert_state_is_empty(prefix: &str) {
    let mut latest: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for record in read_all(&format!("{prefix}rebound-blocked-keys")).await {
        latest.insert(record.key.clone().expect("entries are keyed"), record.value.is_some());
    }
    assert!(!latest.is_empty(), "the state topic was written");
    let live: Vec<String> = latest
        .iter()
        .filter(|(_, live)| **live)
        .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
        .collect();
    assert!(live.is_empty(), "entries still live: {live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_versions_wait_behind_the_first_while_it_walks_the_tiers_and_other_keys_flow() {
    let prefix = unique_prefix("key-order");
    create_test_topics(&prefix, &TOPICS, 2).await;
    // v1 of "ordered" fails twice, then everything succeeds.
    let sink =
        ScriptedHttpSink::start(|note_id, attempt| if note_id == "ordered" && attempt <= 2 { 503 } else { 200 }).await;
    let source = format!("{prefix}notes");
    let mut flags = vec!["--topic-prefix", prefix.as_str()];
    flags.extend_from_slice(&SHORT_TIERS);
    let sink_url = sink.url();
    let mut consumer_flags = flags.clone();
    consumer_flags.extend_from_slice(&["--sink", &sink_url]);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&flags);

    produce_notes(&source, &[note("ordered", 1), note("ordered", 2), note("ordered", 3)]).await;
    let others: Vec<_> = (0..20).map(|index| note(&format!("other-{index}"), 1)).collect();
    produce_notes(&source, &others).await;

    let received = wait_for(
        "the three versions of the ordered key applied",
        Duration::from_secs(60),
        || async {
            let received = versions_received(&sink, "ordered");
            (received.iter().filter(|(_, status)| *status == 200).count() == 3).then_some(received)
        },
    )
    .await;
    consumer.stop().await;
    scheduler.stop().await;

    assert_eq!(
        received,
        vec![(1, 503), (1, 503), (1, 200), (2, 200), (3, 200)],
        "v2 and v3 reach the sink only after v1, in order"
    );
    // Other keys of the same partitions were applied at once, before v1's first retry.
    let first_retry_at = sink.requests_for("ordered")[1].received_at_ms;
    let others_done_at = (0..20)
        .map(|index| {
            let requests = sink.requests_for(&format!("other-{index}"));
            assert_eq!(requests.len(), 1, "other-{index} applied once");
            requests[0].received_at_ms
        })
        .max()
        .expect("twenty keys");
    let first_failure_at = sink.requests_for("ordered")[0].received_at_ms;
    println!(
        "other keys all applied {} ms after the blocker's first failure; its first retry came {} ms after it",
        others_done_at - first_failure_at,
        first_retry_at - first_failure_at
    );
    assert!(
        others_done_at < first_retry_at,
        "other keys were held up: last applied at {others_done_at}, v1 retried at {first_retry_at}"
    );
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
    assert_state_is_empty(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_parked_behind_a_dead_lettered_blocker_follow_it_to_the_dlq() {
    let prefix = unique_prefix("key-order-dlq");
    create_test_topics(&prefix, &TOPICS, 2).await;
    let sink = ScriptedHttpSink::start(|note_id, _| if note_id == "doomed" { 503 } else { 200 }).await;
    let source = format!("{prefix}notes");
    let mut flags = vec!["--topic-prefix", prefix.as_str()];
    flags.extend_from_slice(&SHORT_TIERS);
    let sink_url = sink.url();
    let mut consumer_flags = flags.clone();
    consumer_flags.extend_from_slice(&["--sink", &sink_url, "--on-dead-key", "dlq"]);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&flags);

    produce_notes(&source, &[note("doomed", 1), note("doomed", 2), note("doomed", 3)]).await;
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 3, Duration::from_secs(60)).await;
    consumer.stop().await;
    scheduler.stop().await;

    assert_eq!(
        versions_received(&sink, "doomed"),
        vec![(1, 503), (1, 503), (1, 503)],
        "only v1 was ever tried"
    );
    let blocker_offset = header(&dead_letters[0], contract::ORIGINAL_OFFSET).to_owned();
    assert_eq!(header(&dead_letters[0], contract::ERROR_KIND), "transient");
    for follower in &dead_letters[1..] {
        assert_eq!(header(follower, contract::ERROR_KIND), "blocked-by-key");
        assert_eq!(header(follower, contract::BLOCKED_BY_OFFSET), blocker_offset);
        assert_eq!(header(follower, contract::BLOCKED_BY_TOPIC), source);
        assert_eq!(follower.key.as_deref(), Some(b"doomed".as_slice()));
    }
    let follower_offsets: Vec<i64> = dead_letters[1..]
        .iter()
        .map(|record| header(record, contract::ORIGINAL_OFFSET).parse().expect("offset"))
        .collect();
    let blocker_offset: i64 = blocker_offset.parse().expect("offset");
    assert_eq!(
        follower_offsets,
        vec![blocker_offset + 1, blocker_offset + 2],
        "in order"
    );
    assert_state_is_empty(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_continue_records_parked_behind_a_dead_lettered_blocker_are_applied_after_it() {
    let prefix = unique_prefix("key-order-continue");
    create_test_topics(&prefix, &TOPICS, 2).await;
    let sink =
        ScriptedHttpSink::start(|note_id, attempt| if note_id == "doomed" && attempt <= 3 { 503 } else { 200 }).await;
    let source = format!("{prefix}notes");
    let mut flags = vec!["--topic-prefix", prefix.as_str()];
    flags.extend_from_slice(&SHORT_TIERS);
    let sink_url = sink.url();
    let mut consumer_flags = flags.clone();
    consumer_flags.extend_from_slice(&["--sink", &sink_url, "--on-dead-key", "continue"]);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&flags);

    produce_notes(&source, &[note("doomed", 1), note("doomed", 2), note("doomed", 3)]).await;
    let received = wait_for("v2 and v3 applied", Duration::from_secs(60), || async {
        let received = versions_received(&sink, "doomed");
        (received.len() == 5).then_some(received)
    })
    .await;
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(10)).await;
    consumer.stop().await;
    scheduler.stop().await;

    assert_eq!(received, vec![(1, 503), (1, 503), (1, 503), (2, 200), (3, 200)]);
    assert_eq!(dead_letters.len(), 1, "only the blocker is dead-lettered");
    assert_state_is_empty(&prefix).await;
}
