//! rebound's readers read `read_committed`, whatever `-X isolation.level` says: the copies of a
//! hop whose transaction aborted (a consumer killed between copy and commit) are never read by
//! the whole-topic reader (the audit's, the CLI's and the tests') nor by a service's group
//! consumer.

#![allow(clippy::unwrap_used, reason = "a failed step fails the test loudly")]

use std::time::Duration;

use rebound_kafka::{
    ConsumerSettings, KafkaArgs, KafkaConfigPair, OutgoingRecord, RecordConsumer, TransactionalProducer,
    read_topic_to_end,
};
use rebound_retry::RecordHeaders;
use rebound_testkit::{create_test_topics, kafka_args, unique_prefix};

fn record(topic: &str, value: &str) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.to_owned(),
        partition: Some(0),
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: RecordHeaders::new(),
    }
}

/// The test broker's arguments, asking (in vain) for `read_uncommitted`.
fn asking_for_read_uncommitted() -> KafkaArgs {
    let mut args = kafka_args();
    args.kafka_config
        .push("isolation.level=read_uncommitted".parse::<KafkaConfigPair>().unwrap());
    args
}

#[tokio::test]
async fn aborted_copies_are_never_read_even_when_read_uncommitted_is_asked_for() {
    let prefix = unique_prefix("read-committed");
    create_test_topics(&prefix, &["tier"], 1).await;
    let topic = format!("{prefix}tier");
    let transactions = TransactionalProducer::start(
        &kafka_args(),
        &format!("{prefix}transactions"),
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    transactions.begin().unwrap();
    transactions
        .send_records(&[record(&topic, "aborted")], &Default::default())
        .await
        .unwrap();
    transactions
        .abort_after(&rebound_kafka::KafkaError::Timeout {
            operation: "the test's hop",
            timeout_ms: 0,
        })
        .await;
    transactions
        .send_atomically(&[record(&topic, "committed")])
        .await
        .unwrap();

    let values = |records: Vec<rebound_kafka::ConsumedRecord>| -> Vec<String> {
        records
            .into_iter()
            .map(|record| String::from_utf8(record.value.unwrap_or_default()).unwrap())
            .collect()
    };
    let read = read_topic_to_end(&asking_for_read_uncommitted(), &topic, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(values(read), vec!["committed"]);

    let consumer = RecordConsumer::subscribe(
        &asking_for_read_uncommitted(),
        &ConsumerSettings::new(format!("{prefix}group"), vec![topic.clone()]),
    )
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .unwrap();
    assert_eq!(values(vec![first]), vec!["committed"]);
}
