//! Exactly-once hops: a consumer killed with SIGKILL between sending a batch's copies and
//! committing their transaction, again and again, leaves exactly one copy of every failed record
//! in the tiers and the DLQ for a `read_committed` reader, and loses none.
//!
//! The kill point is a test-only failpoint (`REBOUND_FAILPOINT_HOP_BEFORE_COMMIT`, compiled in
//! only with `rebound-service`'s `failpoints` feature, which this crate's tests enable): the
//! chosen hop stops after its copies are acknowledged and its offsets sent, says so on stderr,
//! and the test kills the process there.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use rebound_retry::contract;
use rebound_testkit::{
    broker, create_test_topics, note, produce_notes, produce_raw, read_all, unique_prefix, wait_for,
    wait_for_group_at_end,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Valid notes (every one fails transiently, to the first tier) and poison records (to the DLQ).
/// Each killed round commits one hop first, and a hop takes every batch queued behind it (up to
/// 11 batches of 10 records here): enough records that the last round still has a second hop
/// to die in.
const NOTES: usize = 700;
const POISON: usize = 100;
/// How many times the consumer is killed between copy and commit.
const KILLS: usize = 6;

fn spawn_consumer(prefix: &str, failpoint_hop: Option<u64>) -> Child {
    let mut command = consumer_command(prefix);
    // A static member replaces its killed predecessor at once, without waiting for the session
    // to time out, so each round starts in a second or two.
    command.args(["-X", &format!("group.instance.id={prefix}member")]);
    if let Some(hop) = failpoint_hop {
        command.env("REBOUND_FAILPOINT_HOP_BEFORE_COMMIT", hop.to_string());
    }
    command.spawn().expect("consumer binary starts")
}

fn consumer_command(prefix: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound-consumer"));
    command
        .args(["--brokers", &broker(), "--topic-prefix", prefix, "--sink", "null://"])
        .args(["--group", &format!("{prefix}consumer")])
        .args(["--tier", "retry-5s:5s", "--tier", "retry-1m:1m"])
        // Every note fails transiently; with the breaker off they are routed, not held.
        .args([
            "--inject-failures",
            "transient=1.0",
            "--inject-seed",
            "3",
            "--breaker",
            "off",
        ])
        .args(["--batch-size", "10", "--batch-linger", "5ms"])
        .args(["--delivery", "exactly-once", "--transaction-timeout", "2s"])
        .args(["-X", "session.timeout.ms=6000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Waits until the consumer says it stopped at the failpoint.
async fn wait_for_failpoint(child: &mut Child) {
    wait_for_line(child, "failpoint hop-before-commit reached").await;
}

/// Waits until the consumer writes a line containing `wanted` on stderr.
async fn wait_for_line(child: &mut Child, wanted: &str) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            if line.contains(wanted) {
                return true;
            }
            // Anything else the consumer says (warnings and errors) is the story of a failure.
            println!("consumer: {line}");
        }
        false
    })
    .await;
    assert_eq!(reached, Ok(true), "the consumer never said {wanted:?}");
    // Keep reading, so that a process with more to say never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// Every copy in the tiers and the DLQ, read `read_committed`, by the source record it copies.
async fn copies_by_source(prefix: &str) -> BTreeMap<(i32, i64), usize> {
    let mut copies = BTreeMap::new();
    for topic in ["retry-5s", "retry-1m", "dlq"] {
        for record in read_all(&format!("{prefix}{topic}")).await {
            let partition = record
                .headers
                .get_str(contract::ORIGINAL_PARTITION)
                .and_then(|value| value.parse().ok());
            let offset = record
                .headers
                .get_str(contract::ORIGINAL_OFFSET)
                .and_then(|value| value.parse().ok());
            let (Some(partition), Some(offset)) = (partition, offset) else {
                panic!("copy in {topic} without its source position: {:?}", record.headers);
            };
            *copies.entry((partition, offset)).or_insert(0) += 1;
        }
    }
    copies
}

#[tokio::test]
async fn killed_between_copies_and_commit_every_failed_record_is_copied_exactly_once() {
    let prefix = unique_prefix("eos-kill");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 3).await;
    produce_source_records(&prefix).await;

    // Each round commits one hop, then dies inside the second, its copies sent and not committed.
    for _ in 0..KILLS {
        let mut consumer = spawn_consumer(&prefix, Some(2));
        wait_for_failpoint(&mut consumer).await;
        consumer.start_kill().expect("SIGKILL");
        consumer.wait().await.expect("killed consumer reaped");
    }

    let mut consumer = spawn_consumer(&prefix, None);
    assert_every_record_copied_once(&prefix).await;
    consumer.start_kill().expect("SIGKILL");
}

/// Produces the notes (each to fail transiently) and the poison records of a test.
async fn produce_source_records(prefix: &str) {
    let source = format!("{prefix}notes");
    let notes: Vec<_> = (0..NOTES).map(|index| note(&format!("eos-{index}"), 1)).collect();
    produce_notes(&source, &notes).await;
    for index in 0..POISON {
        let key = format!("poison-{index}");
        produce_raw(&source, Some(key.as_bytes()), Some(b"not a note"), Default::default()).await;
    }
}

/// Waits until the group committed the whole source, then finds exactly one copy of every
/// source record in the tiers and the DLQ, read `read_committed`.
async fn assert_every_record_copied_once(prefix: &str) {
    wait_for_group_at_end(
        &format!("{prefix}consumer"),
        &format!("{prefix}notes"),
        Duration::from_secs(60),
    )
    .await;
    // The killed rounds' open transactions hold the tiers' last stable offset until the broker
    // aborts them (the transaction timeout); every committed copy is readable after that.
    let copies = wait_for("a copy of every record", Duration::from_secs(60), || async {
        let copies = copies_by_source(prefix).await;
        (copies.len() >= NOTES + POISON).then_some(copies)
    })
    .await;
    let duplicated: Vec<_> = copies.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "copied more than once: {duplicated:?}");
    assert_eq!(copies.len(), NOTES + POISON, "every record copied once");
}

/// A consumer stalled past its transaction timeout before a commit has its transaction aborted
/// and its producer fenced by the broker. With a random transactional id nothing else can have
/// fenced it, so it starts a new producer and reads the batch again from the committed offsets
/// rather than exit: the service keeps running, and every record is still copied exactly once.
#[tokio::test]
async fn a_transaction_that_outlives_its_timeout_is_retried_with_a_new_producer() {
    let prefix = unique_prefix("eos-stall");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 3).await;
    produce_source_records(&prefix).await;
    let mut command = consumer_command(&prefix);
    // Past the 2 s timeout and the broker's check for timed-out transactions (every 10 s).
    command.env("REBOUND_FAILPOINT_HOP_STALL", "2:14000");
    let mut consumer = command.spawn().expect("consumer binary starts");
    wait_for_line(&mut consumer, "starting a new one").await;
    assert_every_record_copied_once(&prefix).await;
    assert_eq!(consumer.try_wait().expect("status"), None, "the consumer kept running");
    consumer.start_kill().expect("SIGKILL");
}
