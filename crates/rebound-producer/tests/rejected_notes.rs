//! A note Kafka refuses for what it is (larger than the topic's `max.message.bytes`) can never
//! be sent: the relay moves it to the outbox's rejected table, counts it, lists it in
//! `GET /v1/outbox`, and lets the later versions of that note go.

mod common;

use std::time::Duration;

use common::{ProducerProcess, note_json};
use rebound_schema::NoteCodec;
use rebound_testkit::{
    broker, create_test_topics_with_config, free_local_port, incompressible_bytes, read_all, unique_prefix, wait_for,
};
use serde_json::{Value, json};

/// Text that lz4 cannot shrink: hex of pseudo-random bytes has no repeats to find.
fn incompressible_text(len: usize) -> String {
    incompressible_bytes(len / 2, 7)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_the_topic_refuses_as_too_large_is_rejected_and_its_later_versions_go_out() {
    let prefix = unique_prefix("rejected");
    // One partition: the oversized note shares its batch with the others, which must not be
    // refused with it.
    create_test_topics_with_config(&prefix, &["notes"], 1, &[("max.message.bytes", "8192")]).await;
    let outbox = tempfile::tempdir().expect("tempdir");
    let metrics_port = free_local_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let producer = ProducerProcess::serve(
        &broker(),
        outbox.path(),
        None,
        &[
            "--topic-prefix",
            prefix.as_str(),
            "--metrics-listen",
            metrics_listen.as_str(),
        ],
    )
    .await;

    // Under the producer's message.max.bytes (1 MB), over the topic's 8 KiB.
    let mut oversized = note_json("big", 1);
    oversized["body"] = json!(incompressible_text(40_000));
    let (status, body) = producer
        .post_notes(&json!([note_json("before", 1), oversized, note_json("after", 1)]))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = producer.post_notes(&note_json("big", 2)).await;
    assert_eq!(status, 202, "{body}");

    let topic = format!("{prefix}notes");
    let records = wait_for(
        "the later version of the refused note in kafka",
        Duration::from_secs(60),
        || async {
            let records = read_all(&topic).await;
            let sent: Vec<(String, i64)> = records
                .iter()
                .filter_map(|record| NoteCodec::embedded().decode(record.value.as_deref()?).ok())
                .map(|note| (note.note_id, note.version))
                .collect();
            sent.contains(&("big".to_owned(), 2)).then_some(sent)
        },
    )
    .await;
    assert!(records.contains(&("before".to_owned(), 1)), "{records:?}");
    assert!(records.contains(&("after".to_owned(), 1)), "{records:?}");
    assert!(!records.contains(&("big".to_owned(), 1)), "{records:?}");

    let state = wait_for("the outbox to drain", Duration::from_secs(30), || async {
        let state = producer.get_json("/v1/outbox").await;
        (state["pending"] == 0).then_some(state)
    })
    .await;
    let rejected = state["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1, "{state}");
    assert_eq!(state["rejected_count"], 1, "{state}");
    assert_eq!(rejected[0]["note_id"], "big", "{state}");
    assert_eq!(rejected[0]["version"], 1, "{state}");
    assert!(
        rejected[0]["error"].as_str().unwrap_or_default().contains("too large"),
        "{state}"
    );
    assert!(
        rejected[0]["rejected_at_ms"].as_i64().unwrap_or_default() > 0,
        "{state}"
    );

    let metrics = reqwest::get(format!("http://{metrics_listen}/metrics"))
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|line| line.trim() == "rebound_producer_notes_rejected_total 1"),
        "{metrics}"
    );
    producer.terminate().await;

    // The rejected note stays on record across a restart.
    let restarted = ProducerProcess::serve(&broker(), outbox.path(), None, &["--topic-prefix", prefix.as_str()]).await;
    let state: Value = restarted.get_json("/v1/outbox").await;
    assert_eq!(state["rejected_count"], 1, "{state}");
    restarted.terminate().await;
}
