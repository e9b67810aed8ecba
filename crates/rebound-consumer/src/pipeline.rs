//! The consume → apply → route → store loop.
//!
//! Records are taken in batches (up to `batch_size`, waiting at most `batch_linger` for more).
//! Two stages run side by side in one task:
//!
//! - *Intake* decodes a batch and applies it to the sink in one call, one batch after the
//!   other, so the sink sees batches in the order they were read. It then hands the batch on.
//! - *Delivery* produces the batch's copies of failed records to their tier or the DLQ, with
//!   the copies of up to [`COPY_BATCHES_IN_FLIGHT`] batches in flight together, and, strictly in
//!   batch order, stores a batch's offsets once all its records are safe: applied, or copied and
//!   acknowledged. librdkafka commits stored offsets in the background, on rebalance and at close.
//!
//! Waiting for copies' acknowledgements (a broker round trip, `acks=all`) therefore no longer
//! stops the intake: it used to cap a consumer with 10% failures at one batch per round trip.
//! Memory stays bounded: at most [`APPLIED_BATCHES_QUEUED`] plus [`COPY_BATCHES_IN_FLIGHT`]
//! batches wait for delivery, and of their records only the failed ones keep their bytes.
//! A slow sink still slows the intake rather than grow a queue.
//!
//! With exactly-once delivery the delivery stage instead commits each batch (with whatever
//! batches queued behind it) as one Kafka transaction: the copies and the source offsets
//! together, through [`Runtime::commit_hop`]. A failed transaction is aborted and the same batch
//! tried again; records of partitions revoked since they were read are left out, because the
//! partition's new owner reads them again from the last committed offset.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};

use rebound_kafka::{
    ConsumedRecord, ConsumerSettings, KafkaError, LagPerTopic, OutgoingRecord, PartitionAssignmentEvent, TopicPartition,
};
use rebound_registry::NoteDecoder;
use rebound_retry::{
    Admission, BreakerState, CircuitBreaker, Dispatch, DueTiming, ErrorKind, Failure, OnDeadKey, RetryContext, Route,
    SinkAttempt, SourceKey, StateWrite, blocked_by_key_dispatch, failure_dispatch, parse_retry_context,
};
use rebound_service::events::{self, RecordRef};
use rebound_service::trace_context::{continue_trace, inject_trace};
use rebound_service::{
    DeliveryMode, HopFailed, NotSentAlone, Runtime, RuntimeSpec, SentAlone, Shutdown, SourceOffset, now_epoch_ms,
    stub_for_refused_copy,
};

use crate::key_order::{KeyOrderState, entry_record, original_location, read_state, source_key};
use crate::sink::{ApplyItem, FailureInjectingSink, Sink, SinkFailure, open_sink};
use crate::{ConsumerConfig, ConsumerError};

/// Batches whose copies may be in flight at once. Beyond it the intake waits: this bounds the
/// records held in memory while copies are acknowledged.
pub const COPY_BATCHES_IN_FLIGHT: usize = 8;

/// Applied batches queued between the intake and the delivery stage.
pub const APPLIED_BATCHES_QUEUED: usize = 2;

/// Longest pause between attempts to produce a copy that the broker refused.
const MAX_PRODUCE_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the consumer with the built-in sink `config.sink` names until `shutdown` triggers, then
/// finishes the batch in hand, commits and returns. Returns an error only for problems that stop
/// the service (bad topics, no client, a sink that cannot be opened).
pub async fn run(config: ConsumerConfig, shutdown: Shutdown) -> Result<(), ConsumerError> {
    let sink = open_sink(&config).await?;
    run_with_sink(config, sink, shutdown).await
}

/// Runs the consumer with `sink`, a user's own or a built-in one, until `shutdown` triggers, as
/// [`run`] does; `config.sink` is then only what the logs show. `--inject-failures` wraps any
/// sink. See `docs/sinks.md`.
pub async fn run_with_sink(
    config: ConsumerConfig,
    sink: Box<dyn Sink>,
    shutdown: Shutdown,
) -> Result<(), ConsumerError> {
    // The effective configuration, for operators; its Debug form redacts secret Kafka
    // properties and the credentials of an HTTP sink's URL.
    tracing::info!(config = ?config, "effective configuration");
    let mut required_topics = config.source_topics.clone();
    required_topics.extend(config.policy.tiers().iter().map(|tier| tier.topic.clone()));
    required_topics.push(config.policy.dead_letter_topic().to_owned());
    let spec = RuntimeSpec {
        service: "consumer",
        kafka: &config.kafka,
        required_topics,
        consumer: ConsumerSettings::new(config.group.clone(), config.source_topics.clone()),
        metrics_listen: config.metrics_listen,
        delivery: config.delivery,
    };
    let Some(runtime) = Runtime::start(spec, &shutdown).await? else {
        return Ok(());
    };
    if let Some(key_order) = &config.key_order {
        // Created here if missing, so turning ordering on needs no separate step. After the
        // runtime's topic check, which a signal cuts short: by now the brokers answer, and the
        // state is first read when partitions are assigned, after this.
        match crate::key_order::ensure_state_topic(&config.kafka, &key_order.state_topic).await {
            Ok(rebound_kafka::TopicCreation::Created(topic)) => {
                tracing::info!(topic, "created the per-key order state topic");
            }
            Ok(rebound_kafka::TopicCreation::AlreadyExisted(_)) => {}
            Err(error) => {
                tracing::warn!(topic = key_order.state_topic, %error, "could not create the per-key order state topic")
            }
        }
    }
    let sink: Box<dyn Sink> = match config.failure_injection {
        Some((injection, seed)) => Box::new(FailureInjectingSink::new(sink, injection, seed)),
        None => sink,
    };
    runtime.readiness.set("sink", true, "no batch applied yet");
    events::consumer_in_flight(0);
    events::consumer_breaker_started(config.breaker.is_some());
    tracing::info!(
        group = %config.group,
        topics = ?config.source_topics,
        tiers = ?config.policy.tiers().iter().map(|tier| &tier.topic).collect::<Vec<_>>(),
        dlq = config.policy.dead_letter_topic(),
        "consumer started"
    );
    tokio::spawn(publish_lag(
        runtime.consumer.lag_per_topic(),
        config.source_topics.clone(),
        shutdown.clone(),
    ));
    // The pipeline stops on shutdown, or on its own when the producer fails for good.
    let stop = Shutdown::new();
    let pipeline = Pipeline {
        config: &config,
        decoder: crate::config::note_decoder(&config)?,
        sink,
        runtime,
        stop: stop.clone(),
        clock_origin: tokio::time::Instant::now(),
        key_order: config
            .key_order
            .clone()
            .map(|settings| Mutex::new(KeyOrderState::new(settings))),
        assignment_changes: Mutex::new(Vec::new()),
        assignment_epoch: AtomicU64::new(0),
        revoked_at: Mutex::new(BTreeMap::new()),
    };
    let stop = stop.triggered_by({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    });
    // With exactly-once delivery the batches queued here are what the next transaction takes
    // together (each transaction costs round trips to the coordinator whatever its size), so
    // the queue also holds what at-least-once delivery keeps in flight instead: the same bound
    // on memory, and larger transactions when the broker is the bottleneck.
    let applied_queue = match pipeline.runtime.delivery() {
        DeliveryMode::ExactlyOnce => APPLIED_BATCHES_QUEUED + COPY_BATCHES_IN_FLIGHT,
        DeliveryMode::AtLeastOnce => APPLIED_BATCHES_QUEUED,
    };
    let (applied_sender, applied_receiver) = tokio::sync::mpsc::channel(applied_queue);
    let intake = {
        let (pipeline, shutdown) = (&pipeline, &stop);
        let mut breaker = config.breaker.map(CircuitBreaker::new);
        async move {
            while let Some((batch, read_epochs)) = pipeline.next_batch(shutdown).await {
                let mut applied = pipeline.apply_batch(batch, read_epochs, breaker.as_mut()).await;
                if let Some(breaker) = breaker.as_mut()
                    && breaker.state() != BreakerState::Closed
                {
                    pipeline.ride_out_outage(&mut applied, breaker, shutdown).await;
                }
                if applied_sender.send(applied).await.is_err() {
                    break;
                }
            }
            // Dropping the sender here tells the delivery stage that no batch follows.
        }
    };
    tokio::join!(intake, pipeline.deliver_in_order(applied_receiver, &stop));
    tracing::info!("consumer stopping: committing stored offsets");
    pipeline.runtime.finish(config.shutdown_timeout).await?;
    tracing::info!("consumer stopped");
    Ok(())
}

/// Publishes the group's lag on the source topics every few seconds until shutdown.
async fn publish_lag(lag_per_topic: LagPerTopic, source_topics: Vec<String>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        let snapshot = lag_per_topic.lock().map(|lag| lag.clone()).unwrap_or_default();
        for topic in &source_topics {
            if let Some(lag) = snapshot.get(topic) {
                events::consumer_lag(topic, *lag);
            }
        }
    }
}

struct Pipeline<'config> {
    config: &'config ConsumerConfig,
    /// Both wire formats; Confluent-framed records' writer schemas come from the registry.
    decoder: NoteDecoder,
    sink: Box<dyn Sink>,
    /// The Kafka clients, readiness and the producer's fate.
    runtime: Runtime,
    /// Triggered by shutdown, or by the pipeline itself when the producer failed for good.
    stop: Shutdown,
    /// The origin of the breaker's time.
    clock_origin: tokio::time::Instant,
    /// Per-key order during retries; `None` with `--ordering none`. Locked only between awaits.
    key_order: Option<Mutex<KeyOrderState>>,
    /// Assignment changes not yet applied to the per-key order state.
    assignment_changes: Mutex<Vec<PartitionAssignmentEvent>>,
    /// Counts revocations seen: a record read at epoch `e` of a partition revoked at a later
    /// epoch is stale (exactly-once leaves it to the partition's next reader).
    assignment_epoch: AtomicU64,
    /// The epoch each partition was last revoked at.
    revoked_at: Mutex<BTreeMap<(String, i32), u64>>,
}

/// What a record applied under per-key order is to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRole {
    /// Its key was not blocked.
    Flow,
    /// The key's blocker, back from its tier.
    BlockerBack,
    /// Released from the key's parked queue.
    Released,
}

/// What a sink call is, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkCall {
    /// Records as they flow, breaker closed.
    Flow,
    /// One held record while the breaker is open.
    Probe,
    /// The small batch of held records while half-open.
    HalfOpen,
}

/// A uniform random number in `[-1, 1]`, spreading due times and probe waits.
fn jitter_sample() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

/// The span of one record's processing, continuing the trace the record carries.
fn record_span(record: &ConsumedRecord) -> tracing::Span {
    let span = rebound_service::trace_context::record_span(|| {
        tracing::info_span!(
            "consumer.process",
            messaging.source = %record.topic,
            messaging.partition = record.partition,
            messaging.offset = record.offset,
            outcome = tracing::field::Empty,
        )
    });
    continue_trace(&span, &record.headers);
    span
}

/// A batch after the sink: what became of each record, and the records' spans.
struct AppliedBatch {
    batch: Vec<ConsumedRecord>,
    fates: Vec<Option<Fate>>,
    spans: Vec<tracing::Span>,
    /// Records taken from the per-key order state (released or following a dead blocker):
    /// their source offsets were stored when they were parked, so none is stored for them.
    from_state: Vec<bool>,
    /// Records of a partition revoked while they were in hand, left to its new owner: no
    /// offset is stored for them (and their partition is not blocked for later batches).
    left_to_owner: Vec<bool>,
    /// Entries of the per-key order state topic, produced with the batch's copies (in its
    /// transaction, with exactly-once delivery); no offset of the batch is stored before all of
    /// them are acknowledged. Each with the assignment epoch it was written at: one of a
    /// partition revoked since is left out, like the records read before the revocation.
    state_writes: Vec<(OutgoingRecord, u64)>,
    /// The assignment epoch each record was read at.
    read_epochs: Vec<u64>,
}

impl AppliedBatch {
    /// The indexes of the records held by the breaker, in the order they were read.
    fn held_indexes(&self) -> Vec<usize> {
        self.fates
            .iter()
            .enumerate()
            .filter(|(_, fate)| matches!(fate, Some(Fate::Held)))
            .map(|(index, _)| index)
            .collect()
    }

    fn held_count(&self) -> usize {
        self.fates
            .iter()
            .filter(|fate| matches!(fate, Some(Fate::Held)))
            .count()
    }

    /// Takes a record that arrived while the breaker is open (read at `read_epoch`): held like
    /// the batch's own.
    fn hold(&mut self, record: ConsumedRecord, read_epoch: u64) {
        self.spans.push(record_span(&record));
        self.batch.push(record);
        self.fates.push(Some(Fate::Held));
        self.from_state.push(false);
        self.left_to_owner.push(false);
        self.read_epochs.push(read_epoch);
    }

    /// Adds a record taken from the per-key order state at assignment epoch `epoch`; returns
    /// its index.
    fn push_from_state(&mut self, record: ConsumedRecord, fate: Option<Fate>, epoch: u64) -> usize {
        self.spans.push(record_span(&record));
        self.batch.push(record);
        self.fates.push(fate);
        self.from_state.push(true);
        self.left_to_owner.push(false);
        self.read_epochs.push(epoch);
        self.batch.len() - 1
    }

    /// Appends `other`, a batch read after this one, so both go in one transaction.
    fn append(&mut self, other: AppliedBatch) {
        self.batch.extend(other.batch);
        self.fates.extend(other.fates);
        self.spans.extend(other.spans);
        self.from_state.extend(other.from_state);
        self.left_to_owner.extend(other.left_to_owner);
        self.state_writes.extend(other.state_writes);
        self.read_epochs.extend(other.read_epochs);
    }
}

/// A batch whose copies are delivered: which records are safe.
struct DeliveredBatch {
    batch: Vec<ConsumedRecord>,
    safe: Vec<bool>,
    from_state: Vec<bool>,
}

/// What became of one record of a batch.
enum Fate {
    /// Applied by the sink, or its copy acknowledged: its offset may be stored.
    Safe,
    /// Must go to a tier or the DLQ; not safe until the copy is acknowledged.
    Route(Box<Dispatch>),
    /// Failed transiently while the breaker is open: held in memory, not safe, not routed.
    Held,
}

impl Pipeline<'_> {
    /// Waits for the first record, then gathers more until the batch is full or the linger time
    /// passes. `None` once shutdown is triggered with no batch in hand.
    async fn next_batch(&self, shutdown: &Shutdown) -> Option<(Vec<ConsumedRecord>, Vec<u64>)> {
        let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
        let first = loop {
            tokio::select! {
                biased;
                () = shutdown.wait() => return None,
                // While no record arrives, assignment changes are still noticed (the partition count).
                _ = idle_tick.tick() => {
                    self.log_assignment_events();
                    // Parked records whose blocker was settled before a restart or a rebalance
                    // are released without waiting for a record of their partition.
                    if self.key_order_has_idle_work() {
                        return Some((Vec::new(), Vec::new()));
                    }
                }
                received = self.runtime.consumer.recv() => match received {
                    Ok(record) => break record,
                    Err(error) => {
                        events::kafka_receive_failed("consumer", &error);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        };
        self.log_assignment_events();
        let mut batch = Vec::with_capacity(self.config.batch_size.min(1024));
        let exactly_once = self.runtime.delivery() == DeliveryMode::ExactlyOnce;
        // Each record's epoch is taken when it is received: a rewind between two receives makes
        // the earlier ones stale and leaves the later ones valid.
        let mut read_epochs = Vec::with_capacity(batch.capacity());
        read_epochs.push(self.assignment_epoch.load(Ordering::SeqCst));
        batch.push(first);
        let deadline = tokio::time::Instant::now() + self.config.batch_linger;
        while batch.len() < self.config.batch_size {
            // Records librdkafka already holds are taken at once; only when none is ready is a
            // timer armed for the rest of the linger time (a timer per record cost more than
            // receiving it).
            let received = match self.runtime.consumer.recv().now_or_never() {
                Some(received) => received,
                None => match tokio::time::timeout_at(deadline, self.runtime.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_) => break,
                },
            };
            if exactly_once {
                // A revocation is served inside `recv`, before the record it returns: records of
                // the revoked partitions gathered so far are stale, the new one is not.
                let revoked = self.take_revocations();
                if !revoked.is_empty() {
                    let mut kept_epochs = Vec::with_capacity(read_epochs.len());
                    let mut kept = Vec::with_capacity(batch.len());
                    for (record, epoch) in batch.drain(..).zip(read_epochs.drain(..)) {
                        if !revoked.contains(&(record.topic.clone(), record.partition)) {
                            kept.push(record);
                            kept_epochs.push(epoch);
                        }
                    }
                    batch = kept;
                    read_epochs = kept_epochs;
                }
            }
            match received {
                Ok(record) => {
                    batch.push(record);
                    read_epochs.push(self.assignment_epoch.load(Ordering::SeqCst));
                }
                Err(error) => events::kafka_receive_failed("consumer", &error),
            }
        }
        self.log_assignment_events();
        Some((batch, read_epochs))
    }

    fn log_assignment_events(&self) {
        self.note_assignment_changes();
    }

    /// Takes the runtime's assignment changes (it logs them and keeps readiness) and keeps them
    /// for the per-key order state, which restores and forgets partitions before the next
    /// batch is applied. Returns whether anything changed.
    fn note_assignment_changes(&self) -> bool {
        !self.take_assignment_changes().is_empty()
    }

    /// Whether the per-key order state has work without a new record: partitions to restore,
    /// or keys to release.
    fn key_order_has_idle_work(&self) -> bool {
        let Some(state) = &self.key_order else {
            return false;
        };
        let assigned = self.assignment_changes.lock().is_ok_and(|pending| !pending.is_empty());
        assigned || state.lock().is_ok_and(|state| !state.pending_release.is_empty())
    }

    /// The partitions revoked since the last look; see [`Pipeline::take_assignment_changes`].
    fn take_revocations(&self) -> BTreeSet<(String, i32)> {
        let mut revoked = BTreeSet::new();
        for change in self.take_assignment_changes() {
            if let PartitionAssignmentEvent::Revoked(partitions) = change {
                revoked.extend(
                    partitions
                        .into_iter()
                        .map(|partition| (partition.topic, partition.partition)),
                );
            }
        }
        revoked
    }

    /// Takes the assignment changes (the runtime logs them and keeps readiness), notes every
    /// revocation's epoch, and keeps the changes for the per-key order state, which restores and
    /// forgets partitions before the next batch is applied. Every look at the changes goes
    /// through here.
    fn take_assignment_changes(&self) -> Vec<PartitionAssignmentEvent> {
        let changes = self.runtime.take_assignment_changes();
        if self.key_order.is_some()
            && !changes.is_empty()
            && let Ok(mut pending) = self.assignment_changes.lock()
        {
            pending.extend(changes.iter().cloned());
        }
        for change in &changes {
            if let PartitionAssignmentEvent::Revoked(partitions) = change {
                let epoch = self.assignment_epoch.fetch_add(1, Ordering::SeqCst) + 1;
                let mut revoked_at = self
                    .revoked_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for partition in partitions {
                    revoked_at.insert((partition.topic.clone(), partition.partition), epoch);
                }
            }
        }
        changes
    }

    /// After [`HopFailed::Restarted`]: the partitions of `records` are read again from their
    /// committed offsets, and every record of them read so far (in this batch, in batches
    /// queued behind it, in the intake's hands) is stale. The positions are fetched first; the
    /// epoch is moved and the partitions sought with no await in between, so the intake (which
    /// runs only at awaits) receives nothing between the two.
    async fn rewind<'record>(&self, records: impl Iterator<Item = &'record ConsumedRecord>) {
        let partitions: Vec<TopicPartition> = records
            .map(|record| TopicPartition {
                topic: record.topic.clone(),
                partition: record.partition,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let positions = match self.runtime.committed_positions(&partitions).await {
            Ok(positions) => positions,
            Err(error) => {
                // Without the positions the batch cannot be read again safely: stop, and let
                // the next owner read from the committed offsets.
                self.stop_on_fatal_producer_error(error);
                return;
            }
        };
        let epoch = self.assignment_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut revoked_at = self
                .revoked_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for partition in &partitions {
                revoked_at.insert((partition.topic.clone(), partition.partition), epoch);
            }
        }
        self.runtime.seek_positions(&positions);
        // What the per-key order state learned from the records read again is not durable
        // (their transaction did not commit): it is forgotten and read back from the state
        // topic, as for a new assignment, before the next batch is applied.
        if self.key_order.is_some()
            && let Ok(mut pending) = self.assignment_changes.lock()
        {
            pending.push(PartitionAssignmentEvent::Assigned(partitions));
        }
    }

    /// True when a per-key order state entry, written at `epoch`, is for a partition revoked
    /// since (its key names the partition): the partition's new owner has read the state
    /// without it, and it must not change that state behind the owner's back.
    fn state_write_is_stale(&self, write: &OutgoingRecord, epoch: u64) -> bool {
        let partition = match write.key.as_deref().map(rebound_retry::parse_state_entry_key) {
            Some(Ok(rebound_retry::StateEntryKey::Blocked(key))) => (key.topic, key.partition),
            Some(Ok(rebound_retry::StateEntryKey::Parked { topic, partition, .. })) => (topic, partition),
            // Every entry is written with a key this crate made; never the case.
            _ => return false,
        };
        let revoked_at = self
            .revoked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked_at.get(&partition).is_some_and(|revoked| *revoked > epoch)
    }

    /// True when `record`, read at `read_epoch`, belongs to a partition revoked since.
    fn is_stale(&self, record: &ConsumedRecord, read_epoch: u64) -> bool {
        let revoked_at = self
            .revoked_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked_at
            .get(&(record.topic.clone(), record.partition))
            .is_some_and(|revoked| *revoked > read_epoch)
    }

    /// Decodes and applies a batch, and decides the fate of each record. With the breaker on,
    /// the sink's answers feed it; once it is open, transient failures are held, not routed.
    async fn apply_batch(
        &self,
        batch: Vec<ConsumedRecord>,
        read_epochs: Vec<u64>,
        breaker: Option<&mut CircuitBreaker>,
    ) -> AppliedBatch {
        // One span per record, continuing the trace the record carries and living as long as
        // the record's processing; copies sent to a tier or the DLQ carry this span onwards.
        let spans: Vec<tracing::Span> = batch.iter().map(record_span).collect();
        let mut applied = AppliedBatch {
            fates: (0..batch.len()).map(|_| None).collect(),
            from_state: vec![false; batch.len()],
            left_to_owner: vec![false; batch.len()],
            state_writes: Vec::new(),
            batch,
            spans,
            read_epochs,
        };
        let all: Vec<usize> = (0..applied.batch.len()).collect();
        if self.key_order.is_some() {
            self.apply_in_key_order(&mut applied, &all, breaker).await;
        } else {
            self.apply_records(&mut applied, &all, breaker, SinkCall::Flow).await;
        }
        applied
    }

    /// Applies the records at `indexes` of `applied` to the sink in one call and decides their
    /// fates: applied records are safe, permanent failures and poison are routed, transient
    /// failures are routed to their tier, or held while the breaker is not closed. A probe or a
    /// half-open batch never routes a transient failure, so it spends none of the record's
    /// tier attempts.
    async fn apply_records(
        &self,
        applied: &mut AppliedBatch,
        indexes: &[usize],
        breaker: Option<&mut CircuitBreaker>,
        call: SinkCall,
    ) {
        let mut apply_items = Vec::new();
        let mut applying = Vec::new();
        for &index in indexes {
            let record = &applied.batch[index];
            match self.prepare(record).await {
                Ok(item) => {
                    apply_items.push(item);
                    applying.push(index);
                }
                Err((previous, failure)) => {
                    let fate = self.route(
                        record,
                        previous.as_ref(),
                        &failure,
                        &applied.spans[index],
                        DueTiming::default(),
                    );
                    applied.fates[index] = Some(fate);
                }
            }
        }
        if apply_items.is_empty() {
            return;
        }
        let previous_attempts: Vec<u32> = apply_items.iter().map(|item| item.previous_attempts).collect();
        let applying_count = apply_items.len();
        let sink_started = std::time::Instant::now();
        let mut results = self.sink.apply_batch(apply_items).await;
        // The trait promises one outcome per item; a sink that breaks it must not lose a record
        // (a missing outcome would leave it without a fate) nor shift outcomes onto others.
        results.resize_with(applying_count, || {
            Err(SinkFailure::transient("the sink returned no outcome for this note"))
        });
        events::consumer_sink_batch(sink_started.elapsed());
        let attempts: Vec<SinkAttempt> = results
            .iter()
            .map(|result| match result {
                Err(failure) if failure.kind == ErrorKind::Transient => SinkAttempt::FailedTransiently,
                _ => SinkAttempt::Answered,
            })
            .collect();
        let transient = attempts
            .iter()
            .filter(|attempt| **attempt == SinkAttempt::FailedTransiently)
            .count();
        // A sink that fails a whole batch transiently is most likely down.
        if transient == applying_count {
            self.runtime
                .readiness
                .set("sink", false, "the last batch failed transiently as a whole");
        } else {
            self.runtime
                .readiness
                .set("sink", true, "the last batch reached the sink");
        }
        let mut transitions = Vec::new();
        let mut hold_transient = call != SinkCall::Flow;
        if let Some(breaker) = breaker {
            let now = self.clock_origin.elapsed();
            let transition = match call {
                SinkCall::Flow => breaker.record(now, attempts.iter().copied(), jitter_sample()),
                SinkCall::Probe => {
                    let attempt = attempts[0];
                    let transition = breaker.record_probe(now, attempt, jitter_sample());
                    let next_probe_in = breaker.next_probe_at().map(|at| at.saturating_sub(now));
                    events::consumer_breaker_probe(attempt == SinkAttempt::Answered, next_probe_in);
                    transition
                }
                SinkCall::HalfOpen => breaker.record_half_open(now, attempts.iter().copied(), jitter_sample()),
            };
            transitions.extend(transition);
            // A sink that asks for a longer pause than a record's next tier would give it is
            // left alone by the breaker rather than have records skip tiers.
            let longest_wait = applying
                .iter()
                .zip(&results)
                .filter_map(|(index, result)| match result {
                    Err(failure) if failure.kind == ErrorKind::Transient => failure
                        .retry_after
                        .filter(|wait| *wait > self.next_tier_delay(&applied.batch[*index])),
                    _ => None,
                })
                .max();
            if let Some(wait) = longest_wait {
                let reason = format!(
                    "the sink asked to be retried after {}",
                    humantime::format_duration(wait)
                );
                transitions.extend(breaker.hold_for(now, wait, reason));
            }
            hold_transient |= breaker.state() != BreakerState::Closed;
        }
        for ((index, result), previous_attempts) in applying.into_iter().zip(results).zip(previous_attempts) {
            let record = &applied.batch[index];
            let span = &applied.spans[index];
            applied.fates[index] = Some(match result {
                Ok(()) => {
                    span.record("outcome", "applied");
                    events::record_applied(record_ref(record, &record.key_for_display()), previous_attempts);
                    Fate::Safe
                }
                Err(SinkFailure { kind, .. }) if kind == ErrorKind::Transient && hold_transient => Fate::Held,
                Err(SinkFailure {
                    kind,
                    message,
                    retry_after,
                    ..
                }) => {
                    // The record decoded, so its retry headers parsed; read them again rather
                    // than carry them through the sink call.
                    let previous = parse_retry_context(&record.headers).ok().flatten();
                    let failure = Failure {
                        kind,
                        message,
                        failed_at_ms: now_epoch_ms(),
                    };
                    let timing = DueTiming {
                        jitter_sample: jitter_sample(),
                        retry_after,
                    };
                    self.route(record, previous.as_ref(), &failure, span, timing)
                }
            });
        }
        // Records already safe only need their place for the offsets; their bytes go now.
        for &index in indexes {
            if matches!(applied.fates[index], Some(Fate::Safe)) {
                let record = &mut applied.batch[index];
                record.key = None;
                record.value = None;
                record.headers = rebound_retry::RecordHeaders::new();
            }
        }
        let held = applied.held_count();
        for transition in &transitions {
            events::consumer_breaker_transition(transition, held);
        }
    }

    /// Applies the records at `indexes` under per-key order (see ARCHITECTURE.md, "Per-key
    /// order"): in rounds that hold at most one record per key, parking the records of
    /// blocked keys and releasing the parked records of keys whose blocker was settled, until
    /// nothing is left to apply. Once the breaker holds a record, later rounds call no sink:
    /// the keys still to apply are held as they are, in order.
    async fn apply_in_key_order(
        &self,
        applied: &mut AppliedBatch,
        indexes: &[usize],
        mut breaker: Option<&mut CircuitBreaker>,
    ) {
        let Some(state) = &self.key_order else {
            return;
        };
        let unrestored = self.sync_key_order(applied, indexes).await;
        // Released records belong to the state as it is now, just synced with the assignment.
        let epoch = self.assignment_epoch.load(Ordering::SeqCst);
        let mut queues: BTreeMap<SourceKey, VecDeque<usize>> = BTreeMap::new();
        let mut free = Vec::new();
        for &index in indexes {
            let record = &applied.batch[index];
            if unrestored.contains(&(record.topic.clone(), record.partition)) {
                // No state for its partition (revoked, or shutdown while it was read): neither
                // applied nor held; its owner reads it again.
                applied.fates[index] = None;
                applied.left_to_owner[index] = true;
                continue;
            }
            match source_key(record) {
                Some(key) => queues.entry(key).or_default().push_back(index),
                None => free.push(index),
            }
        }
        let mut holding = false;
        loop {
            let mut round = std::mem::take(&mut free);
            let mut roles = HashMap::new();
            {
                let Ok(mut state) = state.lock() else { return };
                let state = &mut *state;
                for (key, queue) in &mut queues {
                    while let Some(&index) = queue.front() {
                        let record = &applied.batch[index];
                        let original = original_location(record);
                        let admission = state.order.admit(
                            key,
                            record.offset,
                            original
                                .as_ref()
                                .map(|(topic, partition, offset)| (topic.as_str(), *partition, *offset)),
                        );
                        match admission {
                            Admission::Flow | Admission::BlockerBack => {
                                if holding {
                                    for index in queue.drain(..) {
                                        applied.fates[index] = Some(Fate::Held);
                                    }
                                } else {
                                    queue.pop_front();
                                    round.push(index);
                                    let role = if admission == Admission::BlockerBack {
                                        KeyRole::BlockerBack
                                    } else {
                                        KeyRole::Flow
                                    };
                                    roles.insert(index, (key.clone(), role));
                                }
                                break;
                            }
                            Admission::AlreadyInTier | Admission::AlreadyParked => {
                                queue.pop_front();
                                applied.fates[index] = Some(Fate::Safe);
                            }
                            Admission::Park => {
                                queue.pop_front();
                                let blocker = state.order.blocker_of(key);
                                let write = state.order.park(key, record.offset, record.clone());
                                applied.state_writes.push((
                                    entry_record(&state.config.state_topic, &write, Some(record)),
                                    applied.read_epochs[index],
                                ));
                                events::record_parked(record_ref(record, &record.key_for_display()), blocker);
                                applied.spans[index].record("outcome", "parked");
                                applied.fates[index] = Some(Fate::Safe);
                            }
                        }
                    }
                }
                if !holding {
                    let keys_in_round: BTreeSet<SourceKey> = roles.values().map(|(key, _)| key.clone()).collect();
                    for key in state.pending_release.clone() {
                        if keys_in_round.contains(&key) || queues.get(&key).is_some_and(|queue| !queue.is_empty()) {
                            continue;
                        }
                        match state.order.next_released(&key) {
                            Some(released) => {
                                let index = applied.push_from_state(released.payload, None, epoch);
                                round.push(index);
                                roles.insert(index, (key, KeyRole::Released));
                            }
                            None => {
                                state.pending_release.remove(&key);
                            }
                        }
                    }
                }
            }
            if round.is_empty() {
                break;
            }
            self.apply_records(applied, &round, breaker.as_deref_mut(), SinkCall::Flow)
                .await;
            self.settle_key_order(applied, &round, &roles);
            if round
                .iter()
                .any(|index| matches!(applied.fates[*index], Some(Fate::Held)))
            {
                holding = true;
            }
        }
        self.pause_or_resume_at_cap(applied, holding);
    }

    /// Applies the assignment changes to the per-key order state, and restores every partition
    /// of the records at `indexes` (and every newly assigned one) that is not tracked yet, by
    /// reading the state topic. Returns the partitions whose records must be left unsafe: not
    /// assigned any more, or not restored because shutdown came first.
    async fn sync_key_order(&self, applied: &AppliedBatch, indexes: &[usize]) -> BTreeSet<(String, i32)> {
        let Some(state) = &self.key_order else {
            return BTreeSet::new();
        };
        let changes = self
            .assignment_changes
            .lock()
            .map(|mut pending| std::mem::take(&mut *pending))
            .unwrap_or_default();
        let mut wanted = BTreeSet::new();
        let state_topic = {
            let Ok(mut state) = state.lock() else {
                return BTreeSet::new();
            };
            for change in changes {
                match change {
                    PartitionAssignmentEvent::Revoked(partitions) => {
                        for partition in partitions {
                            state.forget(&partition.topic, partition.partition);
                            wanted.remove(&(partition.topic, partition.partition));
                        }
                    }
                    PartitionAssignmentEvent::Assigned(partitions) => {
                        for partition in partitions {
                            state.forget(&partition.topic, partition.partition);
                            wanted.insert((partition.topic, partition.partition));
                        }
                    }
                }
            }
            for &index in indexes {
                let record = &applied.batch[index];
                if !applied.from_state[index] && !state.order.is_tracked(&record.topic, record.partition) {
                    wanted.insert((record.topic.clone(), record.partition));
                }
            }
            state.config.state_topic.clone()
        };
        // A partition no longer assigned (revoked while its records were in hand) is not
        // restored: its records are left unsafe, and its new owner reads them again in order.
        let assigned: BTreeSet<(String, i32)> = self
            .runtime
            .consumer
            .assignment()
            .into_iter()
            .map(|partition| (partition.topic, partition.partition))
            .collect();
        let not_assigned: BTreeSet<(String, i32)> = wanted.difference(&assigned).cloned().collect();
        wanted.retain(|partition| assigned.contains(partition));
        if wanted.is_empty() {
            return not_assigned;
        }
        let started = std::time::Instant::now();
        loop {
            match read_state(&self.config.kafka, &state_topic, &wanted).await {
                Ok(restored) => {
                    let blocked_keys = restored.values().map(Vec::len).sum::<usize>();
                    if let Ok(mut state) = state.lock() {
                        state.restore(&wanted, restored);
                        let parked = wanted
                            .iter()
                            .map(|(topic, partition)| state.order.parked_count(topic, *partition))
                            .sum();
                        events::key_order_state_restored(wanted.len(), blocked_keys, parked, started.elapsed());
                        events::consumer_parked_records(state.order.parked_total());
                    }
                    return not_assigned;
                }
                Err(error) => {
                    events::key_order_state_error("read", &state_topic, &error);
                    // No record of these partitions may be applied without their state.
                    tokio::select! {
                        () = self.stop.wait() => return wanted.union(&not_assigned).cloned().collect(),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// What each record at `indexes` is to its key, before it is applied (the state says so
    /// only until the outcome is settled).
    fn key_roles(&self, applied: &AppliedBatch, indexes: &[usize]) -> HashMap<usize, (SourceKey, KeyRole)> {
        let Some(state) = &self.key_order else {
            return HashMap::new();
        };
        let Ok(state) = state.lock() else {
            return HashMap::new();
        };
        indexes
            .iter()
            .filter_map(|&index| {
                let record = &applied.batch[index];
                let key = source_key(record)?;
                let role = if applied.from_state[index] {
                    KeyRole::Released
                } else {
                    let original = original_location(record);
                    match state.order.admit(
                        &key,
                        record.offset,
                        original
                            .as_ref()
                            .map(|(topic, partition, offset)| (topic.as_str(), *partition, *offset)),
                    ) {
                        Admission::BlockerBack => KeyRole::BlockerBack,
                        _ => KeyRole::Flow,
                    }
                };
                Some((index, (key, role)))
            })
            .collect()
    }

    /// Records what the sink's answers mean for the keys of the records at `indexes`: a
    /// blocker applied releases its key, a record routed to a tier blocks it, a blocker or a
    /// released record dead-lettered takes the parked records with it (or releases them), and
    /// a released record held by the breaker goes back to its queue.
    fn settle_key_order(
        &self,
        applied: &mut AppliedBatch,
        indexes: &[usize],
        roles: &HashMap<usize, (SourceKey, KeyRole)>,
    ) {
        let Some(state) = &self.key_order else {
            return;
        };
        let Ok(mut state) = state.lock() else {
            return;
        };
        let state = &mut *state;
        let state_topic = state.config.state_topic.clone();
        for &index in indexes {
            let Some((key, role)) = roles.get(&index) else {
                continue;
            };
            let offset = applied.batch[index].offset;
            let mut writes = Vec::new();
            let unpark = StateWrite::Unpark {
                key: key.clone(),
                offset,
            };
            match &applied.fates[index] {
                Some(Fate::Safe) => match role {
                    KeyRole::BlockerBack => {
                        writes.extend(state.order.blocker_applied(key));
                        state.pending_release.insert(key.clone());
                    }
                    KeyRole::Released => writes.push(unpark),
                    KeyRole::Flow => {}
                },
                Some(Fate::Route(dispatch)) => {
                    if *role == KeyRole::Released {
                        writes.push(unpark);
                    }
                    let position = key_position(&applied.batch[index], dispatch);
                    match dispatch.route {
                        Route::Tier { .. } => {
                            writes.extend(state.order.routed_to_tier(key, position, *role == KeyRole::Released))
                        }
                        Route::DeadLetter if *role == KeyRole::Flow => {}
                        Route::DeadLetter => {
                            let dead = state.order.dead_lettered(key);
                            writes.extend(dead.writes);
                            for follower in dead.follow {
                                let record = follower.payload;
                                let previous = parse_retry_context(&record.headers).ok().flatten();
                                let follow_dispatch = blocked_by_key_dispatch(
                                    &self.config.policy,
                                    &record.headers,
                                    previous.as_ref(),
                                    &record.location(),
                                    (key.topic.as_str(), key.partition, position),
                                    &self.config.group,
                                    now_epoch_ms(),
                                );
                                writes.push(follower.write);
                                let epoch = applied.read_epochs[index];
                                applied.push_from_state(record, Some(Fate::Route(Box::new(follow_dispatch))), epoch);
                            }
                            if state.order.on_dead_key() == OnDeadKey::Continue {
                                state.pending_release.insert(key.clone());
                            }
                        }
                    }
                }
                Some(Fate::Held) if *role == KeyRole::Released => {
                    // Back to its queue (its entry was never removed), to be released later.
                    let record = applied.batch[index].clone();
                    state.order.park(key, offset, record);
                    state.pending_release.insert(key.clone());
                    applied.fates[index] = Some(Fate::Safe);
                }
                Some(Fate::Held) | None => {}
            }
            let epoch = applied.read_epochs[index];
            applied.state_writes.extend(
                writes
                    .iter()
                    .map(|write| (entry_record(&state_topic, write, None), epoch)),
            );
        }
        events::consumer_parked_records(state.order.parked_total());
    }

    /// Under per-key order, the held records that may be tried now: the first held record of
    /// each key. Held records whose key is blocked meanwhile are parked on the way.
    fn key_order_heads(&self, applied: &mut AppliedBatch, held: &[usize]) -> Vec<usize> {
        let Some(state) = &self.key_order else {
            return held.to_vec();
        };
        let Ok(mut state) = state.lock() else {
            return held.to_vec();
        };
        let state = &mut *state;
        let mut seen = BTreeSet::new();
        let mut heads = Vec::new();
        for &index in held {
            let record = &applied.batch[index];
            let Some(key) = source_key(record) else {
                heads.push(index);
                continue;
            };
            if seen.contains(&key) {
                continue;
            }
            let original = original_location(record);
            match state.order.admit(
                &key,
                record.offset,
                original
                    .as_ref()
                    .map(|(topic, partition, offset)| (topic.as_str(), *partition, *offset)),
            ) {
                Admission::Flow | Admission::BlockerBack => {
                    seen.insert(key);
                    heads.push(index);
                }
                Admission::AlreadyInTier | Admission::AlreadyParked => applied.fates[index] = Some(Fate::Safe),
                Admission::Park => {
                    let write = state.order.park(&key, record.offset, record.clone());
                    let entry = entry_record(&state.config.state_topic, &write, Some(record));
                    applied.state_writes.push((entry, applied.read_epochs[index]));
                    applied.fates[index] = Some(Fate::Safe);
                }
            }
        }
        heads
    }

    /// Pauses the partitions of the batch that reached `--max-parked`, and resumes those that
    /// fell below it (not while the breaker holds records: it keeps every partition paused).
    fn pause_or_resume_at_cap(&self, applied: &AppliedBatch, holding: bool) {
        let Some(state) = &self.key_order else {
            return;
        };
        let Ok(mut state) = state.lock() else {
            return;
        };
        let state = &mut *state;
        let partitions: BTreeSet<(String, i32)> = applied
            .batch
            .iter()
            .map(|record| (record.topic.clone(), record.partition))
            .collect();
        for (topic, partition) in partitions {
            if state.order.at_cap(&topic, partition) {
                // Paused again every time: the breaker's resume at the end of an outage, or a
                // new assignment, may have resumed it.
                self.runtime.pause_partitions(&[TopicPartition {
                    topic: topic.clone(),
                    partition,
                }]);
                if state.paused_at_cap.insert((topic.clone(), partition)) {
                    events::consumer_parking_cap_reached(
                        &topic,
                        partition,
                        state.order.parked_count(&topic, partition),
                        state.config.max_parked,
                    );
                }
            }
        }
        if !holding {
            let below: Vec<(String, i32)> = state
                .paused_at_cap
                .iter()
                .filter(|(topic, partition)| !state.order.at_cap(topic, *partition))
                .cloned()
                .collect();
            for (topic, partition) in below {
                self.runtime.resume_partitions(&[TopicPartition {
                    topic: topic.clone(),
                    partition,
                }]);
                state.paused_at_cap.remove(&(topic, partition));
            }
        }
        events::consumer_parking_paused(state.paused_at_cap.len());
    }

    /// The delay of the tier a record's next transient failure would send it to; zero when
    /// its tiers are used up.
    fn next_tier_delay(&self, record: &ConsumedRecord) -> Duration {
        let previous = parse_retry_context(&record.headers).ok().flatten();
        let attempt = previous.map_or(0, |context| context.attempt).saturating_add(1);
        match self.config.policy.route_after_failure(attempt, ErrorKind::Transient) {
            Route::Tier { index } => self.config.policy.tiers()[index].delay,
            Route::DeadLetter => Duration::ZERO,
        }
    }

    /// Rides out a sink outage: called when the breaker is no longer closed after a batch, it
    /// pauses every assigned source partition (and every partition assigned later), keeps
    /// polling so the group stays healthy, holds the records in hand and any that still
    /// arrive, probes one held record per probe interval, tries a small batch once a probe
    /// reached the sink, and once closed applies what is still held as usual and resumes.
    /// Held records are not safe: their offsets (and later ones of their partitions) are not
    /// stored until they are applied or routed, so a crash or shutdown meanwhile loses nothing.
    async fn ride_out_outage(&self, applied: &mut AppliedBatch, breaker: &mut CircuitBreaker, shutdown: &Shutdown) {
        self.pause_assigned();
        // Probes go round the held records, so one record that fails on its own cannot stand
        // for the whole sink.
        let mut probe_from = 0_usize;
        let mut assignment_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let held = applied.held_indexes();
            events::consumer_breaker_held(held.len());
            if held.is_empty() {
                if breaker.state() != BreakerState::Closed {
                    let transition = breaker.close("no record left to hold".to_owned());
                    events::consumer_breaker_transition(&transition, 0);
                }
                break;
            }
            match breaker.state() {
                BreakerState::Closed if self.key_order.is_some() => {
                    self.apply_in_key_order(applied, &held, Some(&mut *breaker)).await;
                }
                BreakerState::Closed => {
                    self.apply_records(applied, &held, Some(&mut *breaker), SinkCall::Flow)
                        .await;
                }
                BreakerState::HalfOpen => {
                    let heads = self.key_order_heads(applied, &held);
                    let chosen: Vec<usize> = heads.iter().copied().take(breaker.half_open_batch()).collect();
                    if chosen.is_empty() {
                        continue;
                    }
                    let roles = self.key_roles(applied, &chosen);
                    self.apply_records(applied, &chosen, Some(&mut *breaker), SinkCall::HalfOpen)
                        .await;
                    self.settle_key_order(applied, &chosen, &roles);
                }
                BreakerState::Open => {
                    let due = self.clock_origin + breaker.next_probe_at().unwrap_or_default();
                    tokio::select! {
                        biased;
                        () = shutdown.wait() => break,
                        () = tokio::time::sleep_until(due) => {
                            // Under per-key order only a key's first held record may be tried.
                            let heads = self.key_order_heads(applied, &held);
                            if let Some(&first) = heads.first() {
                                let chosen = heads.iter().copied().find(|index| *index >= probe_from).unwrap_or(first);
                                probe_from = chosen + 1;
                                let roles = self.key_roles(applied, &[chosen]);
                                self.apply_records(applied, &[chosen], Some(&mut *breaker), SinkCall::Probe).await;
                                self.settle_key_order(applied, &[chosen], &roles);
                            }
                        }
                        _ = assignment_tick.tick() => {
                            if self.note_assignment_changes() {
                                self.pause_assigned();
                            }
                        }
                        received = self.runtime.consumer.recv() => match received {
                            Ok(record) => {
                                self.take_revocations();
                                applied.hold(record, self.assignment_epoch.load(Ordering::SeqCst));
                            }
                            Err(error) => events::kafka_receive_failed("consumer", &error),
                        },
                    }
                }
            }
        }
        // librdkafka's pause outlives the outage; resume whatever is assigned now.
        self.runtime.consumer.set_pause_new_assignments(false);
        self.runtime.resume_partitions(&self.runtime.consumer.assignment());
        events::consumer_paused(0);
        events::consumer_breaker_held(applied.held_count());
    }

    /// Pauses every partition assigned now. Called again after every assignment change while
    /// the breaker is open, because librdkafka resumes a partition when it is assigned.
    fn pause_assigned(&self) {
        // Partitions assigned from now on start paused in the rebalance callback, before their
        // first fetch; pausing only after the assignment event would let their records in.
        self.runtime.consumer.set_pause_new_assignments(true);
        let assigned: Vec<TopicPartition> = self.runtime.consumer.assignment();
        events::consumer_paused(self.runtime.pause_partitions(&assigned));
    }

    /// The delivery stage: takes applied batches in order, keeps the copies of up to
    /// [`COPY_BATCHES_IN_FLIGHT`] of them in flight, and stores each batch's offsets in the
    /// order the batches were read, once the batch is delivered. Returns when the intake has
    /// stopped and every batch it handed on is delivered (or given up at shutdown).
    async fn deliver_in_order(&self, mut applied: tokio::sync::mpsc::Receiver<AppliedBatch>, shutdown: &Shutdown) {
        if self.runtime.delivery() == DeliveryMode::ExactlyOnce {
            return self.deliver_in_transactions(applied, shutdown).await;
        }
        let mut in_flight: futures::stream::FuturesOrdered<futures::future::BoxFuture<'_, DeliveredBatch>> =
            futures::stream::FuturesOrdered::new();
        let mut records_in_flight = 0_usize;
        // Partitions with a record that could not be made safe (only at shutdown): no later
        // offset of theirs may be stored, or that record would be skipped on restart.
        let mut blocked_partitions = BTreeSet::new();
        let mut intake_open = true;
        loop {
            tokio::select! {
                biased;
                Some(DeliveredBatch { batch, mut safe, from_state }) = in_flight.next(), if !in_flight.is_empty() => {
                    records_in_flight -= batch.len();
                    events::consumer_in_flight(records_in_flight);
                    // Records from the per-key order state have no offset to store: theirs was
                    // stored when they were parked.
                    let batch: Vec<ConsumedRecord> = batch
                        .into_iter()
                        .zip(&from_state)
                        .filter(|(_, from_state)| !**from_state)
                        .map(|(record, _)| record)
                        .collect();
                    safe = safe.into_iter().zip(&from_state).filter(|(_, from_state)| !**from_state).map(|(is_safe, _)| is_safe).collect();
                    self.store_offsets(&batch, &safe, &mut blocked_partitions);
                }
                received = applied.recv(), if intake_open && in_flight.len() < COPY_BATCHES_IN_FLIGHT => match received {
                    Some(batch) => {
                        records_in_flight += batch.batch.len();
                        events::consumer_in_flight(records_in_flight);
                        in_flight.push_back(self.deliver_batch(batch, shutdown).boxed());
                    }
                    None => intake_open = false,
                },
                else => break,
            }
        }
    }

    /// The delivery stage with exactly-once delivery: each applied batch, with every batch queued
    /// behind it, is committed as one transaction (copies and source offsets), in the order the
    /// batches were read. Returns when the intake has stopped and every batch is committed (or
    /// given up at shutdown or on a fatal producer error, with nothing of it committed).
    async fn deliver_in_transactions(
        &self,
        mut applied: tokio::sync::mpsc::Receiver<AppliedBatch>,
        shutdown: &Shutdown,
    ) {
        let mut blocked_partitions = BTreeSet::new();
        while let Some(mut batch) = applied.recv().await {
            // Batches that queued while the last transaction committed join this one: fewer,
            // larger transactions when the broker is the bottleneck.
            while let Ok(next) = applied.try_recv() {
                batch.append(next);
            }
            let records = batch.batch.len();
            events::consumer_in_flight(records);
            self.commit_batch(batch, shutdown, &mut blocked_partitions).await;
            events::consumer_in_flight(0);
            if self.runtime.producer_failure.is_recorded() {
                // Fenced or failed for good: nothing more can be committed. What is queued is read
                // again by the next owner.
                self.stop.trigger();
                while applied.recv().await.is_some() {}
                return;
            }
        }
    }

    /// Commits one applied batch in a transaction, trying again after an abort until it commits
    /// or shutdown (or a fatal producer error) comes. Records of partitions revoked since they
    /// were read are left out: neither copied nor committed.
    async fn commit_batch(
        &self,
        applied: AppliedBatch,
        shutdown: &Shutdown,
        blocked_partitions: &mut BTreeSet<(String, i32)>,
    ) {
        let AppliedBatch {
            batch,
            fates,
            spans,
            read_epochs,
            from_state,
            left_to_owner,
            state_writes,
        } = applied;
        let mut fates: Vec<Option<Fate>> = fates;
        let mut backoff = Duration::from_millis(100);
        loop {
            let current: Vec<usize> = (0..batch.len())
                .filter(|index| !self.is_stale(&batch[*index], read_epochs[*index]))
                .collect();
            // Applied and routed records are safe once the transaction commits; held or undecided
            // ones (only at shutdown) block their partition's offset.
            let mut blocked_after = blocked_partitions.clone();
            // Records taken from the per-key order state had their offsets committed when they
            // were parked; records left to a partition's new owner have none to commit.
            let offsets: Vec<SourceOffset> = offsets_of(
                current
                    .iter()
                    .filter(|index| !from_state[**index] && !left_to_owner[**index])
                    .map(|index| {
                        let record = &batch[*index];
                        let safe = matches!(fates[*index], Some(Fate::Safe | Fate::Route(_)));
                        (record.topic.as_str(), record.partition, record.offset, safe)
                    }),
                &mut blocked_after,
            )
            .into_iter()
            .map(|(topic, partition, next_offset)| SourceOffset {
                topic: topic.to_owned(),
                partition,
                next_offset,
            })
            .collect();
            let routed: Vec<(usize, &Dispatch)> = current
                .iter()
                .filter_map(|index| match &fates[*index] {
                    Some(Fate::Route(dispatch)) => Some((*index, &**dispatch)),
                    _ => None,
                })
                .collect();
            let mut copies: Vec<OutgoingRecord> = routed
                .iter()
                .map(|(index, dispatch)| copy_of(&batch[*index], dispatch))
                .collect();
            // The per-key order state's entries go in the same transaction, after the copies
            // (the stub callback below sees only copies' positions as routed ones).
            copies.extend(
                state_writes
                    .iter()
                    .filter(|(write, epoch)| !self.state_write_is_stale(write, *epoch))
                    .map(|(write, _)| write.clone()),
            );
            if copies.is_empty() && offsets.is_empty() {
                *blocked_partitions = blocked_after;
                return;
            }
            let committed = self
                .runtime
                .commit_hop(&mut copies, &offsets, |position, _, error: &KafkaError| {
                    // A state entry has no stub: one refused as too large fails the hop.
                    let (index, dispatch) = *routed.get(position)?;
                    if dispatch.is_stub() {
                        return None;
                    }
                    let stub = Box::new(stub_for_refused_copy(
                        &self.config.policy,
                        dispatch,
                        &batch[index],
                        error,
                        &self.config.group,
                    ));
                    let stub_record = copy_of(&batch[index], &stub);
                    Some((stub, stub_record))
                })
                .await;
            match committed {
                Ok(stubs) => {
                    let routed: Vec<usize> = routed.into_iter().map(|(index, _)| index).collect();
                    for (position, stub) in stubs {
                        fates[routed[position]] = Some(Fate::Route(stub));
                    }
                    for index in routed {
                        if let Some(Fate::Route(dispatch)) = &fates[index] {
                            emit_routed(&batch[index], dispatch);
                        }
                    }
                    *blocked_partitions = blocked_after;
                    // The records' spans end when their copies are committed, not before.
                    drop(spans);
                    return;
                }
                Err(HopFailed::Fatal) => return,
                Err(HopFailed::Restarted) => {
                    self.rewind(current.iter().map(|index| &batch[*index])).await;
                    return;
                }
                Err(HopFailed::Aborted { .. }) => {
                    if shutdown.is_triggered() {
                        // Nothing of the batch was committed: it is read again after a restart.
                        return;
                    }
                    tokio::select! {
                        () = shutdown.wait() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_PRODUCE_BACKOFF);
                }
            }
        }
    }

    /// Delivers one applied batch's copies; returns the batch and which of its records are safe.
    async fn deliver_batch(&self, applied: AppliedBatch, shutdown: &Shutdown) -> DeliveredBatch {
        let AppliedBatch {
            batch,
            fates,
            spans,
            from_state,
            left_to_owner,
            state_writes,
            ..
        } = applied;
        // Neither kind has an offset of this batch to store.
        let from_state = from_state
            .iter()
            .zip(&left_to_owner)
            .map(|(from_state, left)| *from_state || *left)
            .collect();
        let state_writes = state_writes.into_iter().map(|(write, _)| write).collect();
        let safe = self.deliver_copies(&batch, fates, state_writes, shutdown).await;
        // The records' spans end when their copies are acknowledged, not before.
        drop(spans);
        DeliveredBatch {
            batch,
            safe,
            from_state,
        }
    }

    /// Decodes a record into a sink item, or explains why it is poison.
    /// A registry that is down makes it a transient failure (to the tiers), never poison.
    async fn prepare(&self, record: &ConsumedRecord) -> Result<ApplyItem, (Option<RetryContext>, Failure)> {
        let failed = |kind: ErrorKind, previous: Option<RetryContext>, message: String| {
            (
                previous,
                Failure {
                    kind,
                    message,
                    failed_at_ms: now_epoch_ms(),
                },
            )
        };
        let poison = |previous, message| failed(ErrorKind::Poison, previous, message);
        let previous = parse_retry_context(&record.headers).map_err(|error| poison(None, error.to_string()))?;
        let Some(value) = record.value.as_deref() else {
            return Err(poison(previous, "record has no value".to_owned()));
        };
        match self.decoder.decode(value).await {
            Ok(note) => Ok(ApplyItem {
                note,
                previous_attempts: previous.as_ref().map_or(0, |context| context.attempt),
                last_tier: previous.and_then(|context| context.tier),
            }),
            Err(failure) => Err(failed(failure.kind, previous, failure.message)),
        }
    }

    fn route(
        &self,
        record: &ConsumedRecord,
        previous: Option<&RetryContext>,
        failure: &Failure,
        span: &tracing::Span,
        timing: DueTiming,
    ) -> Fate {
        let mut dispatch = failure_dispatch(
            &self.config.policy,
            &record.headers,
            previous,
            &record.location(),
            failure,
            &self.config.group,
            timing,
        );
        span.record(
            "outcome",
            match dispatch.route {
                Route::Tier { .. } => "retried",
                Route::DeadLetter => "dead_lettered",
            },
        );
        let hop = rebound_service::trace_context::record_span(
            || tracing::info_span!(parent: span, "consumer.route", messaging.destination = %dispatch.topic, error.kind = %failure.kind),
        );
        inject_trace(&hop, &mut dispatch.headers);
        Fate::Route(Box::new(dispatch))
    }

    /// Produces every copy, all in flight together, and retries refused ones with backoff until
    /// they are acknowledged or shutdown is triggered. Returns which records are safe.
    async fn deliver_copies(
        &self,
        batch: &[ConsumedRecord],
        fates: Vec<Option<Fate>>,
        mut state_writes: Vec<OutgoingRecord>,
        shutdown: &Shutdown,
    ) -> Vec<bool> {
        let mut safe = vec![false; batch.len()];
        let mut pending: Vec<(usize, Box<Dispatch>)> = Vec::new();
        for (index, fate) in fates.into_iter().enumerate() {
            match fate {
                Some(Fate::Safe) => safe[index] = true,
                Some(Fate::Route(dispatch)) => pending.push((index, dispatch)),
                // Held at shutdown, or never decided: not safe, read again after a restart.
                Some(Fate::Held) | None => {}
            }
        }
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() || !state_writes.is_empty() {
            let sends: Vec<_> = pending
                .iter()
                .map(|(index, dispatch)| {
                    let outgoing = copy_of(&batch[*index], dispatch);
                    async move { self.runtime.producer.send(&outgoing).await }
                })
                .collect();
            // The per-key order state's entries go out with the copies, in the order they were
            // decided (one partition, one producer: the broker keeps that order).
            let entry_sends: Vec<_> = state_writes
                .iter()
                .map(|entry| async move { self.runtime.producer.send(entry).await })
                .collect();
            let (results, entry_results) =
                futures::future::join(futures::future::join_all(sends), futures::future::join_all(entry_sends)).await;
            let mut entries_refused = Vec::new();
            for (entry, result) in std::mem::take(&mut state_writes).into_iter().zip(entry_results) {
                match result {
                    Ok(_) => {}
                    Err(error) if error.is_fatal() => {
                        self.stop_on_fatal_producer_error(error);
                        entries_refused.push(entry);
                    }
                    Err(error) => {
                        events::consumer_copy_refused(
                            RecordRef {
                                topic: &entry.topic,
                                partition: -1,
                                offset: -1,
                                key: &String::from_utf8_lossy(entry.key.as_deref().unwrap_or_default()),
                            },
                            &entry.topic,
                            &error,
                        );
                        entries_refused.push(entry);
                    }
                }
            }
            state_writes = entries_refused;
            let mut refused = Vec::new();
            let mut too_large = Vec::new();
            for ((index, dispatch), result) in pending.into_iter().zip(results) {
                match result {
                    Ok(_) => {
                        safe[index] = true;
                        emit_routed(&batch[index], &dispatch);
                    }
                    Err(error) if error.is_message_too_large() && !dispatch.is_stub() => {
                        too_large.push((index, dispatch))
                    }
                    Err(error) if error.is_fatal() => {
                        self.stop_on_fatal_producer_error(error);
                        refused.push((index, dispatch));
                    }
                    Err(error) => {
                        let record = &batch[index];
                        events::consumer_copy_refused(
                            record_ref(record, &record.key_for_display()),
                            &dispatch.topic,
                            &error,
                        );
                        refused.push((index, dispatch));
                    }
                }
            }
            for (index, dispatch) in too_large {
                match self.resend_alone_or_stub(&batch[index], dispatch).await {
                    Ok(dispatch) => {
                        safe[index] = true;
                        emit_routed(&batch[index], &dispatch);
                    }
                    Err(dispatch) => refused.push((index, dispatch)),
                }
            }
            pending = refused;
            if (pending.is_empty() && state_writes.is_empty()) || shutdown.is_triggered() {
                break;
            }
            tokio::select! {
                () = shutdown.wait() => {}
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_PRODUCE_BACKOFF);
        }
        if !state_writes.is_empty() {
            // A parked record or a blocker is safe only with its entry: without them, nothing of
            // the batch is; it is read again after a restart.
            safe.iter_mut().for_each(|is_safe| *is_safe = false);
        }
        safe
    }

    /// A producer that failed for good refuses every later copy: retrying would keep the
    /// service alive and ready while it moves nothing. Say so, report not ready, and stop, so the
    /// service exits non-zero and its orchestrator restarts it with a new producer. Records
    /// whose copies were not acknowledged stay unsafe, so no offset past them is committed.
    fn stop_on_fatal_producer_error(&self, error: KafkaError) {
        self.runtime.record_producer_failure(error);
        self.stop.trigger();
    }

    /// Sends a copy refused as too large once more, alone, because Kafka refuses a whole batch
    /// when one of its records is too large. Refused alone too, it can never be sent, so its
    /// bounded dead-letter stub goes instead. `Ok` holds what was acknowledged, `Err` what to retry.
    async fn resend_alone_or_stub(
        &self,
        record: &ConsumedRecord,
        dispatch: Box<Dispatch>,
    ) -> Result<Box<Dispatch>, Box<Dispatch>> {
        let sent = self
            .runtime
            .send_alone_or_stub(&copy_of(record, &dispatch), |error| {
                let stub = Box::new(stub_for_refused_copy(
                    &self.config.policy,
                    &dispatch,
                    record,
                    error,
                    &self.config.group,
                ));
                let stub_record = copy_of(record, &stub);
                (stub, stub_record)
            })
            .await;
        match sent {
            Ok(SentAlone::Copy) => Ok(dispatch),
            Ok(SentAlone::Stub(stub)) => Ok(stub),
            Err(NotSentAlone { stub, error }) => {
                let dispatch = stub.unwrap_or(dispatch);
                events::consumer_copy_refused(record_ref(record, &record.key_for_display()), &dispatch.topic, &error);
                Err(dispatch)
            }
        }
    }

    /// Stores the offsets [`offsets_to_store`] finds for a delivered batch.
    fn store_offsets(&self, batch: &[ConsumedRecord], safe: &[bool], blocked_partitions: &mut BTreeSet<(String, i32)>) {
        for (topic, partition, next_offset) in offsets_to_store(batch, safe, blocked_partitions) {
            self.runtime.store_next_offset(topic, partition, next_offset);
        }
    }
}

/// Per partition of a delivered batch, the offset after the longest run of safe records from
/// the start of the batch: a record that is not safe, and everything after it, will be read
/// again. Such a partition is then blocked, and nothing is stored for it from later batches
/// either, since batches are delivered in order and a later offset would skip the record.
fn offsets_to_store<'batch>(
    batch: &'batch [ConsumedRecord],
    safe: &[bool],
    blocked_partitions: &mut BTreeSet<(String, i32)>,
) -> Vec<(&'batch str, i32, i64)> {
    offsets_of(
        batch
            .iter()
            .zip(safe)
            .map(|(record, is_safe)| (record.topic.as_str(), record.partition, record.offset, *is_safe)),
        blocked_partitions,
    )
}

/// [`offsets_to_store`] over `(topic, partition, offset, safe)` of each record.
fn offsets_of<'batch>(
    records: impl IntoIterator<Item = (&'batch str, i32, i64, bool)>,
    blocked_partitions: &mut BTreeSet<(String, i32)>,
) -> Vec<(&'batch str, i32, i64)> {
    let mut by_partition: BTreeMap<(&str, i32), Vec<(i64, bool)>> = BTreeMap::new();
    for (topic, partition, offset, is_safe) in records {
        by_partition
            .entry((topic, partition))
            .or_default()
            .push((offset, is_safe));
    }
    let mut offsets = Vec::new();
    for ((topic, partition), mut records) in by_partition {
        let key = (topic.to_owned(), partition);
        if blocked_partitions.contains(&key) {
            continue;
        }
        records.sort_unstable_by_key(|(offset, _)| *offset);
        if records.iter().any(|(_, is_safe)| !is_safe) {
            blocked_partitions.insert(key);
        }
        let next_offset = records
            .iter()
            .take_while(|(_, is_safe)| *is_safe)
            .last()
            .map(|(offset, _)| offset + 1);
        if let Some(next_offset) = next_offset {
            offsets.push((topic, partition, next_offset));
        }
    }
    offsets
}

/// Where a record stands in its key's order: its original offset when it was first consumed
/// from the partition it is in now, else its own offset (as `KeyOrder::admit` reads it).
fn key_position(record: &ConsumedRecord, dispatch: &Dispatch) -> i64 {
    let header = |key| dispatch.headers.get_str(key);
    let same_partition = header(rebound_retry::contract::ORIGINAL_TOPIC) == Some(record.topic.as_str())
        && header(rebound_retry::contract::ORIGINAL_PARTITION) == Some(record.partition.to_string().as_str());
    header(rebound_retry::contract::ORIGINAL_OFFSET)
        .and_then(|text| text.parse::<i64>().ok())
        .filter(|_| same_partition)
        .unwrap_or(record.offset)
}

/// The record to produce for a failed record's copy: its key and value as the dispatch carries them.
fn copy_of(record: &ConsumedRecord, dispatch: &Dispatch) -> OutgoingRecord {
    OutgoingRecord {
        topic: dispatch.topic.clone(),
        partition: None,
        key: dispatch.copy_key(record.key.as_deref()),
        value: dispatch.copy_value(record.value.as_deref()),
        headers: dispatch.headers.clone(),
    }
}

fn record_ref<'record>(record: &'record ConsumedRecord, key: &'record str) -> RecordRef<'record> {
    RecordRef {
        topic: &record.topic,
        partition: record.partition,
        offset: record.offset,
        key,
    }
}

/// Emits the retried or dead-lettered event of an acknowledged copy.
fn emit_routed(record: &ConsumedRecord, dispatch: &Dispatch) {
    let key = record.key_for_display();
    let message = dispatch
        .headers
        .get_str(rebound_retry::contract::ERROR_MESSAGE)
        .unwrap_or_default();
    match dispatch.route {
        Route::Tier { .. } => {
            events::record_retried(
                record_ref(record, &key),
                &dispatch.topic,
                dispatch.attempt,
                dispatch.kind,
                message,
            );
        }
        Route::DeadLetter => {
            events::record_dead_lettered(
                record_ref(record, &key),
                &dispatch.topic,
                dispatch.headers.get_str(rebound_retry::contract::TIER),
                dispatch.attempt,
                dispatch.kind,
                message,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> ConsumedRecord {
        ConsumedRecord {
            topic: "notes".to_owned(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: rebound_retry::RecordHeaders::new(),
        }
    }

    #[test]
    fn offsets_stop_at_the_first_unsafe_record_and_block_its_partition_for_later_batches() {
        let mut blocked = BTreeSet::new();
        let first = [
            record(0, 10),
            record(1, 20),
            record(0, 11),
            record(1, 21),
            record(0, 12),
        ];
        let offsets = offsets_to_store(&first, &[true, true, false, true, true], &mut blocked);
        assert_eq!(offsets, vec![("notes", 0, 11), ("notes", 1, 22)]);
        assert!(blocked.contains(&("notes".to_owned(), 0)));
        // A later batch, all safe, stores nothing for the blocked partition.
        let second = [record(0, 13), record(1, 22)];
        let offsets = offsets_to_store(&second, &[true, true], &mut blocked);
        assert_eq!(offsets, vec![("notes", 1, 23)]);
    }

    #[test]
    fn offsets_follow_offset_order_not_batch_order() {
        let mut blocked = BTreeSet::new();
        let batch = [record(0, 6), record(0, 5)];
        assert_eq!(
            offsets_to_store(&batch, &[true, true], &mut blocked),
            vec![("notes", 0, 7)]
        );
        let batch = [record(2, 6), record(2, 5)];
        assert_eq!(offsets_to_store(&batch, &[true, false], &mut blocked), Vec::new());
    }
}
