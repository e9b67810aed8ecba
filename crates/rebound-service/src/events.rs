//! Operational events, each emitted here and only here as one log line plus one metric, so that
//! logs and metrics can never disagree about what happened to a record.
//!
//! Metric names follow Prometheus conventions; labels are bounded (tier and DLQ topic names come
//! from configuration, error kinds from a fixed set), never keys or messages.

use rebound_retry::{BreakerState, BreakerTransition, ErrorKind};

/// Identifies the record an event is about, for the log line.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'record> {
    /// Topic it was consumed from.
    pub topic: &'record str,
    /// Partition it was consumed from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, as lossy UTF-8.
    pub key: &'record str,
}

/// Consumer counter of processed records, labelled by outcome.
pub const CONSUMER_RECORDS_TOTAL: &str = "rebound_consumer_records_total";
/// Scheduler counter of records republished to their source topic.
pub const SCHEDULER_REPUBLISHED_TOTAL: &str = "rebound_scheduler_republished_total";
/// Scheduler histogram of how late a record was republished after its due time.
pub const SCHEDULER_RETRY_LAG_SECONDS: &str = "rebound_scheduler_retry_lag_seconds";
/// Scheduler counter of tier records it had to dead-letter itself.
pub const SCHEDULER_DEAD_LETTERED_TOTAL: &str = "rebound_scheduler_dead_lettered_total";

/// A record reached the sink. `previous_attempts` is 0 on the first try.
pub fn record_applied(record: RecordRef<'_>, previous_attempts: u32) {
    tracing::debug!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        attempt = previous_attempts,
        "applied"
    );
    let after = if previous_attempts == 0 { "first_try" } else { "retry" };
    metrics::counter!(CONSUMER_RECORDS_TOTAL, "outcome" => "applied", "after" => after).increment(1);
}

/// A record failed transiently and its copy was acknowledged by a retry tier.
pub fn record_retried(record: RecordRef<'_>, tier: &str, attempt: u32, kind: ErrorKind, message: &str) {
    tracing::info!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        attempt,
        tier,
        error_kind = kind.as_str(),
        error = message,
        "retried"
    );
    metrics::counter!(CONSUMER_RECORDS_TOTAL, "outcome" => "retried", "tier" => tier.to_owned()).increment(1);
}

/// A record's copy was acknowledged by the dead-letter topic.
/// `last_tier` is the tier the record last went through, if it was retried before.
pub fn record_dead_lettered(
    record: RecordRef<'_>,
    dead_letter_topic: &str,
    last_tier: Option<&str>,
    attempt: u32,
    kind: ErrorKind,
    message: &str,
) {
    tracing::warn!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        attempt,
        tier = last_tier.unwrap_or("none"),
        dlq = dead_letter_topic,
        error_kind = kind.as_str(),
        error = message,
        "dead-lettered"
    );
    metrics::counter!(CONSUMER_RECORDS_TOTAL, "outcome" => "dead_lettered", "kind" => kind.as_str()).increment(1);
}

/// The scheduler dead-lettered a tier record it could not route back.
pub fn tier_record_dead_lettered(record: RecordRef<'_>, dead_letter_topic: &str, message: &str) {
    tracing::warn!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        dlq = dead_letter_topic,
        error_kind = ErrorKind::Poison.as_str(),
        error = message,
        "dead-lettered by scheduler"
    );
    metrics::counter!(SCHEDULER_DEAD_LETTERED_TOTAL, "tier" => record.topic.to_owned()).increment(1);
}

/// The scheduler republished a due tier record to its source topic.
pub fn record_republished(record: RecordRef<'_>, source_topic: &str, attempt: u32, lateness_ms: i64) {
    tracing::info!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        attempt,
        tier = record.topic,
        to = source_topic,
        lateness_ms,
        "republished"
    );
    metrics::counter!(SCHEDULER_REPUBLISHED_TOTAL, "tier" => record.topic.to_owned()).increment(1);
    #[expect(clippy::cast_precision_loss, reason = "lateness in ms is far below 2^52")]
    let lateness_seconds = lateness_ms.max(0) as f64 / 1000.0;
    metrics::histogram!(SCHEDULER_RETRY_LAG_SECONDS, "tier" => record.topic.to_owned()).record(lateness_seconds);
}

/// Scheduler gauge of records held per tier.
pub const SCHEDULER_RECORDS_WAITING: &str = "rebound_scheduler_records_waiting";

/// How many records the scheduler holds for a tier right now.
pub fn records_waiting(tier: &str, count: usize) {
    #[expect(clippy::cast_precision_loss, reason = "held record counts are far below 2^52")]
    metrics::gauge!(SCHEDULER_RECORDS_WAITING, "tier" => tier.to_owned()).set(count as f64);
}

/// Producer counter of notes accepted into the outbox.
pub const PRODUCER_NOTES_ACCEPTED_TOTAL: &str = "rebound_producer_notes_accepted_total";
/// Producer counter of notes acknowledged by Kafka (and removed from the outbox).
pub const PRODUCER_NOTES_ACKNOWLEDGED_TOTAL: &str = "rebound_producer_notes_acknowledged_total";
/// Producer counter of notes sent again after a failure or a restart.
pub const PRODUCER_RESEND_ATTEMPTS_TOTAL: &str = "rebound_producer_resend_attempts_total";
/// Producer gauge of notes waiting in the outbox.
pub const PRODUCER_OUTBOX_PENDING_NOTES: &str = "rebound_producer_outbox_pending_notes";
/// Producer gauge of the age of the oldest note in the outbox.
pub const PRODUCER_OUTBOX_OLDEST_AGE_SECONDS: &str = "rebound_producer_outbox_oldest_age_seconds";
/// Producer gauge: 1 while Kafka acknowledges, 0 while it refuses everything.
pub const PRODUCER_BROKER_REACHABLE: &str = "rebound_producer_broker_reachable";

/// Notes were durably accepted into the outbox.
pub fn producer_notes_accepted(count: usize) {
    tracing::debug!(count, "notes accepted into the outbox");
    metrics::counter!(PRODUCER_NOTES_ACCEPTED_TOTAL).increment(count as u64);
}

/// Kafka acknowledged notes; they left the outbox.
pub fn producer_notes_acknowledged(count: usize) {
    if count > 0 {
        tracing::debug!(count, "notes acknowledged by kafka");
    }
    metrics::counter!(PRODUCER_NOTES_ACKNOWLEDGED_TOTAL).increment(count as u64);
}

/// Pending notes are being sent again.
pub fn producer_resend_attempted(count: usize) {
    tracing::info!(count, "resending pending notes");
    metrics::counter!(PRODUCER_RESEND_ATTEMPTS_TOTAL).increment(count as u64);
}

/// The outbox's current depth and age.
pub fn producer_outbox_state(pending_notes: u64, oldest_age_seconds: f64) {
    #[expect(clippy::cast_precision_loss, reason = "outbox depths are far below 2^52")]
    metrics::gauge!(PRODUCER_OUTBOX_PENDING_NOTES).set(pending_notes as f64);
    metrics::gauge!(PRODUCER_OUTBOX_OLDEST_AGE_SECONDS).set(oldest_age_seconds);
}

/// Whether Kafka currently acknowledges the producer's sends.
pub fn producer_broker_reachable(reachable: bool) {
    metrics::gauge!(PRODUCER_BROKER_REACHABLE).set(if reachable { 1.0 } else { 0.0 });
}

/// Gauge, always 1, whose `version` label is the running release (a dashboard counts versions
/// across instances during a rolling update).
pub const BUILD_INFO: &str = "rebound_build_info";

/// A service started serving its operational endpoints: announces its version as a metric.
pub fn build_info() {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Refreshes the standard process metrics (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, `process_threads`, ...) from the operating
/// system; called at each scrape, so they are as fresh as the scrape.
pub fn process_state() {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
}

/// Gauge of the partitions a service's group member holds, by service. Zero is a normal state
/// (more instances than partitions, or between a revocation and the next assignment), so it is
/// a metric, not a readiness check: an unready idle instance would stall a rolling update.
pub const ASSIGNED_PARTITIONS: &str = "rebound_assigned_partitions";

/// The service's group member now holds `count` partitions.
pub fn partitions_assigned(service: &'static str, count: usize) {
    tracing::debug!(service, partitions = count, "partition count changed");
    metrics::gauge!(ASSIGNED_PARTITIONS, "service" => service).set(count as f64);
}

/// Counter of records a service failed to receive from Kafka, by service.
pub const KAFKA_RECEIVE_ERRORS_TOTAL: &str = "rebound_kafka_receive_errors_total";
/// Counter of offsets a service failed to store for commit, by service.
pub const OFFSET_STORE_FAILURES_TOTAL: &str = "rebound_offset_store_failures_total";
/// Consumer counter of copies (to a tier or the DLQ) the broker did not acknowledge, by
/// destination topic; each is sent again.
pub const CONSUMER_COPIES_REFUSED_TOTAL: &str = "rebound_consumer_copies_refused_total";

/// Receiving from Kafka failed (a broker error, a partition's error reported to the consumer);
/// the service goes on receiving.
pub fn kafka_receive_failed(service: &'static str, error: &dyn std::error::Error) {
    tracing::warn!(service, %error, "kafka receive error");
    metrics::counter!(KAFKA_RECEIVE_ERRORS_TOTAL, "service" => service).increment(1);
}

/// Storing an offset for commit failed (not the benign case of a partition no longer
/// assigned): the record will be read again after a restart or rebalance.
pub fn offset_store_failed(service: &'static str, topic: &str, partition: i32, error: &dyn std::error::Error) {
    tracing::error!(service, %error, topic, partition, "failed to store offset");
    metrics::counter!(OFFSET_STORE_FAILURES_TOTAL, "service" => service).increment(1);
}

/// The broker did not acknowledge the consumer's copy of a failed record (to a tier or the
/// DLQ); the copy is sent again and the record's offset waits for it.
pub fn consumer_copy_refused(record: RecordRef<'_>, destination: &str, error: &dyn std::error::Error) {
    tracing::error!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        to = destination,
        %error,
        "copy of failed record not acknowledged; sending again"
    );
    metrics::counter!(CONSUMER_COPIES_REFUSED_TOTAL, "topic" => destination.to_owned()).increment(1);
}

/// Counter of services that stopped because their Kafka producer failed for good.
pub const PRODUCER_FAILED_FOR_GOOD_TOTAL: &str = "rebound_producer_failed_for_good_total";

/// A service's Kafka producer raised a fatal error: every later send would fail, so the service
/// stops and exits non-zero for its orchestrator to restart it.
pub fn producer_failed_for_good(service: &'static str, error: &dyn std::error::Error) {
    tracing::error!(service, %error, "kafka producer failed for good; stopping so the service is restarted");
    metrics::counter!(PRODUCER_FAILED_FOR_GOOD_TOTAL, "service" => service).increment(1);
}

/// Consumer histogram of sink batch latency.
pub const CONSUMER_SINK_DURATION_SECONDS: &str = "rebound_consumer_sink_duration_seconds";
/// Consumer gauge of records taken from Kafka and not yet safe.
pub const CONSUMER_IN_FLIGHT_RECORDS: &str = "rebound_consumer_in_flight_records";
/// Consumer gauge of records in the source topics not yet committed by the group.
pub const CONSUMER_LAG_RECORDS: &str = "rebound_consumer_lag_records";

/// The sink took `duration` to answer a batch.
pub fn consumer_sink_batch(duration: std::time::Duration) {
    metrics::histogram!(CONSUMER_SINK_DURATION_SECONDS).record(duration.as_secs_f64());
}

/// Records the consumer has applied or routed but whose batches are not yet delivered (their
/// copies await acknowledgement, or their offsets are not yet stored): a few batches at most.
pub fn consumer_in_flight(records: usize) {
    #[expect(clippy::cast_precision_loss, reason = "batch sizes are far below 2^52")]
    metrics::gauge!(CONSUMER_IN_FLIGHT_RECORDS).set(records as f64);
}

/// The group's lag on one source topic.
pub fn consumer_lag(topic: &str, lag: i64) {
    #[expect(clippy::cast_precision_loss, reason = "lags are far below 2^52")]
    metrics::gauge!(CONSUMER_LAG_RECORDS, "topic" => topic.to_owned()).set(lag as f64);
}

/// Gauge of dead letters not yet redriven.
pub const DLQ_DEPTH_RECORDS: &str = "rebound_dlq_depth_records";
/// Gauge of the age of the oldest dead letter not yet redriven.
pub const DLQ_OLDEST_AGE_SECONDS: &str = "rebound_dlq_oldest_age_seconds";
/// Counter of DLQ threshold notifications sent, labelled `state` = `crossed` or `recovered`.
pub const DLQ_NOTIFICATIONS_TOTAL: &str = "rebound_dlq_notifications_total";
/// Counter of completed DLQ depth checks.
pub const DLQ_WATCH_CHECKS_TOTAL: &str = "rebound_dlq_watch_checks_total";

/// The DLQ's backlog as of the last check.
pub fn dlq_backlog(topic: &str, not_redriven: i64, oldest_age_seconds: f64) {
    #[expect(clippy::cast_precision_loss, reason = "depths are far below 2^52")]
    metrics::gauge!(DLQ_DEPTH_RECORDS, "topic" => topic.to_owned()).set(not_redriven as f64);
    metrics::gauge!(DLQ_OLDEST_AGE_SECONDS, "topic" => topic.to_owned()).set(oldest_age_seconds);
    metrics::counter!(DLQ_WATCH_CHECKS_TOTAL, "topic" => topic.to_owned()).increment(1);
}

/// A threshold notification about the DLQ was delivered.
pub fn dlq_notified(topic: &str, crossed: bool, not_redriven: i64, threshold: i64) {
    let state = if crossed { "crossed" } else { "recovered" };
    if crossed {
        tracing::warn!(
            dlq = topic,
            depth = not_redriven,
            threshold,
            "dlq depth crossed the threshold; notified"
        );
    } else {
        tracing::info!(
            dlq = topic,
            depth = not_redriven,
            threshold,
            "dlq depth back under the threshold; notified"
        );
    }
    metrics::counter!(DLQ_NOTIFICATIONS_TOTAL, "topic" => topic.to_owned(), "state" => state).increment(1);
}

/// Producer counter of notes Kafka refused for good (too large for the topic, invalid), moved
/// from the outbox's pending notes to its rejected table.
pub const PRODUCER_NOTES_REJECTED_TOTAL: &str = "rebound_producer_notes_rejected_total";

/// Shows the producer's rejection counter at 0 from the start: a counter that first appears at 1
/// has no increase for `increase()` to see, so an alert on it would miss the first rejection.
pub fn producer_rejection_counter_starts_at_zero() {
    metrics::counter!(PRODUCER_NOTES_REJECTED_TOTAL).increment(0);
}

/// Kafka refused a note for what it is, even sent alone: it can never be delivered, so it left
/// the pending notes for the outbox's rejected table and no longer holds back its later versions.
pub fn producer_note_rejected(note_id: &str, version: i64, error: &str) {
    tracing::error!(
        note_id,
        version,
        error,
        "note refused by kafka for good; moved to the outbox's rejected table"
    );
    metrics::counter!(PRODUCER_NOTES_REJECTED_TOTAL).increment(1);
}

/// Producer counter of intake requests refused before anything reached the outbox, labelled by
/// `reason` (a fixed set: `unauthenticated`, `rate_limited`, `overloaded`, `body_too_large`,
/// `too_many_notes`, `note_too_large`, `slow_body`).
pub const PRODUCER_REQUESTS_REJECTED_TOTAL: &str = "rebound_producer_requests_rejected_total";
/// Producer counter of intake connections closed before a request was answered, labelled by
/// `reason` (`tls_handshake`, `slow_client`, `connection_error`).
pub const PRODUCER_CONNECTIONS_DROPPED_TOTAL: &str = "rebound_producer_connections_dropped_total";
/// Producer counter of intake files (bearer tokens, TLS certificate and key, client CA) that
/// changed but could not be loaded; the last good version stays in force.
pub const PRODUCER_INTAKE_RELOAD_FAILURES_TOTAL: &str = "rebound_producer_intake_reload_failures_total";

/// An intake request was refused for `reason`. `client` is a token's name, a client
/// certificate's fingerprint or the peer address: never a credential.
pub fn producer_request_rejected(reason: &'static str, client: &str, path: &str) {
    tracing::warn!(reason, client, path, "intake request refused");
    metrics::counter!(PRODUCER_REQUESTS_REJECTED_TOTAL, "reason" => reason).increment(1);
}

/// An intake connection was closed before it was answered (a failed TLS handshake, a client
/// too slow to send its request, a broken connection).
pub fn producer_connection_dropped(reason: &'static str, peer: &str, error: &dyn std::error::Error) {
    tracing::info!(reason, peer, %error, "intake connection dropped");
    metrics::counter!(PRODUCER_CONNECTIONS_DROPPED_TOTAL, "reason" => reason).increment(1);
}

/// An intake file changed but was refused (unreadable, invalid); the last good version of
/// `file` (`auth_tokens` or `tls`) stays in force.
pub fn producer_intake_reload_failed(file: &'static str, path: &str, reason: &str) {
    tracing::error!(file, path, reason, "intake file refused; keeping the last good version");
    metrics::counter!(PRODUCER_INTAKE_RELOAD_FAILURES_TOTAL, "file" => file).increment(1);
}

/// Scheduler counter of republished or dead-lettered copies the broker refused, labelled by
/// `cause`; each such record stays at the head of its partition and is sent again.
pub const SCHEDULER_REPUBLISH_REFUSED_TOTAL: &str = "rebound_scheduler_republish_refused_total";
/// Scheduler counter of tier records whose due time lies beyond `--max-due-ahead`.
pub const SCHEDULER_DUE_TOO_FAR_AHEAD_TOTAL: &str = "rebound_scheduler_due_too_far_ahead_total";
/// Scheduler gauge of the bytes (keys, values, headers) held in memory across partitions.
pub const SCHEDULER_HELD_BYTES: &str = "rebound_scheduler_held_bytes";

/// The broker refused a scheduler copy; it will be sent again. `cause` is a fixed label:
/// `unknown_topic_unconfirmed` (the broker said unknown topic or partition, and metadata did not
/// confirm the topic is missing) or `other`.
pub fn scheduler_copy_refused(record: RecordRef<'_>, destination: &str, cause: &'static str, error: &str) {
    tracing::warn!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        to = destination,
        cause,
        error,
        "copy refused; will send again"
    );
    metrics::counter!(SCHEDULER_REPUBLISH_REFUSED_TOTAL, "tier" => record.topic.to_owned(), "cause" => cause)
        .increment(1);
}

/// A tier record's due time lies further ahead than the scheduler accepts; it is dead-lettered
/// as poison instead of being held (or released early).
pub fn scheduler_due_too_far_ahead(record: RecordRef<'_>, due_ms: i64, latest_accepted_ms: i64) {
    tracing::warn!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        key = record.key,
        due_ms,
        latest_accepted_ms,
        "due time too far ahead; dead-lettering as poison"
    );
    metrics::counter!(SCHEDULER_DUE_TOO_FAR_AHEAD_TOTAL, "tier" => record.topic.to_owned()).increment(1);
}

/// Bytes the scheduler holds in memory right now.
pub fn scheduler_held_bytes(bytes: usize) {
    #[expect(clippy::cast_precision_loss, reason = "held bytes are far below 2^52")]
    metrics::gauge!(SCHEDULER_HELD_BYTES).set(bytes as f64);
}

/// Consumer gauge of the circuit breaker's state: 0 closed, 1 half-open, 2 open.
pub const CONSUMER_BREAKER_STATE: &str = "rebound_consumer_breaker_state";
/// Consumer counter of the circuit breaker's state changes, labelled `to`.
pub const CONSUMER_BREAKER_TRANSITIONS_TOTAL: &str = "rebound_consumer_breaker_transitions_total";
/// Consumer counter of probes while the breaker is open, labelled `outcome` (`answered`,
/// `failed`).
pub const CONSUMER_BREAKER_PROBES_TOTAL: &str = "rebound_consumer_breaker_probes_total";
/// Consumer gauge of records held in memory, not yet safe, while the breaker is not closed.
pub const CONSUMER_BREAKER_HELD_RECORDS: &str = "rebound_consumer_breaker_held_records";
/// Consumer gauge of source partitions paused by the circuit breaker.
pub const CONSUMER_PAUSED: &str = "rebound_consumer_paused";
/// Counter of pause or resume calls librdkafka refused, by service and action.
pub const PAUSE_RESUME_FAILURES_TOTAL: &str = "rebound_pause_resume_failures_total";

/// The consumer's breaker at start-up (closed, or off) and nothing paused, so the series exist
/// before the first outage and an alert on them can tell "never opened" from "not scraped".
pub fn consumer_breaker_started(enabled: bool) {
    metrics::gauge!(CONSUMER_BREAKER_STATE).set(f64::from(BreakerState::Closed.gauge_value()));
    metrics::gauge!(CONSUMER_PAUSED).set(0.0);
    metrics::gauge!(CONSUMER_BREAKER_HELD_RECORDS).set(0.0);
    for to in [BreakerState::Closed, BreakerState::HalfOpen, BreakerState::Open] {
        metrics::counter!(CONSUMER_BREAKER_TRANSITIONS_TOTAL, "to" => to.as_str()).increment(0);
    }
    tracing::info!(enabled, "circuit breaker ready");
}

/// The consumer's circuit breaker changed state. Opening is a warning: the sink is failing and
/// the consumer stops feeding it (records wait in Kafka, lag grows, nothing is dead-lettered).
pub fn consumer_breaker_transition(transition: &BreakerTransition, held_records: usize) {
    let next_probe_ms = transition.next_probe_in.map(|wait| wait.as_millis());
    match transition.to {
        BreakerState::Open => tracing::warn!(
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            reason = %transition.reason,
            held_records,
            next_probe_ms,
            "circuit breaker open: source partitions paused, records held until the sink answers"
        ),
        BreakerState::HalfOpen | BreakerState::Closed => tracing::info!(
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            reason = %transition.reason,
            held_records,
            "circuit breaker {}",
            if transition.to == BreakerState::Closed { "closed: source partitions resumed" } else { "half-open" }
        ),
    }
    metrics::gauge!(CONSUMER_BREAKER_STATE).set(f64::from(transition.to.gauge_value()));
    metrics::counter!(CONSUMER_BREAKER_TRANSITIONS_TOTAL, "to" => transition.to.as_str()).increment(1);
}

/// A probe (one held record tried while the breaker is open) reached the sink or failed
/// transiently; `next_probe_in` is the wait before the next one after a failure.
pub fn consumer_breaker_probe(answered: bool, next_probe_in: Option<std::time::Duration>) {
    if answered {
        tracing::info!("circuit breaker probe reached the sink");
    } else {
        let next_probe_ms = next_probe_in.map(|wait| wait.as_millis());
        tracing::info!(next_probe_ms, "circuit breaker probe failed; sink still down");
    }
    let outcome = if answered { "answered" } else { "failed" };
    metrics::counter!(CONSUMER_BREAKER_PROBES_TOTAL, "outcome" => outcome).increment(1);
}

/// Records held in memory while the breaker is not closed.
pub fn consumer_breaker_held(held_records: usize) {
    #[expect(clippy::cast_precision_loss, reason = "held records are far below 2^52")]
    metrics::gauge!(CONSUMER_BREAKER_HELD_RECORDS).set(held_records as f64);
}

/// Source partitions the consumer has paused (by its circuit breaker).
pub fn consumer_paused(partitions: usize) {
    tracing::debug!(partitions, "paused source partitions");
    #[expect(clippy::cast_precision_loss, reason = "partition counts are far below 2^52")]
    metrics::gauge!(CONSUMER_PAUSED).set(partitions as f64);
}

/// librdkafka refused to pause or resume a partition.
pub fn pause_or_resume_failed(
    service: &'static str,
    action: &'static str,
    topic: &str,
    partition: i32,
    error: &dyn std::error::Error,
) {
    tracing::error!(service, action, topic, partition, %error, "failed to pause or resume partition");
    metrics::counter!(PAUSE_RESUME_FAILURES_TOTAL, "service" => service, "action" => action).increment(1);
}

/// Counter of schema registry failures, by what they mean for records (`unavailable`:
/// transient, the records go to the retry tiers; `refused`: the id is unknown or its schema
/// unreadable, the records are poison).
pub const SCHEMA_REGISTRY_ERRORS_TOTAL: &str = "rebound_schema_registry_errors_total";
/// Counter of writer schemas fetched from a schema registry (once per id and process).
pub const SCHEMA_REGISTRY_FETCHES_TOTAL: &str = "rebound_schema_registry_fetches_total";
/// Counter of writer schemas that the direct reader cannot read, so their records go through
/// apache-avro's generic reader (about ten times slower per note).
pub const SCHEMA_GENERIC_READER_SCHEMAS_TOTAL: &str = "rebound_schema_generic_reader_schemas_total";

/// A writer schema was fetched from the registry and prepared (cached from now on).
pub fn schema_registry_schema_fetched(schema_id: u32, fingerprint: &str, read_directly: bool) {
    tracing::info!(
        schema_id,
        fingerprint,
        read_directly,
        "writer schema fetched from the schema registry"
    );
    metrics::counter!(SCHEMA_REGISTRY_FETCHES_TOTAL).increment(1);
    if !read_directly {
        schema_read_generically(&format!("registry schema id {schema_id}"), fingerprint);
    }
}

/// The registry did not answer usefully after its bounded retry: records that need it are a
/// transient failure.
pub fn schema_registry_unavailable(error: &dyn std::error::Error) {
    tracing::warn!(%error, "schema registry unavailable; records that need it go to the retry tiers");
    metrics::counter!(SCHEMA_REGISTRY_ERRORS_TOTAL, "kind" => "unavailable").increment(1);
}

/// The registry does not know a schema id, or its schema cannot be read into the note schema:
/// records that name it are poison.
pub fn schema_registry_refused_schema(schema_id: u32, error: &dyn std::error::Error) {
    tracing::error!(schema_id, %error, "writer schema unusable; its records are poison");
    metrics::counter!(SCHEMA_REGISTRY_ERRORS_TOTAL, "kind" => "refused").increment(1);
}

/// A writer schema falls back to apache-avro's generic reader: records still decode, ten times
/// slower. A schema change that does this should extend the direct reader (docs/schemas.md).
pub fn schema_read_generically(source: &str, fingerprint: &str) {
    tracing::warn!(
        source,
        fingerprint,
        "the direct reader cannot read this writer schema; its records use the generic reader (about 10x slower)"
    );
    metrics::counter!(SCHEMA_GENERIC_READER_SCHEMAS_TOTAL).increment(1);
}
