//! The consumer alone against a real broker: first-try success, permanent failures and poison
//! records straight to the DLQ with the header contract intact, and the version rule on
//! redelivery. The walk through the tiers needs the scheduler too: `rebound-e2e`'s `tier_walk`.

mod common;

use std::time::Duration;

use common::start_consumer;
use rebound_kafka::{fetch_committed_offsets, fetch_topic_watermarks};
use rebound_retry::{RecordHeaders, contract};
use rebound_schema::NoteCodec;
use rebound_sink_store::read_all_notes;
use rebound_testkit::{
    ScriptedHttpSink, create_test_topics, kafka_args, note, produce_notes, produce_raw, read_all,
    required_header as header, unique_prefix, wait_for, wait_for_records,
};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];

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
