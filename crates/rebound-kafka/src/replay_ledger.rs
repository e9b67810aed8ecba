//! The replay ledger topic of a dead-letter topic, on Kafka: reading its markers, creating it,
//! and fetching what the DLQ's backlog is computed from (watermarks, the oldest dead letter not
//! replayed). The ledger is what makes `rebound dlq replay` resumable without ever sending a
//! dead letter twice; what a marker is and the backlog arithmetic are `rebound-retry`'s
//! ([`ReplayLedger`], [`DlqBacklog`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use rebound_retry::{DlqBacklog, ReplayLedger};

use crate::record::ConsumedRecord;
use crate::scan::{assigning_consumer, blocking, blocking_partitions, blocking_watermarks_if_exists};
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

/// Computes the backlog of `dead_letter_topic` from its watermarks and its replay ledger
/// ([`DlqBacklog::count`]), reading at most one dead letter per partition (the oldest not
/// replayed, for its timestamp): cheap enough to run on every metrics scrape.
pub async fn fetch_dlq_backlog(
    args: &KafkaArgs,
    dead_letter_topic: &str,
    ledger_topic: &str,
    timeout: Duration,
) -> Result<DlqBacklog, KafkaError> {
    let consumer = Arc::new(assigning_consumer(args)?);
    let watermarks = {
        let consumer = Arc::clone(&consumer);
        let topic = dead_letter_topic.to_owned();
        blocking("watermark fetch", timeout, move || {
            blocking_watermarks_if_exists(&consumer, &topic, timeout)?.ok_or_else(|| KafkaError::FetchMetadata {
                what: topic.clone(),
                reason: "topic does not exist".to_owned(),
            })
        })
        .await?
    };
    let ledger = read_replay_ledger(args, ledger_topic, dead_letter_topic, timeout).await?;
    let mut backlog = DlqBacklog::count(&watermarks.partitions, &ledger);
    let first_not_replayed = ledger.first_not_replayed_offsets(&watermarks.partitions);
    if first_not_replayed.is_empty() {
        return Ok(backlog);
    }
    let topic = dead_letter_topic.to_owned();
    let firsts = blocking("oldest dead letter fetch", timeout, move || {
        read_first_not_replayed(&consumer, &topic, &first_not_replayed, &ledger, timeout)
    })
    .await?;
    backlog.oldest_not_replayed_timestamp_ms = firsts.into_iter().flatten().min();
    Ok(backlog)
}

/// Reads, per partition, from the given offset to the first record without a marker and
/// returns its timestamp.
fn read_first_not_replayed(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    starts: &BTreeMap<i32, i64>,
    ledger: &ReplayLedger,
    timeout: Duration,
) -> Result<Vec<Option<i64>>, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in starts {
        assignment
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(|source| KafkaError::Receive { source })?;
    }
    consumer
        .assign(&assignment)
        .map_err(|source| KafkaError::Receive { source })?;
    let mut waiting: BTreeSet<i32> = starts.keys().copied().collect();
    let mut timestamps = Vec::new();
    let deadline = Instant::now() + timeout;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::Timeout {
                operation: "reading the oldest dead letters",
                timeout_ms: timeout.as_millis(),
            });
        }
        let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else {
            continue;
        };
        let message = message.map_err(|source| KafkaError::Receive { source })?;
        let record = ConsumedRecord::from_message(&message);
        if waiting.contains(&record.partition) && !ledger.contains(record.partition, record.offset) {
            waiting.remove(&record.partition);
            timestamps.push(record.timestamp_ms);
        }
    }
    Ok(timestamps)
}
