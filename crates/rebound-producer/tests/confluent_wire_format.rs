//! `--wire-format confluent`: notes the producer writes (through its outbox, and from the
//! generator) carry the Confluent framing with the registry's id of the note schema, and
//! Confluent's own Python `AvroDeserializer` reads them back field for field.

use std::process::Command;

use rebound_testkit::{
    broker, confluent_python, create_test_topics, read_all, registry_url, run_confluent_python, unique_prefix,
};

fn producer(prefix: &str, registry: &str, mode: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
        .args(["--brokers", &broker(), "--topic-prefix", prefix])
        .args([
            "--wire-format",
            "confluent",
            "--auto-register",
            "--schema-registry-url",
            registry,
        ])
        .args(mode)
        .output()
        .expect("producer runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_sent_in_the_confluent_format_are_read_by_confluents_python_avro_deserializer() {
    let registry = registry_url();
    let prefix = unique_prefix("confluent-send");
    create_test_topics(&prefix, &["notes"], 1).await;
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("notes.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"note_id":"rs-1","user_id":"u","device_id":"cli","version":4,"title":"from rust","body":"b","tags":["x","y"],"updated_at":1764000000000,"pinned":true}"#,
            "\n",
            r#"{"note_id":"rs-2","user_id":"u","device_id":"cli","version":1,"updated_at":1764000000001,"deleted":true}"#,
            "\n"
        ),
    )
    .expect("written");
    let outbox = work.path().join("outbox");
    let input_path = input.display().to_string();
    let outbox_path = outbox.display().to_string();
    let sent = producer(&prefix, &registry, &["send", &input_path, "--outbox-dir", &outbox_path]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let generated = producer(&prefix, &registry, &["generate", "--count", "3", "--run-id", "gen"]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let topic = format!("{prefix}notes");
    let mut command = confluent_python();
    command
        .args([
            "consume",
            "--brokers",
            &broker(),
            "--topic",
            &topic,
            "--registry-url",
            &registry,
        ])
        .args(["--count", "5", "--timeout", "60"]);
    let lines = run_confluent_python(command).await;
    let read: Vec<serde_json::Value> = lines
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    assert_eq!(read.len(), 5, "{lines}");
    let first = &read[0]["note"];
    assert_eq!(first["note_id"], "rs-1");
    assert_eq!(first["title"], "from rust");
    assert_eq!(first["tags"], serde_json::json!(["x", "y"]));
    assert_eq!(first["version"], 4);
    assert_eq!(first["pinned"], true);
    assert_eq!(read[1]["note"]["deleted"], true);
    let schema_ids: Vec<&serde_json::Value> = read.iter().map(|line| &line["schema_id"]).collect();
    assert!(
        schema_ids.iter().all(|id| *id == schema_ids[0]),
        "one schema id: {schema_ids:?}"
    );
    assert!(
        read[2..]
            .iter()
            .all(|line| line["note"]["note_id"].as_str().is_some_and(|id| id.starts_with("gen"))),
        "{lines}"
    );
    assert_eq!(read_all(&topic).await.len(), 5);
}

#[test]
fn without_auto_register_an_unregistered_schema_is_refused_before_any_note_is_taken() {
    let registry = registry_url();
    let prefix = unique_prefix("confluent-unregistered");
    let output = Command::new(env!("CARGO_BIN_EXE_rebound-producer"))
        .args(["--brokers", &broker(), "--topic-prefix", &prefix])
        .args(["--wire-format", "confluent", "--schema-registry-url", &registry])
        .args(["generate", "--count", "1"])
        .output()
        .expect("producer runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{prefix}notes-value")) && stderr.contains("--auto-register"),
        "{stderr}"
    );
}
