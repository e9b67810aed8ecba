//! The consumer against a real broker: first-try success, transient failures through the tiers,
//! permanent failures and poison records straight to the DLQ, with the header contract intact.

mod common;

use std::time::Duration;

use common::{start_consumer, start_scheduler};
use rebound_kafka::{ConsumedRecord, fetch_committed_offsets, fetch_topic_watermarks};
use rebound_retry::{RecordHeaders, contract};
use rebound_schema::NoteCodec;
use rebound_sink_store::read_all_notes;
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, kafka_args, note, produce_notes, produce_raw, read_all, unique_prefix,
    wait_for, wait_for_records,
};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];
const SHORT_TIERS: [&str; 4] = ["--tier", "retry-5s:1s", "--tier", "retry-1m:2s"];

fn header<'record>(record: &'record ConsumedRecord, key: &str) -> &'record str {
    record
        .headers
        .get_str(key)
        .unwrap_or_else(|| panic!("header {key} missing from {:?}", record.headers))
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_applied_on_first_try_are_stored_and_their_offsets_committed() {
    let prefix = unique_prefix("first-try");
    create_test_topics(&prefix, &TOPICS, 3).await;
    let notes: Vec<_> = (0..50).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    let group = format!("{prefix}group");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    wait_for("50 notes in sqlite", Duration::from_secs(60), || async {
        read_all_notes(&database).ok().filter(|rows| rows.len() == 50)
    })
    .await;
    consumer.stop().await;

    let rows = read_all_notes(&database).expect("reads");
    assert!(
        rows.iter()
            .all(|row| row.applied_attempt == 0 && row.applied_tier.is_none())
    );
    let watermarks = fetch_topic_watermarks(&kafka_args(), &format!("{prefix}notes"), Duration::from_secs(10))
        .await
        .expect("watermarks");
    let committed = fetch_committed_offsets(
        &kafka_args(),
        &group,
        &format!("{prefix}notes"),
        Duration::from_secs(10),
    )
    .await
    .expect("committed");
    for (partition, (_, high)) in &watermarks.partitions {
        if *high > 0 {
            assert_eq!(
                committed.get(partition),
                Some(high),
                "partition {partition} committed to its end"
            );
        }
    }
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
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
    for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
        assert!(letter.headers.count(key) <= 1, "{key} appears at most once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_goes_straight_to_dlq() {
    let prefix = unique_prefix("permanent");
    create_test_topics(&prefix, &TOPICS, 2).await;
    let sink = ScriptedHttpSink::start(|note_id, _| if note_id == "rejected" { 422 } else { 200 }).await;
    produce_notes(&format!("{prefix}notes"), &[note("rejected", 1), note("fine", 1)]).await;
    let sink_url = sink.url();
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink_url]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 1, Duration::from_secs(60)).await;
    wait_for("fine applied", Duration::from_secs(30), || async {
        (!sink.requests_for("fine").is_empty()).then_some(())
    })
    .await;
    consumer.stop().await;

    assert_eq!(header(&dead_letters[0], contract::ERROR_KIND), "permanent");
    assert_eq!(header(&dead_letters[0], contract::ATTEMPT), "1");
    assert!(header(&dead_letters[0], contract::ERROR_MESSAGE).contains("422"));
    assert!(
        dead_letters[0].headers.get(contract::TIER).is_none(),
        "never went through a tier"
    );
    assert_eq!(
        sink.requests_for("rejected").len(),
        1,
        "a permanent failure is not retried"
    );
    assert!(read_all(&format!("{prefix}retry-5s")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_garbled_records_are_dead_lettered_as_poison_byte_for_byte() {
    let prefix = unique_prefix("poison");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let topic = format!("{prefix}notes");
    let garbage: &[u8] = &[0xC3, 0x01, 0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0xFF, 0x10, 0x20, 0x30];
    produce_raw(&topic, Some(b"garbage"), Some(garbage), RecordHeaders::new()).await;
    produce_raw(
        &topic,
        Some(b"json"),
        Some(b"{\"note_id\": \"n\"}"),
        RecordHeaders::new(),
    )
    .await;
    produce_raw(&topic, Some(b"null"), None, RecordHeaders::new()).await;
    let valid_value = NoteCodec::embedded()
        .encode(&note("garbled-headers", 1))
        .expect("encodes");
    let mut garbled = RecordHeaders::new();
    garbled.push(contract::ATTEMPT, Some(b"abc".to_vec()));
    produce_raw(&topic, Some(b"garbled-headers"), Some(&valid_value), garbled).await;
    produce_notes(&topic, &[note("after-the-poison", 1)]).await;

    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);
    let dead_letters = wait_for_records(&format!("{prefix}dlq"), 4, Duration::from_secs(60)).await;
    wait_for(
        "the valid note after the poison applied",
        Duration::from_secs(30),
        || async { read_all_notes(&database).ok().filter(|rows| rows.len() == 1) },
    )
    .await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), 4);
    let by_key = |key: &[u8]| {
        dead_letters
            .iter()
            .find(|record| record.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("{} dead-lettered", String::from_utf8_lossy(key)))
    };
    assert_eq!(by_key(b"garbage").value.as_deref(), Some(garbage));
    assert!(header(by_key(b"garbage"), contract::ERROR_MESSAGE).contains("unknown writer schema fingerprint"));
    assert_eq!(
        by_key(b"json").value.as_deref(),
        Some(b"{\"note_id\": \"n\"}".as_slice())
    );
    assert!(header(by_key(b"json"), contract::ERROR_MESSAGE).contains("single-object marker"));
    assert_eq!(by_key(b"null").value, None);
    assert!(header(by_key(b"null"), contract::ERROR_MESSAGE).contains("no value"));
    let garbled_letter = by_key(b"garbled-headers");
    assert_eq!(garbled_letter.value.as_deref(), Some(valid_value.as_slice()));
    assert!(header(garbled_letter, contract::ERROR_MESSAGE).contains("retry.attempt"));
    assert_eq!(
        header(garbled_letter, contract::ATTEMPT),
        "1",
        "the garbled value is replaced"
    );
    for letter in &dead_letters {
        assert_eq!(header(letter, contract::ERROR_KIND), "poison");
    }
    assert!(
        read_all(&format!("{prefix}retry-5s")).await.is_empty(),
        "poison never goes to a tier"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_older_version_does_not_overwrite_newer() {
    let prefix = unique_prefix("versions");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let mut deleted = note("n", 4);
    deleted.deleted = true;
    produce_notes(
        &format!("{prefix}notes"),
        &[
            note("n", 2),
            note("n", 1),
            note("n", 3),
            deleted,
            note("n", 3),
            note("other", 1),
        ],
    )
    .await;
    let directory = tempfile::tempdir().expect("tempdir");
    let database = directory.path().join("notes.db");
    let sink = format!("sqlite://{}", database.display());
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);
    let rows = wait_for("both notes stored", Duration::from_secs(60), || async {
        read_all_notes(&database).ok().filter(|rows| rows.len() == 2)
    })
    .await;
    // One partition: once `other`, the last record, is stored, every version before it was seen.
    consumer.stop().await;
    let rows = read_all_notes(&database).unwrap_or(rows);
    let stored = rows.iter().find(|row| row.note_id == "n").expect("n stored");
    assert_eq!(
        stored.version, 4,
        "the redelivered version 3 did not overwrite the tombstone"
    );
    assert!(stored.deleted);
}
