//! Exactly-once releases: a scheduler killed with SIGKILL between republishing due records and
//! committing the release's transaction, again and again, leaves exactly one republished copy
//! of every tier record on the source topic for a `read_committed` reader.
//!
//! The kill point is a test-only failpoint (`REBOUND_FAILPOINT_HOP_BEFORE_COMMIT`, compiled in
//! only with `rebound-service`'s `failpoints` feature, which this crate's tests enable).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use rebound_retry::contract;
use rebound_service::now_epoch_ms;
use rebound_testkit::{
    broker, create_test_topics, produce_raw, read_all, tier_record_headers, unique_prefix, wait_for,
    wait_for_group_at_end,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Tier records, all due already.
const RECORDS: usize = 200;
/// How many times the scheduler is killed between republishing and committing.
const KILLS: usize = 4;

fn spawn_scheduler(prefix: &str, failpoint_hop: Option<u64>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound-scheduler"));
    command
        .args(["--brokers", &broker(), "--topic-prefix", prefix])
        .args(["--group", &format!("{prefix}scheduler"), "--tier", "retry-5s:5s"])
        .args(["--delivery", "exactly-once", "--transaction-timeout", "2s"])
        // A static member replaces its killed predecessor at once, and its stable transactional
        // id aborts the predecessor's open transaction at once.
        .args([
            "-X",
            &format!("group.instance.id={prefix}member"),
            "-X",
            "session.timeout.ms=6000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(hop) = failpoint_hop {
        command.env("REBOUND_FAILPOINT_HOP_BEFORE_COMMIT", hop.to_string());
    }
    command.spawn().expect("scheduler binary starts")
}

/// Waits until the scheduler says it stopped at the failpoint.
async fn wait_for_failpoint(child: &mut Child) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("stderr readable") {
            if line.contains("failpoint hop-before-commit reached") {
                return true;
            }
            // Anything else the scheduler says (warnings and errors) is the story of a failure.
            println!("scheduler: {line}");
        }
        false
    })
    .await;
    assert_eq!(reached, Ok(true), "the scheduler never reached the failpoint");
}

#[tokio::test]
async fn killed_between_republishing_and_commit_every_record_is_republished_exactly_once() {
    let prefix = unique_prefix("eos-scheduler-kill");
    create_test_topics(&prefix, &["notes", "retry-5s", "dlq"], 3).await;
    let tier = format!("{prefix}retry-5s");
    let due_ms = now_epoch_ms() - 1000;
    for index in 0..RECORDS {
        let key = format!("key-{index}");
        produce_raw(
            &tier,
            Some(key.as_bytes()),
            Some(b"value"),
            tier_record_headers(&prefix, due_ms, index),
        )
        .await;
    }

    // Each round republishes what it has read in its first release and dies before committing it.
    for _ in 0..KILLS {
        let mut scheduler = spawn_scheduler(&prefix, Some(1));
        wait_for_failpoint(&mut scheduler).await;
        scheduler.start_kill().expect("SIGKILL");
        scheduler.wait().await.expect("killed scheduler reaped");
    }

    let mut scheduler = spawn_scheduler(&prefix, None);
    wait_for_group_at_end(&format!("{prefix}scheduler"), &tier, Duration::from_secs(60)).await;
    let republished = wait_for("every record republished", Duration::from_secs(60), || async {
        let mut by_original: BTreeMap<String, usize> = BTreeMap::new();
        for record in read_all(&format!("{prefix}notes")).await {
            let original = record
                .headers
                .get_str(contract::ORIGINAL_OFFSET)
                .unwrap_or("none")
                .to_owned();
            *by_original.entry(original).or_insert(0) += 1;
        }
        (by_original.len() >= RECORDS).then_some(by_original)
    })
    .await;
    scheduler.start_kill().expect("SIGKILL");
    let duplicated: Vec<_> = republished.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "republished more than once: {duplicated:?}");
    assert_eq!(republished.len(), RECORDS, "every record republished once");
    assert!(
        read_all(&format!("{prefix}dlq")).await.is_empty(),
        "nothing dead-lettered"
    );
}
