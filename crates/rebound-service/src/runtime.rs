//! The runtime a consume-and-produce service (the consumer, the scheduler) stands on: start-up
//! (topic check that a signal can cut short, the acknowledging producer, readiness and the
//! operational endpoints, the group subscription), partition assignment as a metric and log
//! lines, offset storing with its failure events, the exactly-once hop ([`Runtime::commit_hop`]:
//! every record a hop writes and the source offsets it settles, in one Kafka transaction), and
//! the final commit-and-close, in which a producer's fatal error decides the outcome. Each
//! service supplies only what it does with the records it receives.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rebound_kafka::{
    ConsumedRecord, ConsumerSettings, GroupMetadata, KafkaArgs, KafkaError, OffsetCommits, OutgoingRecord,
    PartitionAssignmentEvent, ProducerSettings, RecordConsumer, RecordProducer, RecordsRefused, SourceOffset,
    TopicPartition, TransactionalProducer, fetch_partition_counts,
};

use rebound_retry::{Dispatch, TierPolicy, oversized_stub};

use crate::delivery::{DeliveryConfig, DeliveryMode, transactional_id};
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
    /// Exactly-once (hops in transactions) or at-least-once.
    pub delivery: DeliveryConfig,
}

/// Why a hop's transaction did not commit. Nothing of it is visible to `read_committed`
/// readers and none of its offsets is committed.
#[derive(Debug)]
pub enum HopFailed {
    /// The transaction was aborted; the hop may be tried again. `refused` names the records the
    /// broker refused (by index), so the service can apply its refusal rules to them.
    Aborted {
        /// What failed.
        error: KafkaError,
        /// The refused records' indexes and errors (empty when the offsets or the commit failed).
        refused: Vec<(usize, KafkaError)>,
    },
    /// The producer failed for good, but its id is random, so no other instance took it over:
    /// the runtime replaced it with a new producer. Whether the failed transaction committed is
    /// not known (a commit whose answer was lost, a transaction the broker aborted after its
    /// timeout), so the hop must not be tried again from memory: the service drops what it
    /// holds of the hop's partitions and reads them again from the committed offsets
    /// ([`Runtime::committed_positions`], then [`Runtime::seek_positions`]).
    Restarted,
    /// The producer can do nothing more (fenced by a newer producer with its transactional id,
    /// or failed fatally). The runtime recorded it as the service's producer failure; the
    /// service must stop.
    Fatal,
}

/// A partition and the offset it is read again from (`None`: its beginning, no commit yet).
pub type Position = (TopicPartition, Option<i64>);

/// Which record went out when a copy too large for its batch was sent alone.
#[derive(Debug)]
pub enum SentAlone<Stub> {
    /// The copy itself was acknowledged.
    Copy,
    /// The copy can never be sent; its dead-letter stub was acknowledged instead.
    Stub(Stub),
}

/// A copy sent alone that the broker did not acknowledge: it is to be sent again, as the
/// stub when one replaced it.
#[derive(Debug)]
pub struct NotSentAlone<Stub> {
    /// The stub that replaced the copy, if the copy itself was refused as too large.
    pub stub: Option<Stub>,
    /// The broker's refusal.
    pub error: KafkaError,
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
    /// The transactional producer of the hops, with exactly-once delivery.
    transactions: Option<Transactions>,
}

/// The hops' transactional producer, and what it takes to start a new one.
#[derive(Debug)]
struct Transactions {
    /// Held by the one hop in progress; replaced when its transaction timed out.
    producer: tokio::sync::Mutex<TransactionalProducer>,
    /// `true` when the id is random: no other instance can have it, so being fenced can only
    /// mean the broker aborted this producer's own transaction (it outlived the transaction
    /// timeout: a broker away, a stalled process), and a new producer may carry on.
    id_is_random: bool,
    kafka: KafkaArgs,
    service: &'static str,
    group: String,
    timeout: Duration,
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
        readiness.set("kafka", false, "joining the consumer group");
        if let Some(listen) = spec.metrics_listen {
            serve_operational_endpoints(listen, Arc::clone(&readiness), shutdown.clone())
                .await
                .map_err(|error| ServiceError::ServeEndpoints {
                    listen: listen.to_string(),
                    reason: error.to_string(),
                })?;
        }
        let (consumer_settings, transactions) = match spec.delivery.mode {
            DeliveryMode::AtLeastOnce => (spec.consumer, None),
            DeliveryMode::ExactlyOnce => {
                let static_member = spec
                    .kafka
                    .resolve()
                    .ok()
                    .and_then(|resolved| resolved.property("group.instance.id").map(str::to_owned));
                let id = transactional_id(spec.service, &spec.consumer.group_id, static_member.as_deref());
                let timeout = spec.delivery.transaction_timeout;
                let producer = TransactionalProducer::start(spec.kafka, &id, timeout, timeout)
                    .await
                    .map_err(|source| ServiceError::Kafka {
                        operation: "initialise transactions",
                        source,
                    })?;
                tracing::info!(service = spec.service, transactional_id = %id, "exactly-once delivery: hops are transactions");
                let transactions = Transactions {
                    producer: tokio::sync::Mutex::new(producer),
                    id_is_random: static_member.is_none(),
                    kafka: spec.kafka.clone(),
                    service: spec.service,
                    group: spec.consumer.group_id.clone(),
                    timeout,
                };
                (
                    spec.consumer.with_offset_commits(OffsetCommits::InTransactions),
                    Some(transactions),
                )
            }
        };
        let consumer =
            RecordConsumer::subscribe(spec.kafka, &consumer_settings).map_err(|source| ServiceError::Kafka {
                operation: "subscribe",
                source,
            })?;
        // Ready once subscribed, with or without partitions: an instance beyond the partition
        // count is healthy and waiting for a rebalance, and an orchestrator that waited for it to
        // get partitions would stall a rolling update. The partition count is a metric instead.
        readiness.set("kafka", true, "subscribed; no partitions assigned yet");
        events::partitions_assigned(spec.service, 0);
        Ok(Some(Self {
            service: spec.service,
            producer,
            consumer,
            readiness,
            producer_failure: ProducerFailure::new(spec.service),
            transactions,
        }))
    }

    /// The offsets the group committed for `partitions`: where to read them again after
    /// [`HopFailed::Restarted`]. Waits for a transaction of the old producer still open on the
    /// broker to end (aborted at its timeout, or committed), so the positions are final.
    pub async fn committed_positions(&self, partitions: &[TopicPartition]) -> Result<Vec<Position>, KafkaError> {
        let timeout = self.transactions.as_ref().map_or(Duration::from_secs(30), |state| {
            state.timeout * 3 + Duration::from_secs(30)
        });
        self.consumer.committed_offsets(partitions, timeout).await
    }

    /// Seeks each partition to its position; what was fetched before is never returned. A
    /// partition that cannot be moved (no longer assigned, say) is an event: its new owner
    /// reads it from the committed offset anyway.
    pub fn seek_positions(&self, positions: &[Position]) {
        for (partition, offset) in positions {
            if let Err(error) = self.consumer.seek(partition, *offset) {
                events::pause_or_resume_failed(self.service, "seek", &partition.topic, partition.partition, &error);
            }
        }
        tracing::warn!(service = self.service, partitions = ?positions, "hop partitions read again from the committed offsets");
    }

    /// The delivery mode the service runs in.
    pub fn delivery(&self) -> DeliveryMode {
        if self.transactions.is_some() {
            DeliveryMode::ExactlyOnce
        } else {
            DeliveryMode::AtLeastOnce
        }
    }

    /// Commits one hop with exactly-once delivery: `records` (every record the hop writes: copies
    /// to tiers or the DLQ, republished records, or any other record the hop's outcome depends on)
    /// and `offsets` (the source positions they settle, committed for the consumer group) in one
    /// Kafka transaction. Either all of it becomes visible to `read_committed` readers, or none.
    ///
    /// A record refused as too large is tried alone in the next transaction (Kafka refuses a
    /// whole request for one such record); refused alone too, it can never be sent and
    /// `make_stub` (given its index, the refused record and the refusal) gives the record to send
    /// in its place (its bounded dead-letter stub), or `None`
    /// when it already is one. Those attempts happen inside this call; `Ok` lists the stubs that
    /// replaced records, by index (`records` then holds the stub records in their place). Any
    /// other failure aborts the transaction, is an event, and is returned for the service to try
    /// the hop again; a fatal one is recorded as the producer's failure. Without exactly-once delivery this is an error: the hop goes through
    /// [`Runtime::producer`] and [`Runtime::store_next_offset`].
    pub async fn commit_hop<Stub>(
        &self,
        records: &mut [OutgoingRecord],
        offsets: &[SourceOffset],
        mut make_stub: impl FnMut(usize, &OutgoingRecord, &KafkaError) -> Option<(Stub, OutgoingRecord)>,
    ) -> Result<Vec<(usize, Stub)>, HopFailed> {
        let Some(state) = self.transactions.as_ref() else {
            return Err(HopFailed::Aborted {
                error: KafkaError::Timeout {
                    operation: "hop transaction without --delivery exactly-once",
                    timeout_ms: 0,
                },
                refused: Vec::new(),
            });
        };
        // The membership as the caller checked its records against it (it calls this without
        // reading in between), sent with every attempt: if a rebalance moves on meanwhile (the
        // consumer's intake keeps reading while this call waits), the broker refuses the
        // offsets and the transaction aborts (KIP-447), however many attempts it takes.
        let Some(group) = self.consumer.group_metadata() else {
            return Err(HopFailed::Aborted {
                error: KafkaError::Timeout {
                    operation: "join the consumer group before a hop",
                    timeout_ms: 0,
                },
                refused: Vec::new(),
            });
        };
        let mut transactions = state.producer.lock().await;
        let mut alone = BTreeSet::new();
        let mut stubs = Vec::new();
        let mut purged_attempts = 0;
        loop {
            let aborted = match self.try_hop(&transactions, records, offsets, &group, &alone).await {
                Ok(()) => {
                    events::transaction_committed(self.service);
                    return Ok(stubs);
                }
                Err(aborted) => aborted,
            };
            let (error, refused) = match aborted {
                HopFailed::Aborted { error, refused } => (error, refused),
                other => return Err(other),
            };
            let fatal = transactions.fatal_error();
            if fatal.is_some() || error.is_fatal_transaction_error() {
                let fatal = fatal.unwrap_or(error);
                if state.id_is_random {
                    // Nothing else has this id: the producer failed on its own (the broker
                    // aborted its transaction after the timeout and fenced it, or a broker
                    // restart left it in a state it cannot leave). A new producer carries on;
                    // the hop is read again from the committed offsets.
                    events::transaction_aborted(self.service, records.len(), &fatal);
                    match state.restart(&fatal).await {
                        Ok(producer) => {
                            *transactions = producer;
                            return Err(HopFailed::Restarted);
                        }
                        Err(error) => {
                            self.record_producer_failure(error);
                            return Err(HopFailed::Fatal);
                        }
                    }
                }
                self.record_producer_failure(fatal);
                return Err(HopFailed::Fatal);
            }
            // Too large in a shared request: alone next time. Too large alone: the stub instead.
            // Other records refused in the same attempt may only have been purged with the
            // transaction; as long as the sizes make progress (a record newly tried alone, or
            // replaced by its stub, which can happen only so often), the hop is tried again here.
            let mut settled_by_size = false;
            // Right after an aborted transaction librdkafka may purge a record of the next one
            // (measured: the record sent alone after its neighbour's stub was purged); that says
            // nothing about the record, so it is tried again here, a few times.
            if !refused.is_empty() && refused.iter().all(|(_, refusal)| refusal.is_purged()) && purged_attempts < 5 {
                purged_attempts += 1;
                settled_by_size = true;
            }
            for (index, refusal) in &refused {
                if !refusal.is_message_too_large() {
                    continue;
                }
                if alone.insert(*index) {
                    settled_by_size = true;
                } else if let Some((stub, stub_record)) = make_stub(*index, &records[*index], refusal) {
                    tracing::warn!(service = self.service, error = %refusal, topic = %records[*index].topic, "copy too large even alone; dead-lettering a stub");
                    records[*index] = stub_record;
                    stubs.push((*index, stub));
                    alone.remove(index);
                    settled_by_size = true;
                }
            }
            events::transaction_aborted(self.service, records.len(), &error);
            if !settled_by_size {
                return Err(HopFailed::Aborted { error, refused });
            }
        }
    }

    /// One attempt at a hop's transaction; aborted on any failure.
    async fn try_hop(
        &self,
        transactions: &TransactionalProducer,
        records: &[OutgoingRecord],
        offsets: &[SourceOffset],
        group: &GroupMetadata,
        alone: &BTreeSet<usize>,
    ) -> Result<(), HopFailed> {
        if let Err(error) = transactions.begin() {
            // An earlier abort that failed (a broker away) leaves the transaction open; abort
            // it now and begin once more.
            transactions.abort_after(&error).await;
            transactions.begin().map_err(|error| HopFailed::Aborted {
                error,
                refused: Vec::new(),
            })?;
        }
        let failure = match transactions.send_records(records, alone).await {
            Err(RecordsRefused { error, refused }) => Some((error, refused)),
            Ok(_) => match transactions.send_offsets(offsets, group.clone()).await {
                Err(error) => Some((error, Vec::new())),
                Ok(()) => {
                    failpoint_before_hop_commit().await;
                    transactions.commit().await.err().map(|error| (error, Vec::new()))
                }
            },
        };
        match failure {
            None => Ok(()),
            Some((error, refused)) => {
                transactions.abort_after(&error).await;
                Err(HopFailed::Aborted { error, refused })
            }
        }
    }

    /// The assignment changes since the last call, logged and counted in
    /// `rebound_assigned_partitions` (shown in `/readyz`'s report too, never making it fail);
    /// the service applies them to its own per-partition state.
    pub fn take_assignment_changes(&self) -> Vec<PartitionAssignmentEvent> {
        let changes = self.consumer.take_assignment_events();
        if !changes.is_empty() {
            let assigned = self.consumer.assignment().len();
            self.readiness
                .set("kafka", true, format!("subscribed; {assigned} partitions assigned"));
            events::partitions_assigned(self.service, assigned);
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

    /// Pauses fetching from `partitions` (librdkafka pause: the member stays in its group and
    /// keeps polling, so it is not evicted, and nothing past the last stored offset is
    /// committed). Returns how many were paused; a failure is an event and the partition is
    /// left fetching, which only means its records arrive and wait in memory.
    pub fn pause_partitions(&self, partitions: &[TopicPartition]) -> usize {
        partitions
            .iter()
            .filter(
                |topic_partition| match self.consumer.pause(&topic_partition.topic, topic_partition.partition) {
                    Ok(()) => true,
                    Err(error) => {
                        events::pause_or_resume_failed(
                            self.service,
                            "pause",
                            &topic_partition.topic,
                            topic_partition.partition,
                            &error,
                        );
                        false
                    }
                },
            )
            .count()
    }

    /// Resumes fetching from `partitions` after [`Runtime::pause_partitions`]. A failure is an
    /// event; librdkafka also resumes a partition whenever it is assigned again.
    pub fn resume_partitions(&self, partitions: &[TopicPartition]) {
        for topic_partition in partitions {
            if let Err(error) = self.consumer.resume(&topic_partition.topic, topic_partition.partition) {
                events::pause_or_resume_failed(
                    self.service,
                    "resume",
                    &topic_partition.topic,
                    topic_partition.partition,
                    &error,
                );
            }
        }
    }

    /// Sends `copy` once more on its own, because Kafka refuses a whole batch for one record
    /// that is too large. Refused alone as too large too, it can never be sent, so retrying it
    /// would hold its partition forever: `make_stub` builds the record's bounded dead-letter
    /// stub (the service's own record of it, and the stub record to produce) and the stub goes
    /// instead. Any other refusal is returned for the caller to send again later.
    pub async fn send_alone_or_stub<Stub>(
        &self,
        copy: &OutgoingRecord,
        make_stub: impl FnOnce(&KafkaError) -> (Stub, OutgoingRecord),
    ) -> Result<SentAlone<Stub>, NotSentAlone<Stub>> {
        let error = match self.producer.send(copy).await {
            Ok(_) => return Ok(SentAlone::Copy),
            Err(error) if error.is_message_too_large() => error,
            Err(error) => return Err(NotSentAlone { stub: None, error }),
        };
        tracing::warn!(service = self.service, %error, topic = %copy.topic, "copy too large even alone; dead-lettering a stub");
        let (stub, stub_record) = make_stub(&error);
        match self.producer.send(&stub_record).await {
            Ok(_) => Ok(SentAlone::Stub(stub)),
            Err(error) => Err(NotSentAlone {
                stub: Some(stub),
                error,
            }),
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
        // Every hop transaction was committed or aborted before the service's loop ended; the
        // consumer then commits nothing itself (its offsets went with the transactions).
        drop(self.transactions);
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

impl Transactions {
    /// A new producer with a new random id, after the last one failed for good on its own.
    async fn restart(&self, error: &KafkaError) -> Result<TransactionalProducer, KafkaError> {
        let id = transactional_id(self.service, &self.group, None);
        tracing::warn!(service = self.service, transactional_id = %id, %error, "transactional producer failed for good; starting a new one");
        TransactionalProducer::start(&self.kafka, &id, self.timeout, self.timeout).await
    }
}

/// Test-only failpoints: with the `failpoints` feature and `REBOUND_FAILPOINT_HOP_BEFORE_COMMIT=N`,
/// the Nth hop transaction attempt of the process stops for good after its records were
/// acknowledged and its offsets sent, before its commit, and says so on stderr, so a test can
/// kill the process exactly there; with `REBOUND_FAILPOINT_HOP_STALL=N:MS` it waits MS
/// milliseconds there and goes on (a process stalled past the transaction timeout). Without the
/// feature it does nothing and reads no variable.
async fn failpoint_before_hop_commit() {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static HOPS: AtomicU64 = AtomicU64::new(0);
        let hop = HOPS.fetch_add(1, Ordering::SeqCst) + 1;
        let chosen = std::env::var("REBOUND_FAILPOINT_HOP_BEFORE_COMMIT")
            .ok()
            .and_then(|value| value.parse::<u64>().ok());
        if chosen == Some(hop) {
            eprintln!("failpoint hop-before-commit reached at hop {hop}");
            std::future::pending::<()>().await;
        }
        let stall = std::env::var("REBOUND_FAILPOINT_HOP_STALL").ok().and_then(|value| {
            let (stalled_hop, millis) = value.split_once(':')?;
            Some((stalled_hop.parse::<u64>().ok()?, millis.parse::<u64>().ok()?))
        });
        if let Some((stalled_hop, millis)) = stall
            && stalled_hop == hop
        {
            eprintln!("failpoint hop-stall reached at hop {hop}: waiting {millis} ms");
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }
}

/// The bound on a consume-and-produce service's shutdown, one flag for the consumer and the
/// scheduler.
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// How long shutdown may take to finish the work in hand (the consumer's batch), flush the
    /// producer and commit.
    #[arg(long, env = "REBOUND_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = crate::parse_duration_flag)]
    pub shutdown_timeout: Duration,
}

/// The bounded dead-letter stub of `record`, whose copy `refused` Kafka refused as too large even
/// alone (`error`): what both services pass to [`Runtime::send_alone_or_stub`]'s `make_stub`.
pub fn stub_for_refused_copy(
    policy: &TierPolicy,
    refused: &Dispatch,
    record: &ConsumedRecord,
    error: &KafkaError,
    consumer_group: &str,
) -> Dispatch {
    oversized_stub(
        policy,
        refused,
        &record.headers,
        record.key.as_deref(),
        record.value.as_deref(),
        &error.to_string(),
        consumer_group,
    )
}
