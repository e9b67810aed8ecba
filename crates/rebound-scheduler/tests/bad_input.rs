//! The retry scheduler against a real broker, fed tier records at the edges of what Kafka
//! allows: due times before the epoch, duplicated and non-UTF-8 contract headers, huge and
//! non-UTF-8 foreign headers, and a record too large for the topic it goes back to. Whatever
//! arrives, it is republished or dead-lettered by the documented rules, and the partition flows.

mod common;

use std::time::Duration;

use common::{scheduler_group, start_scheduler};
use rebound_kafka::{ConsumedRecord, OutgoingRecord, fetch_committed_offsets};
use rebound_retry::{RecordHeaders, contract};
use rebound_service::now_epoch_ms;
use rebound_testkit::{
    RunningService, assert_history_headers_at_most_once, create_test_topics, create_test_topics_with_config,
    incompressible_bytes, kafka_args, producer, read_all, record_keyed, unique_prefix, wait_for, wait_for_records,
};

struct RunningScheduler {
    service: RunningService,
    group: String,
}

impl RunningScheduler {
    fn start(prefix: &str) -> Self {
        Self {
            service: start_scheduler(prefix, "retry-5s:5s", &[]),
            group: scheduler_group(prefix),
        }
    }

    /// Stops the scheduler and asserts it neither panicked nor failed, then that it committed
    /// its tier partition 0 up to `end`: nothing is left stuck.
    async fn stop_with_committed(self, prefix: &str, end: i64) {
        self.service.stop().await;
        let committed = fetch_committed_offsets(
            &kafka_args(),
            &self.group,
            &format!("{prefix}retry-5s"),
            Duration::from_secs(10),
        )
        .await
        .expect("committed offsets");
        assert_eq!(committed.get(&0), Some(&end), "tier partition committed to its end");
    }
}

/// Headers of a record the consumer sent to `retry-5s` from offset 7, due at `due_ms`.
fn tier_headers(prefix: &str, due_ms: i64) -> RecordHeaders {
    rebound_testkit::tier_record_headers(prefix, due_ms, 7)
}

async fn produce_tier_record(prefix: &str, key: &str, value: &[u8], headers: RecordHeaders) {
    producer()
        .send(&OutgoingRecord {
            topic: format!("{prefix}retry-5s"),
            partition: Some(0),
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_vec()),
            headers,
        })
        .await
        .expect("acknowledged");
}

/// Waits until every key is in the topic; returns the topic's records.
async fn wait_for_keys(topic: &str, keys: &[&str]) -> Vec<ConsumedRecord> {
    wait_for(&format!("{keys:?} in {topic}"), Duration::from_secs(60), || async {
        let records = read_all(topic).await;
        keys.iter()
            .all(|key| {
                records
                    .iter()
                    .any(|record| record.key.as_deref() == Some(key.as_bytes()))
            })
            .then_some(records)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_timestamps_before_the_epoch_are_republished_at_once_without_a_panic() {
    let prefix = unique_prefix("negative-due");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 1).await;
    let scheduler = RunningScheduler::start(&prefix);
    let cases = [
        ("minus-one", -1),
        ("long-ago", -1_700_000_000_000),
        ("minimum", i64::MIN),
    ];
    for (key, due_ms) in cases {
        produce_tier_record(&prefix, key, key.as_bytes(), tier_headers(&prefix, due_ms)).await;
    }
    produce_tier_record(&prefix, "healthy", b"healthy", tier_headers(&prefix, now_epoch_ms())).await;

    let republished = wait_for_keys(
        &format!("{prefix}notes"),
        &["minus-one", "long-ago", "minimum", "healthy"],
    )
    .await;
    scheduler.stop_with_committed(&prefix, 4).await;

    for (key, due_ms) in cases {
        let record = record_keyed(&republished, key);
        assert_eq!(record.value.as_deref(), Some(key.as_bytes()));
        assert_eq!(
            record.headers.get_str(contract::DUE_TIMESTAMP),
            Some(due_ms.to_string().as_str()),
            "headers travel unchanged"
        );
    }
    assert!(
        read_all(&format!("{prefix}dlq")).await.is_empty(),
        "a past due time is not poison"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_conflicting_and_non_utf8_contract_headers_dead_letter_a_tier_record_as_poison() {
    let prefix = unique_prefix("scheduler-garbled");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 1).await;
    let scheduler = RunningScheduler::start(&prefix);
    // One due now and one due in ten minutes: no rule can say which holds.
    let mut two_due_times = tier_headers(&prefix, now_epoch_ms());
    two_due_times.push(
        contract::DUE_TIMESTAMP,
        Some((now_epoch_ms() + 600_000).to_string().into_bytes()),
    );
    let mut two_targets = tier_headers(&prefix, now_epoch_ms());
    two_targets.push(contract::ORIGINAL_TOPIC, Some(format!("{prefix}dlq").into_bytes()));
    let mut target_not_utf8 = tier_headers(&prefix, now_epoch_ms());
    target_not_utf8.set(contract::ORIGINAL_TOPIC, vec![0xFF, 0xFE]);
    let mut attempt_not_utf8 = tier_headers(&prefix, now_epoch_ms());
    attempt_not_utf8.set(contract::ATTEMPT, vec![0xC3, 0x28]);
    let cases = [
        ("two-due-times", two_due_times, contract::DUE_TIMESTAMP),
        ("two-targets", two_targets, contract::ORIGINAL_TOPIC),
        ("target-not-utf8", target_not_utf8, contract::ORIGINAL_TOPIC),
        ("attempt-not-utf8", attempt_not_utf8, contract::ATTEMPT),
    ];
    for (key, headers, _) in &cases {
        let mut headers = headers.clone();
        headers.push("binary", Some(vec![0x80, 0x00, 0xFF]));
        produce_tier_record(&prefix, key, key.as_bytes(), headers).await;
    }
    produce_tier_record(&prefix, "healthy", b"healthy", tier_headers(&prefix, now_epoch_ms())).await;

    let dead_letters = wait_for_records(&format!("{prefix}dlq"), cases.len(), Duration::from_secs(60)).await;
    wait_for_keys(&format!("{prefix}notes"), &["healthy"]).await;
    scheduler.stop_with_committed(&prefix, 5).await;

    assert_eq!(dead_letters.len(), cases.len());
    for (key, _, culprit) in &cases {
        let letter = record_keyed(&dead_letters, key);
        assert_eq!(letter.value.as_deref(), Some(key.as_bytes()), "{key}: bytes untouched");
        assert_eq!(letter.headers.get_str(contract::ERROR_KIND), Some("poison"), "{key}");
        let message = letter.headers.get_str(contract::ERROR_MESSAGE).unwrap_or_default();
        assert!(message.contains(culprit), "{key}: {message}");
        assert_history_headers_at_most_once(letter, key);
        assert_eq!(
            letter.headers.get("binary").and_then(|header| header.value.as_deref()),
            Some([0x80, 0x00, 0xFF].as_slice()),
            "{key}: foreign header byte for byte"
        );
    }
    let source = read_all(&format!("{prefix}notes")).await;
    assert_eq!(source.len(), 1, "only the healthy record went back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_non_utf8_foreign_headers_are_republished_byte_exact() {
    let prefix = unique_prefix("scheduler-foreign");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 1).await;
    let scheduler = RunningScheduler::start(&prefix);
    let mut headers = tier_headers(&prefix, now_epoch_ms());
    headers.push("blob", Some(incompressible_bytes(256 * 1024, 7)));
    headers.push("binary", Some(vec![0xFF, 0xFE, 0x00]));
    headers.push("null-value", None);
    for index in 0..2000 {
        headers.push(format!("h-{index}"), Some(vec![0x80; 4]));
    }
    produce_tier_record(&prefix, "awkward", b"awkward", headers.clone()).await;

    let republished = wait_for_keys(&format!("{prefix}notes"), &["awkward"]).await;
    scheduler.stop_with_committed(&prefix, 1).await;

    let copy = record_keyed(&republished, "awkward");
    let without_trace = |headers: &RecordHeaders| -> Vec<(String, Option<Vec<u8>>)> {
        headers
            .iter()
            .filter(|header| header.key != "traceparent")
            .map(|header| (header.key.clone(), header.value.clone()))
            .collect()
    };
    assert_eq!(
        without_trace(&copy.headers),
        without_trace(&headers),
        "every header, in order, byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_record_too_large_for_its_source_topic_is_dead_lettered_as_a_stub_and_the_partition_flows() {
    let prefix = unique_prefix("republish-too-large");
    create_test_topics(&prefix, &["retry-5s", "dlq"], 1).await;
    create_test_topics_with_config(&prefix, &["notes"], 1, &[("max.message.bytes", "65536")]).await;
    let scheduler = RunningScheduler::start(&prefix);
    let big = incompressible_bytes(200_000, 8);
    produce_tier_record(&prefix, "big", &big, tier_headers(&prefix, now_epoch_ms())).await;
    produce_tier_record(&prefix, "small", b"small", tier_headers(&prefix, now_epoch_ms())).await;

    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    let republished = wait_for_keys(&format!("{prefix}notes"), &["small"]).await;
    scheduler.stop_with_committed(&prefix, 2).await;

    assert_eq!(dead_letters.len(), 1);
    let stub = record_keyed(&dead_letters, "big");
    assert_eq!(stub.value, None, "the stub carries no value");
    assert_eq!(
        stub.headers.get_str(contract::DROPPED_VALUE_BYTES),
        Some(big.len().to_string().as_str())
    );
    assert_eq!(stub.headers.get_str(contract::ERROR_KIND), Some("poison"));
    let message = stub.headers.get_str(contract::ERROR_MESSAGE).unwrap_or_default();
    assert!(
        message.starts_with(&format!("copy refused as too large by {prefix}notes")),
        "{message}"
    );
    assert_eq!(stub.headers.get_str(contract::ORIGINAL_OFFSET), Some("7"));
    assert_eq!(
        stub.headers.get_str(contract::TIER),
        Some(format!("{prefix}retry-5s").as_str())
    );
    assert_eq!(
        record_keyed(&republished, "small").value.as_deref(),
        Some(b"small".as_slice()),
        "a small record in the same batch goes back whole"
    );
}
