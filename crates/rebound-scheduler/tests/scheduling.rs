//! The retry scheduler against a real broker: never early, never blocked by another partition,
//! nothing stuck after a rebalance, and unroutable tier records dead-lettered as poison.

mod common;

use std::time::Duration;

use common::start_scheduler;
use rebound_kafka::{ConsumedRecord, OutgoingRecord, alter_topic_config, fetch_committed_offsets};
use rebound_retry::{RecordHeaders, contract};
use rebound_service::now_epoch_ms;
use rebound_testkit::{
    RunningService, create_test_topics, create_test_topics_with_config, kafka_args, producer, read_all, unique_prefix,
    wait_for, wait_for_records,
};

struct RunningScheduler(RunningService);

impl RunningScheduler {
    fn start(prefix: &str, extra_flags: &[&str]) -> Self {
        Self::start_serving(prefix, "retry-5s:5s", extra_flags)
    }

    /// Starts a scheduler serving one tier given as `--tier` takes it (`NAME` or `NAME:DELAY`).
    fn start_serving(prefix: &str, tier: &str, extra_flags: &[&str]) -> Self {
        Self(start_scheduler(prefix, tier, extra_flags))
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

async fn produce_tier_record(prefix: &str, partition: Option<i32>, key: &str, headers: RecordHeaders) {
    producer()
        .send(&OutgoingRecord {
            topic: format!("{prefix}retry-5s"),
            partition,
            key: Some(key.as_bytes().to_vec()),
            value: Some(format!("value of {key}").into_bytes()),
            headers,
        })
        .await
        .expect("acknowledged");
}

fn due_of(record: &ConsumedRecord) -> i64 {
    record
        .headers
        .get_str(contract::DUE_TIMESTAMP)
        .and_then(|due| due.parse().ok())
        .expect("republished record keeps its due timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_republished_before_its_due_time() {
    let prefix = unique_prefix("never-early");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 3).await;
    let scheduler = RunningScheduler::start(&prefix, &[]);
    let count = 300;
    let start_ms = now_epoch_ms();
    for sequence in 0..count {
        // Due times rise with production order, as a tier's fixed delay makes them, spread
        // over 0.5 to 2 s so that most records are held before they are released.
        let due_ms = start_ms + 500 + i64::try_from(sequence * 5).expect("small");
        produce_tier_record(
            &prefix,
            None,
            &format!("key-{sequence}"),
            rebound_testkit::tier_record_headers(&prefix, due_ms, sequence),
        )
        .await;
    }
    let republished = wait_for_records(&format!("{prefix}notes"), count, Duration::from_secs(60)).await;
    scheduler.stop().await;

    assert_eq!(republished.len(), count);
    let lateness: Vec<i64> = republished
        .iter()
        .map(|record| record.timestamp_ms.expect("timestamped") - due_of(record))
        .collect();
    let earliest = lateness.iter().min().copied().expect("records");
    let latest = lateness.iter().max().copied().expect("records");
    eprintln!("lateness over {count} records: earliest {earliest} ms, latest {latest} ms");
    assert!(
        earliest >= 0,
        "a record was republished {} ms before it was due",
        -earliest
    );
    for record in &republished {
        assert_eq!(
            record.headers.get_str(contract::ATTEMPT),
            Some("1"),
            "headers travel unchanged"
        );
        assert!(
            record
                .value
                .as_deref()
                .is_some_and(|value| value.starts_with(b"value of key-"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_partition_does_not_block_other_partitions() {
    let prefix = unique_prefix("not-blocked");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 2).await;
    let scheduler = RunningScheduler::start(&prefix, &[]);
    let far_future = now_epoch_ms() + 600_000;
    produce_tier_record(
        &prefix,
        Some(0),
        "waits",
        rebound_testkit::tier_record_headers(&prefix, far_future, 0),
    )
    .await;
    for sequence in 1..=20 {
        produce_tier_record(
            &prefix,
            Some(1),
            &format!("flows-{sequence}"),
            rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), sequence),
        )
        .await;
    }
    // Partition 0 is paused on a record due in ten minutes; partition 1 must flow meanwhile,
    // and so must new records behind it on partition 1.
    let republished = wait_for_records(&format!("{prefix}notes"), 20, Duration::from_secs(30)).await;
    produce_tier_record(
        &prefix,
        Some(1),
        "later",
        rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 21),
    )
    .await;
    let republished_after = wait_for_records(&format!("{prefix}notes"), 21, Duration::from_secs(30)).await;
    scheduler.stop().await;

    assert_eq!(republished.len(), 20);
    assert!(
        republished_after
            .iter()
            .all(|record| record.key.as_deref() != Some(b"waits".as_slice()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_scheduler_joining_leaves_no_partition_stuck() {
    let prefix = unique_prefix("rebalance");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 4).await;
    let first = RunningScheduler::start(&prefix, &[]);
    // Warm-up records due now prove the first scheduler holds the assignment.
    for partition in 0..4 {
        produce_tier_record(
            &prefix,
            Some(partition),
            &format!("warm-{partition}"),
            rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 0),
        )
        .await;
    }
    wait_for_records(&format!("{prefix}notes"), 4, Duration::from_secs(30)).await;
    // Records due in 4 s: the first scheduler pauses every partition on them.
    let due_ms = now_epoch_ms() + 4000;
    for partition in 0..4 {
        for sequence in 0..5 {
            produce_tier_record(
                &prefix,
                Some(partition),
                &format!("held-{partition}-{sequence}"),
                rebound_testkit::tier_record_headers(&prefix, due_ms, sequence),
            )
            .await;
        }
    }
    let second = RunningScheduler::start(&prefix, &[]);
    let republished = wait_for_records(&format!("{prefix}notes"), 24, Duration::from_secs(60)).await;
    // After the rebalance, a record due now on every partition still flows promptly.
    for partition in 0..4 {
        produce_tier_record(
            &prefix,
            Some(partition),
            &format!("after-{partition}"),
            rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 9),
        )
        .await;
    }
    let all = wait_for_records(&format!("{prefix}notes"), 28, Duration::from_secs(30)).await;
    first.stop().await;
    second.stop().await;

    assert!(republished.len() >= 24);
    for record in all
        .iter()
        .filter(|record| record.key.as_deref().is_some_and(|key| key.starts_with(b"held-")))
    {
        assert!(
            record.timestamp_ms.expect("timestamped") >= due_ms,
            "held record republished early"
        );
    }
    let keys: std::collections::BTreeSet<Vec<u8>> = all.iter().filter_map(|record| record.key.clone()).collect();
    for partition in 0..4 {
        assert!(
            keys.contains(format!("after-{partition}").as_bytes()),
            "partition {partition} is not stuck"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_tier_records_are_dead_lettered_as_poison() {
    let prefix = unique_prefix("scheduler-poison");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 1).await;
    let scheduler = RunningScheduler::start(&prefix, &[]);
    produce_tier_record(&prefix, None, "no-headers", RecordHeaders::new()).await;
    let mut garbled = rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 1);
    garbled.set(contract::ATTEMPT, "-1");
    produce_tier_record(&prefix, None, "garbled", garbled).await;
    let mut no_original = rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 2);
    no_original.remove(contract::ORIGINAL_TOPIC);
    produce_tier_record(&prefix, None, "no-original", no_original).await;
    let mut loops = rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 3);
    loops.set(contract::ORIGINAL_TOPIC, format!("{prefix}dlq"));
    produce_tier_record(&prefix, None, "loops", loops).await;
    let mut missing_topic = rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 4);
    missing_topic.set(contract::ORIGINAL_TOPIC, format!("{prefix}no-such-topic"));
    produce_tier_record(&prefix, None, "missing-topic", missing_topic).await;
    produce_tier_record(
        &prefix,
        None,
        "healthy",
        rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 5),
    )
    .await;
    // A due time centuries ahead is bad input, not a reason to hold the partition or to
    // release the record early.
    let absurd = rebound_testkit::tier_record_headers(&prefix, i64::MAX - 1, 6);
    produce_tier_record(&prefix, None, "absurd-due", absurd).await;

    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 6, Duration::from_secs(90)).await;
    scheduler.stop().await;

    let keys: Vec<&[u8]> = dead_letters.iter().filter_map(|record| record.key.as_deref()).collect();
    for expected in [
        "no-headers",
        "garbled",
        "no-original",
        "loops",
        "missing-topic",
        "absurd-due",
    ] {
        assert!(
            keys.contains(&expected.as_bytes()),
            "{expected} dead-lettered: {keys:?}"
        );
    }
    for letter in &dead_letters {
        assert_eq!(letter.headers.get_str(contract::ERROR_KIND), Some("poison"));
        let key = String::from_utf8_lossy(letter.key.as_deref().unwrap_or_default()).into_owned();
        assert_eq!(
            letter.value.as_deref(),
            Some(format!("value of {key}").as_bytes()),
            "bytes untouched"
        );
    }
    let source = read_all(&format!("{prefix}notes")).await;
    let source_keys: Vec<&[u8]> = source.iter().filter_map(|record| record.key.as_deref()).collect();
    assert!(
        source_keys.contains(&b"healthy".as_slice()),
        "healthy records behind poison still flow"
    );
    assert!(
        !source_keys.contains(&b"absurd-due".as_slice()),
        "an absurd due time is never republished"
    );
    let absurd_letter = dead_letters
        .iter()
        .find(|letter| letter.key.as_deref() == Some(b"absurd-due".as_slice()))
        .expect("dead-lettered");
    let message = absurd_letter
        .headers
        .get_str(contract::ERROR_MESSAGE)
        .unwrap_or_default();
    assert!(
        message.contains(&(i64::MAX - 1).to_string()) && message.contains("30days"),
        "the message names the due time and the bound: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_due_in_two_hours_is_held_while_other_partitions_flow() {
    let prefix = unique_prefix("held-two-hours");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 2).await;
    // The tier is served without a delay, as `--tier retry-6h` would be: the record's own due
    // time must still rule.
    let scheduler = RunningScheduler::start_serving(&prefix, "retry-5s", &[]);
    let two_hours_ms = 2 * 60 * 60 * 1000;
    produce_tier_record(
        &prefix,
        Some(0),
        "two-hours",
        rebound_testkit::tier_record_headers(&prefix, now_epoch_ms() + two_hours_ms, 0),
    )
    .await;
    produce_tier_record(
        &prefix,
        Some(0),
        "behind",
        rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 1),
    )
    .await;
    for sequence in 0..10 {
        produce_tier_record(
            &prefix,
            Some(1),
            &format!("flows-{sequence}"),
            rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), sequence),
        )
        .await;
    }
    wait_for_records(&format!("{prefix}notes"), 10, Duration::from_secs(30)).await;
    // Later records of the other partition flow too, while the first still waits.
    produce_tier_record(
        &prefix,
        Some(1),
        "later",
        rebound_testkit::tier_record_headers(&prefix, now_epoch_ms(), 10),
    )
    .await;
    let republished = wait_for_records(&format!("{prefix}notes"), 11, Duration::from_secs(30)).await;
    scheduler.stop().await;

    let keys: Vec<&[u8]> = republished.iter().filter_map(|record| record.key.as_deref()).collect();
    assert_eq!(republished.len(), 11, "{keys:?}");
    assert!(keys.contains(&b"later".as_slice()));
    assert!(!keys.contains(&b"two-hours".as_slice()), "released two hours early");
    assert!(!keys.contains(&b"behind".as_slice()), "partition order kept");
    assert!(
        read_all(&format!("{prefix}dlq")).await.is_empty(),
        "a due time two hours out is not poison"
    );
}

/// Every key of a topic with how often it is there.
async fn key_counts(topic: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for record in read_all(topic).await {
        let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_acknowledged_behind_a_refused_one_are_not_sent_again() {
    records_behind_a_refused_one_are_sent_once("at-least-once").await;
}

/// With exactly-once delivery the records behind a refused one in its partition wait for it:
/// committing their copies before it would copy them again after a crash, since the partition's
/// offset cannot move past the refused record. Other partitions flow (the markers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_behind_a_refused_one_wait_for_it_with_exactly_once_delivery() {
    records_behind_a_refused_one_are_sent_once("exactly-once").await;
}

async fn records_behind_a_refused_one_are_sent_once(delivery: &str) {
    let prefix = unique_prefix("refused-once");
    create_test_topics(&prefix, &["notes", "notes-a", "retry-5s", "dlq"], 2).await;
    // notes-b is compacted, and a compacted topic refuses every record without a key
    // (INVALID_RECORD) until its cleanup policy is changed back. (A topic-level
    // `min.insync.replicas=2` does not refuse on this broker: with eligible leader replicas
    // enabled, Kafka 4.1 ignores the topic-level setting. `message.timestamp.before.max.ms=0`
    // refuses only copies that reach the broker a millisecond or more after they were stamped.)
    create_test_topics_with_config(&prefix, &["notes-b"], 1, &[("cleanup.policy", "compact")]).await;
    let group = format!("{prefix}scheduler");
    // A refused copy is tried again every second or so.
    let scheduler = RunningScheduler::start(&prefix, &["--delivery", delivery]);
    let now = now_epoch_ms();
    let mut to_b = rebound_testkit::tier_record_headers(&prefix, now, 0);
    to_b.set(contract::ORIGINAL_TOPIC, format!("{prefix}notes-b"));
    producer()
        .send(&OutgoingRecord {
            topic: format!("{prefix}retry-5s"),
            partition: Some(0),
            key: None,
            value: Some(b"value of b-0".to_vec()),
            headers: to_b,
        })
        .await
        .expect("acknowledged");
    for sequence in 1..=5 {
        let mut to_a = rebound_testkit::tier_record_headers(&prefix, now, sequence);
        to_a.set(contract::ORIGINAL_TOPIC, format!("{prefix}notes-a"));
        produce_tier_record(&prefix, Some(0), &format!("a-{sequence}"), to_a).await;
    }
    // Markers on the other partition, due 4, 8 and 12 s out: once the last is back, the
    // scheduler has been through several refusal rounds of partition 0.
    for round in 1..=3 {
        produce_tier_record(
            &prefix,
            Some(1),
            &format!("marker-{round}"),
            rebound_testkit::tier_record_headers(&prefix, now + round * 4000, 10),
        )
        .await;
    }
    wait_for_records(&format!("{prefix}notes"), 3, Duration::from_secs(60)).await;
    let to_a = key_counts(&format!("{prefix}notes-a")).await;
    let expected: std::collections::BTreeMap<String, usize> =
        (1..=5).map(|sequence| (format!("a-{sequence}"), 1)).collect();
    if delivery == "exactly-once" {
        assert!(to_a.is_empty(), "nothing committed past the refused record: {to_a:?}");
    } else {
        assert_eq!(to_a, expected, "each acknowledged record sent exactly once");
    }
    assert!(
        read_all(&format!("{prefix}notes-b")).await.is_empty(),
        "notes-b refuses"
    );

    alter_topic_config(
        &kafka_args(),
        &format!("{prefix}notes-b"),
        &[("cleanup.policy", "delete")],
        Duration::from_secs(30),
    )
    .await
    .expect("notes-b writable again");
    wait_for_records(&format!("{prefix}notes-b"), 1, Duration::from_secs(60)).await;
    // Offsets are committed in order: partition 0 moves past b-0 and every a-*.
    wait_for(
        "tier partition 0 committed to its end",
        Duration::from_secs(30),
        || async {
            let committed = fetch_committed_offsets(
                &kafka_args(),
                &group,
                &format!("{prefix}retry-5s"),
                Duration::from_secs(10),
            )
            .await
            .ok()?;
            (committed.get(&0) == Some(&6)).then_some(())
        },
    )
    .await;
    scheduler.stop().await;

    let to_b = read_all(&format!("{prefix}notes-b")).await;
    assert_eq!(to_b.len(), 1, "the refused record arrives once");
    assert_eq!(to_b[0].value.as_deref(), Some(b"value of b-0".as_slice()));
    assert_eq!(
        key_counts(&format!("{prefix}notes-a")).await,
        expected,
        "still once each"
    );
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
}
