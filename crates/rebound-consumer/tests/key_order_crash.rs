//! Per-key order survives a crash: a consumer process killed with SIGKILL while a key's first
//! version waits in a tier and its later versions are parked, then a new group member that takes
//! the partition over, still applies the versions in order, each reaching the sink after the one
//! before it.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::start_scheduler;
use rebound_testkit::{
    ScriptedHttpSink, broker, create_test_topics, note, produce_notes, read_all, unique_prefix, wait_for,
};
use tokio::process::{Child, Command};

fn spawn_consumer_process(prefix: &str, sink: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rebound-consumer"))
        .args(["--brokers", &broker(), "--topic-prefix", prefix, "--sink", sink])
        .args(["--group", &format!("{prefix}consumer")])
        .args(["--tier", "retry-5s:2s", "--tier", "retry-1m:2s"])
        .args(["--batch-linger", "5ms"])
        // The killed member's partitions move to the new one only after its session times out;
        // the broker's minimum keeps the test short.
        .args(["-X", "session.timeout.ms=6000"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("consumer binary starts")
}

/// Live entries of the state topic, by entry key (none before the consumer created it).
async fn live_state_entries(prefix: &str) -> Vec<String> {
    let topic = format!("{prefix}rebound-blocked-keys");
    let exists = rebound_kafka::topic_exists(&rebound_testkit::kafka_args(), &topic, Duration::from_secs(10))
        .await
        .expect("metadata");
    if !exists {
        return Vec::new();
    }
    let mut latest = BTreeMap::new();
    for record in read_all(&topic).await {
        latest.insert(
            String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned(),
            record.value.is_some(),
        );
    }
    latest
        .into_iter()
        .filter(|(_, live)| *live)
        .map(|(key, _)| key)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_versions_stay_in_order_across_a_kill_and_a_new_member() {
    let prefix = unique_prefix("key-order-kill");
    create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 2).await;
    let sink =
        ScriptedHttpSink::start(|note_id, attempt| if note_id == "ordered" && attempt <= 2 { 503 } else { 200 }).await;
    let sink_url = sink.url();
    let mut first = spawn_consumer_process(&prefix, &sink_url);
    let scheduler = start_scheduler(&[
        "--topic-prefix",
        &prefix,
        "--tier",
        "retry-5s:2s",
        "--tier",
        "retry-1m:2s",
    ]);
    produce_notes(
        &format!("{prefix}notes"),
        &[note("ordered", 1), note("ordered", 2), note("ordered", 3)],
    )
    .await;

    // v1 failed and waits in its tier; v2 and v3 are parked behind it.
    let live = wait_for(
        "v1 blocking its key and v2, v3 parked",
        Duration::from_secs(60),
        || async {
            let live = live_state_entries(&prefix).await;
            (live.len() == 3).then_some(live)
        },
    )
    .await;
    // The source offsets past v3 are committed, so the new member never reads v1, v2 or v3
    // from the source again: only the state topic can tell it that v2 and v3 wait.
    wait_for(
        "the source offsets past the three versions committed",
        Duration::from_secs(30),
        || async {
            let committed = rebound_kafka::fetch_committed_offsets(
                &rebound_testkit::kafka_args(),
                &format!("{prefix}consumer"),
                &format!("{prefix}notes"),
                Duration::from_secs(10),
            )
            .await
            .expect("committed offsets");
            (committed.values().sum::<i64>() >= 3).then_some(())
        },
    )
    .await;
    first.start_kill().expect("SIGKILL sent");
    let status = first.wait().await.expect("killed consumer reaped");
    assert!(!status.success(), "the consumer was killed, not stopped: {status}");
    assert_eq!(
        live.iter().filter(|key| key.starts_with("parked/")).count(),
        2,
        "{live:?}"
    );
    assert_eq!(
        sink.requests_for("ordered").len(),
        1,
        "only v1 was tried before the kill"
    );

    // Another member takes the partition over, reads the state back and goes on in order.
    let mut second = spawn_consumer_process(&prefix, &sink_url);
    let received = wait_for(
        "the three versions applied by the new member",
        Duration::from_secs(60),
        || async {
            let received: Vec<(i64, u16)> = sink
                .requests_for("ordered")
                .iter()
                .map(|request| (request.version, request.status))
                .collect();
            (received.iter().filter(|(_, status)| *status == 200).count() >= 3).then_some(received)
        },
    )
    .await;
    // The state is cleaned up by the member that applied the parked versions: the tombstones go
    // in the hop that settles them, which commits just after the webhook's last answer, so the
    // check waits while that member still runs (killed right after the answer, its last hop may
    // never commit, and with no member left nothing would write them).
    wait_for(
        "every entry of the state tombstoned",
        Duration::from_secs(30),
        || async { live_state_entries(&prefix).await.is_empty().then_some(()) },
    )
    .await;
    second.start_kill().expect("SIGKILL sent");
    let _ = second.wait().await;
    scheduler.stop().await;

    let first_applications: Vec<i64> = {
        let mut seen = Vec::new();
        for (version, status) in &received {
            if *status == 200 && !seen.contains(version) {
                seen.push(*version);
            }
        }
        seen
    };
    assert_eq!(first_applications, vec![1, 2, 3], "{received:?}");
    let first_success = received
        .iter()
        .position(|(_, status)| *status == 200)
        .expect("an answer of 200");
    assert!(
        received[..first_success].iter().all(|(version, _)| *version == 1),
        "nothing overtook v1: {received:?}"
    );
}
