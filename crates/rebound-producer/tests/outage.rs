//! Notes accepted while Kafka is down survive a SIGKILL of the producer and all reach Kafka,
//! in per-note order, once a broker is there. This test runs its own broker on its own port, so
//! stopping it does not disturb the tests that share the main one.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::time::Duration;

use common::{ProducerProcess, note_json, write_flags};
use rebound_schema::NoteCodec;
use serde_json::Value;

struct OwnBroker {
    port: u16,
    state: PathBuf,
}

impl OwnBroker {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-local.sh")
    }

    fn command(&self, action: &str) -> StdCommand {
        let mut command = StdCommand::new("bash");
        command
            .arg(Self::script())
            .arg(action)
            .env("REBOUND_KAFKA_MODE", "jvm")
            .env("REBOUND_KAFKA_PORT", self.port.to_string())
            .env("REBOUND_KAFKA_STATE", &self.state);
        command
    }

    fn start(&self) {
        let output = self.command("start").output().expect("kafka-local.sh runs");
        assert!(
            output.status.success(),
            "broker start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.command("stop").output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_accepted_while_kafka_is_down_survive_a_producer_kill_and_arrive_in_order() {
    // The broker listens on six ports from this one (controller +1, SASL +2, TLS +3..+5).
    let port = rebound_testkit::free_local_port_block(6);
    let work = tempfile::tempdir().expect("tempdir");
    let broker = OwnBroker {
        port,
        state: work.path().join("kafka"),
    };
    let outbox = work.path().join("outbox");
    let flags = work.path().join("flags.json");
    write_flags(&flags, true, 1);
    let flags_arg = flags.to_string_lossy().into_owned();
    let producer_flags = ["--flags", flags_arg.as_str(), "--send-timeout", "2s"];

    // Kafka is down: nothing listens on the broker's port yet.
    let producer = ProducerProcess::serve(&broker.brokers(), &outbox, None, &producer_flags).await;
    let note_ids = 2500;
    let versions = 4;
    for version in 1..=versions {
        let mut batch = Vec::new();
        for index in 0..note_ids {
            batch.push(note_json(&format!("outage-{index}"), version));
            if batch.len() == 250 {
                let (status, body) = producer.post_notes(&Value::Array(std::mem::take(&mut batch))).await;
                assert_eq!(status, 202, "{body}");
            }
        }
    }
    assert_eq!(producer.get_json("/v1/outbox").await["pending"], 10_000);
    producer.kill().await;

    let producer = ProducerProcess::serve(&broker.brokers(), &outbox, None, &producer_flags).await;
    assert_eq!(
        producer.get_json("/v1/outbox").await["pending"],
        10_000,
        "the outbox survived the kill"
    );
    broker.start();
    let admin = rebound_kafka::KafkaArgs::for_brokers(broker.brokers());
    rebound_kafka::create_topics(
        &admin,
        &[rebound_kafka::TopicSpec {
            name: "notes".to_owned(),
            partitions: 3,
            replication_factor: 1,
            config: Default::default(),
        }],
        Duration::from_secs(30),
    )
    .await
    .expect("topic created");

    rebound_testkit::wait_for("the outbox to drain", Duration::from_secs(120), || async {
        (producer.get_json("/v1/outbox").await["pending"] == 0).then_some(())
    })
    .await;
    let records = rebound_kafka::read_topic_to_end(&admin, "notes", Duration::from_secs(60))
        .await
        .expect("topic read");
    producer.terminate().await;

    let mut versions_seen: HashMap<String, Vec<i64>> = HashMap::new();
    for record in &records {
        let note = NoteCodec::embedded()
            .decode(record.value.as_deref().expect("value"))
            .expect("decodes");
        assert_eq!(record.key.as_deref(), Some(note.note_id.as_bytes()), "keyed by note id");
        versions_seen.entry(note.note_id).or_default().push(note.version);
    }
    assert_eq!(versions_seen.len(), 2500, "every note arrived");
    for (note_id, seen) in &versions_seen {
        // Duplicates are allowed (at least once); the first arrival of each version must follow
        // acceptance order.
        let mut first_arrivals: Vec<i64> = Vec::new();
        for version in seen {
            if !first_arrivals.contains(version) {
                first_arrivals.push(*version);
            }
        }
        assert_eq!(
            first_arrivals,
            vec![1, 2, 3, 4],
            "{note_id} arrived out of order: {seen:?}"
        );
    }
    eprintln!("{} records for 10000 accepted versions", records.len());
}
