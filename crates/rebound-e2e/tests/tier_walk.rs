//! The consumer and the scheduler together against a real broker: a transient failure walks the
//! tiers and comes back, a record that keeps failing walks both tiers into the DLQ, and whatever
//! foreign headers a record carries travel byte for byte through every hop.

// The in-process starters are the consumer crate's, shared rather than copied.
#[path = "../../rebound-consumer/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_retry::{RecordHeaders, contract};
use rebound_schema::NoteCodec;
use rebound_testkit::{
    ScriptedHttpSink, assert_history_headers_at_most_once, create_test_topics, foreign_headers, incompressible_bytes,
    note, produce_raw, read_all, record_keyed, required_header as header, unique_prefix, wait_for, wait_for_records,
};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];
const SHORT_TIERS: [&str; 4] = ["--tier", "retry-5s:1s", "--tier", "retry-1m:2s"];

async fn produce_note_with_user_header(topic: &str, note_id: &str) -> Vec<u8> {
    let value = NoteCodec::embedded().encode(&note(note_id, 1)).expect("encodes");
    let mut headers = RecordHeaders::new();
    headers.push(
        "traceparent",
        Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec()),
    );
    produce_raw(topic, Some(note_id.as_bytes()), Some(&value), headers).await;
    value
}

/// Foreign headers a rogue or careless writer might attach: a 256 KiB value, binary values that
/// are not UTF-8, a null value and a duplicated key.
fn awkward_foreign_headers() -> RecordHeaders {
    let mut headers = RecordHeaders::new();
    headers.push("blob", Some(incompressible_bytes(256 * 1024, 5)));
    headers.push("binary", Some(vec![0xFF, 0xFE, 0x00, 0x80, 0xC3, 0x28]));
    headers.push("null-value", None);
    headers.push("repeated", Some(b"first".to_vec()));
    headers.push("repeated", Some(vec![0xE2, 0x82]));
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_is_applied_after_first_tier() {
    let prefix = unique_prefix("transient-once");
    create_test_topics(&prefix, &TOPICS, 2).await;
    let sink =
        ScriptedHttpSink::start(|note_id, attempt| if note_id == "flaky" && attempt == 1 { 503 } else { 200 }).await;
    let original_value = produce_note_with_user_header(&format!("{prefix}notes"), "flaky").await;
    let mut flags = vec!["--topic-prefix", prefix.as_str()];
    flags.extend_from_slice(&SHORT_TIERS);
    let sink_url = sink.url();
    let mut consumer_flags = flags.clone();
    consumer_flags.extend_from_slice(&["--sink", &sink_url]);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&flags);

    let requests = wait_for(
        "flaky applied on its second attempt",
        Duration::from_secs(60),
        || async {
            let requests = sink.requests_for("flaky");
            (requests.len() == 2).then_some(requests)
        },
    )
    .await;
    consumer.stop().await;
    scheduler.stop().await;

    assert_eq!(requests[0].status, 503);
    assert_eq!(requests[1].status, 200);
    assert_eq!(requests[1].idempotency_key, "flaky:1");
    let waited_ms = requests[1].received_at_ms - requests[0].received_at_ms;
    assert!(
        waited_ms >= 1000,
        "redelivered after {waited_ms} ms, before the 1 s tier delay"
    );

    let tier_records = read_all(&format!("{prefix}retry-5s")).await;
    assert_eq!(tier_records.len(), 1);
    let copy = &tier_records[0];
    assert_eq!(copy.key.as_deref(), Some(b"flaky".as_slice()));
    assert_eq!(
        copy.value.as_deref(),
        Some(original_value.as_slice()),
        "value is byte for byte the original"
    );
    assert!(
        header(copy, "traceparent").starts_with("00-4bf92f"),
        "user headers are preserved"
    );
    assert_eq!(header(copy, contract::ATTEMPT), "1");
    assert_eq!(header(copy, contract::TIER), format!("{prefix}retry-5s"));
    assert_eq!(header(copy, contract::ORIGINAL_TOPIC), format!("{prefix}notes"));
    assert_eq!(header(copy, contract::ORIGINAL_OFFSET), "0");
    assert_eq!(header(copy, contract::ERROR_KIND), "transient");
    assert!(header(copy, contract::ERROR_MESSAGE).contains("503"));
    let first_failure: i64 = header(copy, contract::FIRST_FAILURE_TIMESTAMP).parse().expect("number");
    let due: i64 = header(copy, contract::DUE_TIMESTAMP).parse().expect("number");
    // The tier's 1 s, spread upwards by up to the default jitter of 20%, never below it.
    assert!(
        (1000..=1200).contains(&(due - first_failure)),
        "{}",
        due - first_failure
    );
    assert!(read_all(&format!("{prefix}retry-1m")).await.is_empty());
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
    // The republished copy went back to the source topic with the history on it.
    let source = read_all(&format!("{prefix}notes")).await;
    assert_eq!(source.len(), 2);
    assert_eq!(
        source
            .iter()
            .filter(|record| record.headers.get(contract::ATTEMPT).is_some())
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_transient_walks_both_tiers_then_dead_letters_with_full_headers() {
    let prefix = unique_prefix("always-transient");
    create_test_topics(&prefix, &TOPICS, 2).await;
    let sink = ScriptedHttpSink::start(|note_id, _| if note_id == "doomed" { 503 } else { 200 }).await;
    let original_value = produce_note_with_user_header(&format!("{prefix}notes"), "doomed").await;
    let mut flags = vec!["--topic-prefix", prefix.as_str()];
    flags.extend_from_slice(&SHORT_TIERS);
    let sink_url = sink.url();
    let group = format!("{prefix}consumers");
    let mut consumer_flags = flags.clone();
    consumer_flags.extend_from_slice(&["--sink", &sink_url, "--group", &group]);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&flags);

    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    consumer.stop().await;
    scheduler.stop().await;

    assert_eq!(dead_letters.len(), 1);
    let requests = sink.requests_for("doomed");
    assert_eq!(requests.len(), 3, "first try, after retry-5s, after retry-1m");
    assert!(
        requests[2].received_at_ms - requests[1].received_at_ms >= 2000,
        "retry-1m waited its 2 s"
    );
    assert_eq!(read_all(&format!("{prefix}retry-5s")).await.len(), 1);
    assert_eq!(read_all(&format!("{prefix}retry-1m")).await.len(), 1);

    let letter = &dead_letters[0];
    assert_eq!(letter.key.as_deref(), Some(b"doomed".as_slice()));
    assert_eq!(letter.value.as_deref(), Some(original_value.as_slice()));
    assert!(header(letter, "traceparent").starts_with("00-4bf92f"));
    assert_eq!(header(letter, contract::ATTEMPT), "3");
    assert_eq!(header(letter, contract::TIER), format!("{prefix}retry-1m"));
    assert_eq!(header(letter, contract::ORIGINAL_TOPIC), format!("{prefix}notes"));
    assert_eq!(header(letter, contract::ORIGINAL_OFFSET), "0");
    assert_eq!(header(letter, contract::ERROR_KIND), "transient");
    assert!(header(letter, contract::ERROR_MESSAGE).contains("503"));
    assert!(letter.headers.get(contract::DUE_TIMESTAMP).is_none());
    header(letter, contract::ORIGINAL_PARTITION);
    header(letter, contract::ORIGINAL_TIMESTAMP);
    header(letter, contract::FIRST_FAILURE_TIMESTAMP);
    assert_eq!(header(letter, contract::DLQ_ERRORS_TOPIC), format!("{prefix}notes"));
    assert_eq!(header(letter, contract::DLQ_ERRORS_OFFSET), "0");
    assert_eq!(header(letter, contract::DLQ_ERRORS_GROUP), group);
    assert_eq!(header(letter, contract::DLQ_ERRORS_DELIVERY_COUNT), "3");
    assert!(header(letter, contract::DLQ_ERRORS_MESSAGE).contains("503"));
    header(letter, contract::DLQ_ERRORS_PARTITION);
    assert_history_headers_at_most_once(letter, "the dead letter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_non_utf8_foreign_headers_are_carried_byte_exact_to_the_tier_and_the_dlq() {
    let prefix = unique_prefix("foreign-headers");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let foreign = awkward_foreign_headers();
    produce_raw(&topic, Some(b"poison"), Some(b"not avro"), foreign.clone()).await;
    let flaky_value = NoteCodec::embedded().encode(&note("flaky", 1)).expect("encodes");
    produce_raw(&topic, Some(b"flaky"), Some(&flaky_value), foreign.clone()).await;

    let sink =
        ScriptedHttpSink::start(|note_id, attempt| if note_id == "flaky" && attempt == 1 { 503 } else { 200 }).await;
    let sink_url = sink.url();
    let mut flags = vec!["--topic-prefix", prefix.as_str()];
    flags.extend_from_slice(&SHORT_TIERS);
    let mut consumer_flags = flags.clone();
    consumer_flags.extend_from_slice(&["--sink", &sink_url]);
    let consumer = start_consumer(&consumer_flags);
    let scheduler = start_scheduler(&flags);
    wait_for(
        "flaky applied on its second attempt",
        Duration::from_secs(60),
        || async { (sink.requests_for("flaky").len() == 2).then_some(()) },
    )
    .await;
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(30)).await;
    consumer.stop().await;
    scheduler.stop().await;

    let expected = foreign_headers(&foreign);
    let letter = record_keyed(&dead_letters, "poison");
    assert_eq!(
        foreign_headers(&letter.headers),
        expected,
        "DLQ copy keeps them byte for byte, in order"
    );
    assert_eq!(letter.value.as_deref(), Some(b"not avro".as_slice()));
    let tier_copy = &read_all(&format!("{prefix}retry-5s")).await[0];
    assert_eq!(
        foreign_headers(&tier_copy.headers),
        expected,
        "tier copy keeps them too"
    );
    assert_eq!(tier_copy.value.as_deref(), Some(flaky_value.as_slice()));
    let republished = read_all(&topic)
        .await
        .into_iter()
        .find(|record| record.offset == 2)
        .expect("the scheduler republished flaky");
    assert_eq!(
        foreign_headers(&republished.headers),
        expected,
        "and the republished copy"
    );
}
