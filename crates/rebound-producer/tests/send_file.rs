//! `rebound-producer send`: exits 0 once Kafka acknowledged every note of the file; on timeout
//! exits non-zero with a count and keeps the notes for the next run; a bad line, or a note too
//! large for the producer's `message.max.bytes`, is refused whole with its line number; a note
//! the topic refuses fails the run while the others are delivered. `--output json` prints the
//! result as one object.

use std::process::Command;

use rebound_testkit::{broker, create_test_topics, read_all, unique_prefix};

fn send(
    brokers: &str,
    prefix: &str,
    input: &std::path::Path,
    outbox: &std::path::Path,
    timeout: &str,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
        .args(["--brokers", brokers, "--topic-prefix", prefix, "send"])
        .arg(input)
        .arg("--outbox-dir")
        .arg(outbox)
        .args(["--timeout", timeout, "--send-timeout", "1s"])
        .output()
        .expect("producer runs")
}

fn ndjson(count: usize) -> String {
    (0..count)
        .map(|index| {
            format!(
                "{{\"note_id\":\"file-{index}\",\"user_id\":\"u\",\"device_id\":\"cli\",\"version\":1,\"updated_at\":{}}}\n",
                1_764_000_000_000_i64 + index as i64
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_times_out_with_a_count_then_a_second_run_delivers_everything() {
    let prefix = unique_prefix("send");
    create_test_topics(&prefix, &["notes"], 2).await;
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("notes.ndjson");
    std::fs::write(&input, ndjson(300)).expect("written");
    let outbox = work.path().join("outbox");

    let offline = send("127.0.0.1:1", &prefix, &input, &outbox, "2s");
    assert_eq!(offline.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(stderr.contains("failed to send 300 notes"), "{stderr}");
    assert!(stderr.contains("stay in the outbox"), "{stderr}");

    // An empty input delivers what earlier runs left in the outbox.
    let empty = work.path().join("empty.ndjson");
    std::fs::write(&empty, "").expect("written");
    let online = Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
        .args(["--brokers", &broker(), "--topic-prefix", &prefix, "send"])
        .arg(&empty)
        .arg("--outbox-dir")
        .arg(&outbox)
        .args(["--timeout", "60s", "--output", "json"])
        .output()
        .expect("producer runs");
    assert!(online.status.success(), "{}", String::from_utf8_lossy(&online.stderr));
    // The result for scripts: one JSON object on stdout, the logs on stderr.
    let report: serde_json::Value = serde_json::from_slice(&online.stdout).expect("one JSON object");
    assert_eq!(report["notes"], 0, "{report}");
    assert_eq!(report["acknowledged"], 300, "{report}");
    assert_eq!(report["earlier_pending"], 300, "{report}");
    assert_eq!(report["outbox"], true, "{report}");
    assert_eq!(report["topic"], format!("{prefix}notes"), "{report}");
    let records = read_all(&format!("{prefix}notes")).await;
    let mut ids: Vec<Vec<u8>> = records.iter().filter_map(|record| record.key.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300, "every note of the file arrived");
}

#[test]
fn a_bad_line_is_refused_whole_with_its_line_number_and_exit_code_2() {
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("notes.ndjson");
    let mut text = ndjson(3);
    text.push_str("{\"note_id\":\"x\",\"user_id\":\"u\",\"device_id\":\"d\",\"version\":\"one\",\"updated_at\":1}\n");
    std::fs::write(&input, text).expect("written");
    let outbox = work.path().join("outbox");
    let output = send("127.0.0.1:1", "unused.", &input, &outbox, "1s");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 4") && stderr.contains("\"version\""), "{stderr}");
    assert!(
        !outbox.join("outbox.db").exists(),
        "nothing was accepted, not even an empty outbox"
    );
}

#[test]
fn a_note_too_large_for_kafka_is_refused_whole_naming_its_line_and_the_limit() {
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("notes.ndjson");
    let mut text = ndjson(2);
    text.push_str(&format!(
        "{{\"note_id\":\"big\",\"user_id\":\"u\",\"device_id\":\"d\",\"version\":1,\"updated_at\":1,\"body\":\"{}\"}}\n",
        "x".repeat(30_000)
    ));
    std::fs::write(&input, text).expect("written");
    let outbox = work.path().join("outbox");
    let output = Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
        .args(["--brokers", "127.0.0.1:1", "-X", "message.max.bytes=20000", "send"])
        .arg(&input)
        .arg("--outbox-dir")
        .arg(&outbox)
        .args(["--timeout", "2s", "--send-timeout", "1s"])
        .output()
        .expect("producer runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 3") && stderr.contains("big"), "{stderr}");
    assert!(
        stderr.contains("message.max.bytes") && stderr.contains("20000"),
        "{stderr}"
    );
    assert!(
        !outbox.join("outbox.db").exists(),
        "nothing was accepted, not even an empty outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_the_topic_refuses_fails_send_and_the_others_are_delivered() {
    let prefix = unique_prefix("send-rejected");
    rebound_testkit::create_test_topics_with_config(&prefix, &["notes"], 1, &[("max.message.bytes", "8192")]).await;
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("notes.ndjson");
    let mut text = ndjson(2);
    // Under the producer's limit, over the topic's; hex of pseudo-random bytes defeats lz4.
    let body: String = rebound_testkit::incompressible_bytes(20_000, 3)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    text.push_str(&format!(
        "{{\"note_id\":\"big\",\"user_id\":\"u\",\"device_id\":\"d\",\"version\":1,\"updated_at\":1,\"body\":\"{body}\"}}\n"
    ));
    std::fs::write(&input, text).expect("written");
    let outbox = work.path().join("outbox");
    let output = send(&broker(), &prefix, &input, &outbox, "60s");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("failed to deliver 1 notes") && stderr.contains("rejected table"),
        "{stderr}"
    );
    let mut keys: Vec<Vec<u8>> = read_all(&format!("{prefix}notes"))
        .await
        .into_iter()
        .filter_map(|record| record.key)
        .collect();
    keys.sort();
    assert_eq!(keys, vec![b"file-0".to_vec(), b"file-1".to_vec()]);
}

#[test]
fn a_bad_flag_exits_2_naming_it_before_the_outbox_is_opened() {
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("notes.ndjson");
    std::fs::write(&input, ndjson(1)).expect("written");
    let outbox = work.path().join("outbox");
    for (flag, value) in [("--timeout", "soon"), ("--flags-poll-interval", "0s")] {
        let output = Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
            .args(["--brokers", "127.0.0.1:1", "send"])
            .arg(&input)
            .arg("--outbox-dir")
            .arg(&outbox)
            .args([flag, value])
            .output()
            .expect("producer runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(!outbox.exists(), "the outbox is not even created");
    }
}
