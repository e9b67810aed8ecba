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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};

use rebound_kafka::{ConsumedRecord, ConsumerSettings, LagPerTopic, OutgoingRecord};
use rebound_registry::NoteDecoder;
use rebound_retry::{
    Dispatch, ErrorKind, Failure, RetryContext, Route, failure_dispatch, oversized_stub, parse_retry_context,
};
use rebound_service::events::{self, RecordRef};
use rebound_service::trace_context::{continue_trace, inject_trace};
use rebound_service::{NotSentAlone, Runtime, RuntimeSpec, SentAlone, Shutdown, now_epoch_ms};

use crate::sink::{ApplyItem, FailureInjectingSink, Sink, SinkFailure};
use crate::{ConsumerConfig, ConsumerError};

/// Batches whose copies may be in flight at once. Beyond it the intake waits: this bounds the
/// records held in memory while copies are acknowledged.
pub const COPY_BATCHES_IN_FLIGHT: usize = 8;

/// Applied batches queued between the intake and the delivery stage.
pub const APPLIED_BATCHES_QUEUED: usize = 2;

/// Longest pause between attempts to produce a copy that the broker refused.
const MAX_PRODUCE_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the consumer until `shutdown` triggers, then finishes the batch in hand, commits and
/// returns. Returns an error only for problems that stop the service (bad topics, no client).
pub async fn run(config: ConsumerConfig, shutdown: Shutdown) -> Result<(), ConsumerError> {
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
    };
    let Some(runtime) = Runtime::start(spec, &shutdown).await? else {
        return Ok(());
    };
    let mut sink = Sink::open(&config.sink, config.http_timeout, config.http_batch_timeout)?;
    if config.sink_journal
        && let Sink::Sqlite(sqlite) = &mut sink
    {
        sqlite.enable_delivery_journal()?;
    }
    if let Some((injection, seed)) = config.failure_injection {
        sink = Sink::FailureInjecting(Box::new(FailureInjectingSink::new(sink, injection, seed)));
    }
    runtime.readiness.set("sink", true, "no batch applied yet");
    events::consumer_in_flight(0);
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
    };
    let stop = stop.triggered_by({
        let shutdown = shutdown.clone();
        async move { shutdown.wait().await }
    });
    let (applied_sender, applied_receiver) = tokio::sync::mpsc::channel(APPLIED_BATCHES_QUEUED);
    let intake = {
        let (pipeline, shutdown) = (&pipeline, &stop);
        async move {
            while let Some(batch) = pipeline.next_batch(shutdown).await {
                let applied = pipeline.apply_batch(batch).await;
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
    sink: Sink,
    /// The Kafka clients, readiness and the producer's fate.
    runtime: Runtime,
    /// Triggered by shutdown, or by the pipeline itself when the producer failed for good.
    stop: Shutdown,
}

/// A batch after the sink: what became of each record, and the records' spans.
struct AppliedBatch {
    batch: Vec<ConsumedRecord>,
    fates: Vec<Option<Fate>>,
    spans: Vec<tracing::Span>,
}

/// A batch whose copies are delivered: which records are safe.
struct DeliveredBatch {
    batch: Vec<ConsumedRecord>,
    safe: Vec<bool>,
}

/// What became of one record of a batch.
enum Fate {
    /// Applied by the sink, or its copy acknowledged: its offset may be stored.
    Safe,
    /// Must go to a tier or the DLQ; not safe until the copy is acknowledged.
    Route(Box<Dispatch>),
}

impl Pipeline<'_> {
    /// Waits for the first record, then gathers more until the batch is full or the linger time
    /// passes. `None` once shutdown is triggered with no batch in hand.
    async fn next_batch(&self, shutdown: &Shutdown) -> Option<Vec<ConsumedRecord>> {
        let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
        let first = loop {
            tokio::select! {
                biased;
                () = shutdown.wait() => return None,
                // While no record arrives, assignment changes are still noticed (readiness).
                _ = idle_tick.tick() => self.log_assignment_events(),
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
            match received {
                Ok(record) => batch.push(record),
                Err(error) => events::kafka_receive_failed("consumer", &error),
            }
        }
        self.log_assignment_events();
        Some(batch)
    }

    fn log_assignment_events(&self) {
        // The runtime logs the changes and keeps readiness; the consumer keeps no state per
        // partition beyond what librdkafka does.
        self.runtime.take_assignment_changes();
    }

    /// Decodes and applies a batch, and decides the fate of each record.
    async fn apply_batch(&self, mut batch: Vec<ConsumedRecord>) -> AppliedBatch {
        // One span per record, continuing the trace the record carries and living as long as
        // the record's processing; copies sent to a tier or the DLQ carry this span onwards.
        let spans: Vec<tracing::Span> = batch
            .iter()
            .map(|record| {
                let span = tracing::info_span!(
                    "consumer.process",
                    messaging.source = %record.topic,
                    messaging.partition = record.partition,
                    messaging.offset = record.offset,
                    outcome = tracing::field::Empty,
                );
                continue_trace(&span, &record.headers);
                span
            })
            .collect();
        let mut fates: Vec<Option<Fate>> = Vec::with_capacity(batch.len());
        let mut apply_items = Vec::new();
        let mut applying = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            match self.prepare(record).await {
                Ok(item) => {
                    apply_items.push(item);
                    applying.push(index);
                    fates.push(None);
                }
                Err((previous, failure)) => {
                    fates.push(Some(self.route(record, previous.as_ref(), &failure, &spans[index])));
                }
            }
        }
        let previous_attempts: Vec<u32> = apply_items.iter().map(|item| item.previous_attempts).collect();
        let applying_count = apply_items.len();
        let sink_started = std::time::Instant::now();
        let results = self.sink.apply_batch(apply_items).await;
        if applying_count > 0 {
            events::consumer_sink_batch(sink_started.elapsed());
            let transient = results
                .iter()
                .filter(|result| matches!(result, Err(failure) if failure.kind == ErrorKind::Transient))
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
        }
        for ((index, result), previous_attempts) in applying.into_iter().zip(results).zip(previous_attempts) {
            let record = &batch[index];
            fates[index] = Some(match result {
                Ok(()) => {
                    spans[index].record("outcome", "applied");
                    events::record_applied(record_ref(record, &record.key_for_display()), previous_attempts);
                    Fate::Safe
                }
                Err(SinkFailure { kind, message }) => {
                    // The record decoded, so its retry headers parsed; read them again rather
                    // than carry them through the sink call.
                    let previous = parse_retry_context(&record.headers).ok().flatten();
                    let failure = Failure {
                        kind,
                        message,
                        failed_at_ms: now_epoch_ms(),
                    };
                    self.route(record, previous.as_ref(), &failure, &spans[index])
                }
            });
        }
        // Records already safe only need their place for the offsets; their bytes go now.
        for (record, fate) in batch.iter_mut().zip(&fates) {
            if matches!(fate, Some(Fate::Safe)) {
                record.key = None;
                record.value = None;
                record.headers = rebound_retry::RecordHeaders::new();
            }
        }
        AppliedBatch { batch, fates, spans }
    }

    /// The delivery stage: takes applied batches in order, keeps the copies of up to
    /// [`COPY_BATCHES_IN_FLIGHT`] of them in flight, and stores each batch's offsets in the
    /// order the batches were read, once the batch is delivered. Returns when the intake has
    /// stopped and every batch it handed on is delivered (or given up at shutdown).
    async fn deliver_in_order(&self, mut applied: tokio::sync::mpsc::Receiver<AppliedBatch>, shutdown: &Shutdown) {
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
                Some(DeliveredBatch { batch, safe }) = in_flight.next(), if !in_flight.is_empty() => {
                    records_in_flight -= batch.len();
                    events::consumer_in_flight(records_in_flight);
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

    /// Delivers one applied batch's copies; returns the batch and which of its records are safe.
    async fn deliver_batch(&self, applied: AppliedBatch, shutdown: &Shutdown) -> DeliveredBatch {
        let AppliedBatch { batch, fates, spans } = applied;
        let safe = self.deliver_copies(&batch, fates, shutdown).await;
        // The records' spans end when their copies are acknowledged, not before.
        drop(spans);
        DeliveredBatch { batch, safe }
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
    ) -> Fate {
        let mut dispatch = failure_dispatch(
            &self.config.policy,
            &record.headers,
            previous,
            &record.location(),
            failure,
            &self.config.group,
        );
        span.record(
            "outcome",
            match dispatch.route {
                Route::Tier { .. } => "retried",
                Route::DeadLetter => "dead_lettered",
            },
        );
        let hop = tracing::info_span!(parent: span, "consumer.route", messaging.destination = %dispatch.topic, error.kind = %failure.kind);
        inject_trace(&hop, &mut dispatch.headers);
        Fate::Route(Box::new(dispatch))
    }

    /// Produces every copy, all in flight together, and retries refused ones with backoff until
    /// they are acknowledged or shutdown is triggered. Returns which records are safe.
    async fn deliver_copies(
        &self,
        batch: &[ConsumedRecord],
        fates: Vec<Option<Fate>>,
        shutdown: &Shutdown,
    ) -> Vec<bool> {
        let mut safe = vec![false; batch.len()];
        let mut pending: Vec<(usize, Box<Dispatch>)> = Vec::new();
        for (index, fate) in fates.into_iter().enumerate() {
            match fate {
                Some(Fate::Safe) => safe[index] = true,
                Some(Fate::Route(dispatch)) => pending.push((index, dispatch)),
                None => {}
            }
        }
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() {
            let sends: Vec<_> = pending
                .iter()
                .map(|(index, dispatch)| {
                    let outgoing = copy_of(&batch[*index], dispatch);
                    async move { self.runtime.producer.send(&outgoing).await }
                })
                .collect();
            let results = futures::future::join_all(sends).await;
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
            if pending.is_empty() || shutdown.is_triggered() {
                break;
            }
            tokio::select! {
                () = shutdown.wait() => {}
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_PRODUCE_BACKOFF);
        }
        safe
    }

    /// A producer that failed for good refuses every later copy: retrying would keep the
    /// service alive and ready while it moves nothing. Say so, report not ready, and stop, so the
    /// service exits non-zero and its orchestrator restarts it with a new producer. Records
    /// whose copies were not acknowledged stay unsafe, so no offset past them is committed.
    fn stop_on_fatal_producer_error(&self, error: rebound_kafka::KafkaError) {
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
                let stub = Box::new(oversized_stub(
                    &self.config.policy,
                    &dispatch,
                    &record.headers,
                    record.key.as_deref(),
                    record.value.as_deref(),
                    &error.to_string(),
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
    let mut by_partition: BTreeMap<(&str, i32), Vec<(i64, bool)>> = BTreeMap::new();
    for (record, is_safe) in batch.iter().zip(safe) {
        by_partition
            .entry((record.topic.as_str(), record.partition))
            .or_default()
            .push((record.offset, *is_safe));
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
