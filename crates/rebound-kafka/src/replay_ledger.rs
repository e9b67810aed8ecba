//! The replay ledger topic of a dead-letter topic, on Kafka: reading its markers, creating it,
//! and counting the DLQ's backlog (its dead letters, replayed or not). The ledger is what makes `rebound dlq replay` resumable without ever sending a
//! dead letter twice; what a marker is and the backlog arithmetic are `rebound-retry`'s
//! ([`ReplayLedger`], [`DlqBacklog`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rebound_retry::{DlqBacklog, ReplayLedger};

use crate::scan::{assigning_consumer, blocking, blocking_partitions};
use crate::{KafkaArgs, KafkaError, TopicCreation, TopicScan, TopicSpec, create_topics};

/// Reads the ledger's markers for `dead_letter_topic`. A ledger topic that does not exist yet
/// (nothing was ever replayed) is an empty ledger. Only committed markers are read, so a marker
/// of a transaction that was aborted, or is still open, does not count.
pub async fn read_replay_ledger(
    args: &KafkaArgs,
    ledger_topic: &str,
    dead_letter_topic: &str,
    timeout: Duration,
) -> Result<ReplayLedger, KafkaError> {
    let mut ledger = ReplayLedger::default();
    let Some(mut scan) = TopicScan::open_if_exists(args, ledger_topic, timeout).await? else {
        return Ok(ledger);
    };
    while let Some(batch) = scan.next_batch().await? {
        for record in batch {
            if let Some(key) = record.key.as_deref() {
                ledger.insert_marker(dead_letter_topic, key);
            }
        }
    }
    Ok(ledger)
}

/// Creates the ledger topic unless it exists: one partition, kept forever (`retention.ms=-1`),
/// since a marker that expired before its dead letter would let that dead letter be replayed
/// again. Markers are a few dozen bytes each.
pub async fn ensure_replay_ledger_topic(
    args: &KafkaArgs,
    ledger_topic: &str,
    timeout: Duration,
) -> Result<TopicCreation, KafkaError> {
    if topic_exists(args, ledger_topic, timeout).await? {
        return Ok(TopicCreation::AlreadyExisted(ledger_topic.to_owned()));
    }
    let spec = TopicSpec {
        name: ledger_topic.to_owned(),
        partitions: 1,
        replication_factor: -1,
        config: BTreeMap::from([("retention.ms".to_owned(), "-1".to_owned())]),
    };
    let mut outcomes = create_topics(args, &[spec], timeout).await?;
    Ok(outcomes
        .pop()
        .unwrap_or_else(|| TopicCreation::AlreadyExisted(ledger_topic.to_owned())))
}

/// Whether `topic` exists. An unreachable broker is an error, never "does not exist".
pub async fn topic_exists(args: &KafkaArgs, topic: &str, timeout: Duration) -> Result<bool, KafkaError> {
    let consumer = assigning_consumer(args)?;
    let topic = topic.to_owned();
    blocking("metadata fetch", timeout, move || {
        Ok(blocking_partitions(&consumer, &topic, timeout)?.is_some())
    })
    .await
}

/// Computes the backlog of `dead_letter_topic`: reads it whole (`read_committed`) and counts
/// each dead letter, replayed or not by its replay ledger ([`DlqBacklog::add`]). Offsets are
/// not counted: with exactly-once delivery the DLQ holds transaction markers between its
/// records. Reading costs one pass over the DLQ per call, which a DLQ drained by replays keeps
/// small; a DLQ that grows large is what the backlog alerts are for.
pub async fn fetch_dlq_backlog(
    args: &KafkaArgs,
    dead_letter_topic: &str,
    ledger_topic: &str,
    timeout: Duration,
) -> Result<DlqBacklog, KafkaError> {
    let ledger = read_replay_ledger(args, ledger_topic, dead_letter_topic, timeout).await?;
    let mut scan = TopicScan::open(args, dead_letter_topic, timeout).await?;
    let mut backlog = DlqBacklog::default();
    while let Some(batch) = scan.next_batch().await? {
        for record in batch {
            backlog.add(record.partition, record.offset, record.timestamp_ms, &ledger);
        }
    }
    Ok(backlog)
}
