//! The database sinks, SQLite and PostgreSQL, against a real broker and a real database: every
//! test body here runs once per sink (`for_each_database!`), so both keep the same promises:
//! notes applied and their offsets committed, the newest version wins whatever the order, and a
//! note its database refuses for its own data fails alone, permanently, while the rest of its
//! batch commits. (A consumer killed mid-batch losing nothing: `crash_recovery.rs`.)

mod common;
#[path = "common/database.rs"]
mod database;

use std::time::Duration;

use common::start_consumer;
use database::Database;
use rebound_kafka::{fetch_committed_offsets, fetch_topic_watermarks};
use rebound_retry::contract;
use rebound_schema::NoteCodec;
use rebound_testkit::{create_test_topics, kafka_args, note, produce_notes, read_all, unique_prefix, wait_for};

const TOPICS: [&str; 4] = ["notes", "retry-5s", "retry-1m", "dlq"];

async fn notes_are_applied_and_their_offsets_committed(database: Database) {
    let prefix = unique_prefix("db-applied");
    create_test_topics(&prefix, &TOPICS, 3).await;
    let notes: Vec<_> = (0..50).map(|index| note(&format!("note-{index}"), 1)).collect();
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let sink = database.sink_url();
    let group = format!("{prefix}group");
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink, "--group", &group]);
    wait_for("50 notes in the sink", Duration::from_secs(60), || async {
        (database.rows().await.len() == 50).then_some(())
    })
    .await;
    consumer.stop().await;

    let rows = database.rows().await;
    assert!(
        rows.iter()
            .all(|row| row.applied_attempt == 0 && row.applied_tier.is_none() && row.version == 1)
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
for_each_database!(notes_are_applied_and_their_offsets_committed);

async fn the_newest_version_wins_whatever_the_order(database: Database) {
    let prefix = unique_prefix("db-newest");
    create_test_topics(&prefix, &TOPICS, 1).await;
    let mut deleted = note("gone", 4);
    deleted.deleted = true;
    // Versions out of order within one batch and across batches, a repeated version, and a
    // delete that an older version arriving later must not bring back.
    produce_notes(
        &format!("{prefix}notes"),
        &[
            note("a", 3),
            note("a", 1),
            note("a", 2),
            note("b", 1),
            note("gone", 1),
            deleted,
        ],
    )
    .await;
    let sink = database.sink_url();
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);
    wait_for("the first notes applied", Duration::from_secs(60), || async {
        (database.rows().await.len() == 3).then_some(())
    })
    .await;
    let mut stale_title = note("a", 3);
    stale_title.title = "a v3 again".to_owned();
    produce_notes(
        &format!("{prefix}notes"),
        &[
            note("a", 2),
            stale_title,
            note("gone", 3),
            note("b", 2),
            note("last", 1),
        ],
    )
    .await;
    wait_for("the later notes applied", Duration::from_secs(60), || async {
        (database.rows().await.len() == 4).then_some(())
    })
    .await;
    consumer.stop().await;

    let rows = database.rows().await;
    let stored: Vec<(&str, i64, &str, bool)> = rows
        .iter()
        .map(|row| (row.note_id.as_str(), row.version, row.title.as_str(), row.deleted))
        .collect();
    assert_eq!(
        stored,
        vec![
            ("a", 3, "a v3", false),
            ("b", 2, "b v2", false),
            ("gone", 4, "gone v4", true),
            ("last", 1, "last v1", false),
        ]
    );
    assert!(read_all(&format!("{prefix}dlq")).await.is_empty());
}
for_each_database!(the_newest_version_wins_whatever_the_order);

async fn a_note_the_database_refuses_fails_alone_and_permanently(database: Database) {
    let prefix = unique_prefix("db-refused");
    create_test_topics(&prefix, &TOPICS, 1).await;
    database.refuse_title("refused").await;
    let mut notes: Vec<_> = (0..20).map(|index| note(&format!("note-{index:02}"), 1)).collect();
    notes[7].title = "refused".to_owned();
    // One partition and one produce call: the refused note shares its batch with the others.
    produce_notes(&format!("{prefix}notes"), &notes).await;
    let sink = database.sink_url();
    let consumer = start_consumer(&["--topic-prefix", &prefix, "--sink", &sink]);
    let dead_letters = wait_for("the refused note in the DLQ", Duration::from_secs(60), || async {
        let records = read_all(&format!("{prefix}dlq")).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    wait_for("the other 19 notes applied", Duration::from_secs(60), || async {
        (database.rows().await.len() == 19).then_some(())
    })
    .await;
    consumer.stop().await;

    assert_eq!(dead_letters.len(), 1);
    let letter = &dead_letters[0];
    let dead_note = NoteCodec::embedded()
        .decode(letter.value.as_deref().expect("value"))
        .expect("decodes");
    assert_eq!(dead_note.note_id, "note-07");
    assert_eq!(letter.headers.get_str(contract::ERROR_KIND), Some("permanent"));
    assert_eq!(
        letter.headers.get_str(contract::ATTEMPT),
        Some("1"),
        "no tier was tried"
    );
    let message = letter.headers.get_str(contract::ERROR_MESSAGE).expect("message");
    assert!(message.contains("rejected note"), "{message}");
    let rows = database.rows().await;
    assert!(rows.iter().all(|row| row.note_id != "note-07"));
    assert!(
        read_all(&format!("{prefix}retry-5s")).await.is_empty(),
        "nothing was retried"
    );
}
for_each_database!(a_note_the_database_refuses_fails_alone_and_permanently);
