//! The runtime a consume-and-produce service (the consumer, the scheduler) stands on: start-up
//! (topic check that a signal can cut short, the acknowledging producer, readiness and the
//! operational endpoints, the group subscription), partition assignment as readiness and log
//! lines, offset storing with its failure events, and the final commit-and-close, in which a
//! producer's fatal error decides the outcome. Each service supplies only what it does with the
//! records it receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rebound_kafka::{
    ConsumerSettings, KafkaArgs, KafkaError, PartitionAssignmentEvent, ProducerSettings, RecordConsumer,
    RecordProducer, fetch_partition_counts,
};

use crate::{ProducerFailure, Readiness, ServiceError, Shutdown, events, serve_operational_endpoints};

/// How long the start-up check waits for the brokers' metadata of each topic.
const TOPIC_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// What a service starts with.
#[derive(Debug)]
pub struct RuntimeSpec<'spec> {
    /// The service's name in events and log lines.
    pub service: &'static str,
    /// Kafka connection.
    pub kafka: &'spec KafkaArgs,
    /// Every topic the service reads or writes: a missing one fails start-up at once, naming
    /// it, rather than stalling the service at its first record.
    pub required_topics: Vec<String>,
    /// The group subscription.
    pub consumer: ConsumerSettings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
}

/// A started service's Kafka clients and health.
#[derive(Debug)]
pub struct Runtime {
    service: &'static str,
    /// The acknowledging producer of the service's copies.
    pub producer: RecordProducer,
    /// The group consumer.
    pub consumer: RecordConsumer,
    /// What `/readyz` reports; the runtime keeps its `kafka` check.
    pub readiness: Arc<Readiness>,
    /// The producer's fatal error, once one was seen.
    pub producer_failure: ProducerFailure,
}

impl Runtime {
    /// Starts the service's clients. `None` when `shutdown` came during start-up: the service
    /// then stops cleanly without having done anything.
    pub async fn start(spec: RuntimeSpec<'_>, shutdown: &Shutdown) -> Result<Option<Self>, ServiceError> {
        // SIGTERM while the brokers are still being asked about the topics stops the service
        // at once, rather than after the check's own timeout.
        let checked = tokio::select! {
            () = shutdown.wait() => {
                tracing::info!(service = spec.service, "stopped during start-up");
                return Ok(None);
            }
            checked = fetch_partition_counts(spec.kafka, &spec.required_topics, TOPIC_CHECK_TIMEOUT) => checked,
        };
        checked.map_err(|error| match error {
            KafkaError::FetchMetadata { what, reason } => ServiceError::FindTopic { topic: what, reason },
            source => ServiceError::Kafka {
                operation: "fetch topic metadata",
                source,
            },
        })?;
        let producer = RecordProducer::new(spec.kafka, &ProducerSettings::awaited_copies()).map_err(|source| {
            ServiceError::Kafka {
                operation: "create producer",
                source,
            }
        })?;
        let readiness = Arc::new(Readiness::default());
        readiness.set("kafka", false, "no partitions assigned yet");
        if let Some(listen) = spec.metrics_listen {
            serve_operational_endpoints(listen, Arc::clone(&readiness), shutdown.clone())
                .await
                .map_err(|error| ServiceError::ServeEndpoints {
                    listen: listen.to_string(),
                    reason: error.to_string(),
                })?;
        }
        let consumer = RecordConsumer::subscribe(spec.kafka, &spec.consumer).map_err(|source| ServiceError::Kafka {
            operation: "subscribe",
            source,
        })?;
        Ok(Some(Self {
            service: spec.service,
            producer,
            consumer,
            readiness,
            producer_failure: ProducerFailure::new(spec.service),
        }))
    }

    /// The assignment changes since the last call, logged and reflected in readiness; the
    /// service applies them to its own per-partition state.
    pub fn take_assignment_changes(&self) -> Vec<PartitionAssignmentEvent> {
        let changes = self.consumer.take_assignment_events();
        if !changes.is_empty() {
            let assigned = self.consumer.assignment().len();
            self.readiness
                .set("kafka", assigned > 0, format!("{assigned} partitions assigned"));
        }
        for change in &changes {
            match change {
                PartitionAssignmentEvent::Assigned(partitions) => {
                    tracing::info!(service = self.service, partitions = ?partitions, "partitions assigned");
                }
                PartitionAssignmentEvent::Revoked(partitions) => {
                    tracing::info!(service = self.service, partitions = ?partitions, "partitions revoked");
                }
            }
        }
        changes
    }

    /// Stores `next_offset` of a partition for the next commit. A partition no longer
    /// assigned is skipped (its new owner reads the records again); any other failure is an
    /// event.
    pub fn store_next_offset(&self, topic: &str, partition: i32, next_offset: i64) {
        match self.consumer.store_next_offset(topic, partition, next_offset) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(topic, partition, "offset not stored: partition no longer assigned"),
            Err(error) => events::offset_store_failed(self.service, topic, partition, &error),
        }
    }

    /// Records a fatal producer error: announced once, `/readyz` unready, and returned by
    /// [`Runtime::finish`]. The service stops its loop when [`ProducerFailure::is_recorded`].
    pub fn record_producer_failure(&self, error: KafkaError) {
        self.producer_failure.record(error, &self.readiness);
    }

    /// Flushes the producer, commits the stored offsets and closes the consumer within
    /// `timeout`. A fatal producer error recorded earlier is the outcome, whatever the commit
    /// did: only offsets of safe records were stored, so what the failed producer never
    /// delivered is read again by the next owner.
    pub async fn finish(self, timeout: Duration) -> Result<(), ServiceError> {
        let committed = self.consumer.flush_commit_and_close(&self.producer, timeout).await;
        if let Some(source) = self.producer_failure.into_error() {
            return Err(ServiceError::ProducerFailedForGood { source });
        }
        committed.map_err(|source| ServiceError::Kafka {
            operation: "commit offsets at shutdown",
            source,
        })
    }
}
