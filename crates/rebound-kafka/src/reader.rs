//! Reading a whole topic from its first to its last record without a consumer group: what the
//! admin CLI and the tests use to look at the DLQ and the other topics.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::record::ConsumedRecord;
use crate::{KafkaArgs, KafkaError};

/// Low and high watermark of every partition of a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicWatermarks {
    /// Partition number to (low, high); high is the offset the next record will get.
    pub partitions: BTreeMap<i32, (i64, i64)>,
}

impl TopicWatermarks {
    /// Records currently held by the topic (high minus low, summed over partitions).
    pub fn record_count(&self) -> i64 {
        self.partitions.values().map(|(low, high)| high - low).sum()
    }
}

fn metadata_client(args: &KafkaArgs) -> Result<BaseConsumer, KafkaError> {
    // librdkafka wants a group id even for a consumer that only assigns partitions; this one
    // never joins the group and never commits.
    args.resolve()?
        .reader_config(&[("enable.auto.commit", "false"), ("enable.partition.eof", "false")])
        .set("group.id", "rebound-reader")
        .create()
        .map_err(|source| KafkaError::CreateClient {
            client: "reader",
            source,
        })
}

fn blocking_watermarks(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<TopicWatermarks, KafkaError> {
    let fail = |reason: String| KafkaError::FetchMetadata {
        what: topic.to_owned(),
        reason,
    };
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| fail(error.to_string()))?;
    let entry = metadata
        .topics()
        .iter()
        .find(|entry| entry.name() == topic)
        .filter(|entry| entry.error().is_none() && !entry.partitions().is_empty())
        .ok_or_else(|| fail("topic does not exist".to_owned()))?;
    let mut watermarks = TopicWatermarks::default();
    for partition in entry.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), timeout)
            .map_err(|error| fail(error.to_string()))?;
        watermarks.partitions.insert(partition.id(), (low, high));
    }
    Ok(watermarks)
}

/// Fetches the watermarks of every partition of `topic`.
pub async fn fetch_topic_watermarks(
    args: &KafkaArgs,
    topic: &str,
    timeout: Duration,
) -> Result<TopicWatermarks, KafkaError> {
    let consumer = metadata_client(args)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || blocking_watermarks(&consumer, &topic, timeout))
        .await
        .map_err(|_| KafkaError::Timeout {
            operation: "watermark fetch",
            timeout_ms: timeout.as_millis(),
        })?
}

/// Reads every record of `topic` that exists when the call starts, ordered by partition and
/// offset. Fails if that takes longer than `timeout`.
pub async fn read_topic_to_end(
    args: &KafkaArgs,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let consumer = metadata_client(args)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        let watermarks = blocking_watermarks(&consumer, &topic, timeout)?;
        let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for (partition, (low, high)) in &watermarks.partitions {
            if high > low {
                assignment
                    .add_partition_offset(&topic, *partition, Offset::Offset(*low))
                    .map_err(|source| KafkaError::Receive { source })?;
                remaining.insert(*partition, *high);
            }
        }
        let mut records = Vec::new();
        if remaining.is_empty() {
            return Ok(records);
        }
        consumer
            .assign(&assignment)
            .map_err(|source| KafkaError::Receive { source })?;
        while !remaining.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::Timeout {
                    operation: "reading topic to its end",
                    timeout_ms: timeout.as_millis(),
                });
            }
            let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else {
                // Offsets can end in gaps (transaction markers, compaction) where no record will
                // ever arrive: the consumer's position, not the last record, says we are done.
                if let Ok(positions) = consumer.position() {
                    for element in positions.elements() {
                        if let (Offset::Offset(position), Some(high)) =
                            (element.offset(), remaining.get(&element.partition()).copied())
                            && position >= high
                        {
                            remaining.remove(&element.partition());
                        }
                    }
                }
                continue;
            };
            let message = message.map_err(|source| KafkaError::Receive { source })?;
            let record = ConsumedRecord::from_message(&message);
            if let Some(high) = remaining.get(&record.partition).copied() {
                if record.offset + 1 >= high {
                    remaining.remove(&record.partition);
                }
                if record.offset < high {
                    records.push(record);
                }
            }
        }
        records.sort_by_key(|record| (record.partition, record.offset));
        Ok(records)
    })
    .await
    .map_err(|_| KafkaError::Timeout {
        operation: "reading topic to its end",
        timeout_ms: timeout.as_millis(),
    })?
}

/// The offsets `group` has committed for every partition of `topic` (partitions without a
/// commit are left out).
pub async fn fetch_committed_offsets(
    args: &KafkaArgs,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let consumer: BaseConsumer = args
        .resolve()?
        .reader_config(&[("enable.auto.commit", "false")])
        .set("group.id", group)
        .create()
        .map_err(|source| KafkaError::CreateClient {
            client: "reader",
            source,
        })?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let watermarks = blocking_watermarks(&consumer, &topic, timeout)?;
        let mut list = TopicPartitionList::new();
        for partition in watermarks.partitions.keys() {
            list.add_partition(&topic, *partition);
        }
        let committed = consumer
            .committed_offsets(list, timeout)
            .map_err(|source| KafkaError::CommitOffsets { source })?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect())
    })
    .await
    .map_err(|_| KafkaError::Timeout {
        operation: "committed offsets fetch",
        timeout_ms: timeout.as_millis(),
    })?
}
