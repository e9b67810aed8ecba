//! The relay: sends outbox notes to Kafka in acceptance order and removes each once Kafka
//! acknowledged it. Failed notes stay and are resent with capped exponential backoff and
//! jitter, if the `retry_pending_notes` flag allows.
//!
//! Per-key order: a window never holds two versions of one note id, and a version is not sent
//! while an earlier version of the same note is still pending. A failure can therefore never let
//! version 2 overtake version 1 of a note, whatever the broker does.
//!
//! A note Kafka refuses for what it is (too large for the topic, invalid) could never be sent
//! and would hold back its later versions forever: once refused alone too, it is moved to the
//! outbox's rejected table, which lets those versions go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng as _;
use rebound_kafka::{OutgoingRecord, RecordProducer};
use rebound_registry::NoteEncoder;
use rebound_retry::RecordHeaders;
use rebound_service::trace_context::{continue_trace, headers_with_traceparent, inject_trace};
use rebound_service::{Shutdown, events};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::ProducerError;
use crate::config::OutboxConfig;
use crate::flags::{ResendFlags, watch_flags};
use crate::outbox::{Outbox, OutboxEntry};

/// Most notes in flight per round; `Relay::window_bytes` bounds their bytes as well.
const MAX_WINDOW: usize = 2000;
/// First pause after a failed round; doubles up to the flags' resend interval.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// What the relay knows about the broker, shared with the HTTP API.
#[derive(Debug)]
pub struct RelayStatus {
    broker_reachable: AtomicBool,
}

impl Default for RelayStatus {
    fn default() -> Self {
        Self {
            broker_reachable: AtomicBool::new(true),
        }
    }
}

impl RelayStatus {
    /// False after a round in which Kafka acknowledged nothing and refused something.
    pub fn broker_reachable(&self) -> bool {
        self.broker_reachable.load(Ordering::Relaxed)
    }

    fn set_broker_reachable(&self, reachable: bool) {
        if self.broker_reachable.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                tracing::info!("kafka reachable again: acknowledgements resumed");
            } else {
                tracing::warn!("kafka unreachable: notes stay in the outbox and are resent");
            }
        }
        events::producer_broker_reachable(reachable);
    }
}

/// A note is a resend when it failed before or was already pending when this process started.
fn is_resend(entry: &OutboxEntry, first_fresh_seq: i64) -> bool {
    entry.seq < first_fresh_seq || entry.attempts > 0
}

/// The relay's moving parts.
#[derive(Debug)]
pub struct Relay {
    /// The outbox it drains.
    pub outbox: Outbox,
    /// The acknowledging producer.
    pub producer: RecordProducer,
    /// Target topic.
    pub topic: String,
    /// Current resend flags.
    pub flags: watch::Receiver<ResendFlags>,
    /// Shared broker status.
    pub status: Arc<RelayStatus>,
    /// Lowest outbox sequence accepted by this process; anything before it is a resend.
    pub first_fresh_seq: i64,
    /// Most bytes of note values loaded and in flight per round (a larger note still goes,
    /// alone): what bounds the relay's memory, whatever the size of the notes.
    pub window_bytes: u64,
    /// The wire format notes leave in; the outbox holds them single-object encoded.
    pub encoder: NoteEncoder,
}

impl Relay {
    /// Runs until `shutdown`. Each round sends a window, waits for every acknowledgement or
    /// failure, then removes what was acknowledged. Returns an error only when the producer
    /// failed for good: every later send would fail too, so the service must stop and be
    /// restarted with a new producer (the notes stay in the outbox).
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), rebound_kafka::KafkaError> {
        let mut backoff = INITIAL_BACKOFF;
        let mut resend_not_before = Instant::now();
        let mut flags = *self.flags.borrow();
        if !flags.retry_pending_notes && self.outbox.pending_notes() > 0 {
            tracing::info!(
                pending = self.outbox.pending_notes(),
                "retry_pending_notes is off: pending notes are kept, not resent"
            );
        }
        while !shutdown.is_triggered() {
            let resend_allowed = flags.retry_pending_notes && Instant::now() >= resend_not_before;
            let window = match self
                .outbox
                .sendable(self.first_fresh_seq, resend_allowed, MAX_WINDOW, self.window_bytes)
                .await
            {
                Ok(window) => window,
                Err(error) => {
                    tracing::error!(%error, "cannot read the outbox");
                    wait_or_shutdown(&shutdown, Duration::from_secs(1)).await;
                    continue;
                }
            };
            if window.is_empty() {
                let resend_waiting = flags.retry_pending_notes && self.outbox.pending_notes() > 0;
                tokio::select! {
                    () = shutdown.wait() => break,
                    () = self.outbox.appended() => {}
                    changed = self.flags.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let new_flags = *self.flags.borrow_and_update();
                        if new_flags.retry_pending_notes && !flags.retry_pending_notes {
                            tracing::info!("retry_pending_notes switched on: resending pending notes now");
                            resend_not_before = Instant::now();
                            backoff = INITIAL_BACKOFF;
                        }
                        flags = new_flags;
                    }
                    () = tokio::time::sleep_until(resend_not_before), if resend_waiting => {}
                }
                continue;
            }
            let resends = window
                .iter()
                .filter(|entry| is_resend(entry, self.first_fresh_seq))
                .count();
            if resends > 0 {
                events::producer_resend_attempted(resends);
            }
            let window_len = window.len();
            // Shutdown does not wait out a window stuck on an unreachable broker: its notes are
            // still in the outbox and go out on the next start.
            let mut outcome = tokio::select! {
                outcome = self.send_window(window) => outcome,
                () = shutdown.wait() => break,
            };
            if !outcome.refused.is_empty() {
                tokio::select! {
                    () = self.settle_refused_notes(window_len, &mut outcome) => {}
                    () = shutdown.wait() => break,
                }
            }
            let WindowOutcome {
                acknowledged,
                failed,
                last_error,
                ..
            } = outcome;
            events::producer_notes_acknowledged(acknowledged.len());
            if let Err(error) = self.outbox.remove(acknowledged.clone()).await {
                tracing::error!(%error, "cannot remove acknowledged notes; they will be sent again");
            }
            if failed.is_empty() {
                backoff = INITIAL_BACKOFF;
                self.status.set_broker_reachable(true);
            } else {
                if acknowledged.is_empty() {
                    self.status.set_broker_reachable(false);
                }
                let failed_count = failed.len();
                if let Err(error) = self.outbox.mark_failed(failed, last_error.clone()).await {
                    tracing::error!(%error, "cannot record failed sends");
                }
                if let Some(fatal) = self.producer.fatal_error() {
                    events::producer_failed_for_good("producer", &fatal);
                    self.status.set_broker_reachable(false);
                    return Err(fatal);
                }
                let pause = with_jitter(backoff);
                tracing::warn!(failed = failed_count, error = %last_error, retry_in_ms = pause.as_millis(), "notes not acknowledged; they stay in the outbox");
                resend_not_before = Instant::now() + pause;
                backoff = (backoff * 2).min(flags.retry_interval());
            }
            events::producer_outbox_state(self.outbox.pending_notes(), oldest_age_seconds(&self.outbox).await);
            // Pick up flag changes made while the window was in flight.
            if self.flags.has_changed().unwrap_or(false) {
                flags = *self.flags.borrow_and_update();
            }
        }
        Ok(())
    }

    /// Sends one note and resolves once Kafka acknowledged or refused it. The note's value moves
    /// into the record rather than being copied: the window is held once here (and once in
    /// librdkafka), not twice.
    async fn send_note(&self, entry: OutboxEntry) -> Result<rebound_kafka::AckedRecord, rebound_kafka::KafkaError> {
        // The send continues the trace begun when the note was accepted, and the record
        // carries it on to the consumer.
        let span = tracing::info_span!("producer.publish", messaging.destination = %self.topic, note_id = %entry.note_id, version = entry.version);
        continue_trace(&span, &headers_with_traceparent(entry.traceparent.as_deref()));
        let mut headers = RecordHeaders::new();
        inject_trace(&span, &mut headers);
        let record = OutgoingRecord {
            topic: self.topic.clone(),
            partition: None,
            key: Some(entry.note_id.into_bytes()),
            value: Some(self.encoder.frame_outbox_value(entry.value)),
            headers,
        };
        self.producer.send(&record).instrument(span).await
    }

    /// Sends every note of the window, all in flight together.
    async fn send_window(&self, window: Vec<OutboxEntry>) -> WindowOutcome {
        let sends: Vec<_> = window
            .into_iter()
            .map(|entry| async move { (entry.seq, self.send_note(entry).await) })
            .collect();
        let mut outcome = WindowOutcome::default();
        for (seq, result) in futures::future::join_all(sends).await {
            match result {
                Ok(_) => outcome.acknowledged.push(seq),
                Err(error) if error.is_refusal_of_the_record() => outcome.refused.push((seq, error.to_string())),
                Err(error) => {
                    outcome.last_error = error.to_string();
                    outcome.failed.push(seq);
                }
            }
        }
        outcome
    }

    /// Decides the fate of notes Kafka refused for what they are. Kafka refuses a whole batch
    /// for one such record, so a note refused in company is sent once more alone; refused alone,
    /// it can never be sent and moves to the rejected table, which lets its later versions go.
    async fn settle_refused_notes(&self, window_len: usize, outcome: &mut WindowOutcome) {
        for (seq, error) in std::mem::take(&mut outcome.refused) {
            // Read again rather than kept: the window's values went into its records.
            let entry = match self.outbox.pending_entry(seq).await {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(error) => {
                    tracing::error!(%error, seq, "cannot read a refused note; it is sent again next round");
                    outcome.last_error = error.to_string();
                    outcome.failed.push(seq);
                    continue;
                }
            };
            let (note_id, version) = (entry.note_id.clone(), entry.version);
            let refusal = if window_len == 1 {
                error
            } else {
                match self.send_note(entry).await {
                    Ok(_) => {
                        outcome.acknowledged.push(seq);
                        continue;
                    }
                    Err(error) if error.is_refusal_of_the_record() => error.to_string(),
                    Err(error) => {
                        outcome.last_error = error.to_string();
                        outcome.failed.push(seq);
                        continue;
                    }
                }
            };
            match self
                .outbox
                .reject(seq, refusal.clone(), rebound_service::now_epoch_ms())
                .await
            {
                Ok(true) => events::producer_note_rejected(&note_id, version, &refusal),
                Ok(false) => {}
                // Still pending: it is refused again next round and moved then.
                Err(error) => {
                    tracing::error!(%error, note_id = %note_id, "cannot move a refused note to the rejected table")
                }
            }
        }
    }
}

/// What became of a window's notes.
#[derive(Debug, Default)]
struct WindowOutcome {
    /// Acknowledged by Kafka.
    acknowledged: Vec<i64>,
    /// Not acknowledged, for a reason that may pass (broker away, timeout): resent later.
    failed: Vec<i64>,
    /// The last of those failures.
    last_error: String,
    /// Refused for what they are, with Kafka's refusal: never resent as they are.
    refused: Vec<(i64, String)>,
}

/// Opens the outbox, loads the resend flags and builds the relay of `serve` and `send`. Returns
/// the outbox, the relay (not yet running) and the broker status it keeps.
pub(crate) async fn start_outbox(
    producer: RecordProducer,
    topic: String,
    encoder: NoteEncoder,
    config: &OutboxConfig,
) -> Result<(Outbox, Relay, Arc<RelayStatus>), ProducerError> {
    let outbox = Outbox::open(&config.dir, config.max_bytes)?;
    let first_fresh_seq = outbox.next_seq_floor().await?;
    let flags = watch_flags(config.flags.clone()).await;
    let status = Arc::new(RelayStatus::default());
    tracing::info!(
        outbox = %outbox.path().display(),
        pending = outbox.pending_notes(),
        topic,
        "outbox open"
    );
    let relay = Relay {
        outbox: outbox.clone(),
        producer,
        topic,
        encoder,
        flags,
        status: Arc::clone(&status),
        first_fresh_seq,
        window_bytes: config.relay_window_bytes,
    };
    Ok((outbox, relay, status))
}

/// The relay's outcome as the service's: a producer that failed for good ends the service
/// with an error (the notes stay in the outbox for the next start).
pub(crate) fn relay_failed_for_good(
    joined: Result<Result<(), rebound_kafka::KafkaError>, tokio::task::JoinError>,
) -> Result<(), ProducerError> {
    match joined {
        Ok(Err(source)) => Err(ProducerError::Kafka {
            operation: "relay notes (the producer failed for good; restart the service)",
            source,
        }),
        Ok(Ok(())) | Err(_) => Ok(()),
    }
}

/// Age of the oldest pending note in seconds (0 when empty).
pub async fn oldest_age_seconds(outbox: &Outbox) -> f64 {
    match outbox.oldest_accepted_at_ms().await {
        #[expect(clippy::cast_precision_loss, reason = "ages in ms are far below 2^52")]
        Ok(Some(accepted_at_ms)) => (rebound_service::now_epoch_ms() - accepted_at_ms).max(0) as f64 / 1000.0,
        _ => 0.0,
    }
}

/// A pause of `base` give or take a fifth, so that many producers do not resend in step.
fn with_jitter(base: Duration) -> Duration {
    let factor = rand::rng().random_range(0.8..1.2);
    base.mul_f64(factor)
}

async fn wait_or_shutdown(shutdown: &Shutdown, pause: Duration) {
    tokio::select! {
        () = shutdown.wait() => {}
        () = tokio::time::sleep(pause) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_notes_and_notes_of_an_earlier_run_are_resends() {
        let entry = |seq, attempts| OutboxEntry {
            seq,
            note_id: "a".to_owned(),
            version: 1,
            value: Vec::new(),
            accepted_at_ms: 0,
            attempts,
            traceparent: None,
        };
        assert!(is_resend(&entry(5, 0), 10));
        assert!(is_resend(&entry(10, 1), 10));
        assert!(!is_resend(&entry(10, 0), 10));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let pause = with_jitter(Duration::from_secs(10));
            assert!(pause >= Duration::from_secs(8) && pause <= Duration::from_secs(12));
        }
    }
}
