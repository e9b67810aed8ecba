//! The scheduler loop: receive tier records into per-partition queues, pause partitions whose
//! head is waiting, release due records in batches, store offsets after acknowledgement.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rebound_kafka::{ConsumedRecord, ConsumerSettings, OutgoingRecord, PartitionAssignmentEvent, TopicPartition};
use rebound_retry::{Dispatch, ErrorKind, Failure, RetryContext, dead_letter_dispatch, parse_retry_context};
use rebound_service::events::{self, RecordRef};
use rebound_service::trace_context::{continue_trace, inject_trace};
use rebound_service::{
    DeliveryMode, HopFailed, NotSentAlone, Runtime, RuntimeSpec, SentAlone, Shutdown, SourceOffset, now_epoch_ms,
    stub_for_refused_copy,
};
use tokio::time::Instant;

use crate::holdings::{DueDecision, FetchDecision, HeldRecord, Holdings, ReleaseAction, due_decision, release_at};
use crate::refusal::{Refusal, RefusalAction, TopicPresence, refusal_action};
use crate::{SchedulerConfig, SchedulerError};

/// Most records taken from the consumer in one go before due records are released.
const MAX_RECORDS_PER_INTAKE: usize = 1000;
/// Bound on the metadata fetch that decides whether a refused copy's topic really is missing.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before a refused republish is tried again.
const REPUBLISH_BACKOFF: Duration = Duration::from_secs(1);

/// Runs the scheduler until `shutdown` triggers, then commits and returns. Held records are
/// not republished at shutdown: their offsets were not stored, so they are read again.
pub async fn run(config: SchedulerConfig, shutdown: Shutdown) -> Result<(), SchedulerError> {
    let mut topics: Vec<String> = config.policy.tiers().iter().map(|tier| tier.topic.clone()).collect();
    topics.sort();
    let mut required = topics.clone();
    required.push(config.policy.dead_letter_topic().to_owned());
    let spec = RuntimeSpec {
        service: "scheduler",
        kafka: &config.kafka,
        required_topics: required,
        consumer: prefetch_bounded(
            ConsumerSettings::new(config.group.clone(), topics.clone()),
            config.read_ahead.max_bytes,
            message_max_bytes(&config.kafka),
        ),
        metrics_listen: config.metrics_listen,
        delivery: config.delivery,
    };
    let Some(runtime) = Runtime::start(spec, &shutdown).await? else {
        return Ok(());
    };
    tracing::info!(group = %config.group, tiers = ?topics, dlq = config.policy.dead_letter_topic(), "scheduler started");
    let mut scheduler = Scheduler {
        config: &config,
        runtime,
        holdings: Holdings::default(),
        assigned: BTreeSet::new(),
        paused: BTreeSet::new(),
    };
    let mut idle_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let next_release = scheduler.holdings.next_release_at();
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            () = sleep_until_or_forever(next_release) => {}
            // While no record arrives, assignment changes are still noticed (the partition count).
            _ = idle_tick.tick() => scheduler.apply_assignment_events(),
            received = scheduler.runtime.consumer.recv() => {
                scheduler.take_received(received).await;
            }
        }
        scheduler.release_due().await;
        scheduler.reconcile_pauses();
        if scheduler.runtime.producer_failure.is_recorded() {
            break;
        }
    }
    tracing::info!(
        held = scheduler.holdings.len(),
        "scheduler stopping: held records will be read again on restart"
    );
    scheduler.runtime.finish(config.shutdown_timeout).await?;
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Bounds what librdkafka fetches ahead of the scheduler to an eighth of `--read-ahead-bytes`
/// (between 1 and 8 MiB), so the process's memory is the held bytes plus a small, fixed
/// prefetch: librdkafka's own defaults let one fetch response reach 50 MiB and its queue
/// 64 MiB whatever the scheduler holds. A fetch may not be smaller than the largest message
/// the client accepts (`message.max.bytes`, librdkafka refuses the configuration otherwise).
/// `-X` overrides each of these.
fn prefetch_bounded(settings: ConsumerSettings, read_ahead_bytes: usize, message_max_bytes: usize) -> ConsumerSettings {
    let prefetch_bytes = (read_ahead_bytes / 8).clamp(1 << 20, 8 << 20);
    settings
        .with_client_default("queued.max.messages.kbytes", (prefetch_bytes / 1024).to_string())
        .with_client_default("fetch.max.bytes", prefetch_bytes.max(message_max_bytes).to_string())
        .with_client_default(
            "max.partition.fetch.bytes",
            (1usize << 20).min(prefetch_bytes).to_string(),
        )
}

/// The client's `message.max.bytes`: as given with `-X` or the config file, else librdkafka's
/// default. A value that does not parse is left for librdkafka to refuse by name.
fn message_max_bytes(kafka: &rebound_kafka::KafkaArgs) -> usize {
    const LIBRDKAFKA_DEFAULT: usize = 1_000_000;
    kafka
        .resolve()
        .ok()
        .and_then(|resolved| {
            resolved
                .property("message.max.bytes")
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(LIBRDKAFKA_DEFAULT)
}

/// The partition a record is republished to: the one it was first consumed from, so it
/// comes back to the consumer that owns its key's per-key order state whatever partitioner
/// wrote the original. `None` (the key decides) when the history does not say.
fn original_partition(record: &ConsumedRecord) -> Option<i32> {
    record
        .headers
        .get_str(rebound_retry::contract::ORIGINAL_PARTITION)
        .and_then(|text| text.parse::<i32>().ok())
        .filter(|partition| *partition >= 0)
}

/// The record a held record is released as: republished unchanged, or its dead-letter copy.
fn outgoing_of(held: &HeldRecord) -> OutgoingRecord {
    outgoing_of_action(&held.record, &held.action)
}

/// The record `action` sends for `record`.
fn outgoing_of_action(record: &ConsumedRecord, action: &ReleaseAction) -> OutgoingRecord {
    match action {
        ReleaseAction::Republish { target_topic } => OutgoingRecord {
            topic: target_topic.clone(),
            partition: original_partition(record),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        },
        ReleaseAction::DeadLetter(dispatch) => OutgoingRecord {
            topic: dispatch.topic.clone(),
            partition: None,
            key: dispatch.copy_key(record.key.as_deref()),
            value: dispatch.copy_value(record.value.as_deref()),
            headers: dispatch.headers.clone(),
        },
    }
}

/// The refusal as [`refusal_action`] sees it.
fn refusal_of(error: &rebound_kafka::KafkaError) -> Refusal {
    if error.is_unknown_topic() {
        Refusal::UnknownTopicOrPartition
    } else {
        Refusal::Other
    }
}

/// The copy to send for a held record. A republished copy takes the record's key and value
/// instead of cloning them, so a release round does not hold every payload twice (with
/// records of megabytes, that doubled the scheduler's peak memory); [`give_back_payload`] puts
/// them back. Headers are cloned: the copy's get this hop's `traceparent`, the record keeps its
/// own.
fn take_outgoing(held: &mut HeldRecord) -> OutgoingRecord {
    match &held.action {
        ReleaseAction::Republish { target_topic } => OutgoingRecord {
            topic: target_topic.clone(),
            partition: original_partition(&held.record),
            key: held.record.key.take(),
            value: held.record.value.take(),
            headers: held.record.headers.clone(),
        },
        ReleaseAction::DeadLetter(_) => outgoing_of(held),
    }
}

/// Undoes [`take_outgoing`] once the copy's fate is known: the key always (log lines show it),
/// the value only when the record must be sent again or dead-lettered.
fn give_back_payload(held: &mut HeldRecord, outgoing: &OutgoingRecord, refused: bool) {
    if !matches!(held.action, ReleaseAction::Republish { .. }) {
        return;
    }
    held.record.key.clone_from(&outgoing.key);
    if refused {
        held.record.value.clone_from(&outgoing.value);
    }
}

/// The event of a copy the broker did not acknowledge outside the refusal rules of
/// [`Scheduler::settle`] (a resend alone, a dead-letter stub): it is sent again.
fn emit_copy_refused(held: &HeldRecord, destination: &str, error: &rebound_kafka::KafkaError) {
    let key = held.record.key_for_display();
    events::scheduler_copy_refused(
        RecordRef {
            topic: &held.record.topic,
            partition: held.record.partition,
            offset: held.record.offset,
            key: &key,
        },
        destination,
        "other",
        &error.to_string(),
    );
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

struct Scheduler<'config> {
    config: &'config SchedulerConfig,
    /// The Kafka clients, readiness and the producer's fate.
    runtime: Runtime,
    holdings: Holdings,
    /// Partitions assigned to this member, as of the last assignment events applied.
    assigned: BTreeSet<TopicPartition>,
    /// Partitions this scheduler paused; reconciled with the holdings after every step.
    paused: BTreeSet<TopicPartition>,
}

impl Scheduler<'_> {
    /// Queues the received record, then whatever else is ready right now, applying assignment
    /// changes before each record so a record never meets stale partition state.
    async fn take_received(&mut self, first: Result<ConsumedRecord, rebound_kafka::KafkaError>) {
        self.apply_assignment_events();
        match first {
            Ok(record) => self.accept(record),
            Err(error) => {
                events::kafka_receive_failed("scheduler", &error);
                return;
            }
        }
        for _ in 1..MAX_RECORDS_PER_INTAKE {
            // At the byte bound, what else is ready stays in librdkafka's (bounded) queue until
            // the partitions are paused and what is held is released.
            if self.holdings.bytes() >= self.config.read_ahead.max_bytes {
                break;
            }
            match tokio::time::timeout(Duration::ZERO, self.runtime.consumer.recv()).await {
                Ok(Ok(record)) => {
                    self.apply_assignment_events();
                    self.accept(record);
                }
                Ok(Err(error)) => events::kafka_receive_failed("scheduler", &error),
                Err(_) => break,
            }
        }
        self.apply_assignment_events();
    }

    fn apply_assignment_events(&mut self) {
        for change in self.runtime.take_assignment_changes() {
            match change {
                PartitionAssignmentEvent::Assigned(partitions) => self.assigned.extend(partitions),
                PartitionAssignmentEvent::Revoked(partitions) => {
                    let dropped = self.holdings.forget(&partitions);
                    for partition in &partitions {
                        self.paused.remove(partition);
                        self.assigned.remove(partition);
                    }
                    if dropped > 0 {
                        tracing::info!(
                            dropped_held_records = dropped,
                            "held records of revoked partitions dropped"
                        );
                    }
                }
            }
        }
    }

    /// Decides what to do with a tier record and queues it behind its partition's others.
    fn accept(&mut self, record: ConsumedRecord) {
        let now_ms = now_epoch_ms();
        let now = Instant::now();
        let fallback_delay_ms = self
            .config
            .policy
            .tier_by_topic(&record.topic)
            .map_or(0, |tier| i64::try_from(tier.delay.as_millis()).unwrap_or(i64::MAX));
        let (action, attempt, due_ms) = match self.route_back(&record) {
            Ok((context, target_topic)) => {
                match due_decision(
                    context.due_timestamp_ms,
                    record.timestamp_ms,
                    now_ms,
                    fallback_delay_ms,
                    self.config.max_due_ahead,
                ) {
                    DueDecision::HoldUntil { due_ms } => {
                        if context.due_timestamp_ms.is_some_and(|requested| requested < 0) {
                            tracing::warn!(
                                topic = %record.topic, partition = record.partition, offset = record.offset,
                                requested_due_ms = context.due_timestamp_ms, "due time before the epoch; due now"
                            );
                        }
                        (ReleaseAction::Republish { target_topic }, context.attempt, due_ms)
                    }
                    DueDecision::TooFarAhead {
                        due_ms,
                        latest_accepted_ms,
                    } => {
                        let key = record.key_for_display();
                        events::scheduler_due_too_far_ahead(
                            RecordRef {
                                topic: &record.topic,
                                partition: record.partition,
                                offset: record.offset,
                                key: &key,
                            },
                            due_ms,
                            latest_accepted_ms,
                        );
                        let message = format!(
                            "retry.due.timestamp {due_ms} is further ahead than --max-due-ahead {} allows \
                             (latest accepted {latest_accepted_ms}); refusing to hold it",
                            humantime::format_duration(self.config.max_due_ahead)
                        );
                        let dispatch = self.poison_dispatch(&record, Some(&context), message, now_ms);
                        (ReleaseAction::DeadLetter(Box::new(dispatch)), 0, now_ms)
                    }
                }
            }
            Err((previous, message)) => {
                let dispatch = self.poison_dispatch(&record, previous.as_ref(), message, now_ms);
                (ReleaseAction::DeadLetter(Box::new(dispatch)), 0, now_ms)
            }
        };
        self.holdings.hold(HeldRecord {
            record,
            action,
            attempt,
            due_ms,
            release_at: release_at(now, now_ms, due_ms),
            sent: false,
        });
    }

    /// The record's retry history and the topic to republish it to, or why it cannot go back.
    fn route_back(&self, record: &ConsumedRecord) -> Result<(RetryContext, String), (Option<RetryContext>, String)> {
        let context = match parse_retry_context(&record.headers) {
            Ok(Some(context)) => context,
            Ok(None) => return Err((None, "tier record has no retry headers".to_owned())),
            Err(error) => return Err((None, error.to_string())),
        };
        let Some(target_topic) = context.original_topic.clone().filter(|topic| !topic.is_empty()) else {
            return Err((Some(context), "tier record has no retry.original.topic".to_owned()));
        };
        if self.config.policy.tier_by_topic(&target_topic).is_some()
            || target_topic == self.config.policy.dead_letter_topic()
        {
            let message =
                format!("retry.original.topic {target_topic:?} is a retry tier or the DLQ; republishing would loop");
            return Err((Some(context), message));
        }
        Ok((context, target_topic))
    }

    /// Republishes (or dead-letters) every due record, all in flight together, then stores the
    /// offsets of what was acknowledged. Refused records go back to the front of their queue.
    async fn release_due(&mut self) {
        let now = Instant::now();
        let now_ms = now_epoch_ms();
        // A revocation served while the consumer was last polled may still be queued: apply it
        // first, so nothing is released for a partition another member now owns.
        self.apply_assignment_events();
        let assigned = &self.assigned;
        let mut due = self
            .holdings
            .take_due_assigned(now, |partition| assigned.contains(partition));
        if due.is_empty() {
            return;
        }
        // The runtime clock said due; the wall clock has the last word, so a wall clock that
        // stepped back can delay a record but never release it early.
        let mut early: BTreeMap<(String, i32), Vec<HeldRecord>> = BTreeMap::new();
        due.retain_mut(|held| {
            let key = (held.record.topic.clone(), held.record.partition);
            if held.due_ms > now_ms || early.contains_key(&key) {
                let wait_ms = u64::try_from(held.due_ms.saturating_sub(now_ms)).unwrap_or(0);
                held.release_at = now + Duration::from_millis(wait_ms);
                early.entry(key).or_default().push(held.clone());
                false
            } else {
                true
            }
        });
        for (_, records) in early {
            self.holdings.hold_again_at_front(records, now);
        }

        // A span per released record continues the record's trace; its copy carries this hop.
        // A record whose copy was acknowledged in an earlier round (`sent`) gets no copy: it
        // waits only for the records before it, so that offsets are stored in order.
        let outgoings: Vec<Option<OutgoingRecord>> = due
            .iter_mut()
            .map(|held| {
                if held.sent {
                    return None;
                }
                let span = rebound_service::trace_context::record_span(|| match &held.action {
                    ReleaseAction::Republish { target_topic } => tracing::info_span!(
                        "scheduler.republish",
                        messaging.source = %held.record.topic,
                        messaging.destination = %target_topic,
                        lateness_ms = now_ms - held.due_ms,
                    ),
                    ReleaseAction::DeadLetter(dispatch) => tracing::info_span!(
                        "scheduler.dead_letter",
                        messaging.source = %held.record.topic,
                        messaging.destination = %dispatch.topic,
                    ),
                });
                continue_trace(&span, &held.record.headers);
                let mut outgoing = take_outgoing(held);
                inject_trace(&span, &mut outgoing.headers);
                Some(outgoing)
            })
            .collect();
        if self.runtime.delivery() == DeliveryMode::ExactlyOnce {
            self.release_in_transaction(due, outgoings, now, now_ms).await;
            return;
        }
        let producer = &self.runtime.producer;
        let results = futures::future::join_all(outgoings.iter().map(|outgoing| async move {
            match outgoing {
                Some(outgoing) => Some(producer.send(outgoing).await),
                None => None,
            }
        }))
        .await;

        // Per partition: once one record is not safe, every later one goes back too, but a later
        // one whose copy was acknowledged goes back marked sent, never to be sent again. Only
        // the offset store waits for the record that was refused.
        let mut waiting: BTreeMap<(String, i32), Vec<HeldRecord>> = BTreeMap::new();
        // One metadata answer per topic and round, however many of its records were refused.
        let mut presence: BTreeMap<String, TopicPresence> = BTreeMap::new();
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for ((mut held, outgoing), result) in due.into_iter().zip(&outgoings).zip(results) {
            let key = (held.record.topic.clone(), held.record.partition);
            let safe = match (outgoing, result) {
                (Some(outgoing), Some(result)) => {
                    give_back_payload(&mut held, outgoing, result.is_err());
                    let (outcome, back) = self.settle(held, outgoing, result, &mut presence, now, now_ms).await;
                    held = back;
                    outcome
                }
                // Acknowledged in an earlier round.
                _ => true,
            };
            if let Some(blocked) = waiting.get_mut(&key) {
                if safe && !held.sent {
                    held.mark_sent();
                }
                blocked.push(held);
            } else if safe {
                next_offsets.insert(key, held.record.offset + 1);
            } else {
                waiting.entry(key).or_default().push(held);
            }
        }
        for ((topic, partition), next_offset) in next_offsets {
            self.runtime.store_next_offset(&topic, partition, next_offset);
        }
        for (_, records) in waiting {
            self.holdings.hold_again_at_front(records, now);
        }
    }

    /// Releases `due` (each record's copy in `outgoings`) with exactly-once delivery: the copies
    /// and the tier offsets after them in one transaction. Committed, every record is settled.
    /// Aborted because the broker refused some copies, the partitions of those go back to the
    /// front of their queues (a republish refused because its topic does not exist becomes a
    /// dead letter, as with at-least-once) and the other partitions' records are tried again at
    /// once in a new transaction, so one refused record holds back only its own partition.
    /// Aborted for another reason (the offsets, the commit, a broker away), every record goes
    /// back, to be released again after a pause.
    async fn release_in_transaction(
        &mut self,
        due: Vec<HeldRecord>,
        outgoings: Vec<Option<OutgoingRecord>>,
        now: Instant,
        now_ms: i64,
    ) {
        let mut pending: Vec<(HeldRecord, Option<OutgoingRecord>)> = due.into_iter().zip(outgoings).collect();
        while !pending.is_empty() {
            pending = self.try_release_in_transaction(pending, now, now_ms).await;
        }
    }

    /// One transaction of [`Scheduler::release_in_transaction`]; returns what is to be tried
    /// again at once.
    async fn try_release_in_transaction(
        &mut self,
        pending: Vec<(HeldRecord, Option<OutgoingRecord>)>,
        now: Instant,
        now_ms: i64,
    ) -> Vec<(HeldRecord, Option<OutgoingRecord>)> {
        let (mut due, outgoings): (Vec<HeldRecord>, Vec<Option<OutgoingRecord>>) = pending.into_iter().unzip();
        // With exactly-once no record is ever marked sent, so every due record has a copy; one
        // without is settled already and only moves the offset.
        let positions: Vec<usize> = outgoings
            .iter()
            .enumerate()
            .filter_map(|(index, outgoing)| outgoing.as_ref().map(|_| index))
            .collect();
        let mut records: Vec<OutgoingRecord> = outgoings.into_iter().flatten().collect();
        let mut next_offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for held in &due {
            let next = next_offsets
                .entry((held.record.topic.clone(), held.record.partition))
                .or_insert(0);
            *next = (*next).max(held.record.offset + 1);
        }
        let offsets: Vec<SourceOffset> = next_offsets
            .into_iter()
            .map(|((topic, partition), next_offset)| SourceOffset {
                topic,
                partition,
                next_offset,
            })
            .collect();
        let committed = {
            let due = &due;
            self.runtime
                .commit_hop(&mut records, &offsets, |position, outgoing, error| {
                    let held = &due[positions[position]];
                    if held.action.is_stub() {
                        return None;
                    }
                    // A republished copy took the record's key and value (`take_outgoing`); the
                    // stub needs them back (its key, and the size of the value it leaves out).
                    let mut with_payload = held.clone();
                    if matches!(held.action, ReleaseAction::Republish { .. }) {
                        with_payload.record.key.clone_from(&outgoing.key);
                        with_payload.record.value.clone_from(&outgoing.value);
                    }
                    Some(self.stub_for(&with_payload, error, now_ms))
                })
                .await
        };
        let refused = match committed {
            Ok(stubs) => {
                for (position, stub) in stubs {
                    due[positions[position]].action = stub;
                }
                for (position, index) in positions.iter().enumerate() {
                    give_back_payload(&mut due[*index], &records[position], false);
                }
                for held in &due {
                    self.emit_released(held, now_ms);
                }
                return Vec::new();
            }
            Err(HopFailed::Aborted { refused, .. }) => refused,
            Err(HopFailed::Restarted) => {
                self.rewind(&due).await;
                return Vec::new();
            }
            // The service stops: what is held is read again by the next owner.
            Err(HopFailed::Fatal) => Vec::new(),
        };
        // Partitions with a refused copy go back; without refused copies, all of them do.
        let everything_back = refused.is_empty();
        let mut blocked: BTreeSet<(String, i32)> = BTreeSet::new();
        let mut refusals: BTreeMap<usize, rebound_kafka::KafkaError> = BTreeMap::new();
        for (position, error) in refused {
            let index = positions[position];
            blocked.insert((due[index].record.topic.clone(), due[index].record.partition));
            refusals.insert(index, error);
        }
        let mut outgoing_of_index: BTreeMap<usize, OutgoingRecord> = positions.iter().copied().zip(records).collect();
        let mut presence: BTreeMap<String, TopicPresence> = BTreeMap::new();
        let mut retry_now = Vec::new();
        let mut waiting: BTreeMap<(String, i32), Vec<HeldRecord>> = BTreeMap::new();
        for (index, mut held) in due.into_iter().enumerate() {
            let key = (held.record.topic.clone(), held.record.partition);
            let outgoing = outgoing_of_index.remove(&index);
            if !everything_back && !blocked.contains(&key) {
                retry_now.push((held, outgoing));
                continue;
            }
            if let Some(outgoing) = &outgoing {
                give_back_payload(&mut held, outgoing, true);
            }
            let mut dead_lettered_now = false;
            if let (Some(error), Some(outgoing)) = (refusals.get(&index), &outgoing) {
                dead_lettered_now = self
                    .dead_letter_if_topic_missing(&mut held, error, &mut presence, now, now_ms)
                    .await;
                emit_copy_refused(&held, &outgoing.topic, error);
            }
            if !dead_lettered_now {
                held.release_at = held.release_at.max(now + REPUBLISH_BACKOFF);
            }
            waiting.entry(key).or_default().push(held);
        }
        for (_, records) in waiting {
            self.holdings.hold_again_at_front(records, now);
        }
        if self.runtime.producer_failure.is_recorded() {
            return Vec::new();
        }
        retry_now
    }

    /// After [`HopFailed::Restarted`]: the partitions of `due` are read again from their
    /// committed offsets; what is held of them is dropped (the due records with it).
    async fn rewind(&mut self, due: &[HeldRecord]) {
        let partitions: Vec<TopicPartition> = due
            .iter()
            .map(|held| TopicPartition {
                topic: held.record.topic.clone(),
                partition: held.record.partition,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        match self.runtime.committed_positions(&partitions).await {
            Ok(positions) => {
                self.holdings.forget(&partitions);
                self.runtime.seek_positions(&positions);
            }
            // Without the positions the records cannot be read again safely: stop, and let the
            // next owner read from the committed offsets.
            Err(error) => self.runtime.record_producer_failure(error),
        }
    }

    /// A republish refused with "unknown topic or partition" whose topic the cluster's metadata
    /// confirms missing can never be delivered: `held` becomes its poison dead letter, due now
    /// (`true`). Any other refusal leaves it as it is (`false`).
    async fn dead_letter_if_topic_missing(
        &self,
        held: &mut HeldRecord,
        error: &rebound_kafka::KafkaError,
        presence_by_topic: &mut BTreeMap<String, TopicPresence>,
        now: Instant,
        now_ms: i64,
    ) -> bool {
        let refusal = refusal_of(error);
        let ReleaseAction::Republish { target_topic } = &held.action else {
            return false;
        };
        if refusal != Refusal::UnknownTopicOrPartition {
            return false;
        }
        let presence = match presence_by_topic.get(target_topic) {
            Some(presence) => *presence,
            None => {
                let presence = self.topic_presence(target_topic).await;
                presence_by_topic.insert(target_topic.clone(), presence);
                presence
            }
        };
        if refusal_action(refusal, presence) != RefusalAction::DeadLetter {
            return false;
        }
        let message = format!("republish refused and the topic does not exist: {error}");
        let previous = parse_retry_context(&held.record.headers).ok().flatten();
        let dispatch = self.poison_dispatch(&held.record, previous.as_ref(), message, now_ms);
        held.action = ReleaseAction::DeadLetter(Box::new(dispatch));
        held.release_at = now;
        true
    }
    /// The dead-letter stub of `held`, whose copy Kafka refused as too large even alone.
    fn stub_for(
        &self,
        held: &HeldRecord,
        error: &rebound_kafka::KafkaError,
        now_ms: i64,
    ) -> (ReleaseAction, OutgoingRecord) {
        let record = &held.record;
        let refused = match &held.action {
            ReleaseAction::DeadLetter(dispatch) => (**dispatch).clone(),
            ReleaseAction::Republish { target_topic } => {
                let previous = parse_retry_context(&record.headers).ok().flatten();
                let mut dispatch =
                    self.poison_dispatch(record, previous.as_ref(), format!("republish refused: {error}"), now_ms);
                // The copy that did not fit was the republished one; the stub says so.
                dispatch.topic.clone_from(target_topic);
                dispatch
            }
        };
        let stub = ReleaseAction::DeadLetter(Box::new(stub_for_refused_copy(
            &self.config.policy,
            &refused,
            record,
            error,
            &self.config.group,
        )));
        let stub_record = outgoing_of_action(record, &stub);
        (stub, stub_record)
    }

    /// What became of one copy sent by [`Scheduler::release_due`]: `true` when the record is
    /// safe (its copy, or in the end its dead-letter stub, was acknowledged), `false` when it must
    /// be released again, with the record as it is to be held from now on.
    async fn settle(
        &self,
        held: HeldRecord,
        outgoing: &OutgoingRecord,
        result: Result<rebound_kafka::AckedRecord, rebound_kafka::KafkaError>,
        presence_by_topic: &mut BTreeMap<String, TopicPresence>,
        now: Instant,
        now_ms: i64,
    ) -> (bool, HeldRecord) {
        match result {
            Ok(_) => {
                self.emit_released(&held, now_ms);
                (true, held)
            }
            Err(error) if error.is_message_too_large() && !held.action.is_stub() => {
                match self.resend_alone_or_stub(held, outgoing, now_ms).await {
                    Ok(held) => {
                        self.emit_released(&held, now_ms);
                        (true, held)
                    }
                    Err(mut held) => {
                        held.release_at = now + REPUBLISH_BACKOFF;
                        (false, held)
                    }
                }
            }
            Err(error) if error.is_fatal() => {
                // A producer that failed for good refuses every later copy: retrying would keep
                // the service alive and ready while it moves nothing. The loop stops, and the
                // service exits non-zero for its orchestrator to restart it.
                self.runtime.record_producer_failure(error);
                (false, held)
            }
            Err(error) => {
                // Brokers answer "unknown topic or partition" for topics that exist too, while a
                // partition moves or metadata is refreshed: only the topic's metadata may say it
                // is really missing, and only then can the record never be delivered.
                let refusal = refusal_of(&error);
                let presence = match (&held.action, refusal) {
                    (ReleaseAction::Republish { target_topic }, Refusal::UnknownTopicOrPartition) => {
                        match presence_by_topic.get(target_topic) {
                            Some(presence) => *presence,
                            None => {
                                let presence = self.topic_presence(target_topic).await;
                                presence_by_topic.insert(target_topic.clone(), presence);
                                presence
                            }
                        }
                    }
                    _ => TopicPresence::Unknown,
                };
                if matches!(held.action, ReleaseAction::Republish { .. })
                    && refusal_action(refusal, presence) == RefusalAction::DeadLetter
                {
                    let mut poison = held;
                    let message = format!("republish refused and the topic does not exist: {error}");
                    let previous = parse_retry_context(&poison.record.headers).ok().flatten();
                    let dispatch = self.poison_dispatch(&poison.record, previous.as_ref(), message, now_ms);
                    poison.action = ReleaseAction::DeadLetter(Box::new(dispatch));
                    poison.release_at = now;
                    return (false, poison);
                }
                let cause = match refusal {
                    Refusal::UnknownTopicOrPartition => "unknown_topic_unconfirmed",
                    Refusal::Other => "other",
                };
                let key = held.record.key_for_display();
                events::scheduler_copy_refused(
                    RecordRef {
                        topic: &held.record.topic,
                        partition: held.record.partition,
                        offset: held.record.offset,
                        key: &key,
                    },
                    &outgoing.topic,
                    cause,
                    &error.to_string(),
                );
                let mut retry = held;
                retry.release_at = now + REPUBLISH_BACKOFF;
                (false, retry)
            }
        }
    }

    /// Whether `topic` exists, as the cluster's metadata says now.
    async fn topic_presence(&self, topic: &str) -> TopicPresence {
        match rebound_kafka::topic_exists(&self.config.kafka, topic, METADATA_TIMEOUT).await {
            Ok(true) => TopicPresence::Exists,
            Ok(false) => TopicPresence::Missing,
            Err(error) => {
                tracing::warn!(%error, topic, "could not fetch topic metadata; treating the refusal as transient");
                TopicPresence::Unknown
            }
        }
    }

    /// Sends a copy refused as too large once more, alone, because Kafka refuses a whole batch
    /// when one of its records is too large. Refused alone too, it can never be sent, so the
    /// record's bounded dead-letter stub goes instead. `Ok` is what was acknowledged, `Err` what
    /// to retry.
    async fn resend_alone_or_stub(
        &self,
        mut held: HeldRecord,
        outgoing: &OutgoingRecord,
        now_ms: i64,
    ) -> Result<HeldRecord, HeldRecord> {
        let sent = self
            .runtime
            .send_alone_or_stub(outgoing, |error| self.stub_for(&held, error, now_ms))
            .await;
        match sent {
            Ok(SentAlone::Copy) => Ok(held),
            Ok(SentAlone::Stub(stub)) => {
                held.action = stub;
                Ok(held)
            }
            Err(NotSentAlone { stub, error }) => {
                if let Some(stub) = stub {
                    held.action = stub;
                }
                let destination = outgoing_of(&held).topic;
                emit_copy_refused(&held, &destination, &error);
                Err(held)
            }
        }
    }

    /// The DLQ copy of a tier record that cannot go back to its source: kind poison, with the
    /// record's history so far.
    fn poison_dispatch(
        &self,
        record: &ConsumedRecord,
        previous: Option<&RetryContext>,
        message: String,
        now_ms: i64,
    ) -> Dispatch {
        let failure = Failure {
            kind: ErrorKind::Poison,
            message,
            failed_at_ms: now_ms,
        };
        dead_letter_dispatch(
            &self.config.policy,
            &record.headers,
            previous,
            &record.location(),
            &failure,
            &self.config.group,
        )
    }

    fn emit_released(&self, held: &HeldRecord, now_ms: i64) {
        let key = held.record.key_for_display();
        let record = RecordRef {
            topic: &held.record.topic,
            partition: held.record.partition,
            offset: held.record.offset,
            key: &key,
        };
        match &held.action {
            ReleaseAction::Republish { target_topic } => {
                events::record_republished(record, target_topic, held.attempt, now_ms - held.due_ms);
            }
            ReleaseAction::DeadLetter(dispatch) => {
                let message = dispatch
                    .headers
                    .get_str(rebound_retry::contract::ERROR_MESSAGE)
                    .unwrap_or_default();
                events::tier_record_dead_lettered(record, &dispatch.topic, message);
            }
        }
    }

    /// Pauses partitions that hold their full read-ahead (in records or in time) and resumes
    /// them once what they hold runs low; see [`ReadAhead::decide`].
    ///
    /// Pausing bounds memory; it is not what keeps records from going out early (the holdings
    /// do that). Reading ahead by time, not only by count, is what keeps lateness low under
    /// load: a partition resumes while it still holds records due over the next seconds, so
    /// the fetch after a resume, which can take a second, brings the next records before they
    /// are due. A count-only read-ahead of a few hundred records at 10,000 records/s held a
    /// fraction of a second and made that fetch the lateness.
    fn reconcile_pauses(&mut self) {
        let now = Instant::now();
        let limits = self.config.read_ahead;
        let held_bytes = self.holdings.bytes();
        let horizons: BTreeMap<TopicPartition, (usize, Instant)> = self
            .holdings
            .partition_horizons()
            .map(|(partition, count, horizon)| (partition.clone(), (count, horizon)))
            .collect();
        // Every partition that can fetch counts, not only those holding records: at the byte
        // bound, a partition holding nothing would otherwise keep adding to what is held.
        let partitions: BTreeSet<TopicPartition> = self
            .assigned
            .iter()
            .chain(horizons.keys())
            .chain(self.paused.iter())
            .cloned()
            .collect();
        for partition in partitions {
            let (count, horizon) = horizons
                .get(&partition)
                .map_or((0, None), |(count, horizon)| (*count, Some(*horizon)));
            let paused = self.paused.contains(&partition);
            match limits.decide(count, horizon, held_bytes, now, paused) {
                FetchDecision::Pause => match self.runtime.consumer.pause(&partition.topic, partition.partition) {
                    Ok(()) => {
                        self.paused.insert(partition);
                    }
                    Err(error) => tracing::warn!(%error, "pause failed"),
                },
                FetchDecision::Resume => match self.runtime.consumer.resume(&partition.topic, partition.partition) {
                    Ok(()) => {
                        self.paused.remove(&partition);
                    }
                    Err(error) => tracing::warn!(%error, "resume failed"),
                },
                FetchDecision::Keep => {}
            }
        }
        events::scheduler_held_bytes(held_bytes);
        let waiting_per_topic = self.holdings.waiting_per_topic();
        for tier in self.config.policy.tiers() {
            events::records_waiting(
                &tier.topic,
                waiting_per_topic.get(tier.topic.as_str()).copied().unwrap_or(0),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rebound_kafka::{KafkaArgs, RecordConsumer};

    use super::*;

    #[test]
    fn a_record_is_republished_to_the_partition_it_was_first_consumed_from() {
        let mut record = ConsumedRecord {
            topic: "retry-5s".to_owned(),
            partition: 4,
            offset: 10,
            timestamp_ms: None,
            key: Some(b"note".to_vec()),
            value: Some(b"value".to_vec()),
            headers: rebound_retry::RecordHeaders::new(),
        };
        let republish = ReleaseAction::Republish {
            target_topic: "notes".to_owned(),
        };
        // Without a history the key decides, as before.
        assert_eq!(outgoing_of_action(&record, &republish).partition, None);
        record.headers.set(rebound_retry::contract::ORIGINAL_PARTITION, "2");
        let outgoing = outgoing_of_action(&record, &republish);
        assert_eq!((outgoing.topic.as_str(), outgoing.partition), ("notes", Some(2)));
        record.headers.set(rebound_retry::contract::ORIGINAL_PARTITION, "-1");
        assert_eq!(outgoing_of_action(&record, &republish).partition, None);
    }

    #[tokio::test]
    async fn prefetch_bounds_are_properties_librdkafka_accepts() {
        // Creating the client validates its configuration without a broker.
        for read_ahead_bytes in [1 << 20, 64 << 20, 1 << 30] {
            let settings = prefetch_bounded(
                ConsumerSettings::new("group", vec!["topic".to_owned()]),
                read_ahead_bytes,
                1_000_000,
            );
            let consumer = RecordConsumer::subscribe(&KafkaArgs::for_brokers("127.0.0.1:1"), &settings);
            assert!(consumer.is_ok(), "{read_ahead_bytes}: {:?}", consumer.err());
        }
        let settings = prefetch_bounded(ConsumerSettings::new("group", Vec::new()), 64 << 20, 1_000_000);
        assert!(
            settings
                .client_defaults
                .contains(&("fetch.max.bytes".to_owned(), (8 << 20).to_string()))
        );
        // Records up to 16 MiB allowed: a fetch must be able to bring one.
        let settings = prefetch_bounded(
            ConsumerSettings::new("group", vec!["topic".to_owned()]),
            8 << 20,
            16 << 20,
        );
        let consumer = RecordConsumer::subscribe(&KafkaArgs::for_brokers("127.0.0.1:1"), &settings);
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }
}
