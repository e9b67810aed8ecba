//! The replay ledger of a dead-letter topic: one marker record per replayed dead letter, keyed
//! `DLQ/PARTITION/OFFSET`, written in the same transaction as the replayed copy. It is what makes
//! `rebound dlq replay` resumable without ever sending a dead letter twice, and what the
//! "not yet replayed" depth of a DLQ is computed from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use rebound_retry::{RecordHeaders, parse_replay_marker_key, replay_marker_key};

use crate::record::ConsumedRecord;
use crate::scan::{assigning_consumer, blocking, blocking_partitions, blocking_watermarks_if_exists};
use crate::{KafkaArgs, KafkaError, OutgoingRecord, TopicCreation, TopicScan, TopicSpec, create_topics};

/// The dead letters of one DLQ topic that were replayed, by partition and offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayLedger {
    replayed: BTreeMap<i32, BTreeSet<i64>>,
}

impl ReplayLedger {
    /// True when the dead letter at that partition and offset was replayed.
    pub fn contains(&self, partition: i32, offset: i64) -> bool {
        self.replayed
            .get(&partition)
            .is_some_and(|offsets| offsets.contains(&offset))
    }

    /// Records a replay.
    pub fn insert(&mut self, partition: i32, offset: i64) {
        self.replayed.entry(partition).or_default().insert(offset);
    }

    /// Number of replayed dead letters recorded.
    pub fn len(&self) -> usize {
        self.replayed.values().map(BTreeSet::len).sum()
    }

    /// True when nothing was replayed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replayed offsets of one partition within `[low, high)`.
    fn count_in(&self, partition: i32, low: i64, high: i64) -> i64 {
        self.replayed.get(&partition).map_or(0, |offsets| {
            i64::try_from(offsets.range(low..high).count()).unwrap_or(i64::MAX)
        })
    }

    /// The first offset in `[low, high)` without a marker.
    fn first_not_replayed(&self, partition: i32, low: i64, high: i64) -> Option<i64> {
        // Walk the markers in order until the first gap: linear in markers, not in offsets.
        let mut expected = low;
        if let Some(offsets) = self.replayed.get(&partition) {
            for offset in offsets.range(low..high) {
                if *offset != expected {
                    break;
                }
                expected += 1;
            }
        }
        (expected < high).then_some(expected)
    }
}

/// The marker record saying that the dead letter at `partition`/`offset` of
/// `dead_letter_topic` was replayed to `target_topic`. Its value names the target, for people
/// reading the ledger; only the key is read back.
pub fn replay_marker(
    ledger_topic: &str,
    dead_letter_topic: &str,
    partition: i32,
    offset: i64,
    target_topic: &str,
) -> OutgoingRecord {
    OutgoingRecord {
        topic: ledger_topic.to_owned(),
        partition: None,
        key: Some(replay_marker_key(dead_letter_topic, partition, offset).into_bytes()),
        value: Some(target_topic.as_bytes().to_vec()),
        headers: RecordHeaders::new(),
    }
}

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
            let Some(key) = record.key.as_deref().and_then(|key| std::str::from_utf8(key).ok()) else {
                continue;
            };
            if let Some((topic, partition, offset)) = parse_replay_marker_key(key)
                && topic == dead_letter_topic
            {
                ledger.insert(partition, offset);
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

/// How much of a dead-letter topic still waits for a replay: the figures a DLQ alert and the
/// runbook start from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqBacklog {
    /// Records the DLQ holds now (within retention).
    pub records: i64,
    /// Of those, the ones without a replay marker.
    pub not_replayed: i64,
    /// Kafka timestamp of the oldest record without a replay marker, epoch milliseconds.
    pub oldest_not_replayed_timestamp_ms: Option<i64>,
    /// Per partition: (records, not replayed).
    pub partitions: BTreeMap<i32, (i64, i64)>,
}

/// Computes the backlog of `dead_letter_topic` from its watermarks and its replay ledger,
/// reading at most one dead letter per partition (the oldest not replayed, for its timestamp):
/// cheap enough to run on every metrics scrape.
///
/// Counts assume the DLQ's offsets are contiguous, which holds for a DLQ written by rebound's
/// non-transactional producers and never compacted.
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
    let mut backlog = DlqBacklog::default();
    let mut first_not_replayed: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, (low, high)) in &watermarks.partitions {
        let records = high - low;
        let not_replayed = records - ledger.count_in(*partition, *low, *high);
        backlog.records += records;
        backlog.not_replayed += not_replayed;
        backlog.partitions.insert(*partition, (records, not_replayed));
        if let Some(offset) = ledger.first_not_replayed(*partition, *low, *high) {
            first_not_replayed.insert(*partition, offset);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_counts_and_finds_gaps_within_the_live_range() {
        let mut ledger = ReplayLedger::default();
        for offset in [0, 1, 2, 5, 9] {
            ledger.insert(0, offset);
        }
        ledger.insert(1, 0);
        assert_eq!(ledger.len(), 6);
        assert!(ledger.contains(0, 5) && !ledger.contains(0, 3) && !ledger.contains(2, 0));
        // Offsets 0 and 1 fell out of retention: their markers no longer count.
        assert_eq!(ledger.count_in(0, 2, 10), 3);
        assert_eq!(ledger.first_not_replayed(0, 0, 10), Some(3));
        assert_eq!(ledger.first_not_replayed(0, 0, 3), None);
        assert_eq!(ledger.first_not_replayed(1, 0, 1), None);
        assert_eq!(ledger.first_not_replayed(2, 4, 6), Some(4));
    }

    #[test]
    fn markers_are_keyed_by_dead_letter_and_name_the_target() {
        let marker = replay_marker("dlq.replayed", "dlq", 2, 40, "notes");
        assert_eq!(marker.topic, "dlq.replayed");
        assert_eq!(marker.key.as_deref(), Some(b"dlq/2/40".as_slice()));
        assert_eq!(marker.value.as_deref(), Some(b"notes".as_slice()));
        assert_eq!(marker.partition, None);
    }
}
