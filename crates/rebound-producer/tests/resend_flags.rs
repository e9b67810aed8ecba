//! The `retry_pending_notes` flag: off, pending notes stay in the outbox while new notes still
//! go out; switched on in the file, pending notes are resent without a restart.

mod common;

use std::time::Duration;

use common::{ProducerProcess, note_json, write_flags};
use rebound_producer::outbox::{NewEntry, Outbox};
use rebound_schema::NoteCodec;
use rebound_testkit::{broker, create_test_topics, note, read_all, unique_prefix, wait_for};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_notes_wait_while_the_flag_is_off_and_go_out_when_it_is_switched_on() {
    let prefix = unique_prefix("resend-flag");
    create_test_topics(&prefix, &["notes"], 2).await;
    let work = tempfile::tempdir().expect("tempdir");
    let outbox = work.path().join("outbox");
    let flags = work.path().join("flags.json");
    write_flags(&flags, false, 1);
    let flags_arg = flags.to_string_lossy().into_owned();
    let topic_flags = [
        "--topic-prefix",
        prefix.as_str(),
        "--flags",
        flags_arg.as_str(),
        "--flags-poll-interval",
        "100ms",
    ];

    // Notes accepted by a producer that cannot reach Kafka are pending for the next one.
    let mut offline_flags = topic_flags.to_vec();
    offline_flags.extend_from_slice(&["--send-timeout", "1s"]);
    let offline = ProducerProcess::serve("127.0.0.1:1", &outbox, None, &offline_flags).await;
    let pending: Vec<Value> = (0..50).map(|index| note_json(&format!("pending-{index}"), 1)).collect();
    let (status, _) = offline.post_notes(&Value::Array(pending)).await;
    assert_eq!(status, 202);
    offline.terminate().await;

    let producer = ProducerProcess::serve(&broker(), &outbox, None, &topic_flags).await;
    assert_eq!(producer.get_json("/v1/flags").await["retry_pending_notes"], false);
    // A new note still gets its first attempt: once it is in Kafka, the relay has run with the
    // broker reachable, and had it been allowed to resend, the pending notes would be there too.
    let (status, _) = producer.post_notes(&note_json("fresh", 1)).await;
    assert_eq!(status, 202);
    let topic = format!("{prefix}notes");
    let records = wait_for("the fresh note in kafka", Duration::from_secs(30), || async {
        let records = read_all(&topic).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    assert_eq!(records.len(), 1, "only the fresh note was sent");
    assert_eq!(producer.get_json("/v1/outbox").await["pending"], 50);

    write_flags(&flags, true, 1);
    let records = wait_for("the pending notes resent", Duration::from_secs(30), || async {
        let records = read_all(&topic).await;
        (records.len() >= 51).then_some(records)
    })
    .await;
    assert_eq!(producer.get_json("/v1/flags").await["retry_pending_notes"], true);
    let mut ids: Vec<String> = records
        .iter()
        .map(|record| {
            NoteCodec::embedded()
                .decode(record.value.as_deref().expect("value"))
                .expect("decodes")
                .note_id
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 51);
    wait_for("the outbox to drain", Duration::from_secs(10), || async {
        (producer.get_json("/v1/outbox").await["pending"] == 0).then_some(())
    })
    .await;
    producer.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_note_is_sent_while_thousands_of_resends_are_held_back() {
    let prefix = unique_prefix("held-resends");
    create_test_topics(&prefix, &["notes"], 2).await;
    let work = tempfile::tempdir().expect("tempdir");
    let outbox_dir = work.path().join("outbox");
    // More notes left pending by an earlier run than the relay ever looked at in one round.
    {
        let outbox = Outbox::open(&outbox_dir, 1 << 30).expect("outbox opens");
        let entries: Vec<NewEntry> = (0..6000)
            .map(|index| {
                let pending = note(&format!("held-{index}"), 1);
                NewEntry {
                    note_id: pending.note_id.clone(),
                    version: pending.version,
                    value: NoteCodec::embedded().encode(&pending).expect("encodes"),
                    traceparent: None,
                }
            })
            .collect();
        outbox.append(entries, 1).await.expect("appended");
    }
    let flags = work.path().join("flags.json");
    write_flags(&flags, false, 1);
    let flags_arg = flags.to_string_lossy().into_owned();
    let producer = ProducerProcess::serve(
        &broker(),
        &outbox_dir,
        None,
        &["--topic-prefix", prefix.as_str(), "--flags", flags_arg.as_str()],
    )
    .await;
    assert_eq!(producer.get_json("/v1/outbox").await["pending"], 6000);

    let (status, _) = producer.post_notes(&note_json("fresh", 1)).await;
    assert_eq!(status, 202);
    let topic = format!("{prefix}notes");
    let records = wait_for("the fresh note in kafka", Duration::from_secs(30), || async {
        let records = read_all(&topic).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    assert_eq!(records.len(), 1, "only the fresh note was sent");
    assert_eq!(records[0].key.as_deref(), Some(&b"fresh"[..]));
    assert_eq!(producer.get_json("/v1/outbox").await["pending"], 6000);
    producer.terminate().await;
}
