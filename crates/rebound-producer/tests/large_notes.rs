//! Notes of several MiB (the producer's `message.max.bytes` raised to allow them) all reach
//! Kafka, and the relay's memory is bounded by bytes rather than by the number of notes: a
//! producer draining a backlog of large notes peaks well under the size of that backlog.

mod common;

use std::time::Duration;

use common::{ProducerProcess, note_json};
use rebound_producer::outbox::{NewEntry, Outbox};
use rebound_schema::NoteCodec;
use rebound_testkit::{
    broker, create_test_topics_with_config, incompressible_bytes, note, read_all, unique_prefix, wait_for,
};

const MIB: usize = 1 << 20;
/// Notes left in the outbox, 1 to 4 MiB each: 100 MiB in all.
const NOTE_SIZES_MIB: [usize; 4] = [1, 2, 3, 4];
const NOTES: usize = 40;

/// Peak resident memory of a process, in bytes (`VmHWM` of `/proc/<pid>/status`).
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status readable");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in status");
    kib * 1024
}

/// Text that lz4 cannot shrink: hex of pseudo-random bytes has no repeats to find.
fn incompressible_text(len: usize, seed: u64) -> String {
    incompressible_bytes(len / 2, seed)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_large_notes_is_delivered_in_memory_bounded_by_bytes() {
    let prefix = unique_prefix("large-notes");
    create_test_topics_with_config(&prefix, &["notes"], 2, &[("max.message.bytes", "8388608")]).await;
    let work = tempfile::tempdir().expect("tempdir");
    let kafka_flags = ["--topic-prefix", prefix.as_str(), "-X", "message.max.bytes=5000000"];

    // Baseline: the same producer, idle after delivering one small note.
    let baseline_producer = ProducerProcess::serve(&broker(), &work.path().join("baseline"), None, &kafka_flags).await;
    let (status, _) = baseline_producer.post_notes(&note_json("baseline", 1)).await;
    assert_eq!(status, 202);
    let topic = format!("{prefix}notes");
    wait_for("the baseline note in kafka", Duration::from_secs(30), || async {
        (!read_all(&topic).await.is_empty()).then_some(())
    })
    .await;
    let baseline = peak_rss_bytes(baseline_producer.child.id().expect("running"));
    baseline_producer.terminate().await;

    let outbox_dir = work.path().join("outbox");
    let mut backlog_bytes = 0;
    {
        let outbox = Outbox::open(&outbox_dir, 1 << 30).expect("outbox opens");
        for index in 0..NOTES {
            let mut large = note(&format!("large-{index}"), 1);
            large.body = incompressible_text(NOTE_SIZES_MIB[index % NOTE_SIZES_MIB.len()] * MIB - 4096, index as u64);
            let value = NoteCodec::embedded().encode(&large).expect("encodes");
            backlog_bytes += value.len();
            let entry = NewEntry {
                note_id: large.note_id.clone(),
                version: 1,
                value,
                traceparent: None,
            };
            outbox.append(vec![entry], 1).await.expect("appended");
        }
    }

    let producer = ProducerProcess::serve(&broker(), &outbox_dir, None, &kafka_flags).await;
    let pid = producer.child.id().expect("running");
    wait_for(
        "the large notes to leave the outbox",
        Duration::from_secs(180),
        || async { (producer.get_json("/v1/outbox").await["pending"] == 0).then_some(()) },
    )
    .await;
    let peak = peak_rss_bytes(pid);
    producer.terminate().await;

    let mut keys: Vec<Vec<u8>> = read_all(&topic)
        .await
        .into_iter()
        .filter_map(|record| record.key)
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), NOTES + 1, "every large note arrived, and the baseline note");

    let over_baseline = peak.saturating_sub(baseline);
    eprintln!(
        "backlog {} MiB; baseline peak RSS {} MiB; draining peak RSS {} MiB ({} MiB over baseline)",
        backlog_bytes / MIB,
        baseline / MIB as u64,
        peak / MIB as u64,
        over_baseline / MIB as u64
    );
    // The default 8 MiB window, held once in the relay and once in librdkafka's queue, plus
    // slack for SQLite and the allocator; the whole backlog would be far above it.
    assert!(
        over_baseline < 96 * MIB as u64,
        "draining peaked {} MiB over the idle baseline for a {} MiB backlog",
        over_baseline / MIB as u64,
        backlog_bytes / MIB
    );
}
