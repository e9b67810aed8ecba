//! Streaming a topic from its first record to the end it had when the scan started, batch by
//! batch and without a consumer group: `rebound dlq` reads dead-letter topics of any size this
//! way, where [`crate::read_topic_to_end`] would hold every record in memory at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::record::ConsumedRecord;
use crate::{KafkaArgs, KafkaError, TopicWatermarks};

/// Most records one [`TopicScan::next_batch`] returns.
const BATCH_RECORDS: usize = 500;

/// A read of one topic up to the high watermarks it had when the scan was opened. Records
/// produced later are not part of the scan, so a scan always ends.
pub struct TopicScan {
    consumer: Arc<BaseConsumer>,
    topic: String,
    watermarks: TopicWatermarks,
    /// Partitions not read to their end yet, with the offset that ends them.
    remaining: BTreeMap<i32, i64>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for TopicScan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TopicScan")
            .field("topic", &self.topic)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

/// A client that assigns partitions itself. librdkafka wants a group id even then; this one never
/// joins the group and never commits. It reads `read_committed` whatever `-X` says, so records
/// of aborted transactions are never seen and the end of a partition is its last stable offset.
pub(crate) fn assigning_consumer(args: &KafkaArgs) -> Result<BaseConsumer, KafkaError> {
    args.resolve()?
        .reader_config(&[("enable.auto.commit", "false"), ("enable.partition.eof", "false")])
        .set("group.id", "rebound-reader")
        .create()
        .map_err(|source| KafkaError::CreateClient {
            client: "reader",
            source,
        })
}

/// The partitions of `topic` from cluster metadata, or `None` when the topic does not exist. An
/// unreachable broker is an error, not a missing topic.
pub(crate) fn blocking_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<Vec<i32>>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|error| KafkaError::FetchMetadata {
            what: topic.to_owned(),
            reason: error.to_string(),
        })?;
    let Some(entry) = metadata.topics().iter().find(|entry| entry.name() == topic) else {
        return Ok(None);
    };
    match entry.error() {
        None if entry.partitions().is_empty() => Ok(None),
        None => Ok(Some(
            entry.partitions().iter().map(|partition| partition.id()).collect(),
        )),
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
        Some(error) => Err(KafkaError::FetchMetadata {
            what: topic.to_owned(),
            reason: format!("{error:?}"),
        }),
    }
}

/// Watermarks of every partition, or `None` when the topic does not exist.
pub(crate) fn blocking_watermarks_if_exists(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Option<TopicWatermarks>, KafkaError> {
    let Some(partitions) = blocking_partitions(consumer, topic, timeout)? else {
        return Ok(None);
    };
    let mut watermarks = TopicWatermarks::default();
    for partition in partitions {
        let (low, high) =
            consumer
                .fetch_watermarks(topic, partition, timeout)
                .map_err(|error| KafkaError::FetchMetadata {
                    what: format!("{topic}[{partition}]"),
                    reason: error.to_string(),
                })?;
        watermarks.partitions.insert(partition, (low, high));
    }
    Ok(Some(watermarks))
}

/// Runs blocking librdkafka work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    operation: &'static str,
    timeout: Duration,
    work: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| KafkaError::Timeout {
            operation,
            timeout_ms: timeout.as_millis(),
        })?
}

impl TopicScan {
    /// Opens a scan of `topic` from each partition's low watermark. Fails with an error naming
    /// the topic when it does not exist or the broker does not answer within `timeout`; later,
    /// a batch fails when no record arrives for `timeout` while some are still due.
    pub async fn open(args: &KafkaArgs, topic: &str, timeout: Duration) -> Result<Self, KafkaError> {
        Self::open_if_exists(args, topic, timeout)
            .await?
            .ok_or_else(|| KafkaError::FetchMetadata {
                what: topic.to_owned(),
                reason: "topic does not exist".to_owned(),
            })
    }

    /// As [`TopicScan::open`], but a topic that does not exist is `Ok(None)`.
    pub async fn open_if_exists(args: &KafkaArgs, topic: &str, timeout: Duration) -> Result<Option<Self>, KafkaError> {
        let consumer = Arc::new(assigning_consumer(args)?);
        let topic = topic.to_owned();
        let opened = {
            let consumer = Arc::clone(&consumer);
            let topic = topic.clone();
            blocking("topic scan start", timeout, move || {
                let Some(watermarks) = blocking_watermarks_if_exists(&consumer, &topic, timeout)? else {
                    return Ok(None);
                };
                let mut assignment = TopicPartitionList::new();
                let mut remaining = BTreeMap::new();
                for (partition, (low, high)) in &watermarks.partitions {
                    if high > low {
                        assignment
                            .add_partition_offset(&topic, *partition, Offset::Offset(*low))
                            .map_err(|source| KafkaError::Receive { source })?;
                        remaining.insert(*partition, *high);
                    }
                }
                if !remaining.is_empty() {
                    consumer
                        .assign(&assignment)
                        .map_err(|source| KafkaError::Receive { source })?;
                }
                Ok(Some((watermarks, remaining)))
            })
            .await?
        };
        Ok(opened.map(|(watermarks, remaining)| Self {
            consumer,
            topic,
            watermarks,
            remaining,
            idle_timeout: timeout,
        }))
    }

    /// The topic's watermarks when the scan was opened; the scan ends at their high marks.
    pub fn watermarks(&self) -> &TopicWatermarks {
        &self.watermarks
    }

    /// Records the scan will return in total at most (high minus low, summed).
    pub fn record_count(&self) -> i64 {
        self.watermarks.record_count()
    }

    /// The next records, in offset order within each partition; `None` once every partition
    /// was read to its end.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<ConsumedRecord>>, KafkaError> {
        if self.remaining.is_empty() {
            return Ok(None);
        }
        let consumer = Arc::clone(&self.consumer);
        let mut remaining = std::mem::take(&mut self.remaining);
        let idle_timeout = self.idle_timeout;
        let (records, remaining) = blocking("topic scan", idle_timeout, move || {
            let result = poll_batch(&consumer, &mut remaining, idle_timeout);
            result.map(|records| (records, remaining))
        })
        .await?;
        self.remaining = remaining;
        Ok(Some(records))
    }
}

/// Polls until a batch is full, the records at hand are drained, or every partition ended.
fn poll_batch(
    consumer: &BaseConsumer,
    remaining: &mut BTreeMap<i32, i64>,
    idle_timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let mut records = Vec::new();
    let mut idle_since = Instant::now();
    while !remaining.is_empty() && records.len() < BATCH_RECORDS {
        // Once some records are in hand, stop at the first empty poll rather than waiting for
        // a full batch: callers print or send as they go.
        let wait = if records.is_empty() {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        let Some(message) = consumer.poll(wait) else {
            if !records.is_empty() {
                break;
            }
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
            if idle_since.elapsed() >= idle_timeout {
                return Err(KafkaError::Timeout {
                    operation: "reading the next records",
                    timeout_ms: idle_timeout.as_millis(),
                });
            }
            continue;
        };
        idle_since = Instant::now();
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
    Ok(records)
}
