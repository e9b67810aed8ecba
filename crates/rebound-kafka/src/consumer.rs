//! An at-least-once group consumer: offsets are stored only when the caller says a record is
//! safe (applied, or its copy acknowledged), and librdkafka commits what was stored in the
//! background, on rebalance and at close. It also reports assignment changes and undoes
//! librdkafka's habit of keeping an application pause across a re-assignment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::record::ConsumedRecord;
use crate::{KafkaArgs, KafkaError, RecordProducer};

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

/// A change of this member's partition assignment, in the order librdkafka made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionAssignmentEvent {
    /// These partitions were assigned (and resumed, whatever pause librdkafka remembered).
    Assigned(Vec<TopicPartition>),
    /// These partitions were taken away; state kept for them must be dropped.
    Revoked(Vec<TopicPartition>),
}

/// A snapshot of the consumer's group membership (member id and generation), given with the
/// offsets of a transaction so the broker can refuse them from a member that is no longer in
/// that generation (KIP-447 fencing of zombies).
/// Cheap to clone: clones share one snapshot.
#[derive(Clone)]
pub struct GroupMetadata(Arc<ConsumerGroupMetadata>);

impl GroupMetadata {
    pub(crate) fn native(&self) -> &ConsumerGroupMetadata {
        &self.0
    }
}

impl std::fmt::Debug for GroupMetadata {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GroupMetadata").finish_non_exhaustive()
    }
}

/// How a group consumer's offsets reach the group coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetCommits {
    /// Stored offsets are committed by librdkafka in the background, on rebalance and at
    /// close (at-least-once).
    Background,
    /// Offsets are committed only inside producer transactions
    /// ([`crate::TransactionalProducer::send_offsets`]); the consumer itself never commits.
    InTransactions,
}

/// Consumer settings that are ours to choose; everything else passes through `-X`.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Where a group with no committed offset starts. `earliest`, so a new group never skips
    /// records that were produced before it first joined.
    pub auto_offset_reset: String,
    /// How often librdkafka commits the stored offsets in the background.
    pub auto_commit_interval: Duration,
    /// librdkafka properties this service sets in place of the built-in defaults (its own
    /// prefetch bounds, say); `-X` and the config file still override them.
    pub client_defaults: Vec<(String, String)>,
    /// Who commits the offsets.
    pub offset_commits: OffsetCommits,
}

impl ConsumerSettings {
    /// Settings for a group reading `topics` from the earliest offset when it has none.
    pub fn new(group_id: impl Into<String>, topics: Vec<String>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            auto_offset_reset: "earliest".to_owned(),
            auto_commit_interval: Duration::from_secs(1),
            client_defaults: Vec::new(),
            offset_commits: OffsetCommits::Background,
        }
    }

    /// Sets who commits the offsets; see [`OffsetCommits`].
    #[must_use]
    pub fn with_offset_commits(mut self, offset_commits: OffsetCommits) -> Self {
        self.offset_commits = offset_commits;
        self
    }

    /// Sets a librdkafka property in place of the built-in default; see
    /// [`ConsumerSettings::client_defaults`].
    #[must_use]
    pub fn with_client_default(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client_defaults.push((key.into(), value.into()));
        self
    }
}

/// Records not yet committed by the group, per topic, from librdkafka's statistics.
pub type LagPerTopic = Arc<Mutex<BTreeMap<String, i64>>>;

/// Forwards assignment changes to the consumer's owner, resumes newly assigned partitions, and
/// keeps the group's lag per topic from librdkafka's periodic statistics.
struct AssignmentContext {
    events: Mutex<Sender<PartitionAssignmentEvent>>,
    lag_per_topic: LagPerTopic,
    /// Set while the owner keeps every partition paused: new assignments start paused.
    pause_new_assignments: Arc<AtomicBool>,
}

impl ClientContext for AssignmentContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag_per_topic = BTreeMap::new();
        for (topic, topic_statistics) in &statistics.topics {
            // Partition -1 is librdkafka's internal "unassigned" queue; a lag of -1 is unknown.
            let lag: i64 = topic_statistics
                .partitions
                .values()
                .filter(|partition| partition.partition >= 0 && partition.consumer_lag >= 0)
                .map(|partition| partition.consumer_lag)
                .sum();
            lag_per_topic.insert(topic.clone(), lag);
        }
        if let Ok(mut shared) = self.lag_per_topic.lock() {
            *shared = lag_per_topic;
        }
    }
}

impl ConsumerContext for AssignmentContext {
    fn post_rebalance(&self, base_consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(assigned) if self.pause_new_assignments.load(Ordering::SeqCst) => {
                // The owner keeps everything paused (a consumer whose sink is down): pause here,
                // before the first fetch, or the partitions' records would be read again.
                if let Err(error) = base_consumer.pause(assigned) {
                    tracing::warn!(%error, "failed to pause newly assigned partitions");
                }
                PartitionAssignmentEvent::Assigned(topic_partitions(assigned))
            }
            Rebalance::Assign(assigned) => {
                // librdkafka remembers an application pause across revoke and re-assign. Nothing
                // from these partitions has reached the application yet, so nothing can be
                // waiting on them: resume them all, and let the owner pause again if it must.
                if let Err(error) = base_consumer.resume(assigned) {
                    tracing::warn!(%error, "failed to resume newly assigned partitions");
                }
                PartitionAssignmentEvent::Assigned(topic_partitions(assigned))
            }
            Rebalance::Revoke(revoked) => PartitionAssignmentEvent::Revoked(topic_partitions(revoked)),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "consumer group rebalance error");
                return;
            }
        };
        if let Ok(sender) = self.events.lock() {
            // The receiver lives as long as the consumer; a send can only fail during teardown.
            let _ = sender.send(event);
        }
    }
}

fn topic_partitions(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements()
        .iter()
        .map(|element| TopicPartition {
            topic: element.topic().to_owned(),
            partition: element.partition(),
        })
        .collect()
}

/// The at-least-once group consumer.
pub struct RecordConsumer {
    inner: Arc<StreamConsumer<AssignmentContext>>,
    assignment_events: Mutex<Receiver<PartitionAssignmentEvent>>,
    lag_per_topic: LagPerTopic,
    pause_new_assignments: Arc<AtomicBool>,
    offset_commits: OffsetCommits,
}

impl std::fmt::Debug for RecordConsumer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RecordConsumer").finish_non_exhaustive()
    }
}

impl RecordConsumer {
    /// Creates the consumer and subscribes it. `enable.auto.offset.store` is forced off: an
    /// offset is stored only through [`RecordConsumer::store_next_offset`]. With
    /// [`OffsetCommits::InTransactions`] `enable.auto.commit` is off too. The consumer reads
    /// `read_committed` whatever `-X` says (see [`crate::KafkaArgs`]).
    pub fn subscribe(args: &KafkaArgs, settings: &ConsumerSettings) -> Result<Self, KafkaError> {
        let resolved = args.resolve()?;
        let auto_commit_interval_ms = settings.auto_commit_interval.as_millis().to_string();
        let mut defaults: Vec<(&str, &str)> = vec![
            ("auto.offset.reset", settings.auto_offset_reset.as_str()),
            ("auto.commit.interval.ms", &auto_commit_interval_ms),
            ("session.timeout.ms", "45000"),
            // Statistics feed the lag metric; every 5 s is cheap and fresh enough for alerts.
            ("statistics.interval.ms", "5000"),
            // librdkafka prefetches up to 64 MiB per consumer by default, which is most of a
            // service's memory when the sink is slower than the fetcher. 8 MiB still keeps the
            // fetcher ahead; the short queue backoff stops a full queue from idling the fetcher
            // for a second at a time (measured: same throughput, 44-62 MiB instead of 76-104).
            ("queued.max.messages.kbytes", "8192"),
            ("fetch.queue.backoff.ms", "5"),
        ];
        // Later entries win: the service's own defaults replace the built-in ones.
        defaults.extend(
            settings
                .client_defaults
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        let mut config = resolved.reader_config(&defaults);
        config.set("group.id", &settings.group_id);
        let auto_commit = match settings.offset_commits {
            OffsetCommits::Background => "true",
            OffsetCommits::InTransactions => "false",
        };
        config.set("enable.auto.commit", auto_commit);
        config.set("enable.auto.offset.store", "false");
        let (sender, receiver) = channel();
        let lag_per_topic = LagPerTopic::default();
        let pause_new_assignments = Arc::new(AtomicBool::new(false));
        let context = AssignmentContext {
            events: Mutex::new(sender),
            lag_per_topic: Arc::clone(&lag_per_topic),
            pause_new_assignments: Arc::clone(&pause_new_assignments),
        };
        let inner: StreamConsumer<AssignmentContext> =
            config
                .create_with_context(context)
                .map_err(|source| KafkaError::CreateClient {
                    client: "consumer",
                    source,
                })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        inner.subscribe(&topics).map_err(|source| KafkaError::Subscribe {
            topics: settings.topics.clone(),
            source,
        })?;
        Ok(Self {
            inner: Arc::new(inner),
            assignment_events: Mutex::new(receiver),
            lag_per_topic,
            pause_new_assignments,
            offset_commits: settings.offset_commits,
        })
    }

    /// The offsets the group has committed for `partitions` (the next record to read), asked of
    /// the coordinator now; `None` for a partition without a commit. Waits while a transaction with offsets of these
    /// partitions is still open (librdkafka asks for stable offsets), up to `timeout`.
    pub async fn committed_offsets(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Vec<(TopicPartition, Option<i64>)>, KafkaError> {
        let mut list = TopicPartitionList::with_capacity(partitions.len());
        for partition in partitions {
            list.add_partition(&partition.topic, partition.partition);
        }
        let consumer = Arc::clone(&self.inner);
        let committed = tokio::task::spawn_blocking(move || consumer.committed_offsets(list, timeout))
            .await
            .map_err(|_| KafkaError::Timeout {
                operation: "fetch committed offsets",
                timeout_ms: timeout.as_millis(),
            })?
            .map_err(|source| KafkaError::CommitOffsets { source })?;
        Ok(committed
            .elements()
            .iter()
            .map(|element| {
                let offset = match element.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                };
                (
                    TopicPartition {
                        topic: element.topic().to_owned(),
                        partition: element.partition(),
                    },
                    offset,
                )
            })
            .collect())
    }

    /// Moves the fetch position of an assigned partition to `offset` (`None`: its beginning, as
    /// `auto.offset.reset=earliest` starts a partition without a commit): the next record
    /// received from it is the one there. Records fetched before the seek are never returned
    /// after it.
    pub fn seek(&self, partition: &TopicPartition, offset: Option<i64>) -> Result<(), KafkaError> {
        let offset = offset.map_or(Offset::Beginning, Offset::Offset);
        self.inner
            .seek(&partition.topic, partition.partition, offset, Duration::from_secs(5))
            .map_err(|source| KafkaError::PauseResume {
                action: "seek",
                topic: partition.topic.clone(),
                partition: partition.partition,
                source,
            })
    }

    /// The group membership as of now, for the offsets of a transaction; `None` before the
    /// consumer has joined its group.
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        self.inner
            .group_metadata()
            .map(|metadata| GroupMetadata(Arc::new(metadata)))
    }

    /// Waits for the next record. Rebalances are served inside this call, so keep calling it
    /// even while every partition is paused.
    pub async fn recv(&self) -> Result<ConsumedRecord, KafkaError> {
        let message = self
            .inner
            .recv()
            .await
            .map_err(|source| KafkaError::Receive { source })?;
        Ok(ConsumedRecord::from_message(&message))
    }

    /// Assignment changes since the last call, oldest first. Call it after every `recv` and
    /// before acting on the record: an event always precedes the records it affects.
    pub fn take_assignment_events(&self) -> Vec<PartitionAssignmentEvent> {
        match self.assignment_events.lock() {
            Ok(receiver) => receiver.try_iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Marks everything before `next_offset` in the partition as done; librdkafka commits it.
    ///
    /// Takes the offset of the next record to read (last processed + 1), exactly what is
    /// committed. Storing for a partition this member no longer owns fails with a state error
    /// after a revoke; that is expected (the new owner re-reads from the last commit) and is
    /// reported as `Ok(false)`.
    pub fn store_next_offset(&self, topic: &str, partition: i32, next_offset: i64) -> Result<bool, KafkaError> {
        let mut list = TopicPartitionList::with_capacity(1);
        list.add_partition_offset(topic, partition, Offset::Offset(next_offset))
            .map_err(|source| KafkaError::CommitOffsets { source })?;
        match self.inner.store_offsets(&list) {
            Ok(()) => Ok(true),
            Err(RdKafkaError::StoreOffset(RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition)) => Ok(false),
            Err(source) => Err(KafkaError::CommitOffsets { source }),
        }
    }

    /// Stops fetching from a partition until [`RecordConsumer::resume`].
    pub fn pause(&self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        self.pause_or_resume("pause", topic, partition)
    }

    /// While `true`, partitions assigned by a rebalance start paused, in the rebalance callback
    /// itself, before librdkafka fetches from them; while `false` (the default) they start
    /// resumed, whatever pause librdkafka remembered.
    pub fn set_pause_new_assignments(&self, pause: bool) {
        self.pause_new_assignments.store(pause, Ordering::SeqCst);
    }

    /// Resumes fetching from a paused partition.
    pub fn resume(&self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        self.pause_or_resume("resume", topic, partition)
    }

    fn pause_or_resume(&self, action: &'static str, topic: &str, partition: i32) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::with_capacity(1);
        list.add_partition(topic, partition);
        let result = if action == "pause" {
            self.inner.pause(&list)
        } else {
            self.inner.resume(&list)
        };
        result.map_err(|source| KafkaError::PauseResume {
            action,
            topic: topic.to_owned(),
            partition,
            source,
        })
    }

    /// A handle on the group's lag per topic (records not yet committed), refreshed from
    /// librdkafka's statistics while the consumer is polled.
    pub fn lag_per_topic(&self) -> LagPerTopic {
        Arc::clone(&self.lag_per_topic)
    }

    /// The partitions currently assigned to this member.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.inner
            .assignment()
            .map(|list| topic_partitions(&list))
            .unwrap_or_default()
    }

    /// The end of a consume-and-produce service: flushes `producer` (whatever it still holds
    /// was sent for records whose offsets are not stored, so a failed flush loses nothing and is
    /// only logged), then commits and closes as [`RecordConsumer::commit_and_close`] does.
    pub async fn flush_commit_and_close(self, producer: &RecordProducer, timeout: Duration) -> Result<(), KafkaError> {
        if let Err(error) = producer.flush(timeout).await {
            tracing::warn!(%error, "producer flush at shutdown failed");
        }
        self.commit_and_close(timeout).await
    }

    /// Commits every stored offset synchronously, then leaves the group and closes the client,
    /// each bounded by `timeout`: a broker that went away must not hang shutdown forever.
    pub async fn commit_and_close(self, timeout: Duration) -> Result<(), KafkaError> {
        if self.offset_commits == OffsetCommits::InTransactions {
            // Offsets were committed with the transactions that settled their records; nothing
            // is stored, and a commit here could only commit what no transaction settled.
            self.close(timeout).await;
            return Ok(());
        }
        let consumer = Arc::clone(&self.inner);
        let commit = tokio::task::spawn_blocking(move || match consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit: nothing to do.
            Ok(()) | Err(RdKafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(source) => Err(KafkaError::CommitOffsets { source }),
        });
        let commit_result = match tokio::time::timeout(timeout, commit).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(KafkaError::Timeout {
                operation: "final offset commit",
                timeout_ms: timeout.as_millis(),
            }),
        };
        self.close(timeout).await;
        commit_result
    }

    async fn close(self, timeout: Duration) {
        // Dropping the last handle closes the consumer (leave group, final auto-commit), which
        // blocks; do it on a blocking thread and stop waiting after the deadline.
        let Self { inner, .. } = self;
        let close = tokio::task::spawn_blocking(move || drop(inner));
        if tokio::time::timeout(timeout, close).await.is_err() {
            tracing::warn!(
                timeout_ms = timeout.as_millis(),
                "consumer close did not finish in time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_default_property_is_one_librdkafka_knows() {
        // Creating the client validates its configuration without a broker: an unknown or
        // misspelt default property fails here instead of in production.
        let consumer = RecordConsumer::subscribe(
            &KafkaArgs::for_brokers("127.0.0.1:1"),
            &ConsumerSettings::new("group", vec!["topic".to_owned()]),
        );
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
