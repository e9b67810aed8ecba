//! A producer killed (SIGKILL) while its relay has a window of notes in flight loses nothing:
//! after a restart every accepted version reaches Kafka, and each note's versions first arrive
//! in acceptance order (a version acknowledged but not yet removed from the outbox when the
//! process died is sent again, which the consumer's version rule absorbs).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ProducerProcess, write_flags};
use rebound_producer::outbox::{NewEntry, Outbox};
use rebound_schema::NoteCodec;
use rebound_testkit::{broker, create_test_topics, note, read_all, unique_prefix, wait_for};

const NOTE_IDS: usize = 10_000;
const VERSIONS: i64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_mid_window_delivers_every_accepted_version_in_order_after_a_restart() {
    let prefix = unique_prefix("relay-crash");
    create_test_topics(&prefix, &["notes"], 3).await;
    let topic = format!("{prefix}notes");
    let work = tempfile::tempdir().expect("tempdir");
    let outbox = work.path().join("outbox");
    // The notes are pending from an earlier run: resends must be allowed.
    let flags_file = work.path().join("flags.json");
    write_flags(&flags_file, true, 1);
    let flags_arg = flags_file.to_string_lossy().into_owned();
    let flags = ["--topic-prefix", prefix.as_str(), "--flags", flags_arg.as_str()];

    // Every version of every note is already accepted when the relay starts, so its window
    // holds versions of the same notes behind one another; the kill comes once Kafka has
    // acknowledged some of them and the relay removed them, long before it is done.
    {
        let outbox = Outbox::open(&outbox, 1 << 30).expect("outbox opens");
        for version in 1..=VERSIONS {
            let entries: Vec<NewEntry> = (0..NOTE_IDS)
                .map(|index| {
                    let note = note(&format!("crash-{index}"), version);
                    NewEntry {
                        value: NoteCodec::embedded().encode(&note).expect("encodes"),
                        note_id: note.note_id,
                        version,
                        traceparent: None,
                    }
                })
                .collect();
            outbox.append(entries, 1).await.expect("appended");
        }
    }
    let total = NOTE_IDS as u64 * VERSIONS as u64;
    let producer = ProducerProcess::serve(&broker(), &outbox, None, &flags).await;
    wait_for(
        "the relay to remove its first acknowledged notes",
        Duration::from_secs(60),
        || async { (producer.get_json("/v1/outbox").await["pending"].as_u64() < Some(total)).then_some(()) },
    )
    .await;
    producer.kill().await;
    let sent_before_the_kill = read_all(&topic).await.len();

    let producer = ProducerProcess::serve(&broker(), &outbox, None, &flags).await;
    let pending_at_restart = producer.get_json("/v1/outbox").await["pending"]
        .as_u64()
        .expect("pending count");
    assert!(
        sent_before_the_kill > 0 && pending_at_restart > 0 && pending_at_restart < total,
        "the kill must come while the relay is sending: {sent_before_the_kill} records sent, \
         {pending_at_restart} notes pending at restart"
    );
    wait_for(
        "the outbox to drain after the restart",
        Duration::from_secs(120),
        || async { (producer.get_json("/v1/outbox").await["pending"] == 0).then_some(()) },
    )
    .await;
    producer.terminate().await;

    let records = read_all(&topic).await;
    let mut versions_seen: HashMap<String, Vec<i64>> = HashMap::new();
    for record in &records {
        let note = NoteCodec::embedded()
            .decode(record.value.as_deref().expect("value"))
            .expect("decodes");
        assert_eq!(record.key.as_deref(), Some(note.note_id.as_bytes()), "keyed by note id");
        versions_seen.entry(note.note_id).or_default().push(note.version);
    }
    assert_eq!(versions_seen.len(), NOTE_IDS, "every note arrived");
    let expected: Vec<i64> = (1..=VERSIONS).collect();
    for (note_id, seen) in &versions_seen {
        let mut first_arrivals: Vec<i64> = Vec::new();
        for version in seen {
            if !first_arrivals.contains(version) {
                first_arrivals.push(*version);
            }
        }
        assert_eq!(
            first_arrivals, expected,
            "{note_id} arrived out of order or incomplete: {seen:?}"
        );
    }
    eprintln!(
        "{} records for {} accepted versions; {sent_before_the_kill} sent before the kill, \
         {pending_at_restart} pending at restart",
        records.len(),
        total
    );
}
