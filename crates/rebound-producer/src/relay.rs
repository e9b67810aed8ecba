//! The relay: sends outbox notes to Kafka in acceptance order and removes each once Kafka
//! acknowledged it. Failed notes stay and are resent with capped exponential backoff and
//! jitter, if the `retry_pending_notes` flag allows.
//!
//! The relay overlaps the outbox and the broker: notes are read into a sliding window
//! (`relay_window`) and sent as soon as their note allows, each acknowledgement making room for
//! the next note, while acknowledged notes are removed in batches in the background. A crash at
//! any point loses nothing: a note leaves the outbox only after Kafka acknowledged it, and on
//! start the relay reads the outbox again from its first pending note.
//!
//! Per-key order: the window never has two versions of one note id in flight, and a version is
//! not sent while an earlier version of the same note is still pending. A failure can therefore
//! never let version 2 overtake version 1 of a note, whatever the broker does.
//!
//! A note Kafka refuses for what it is (too large for the topic, invalid) could never be sent
//! and would hold back its later versions forever: once refused alone too, it is moved to the
//! outbox's rejected table, which lets those versions go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
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
use crate::relay_window::RelayWindow;

/// Most notes in the window (in flight, or waiting behind an earlier version of their note);
/// `Relay::window_bytes` bounds their bytes as well.
const MAX_WINDOW: usize = 8192;
/// Most rows read from the outbox at a time, so that the first sends start early.
const READ_BATCH: usize = 1024;
/// Acknowledged notes are removed from the outbox in batches of about this many (and whenever
/// the relay catches up), so that removal costs one transaction per batch, not one per note.
const REMOVE_BATCH: usize = 1024;
/// First pause before resending failed notes; doubles up to the flags' resend interval.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Least time between two updates of the outbox gauges (the oldest age is a query).
const OUTBOX_STATE_INTERVAL: Duration = Duration::from_secs(1);

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
    /// False once Kafka failed two sends in a row with no acknowledgement between them.
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

/// A send in flight: the row's sequence number and Kafka's answer.
type SendOutcome = (i64, Result<rebound_kafka::AckedRecord, rebound_kafka::KafkaError>);

/// Why the relay's loop over one window ended.
enum WindowEnd {
    /// Shutdown, or the flags can no longer be watched.
    Shutdown,
    /// `retry_pending_notes` changed: the window is read again from the start with the new rule.
    ResendsSwitched,
    /// The producer failed for good.
    FailedForGood(rebound_kafka::KafkaError),
}

/// What the relay keeps across windows: bookkeeping waiting to be written to the outbox, and
/// the backoff of resends.
struct Progress {
    /// Acknowledged notes not yet handed to the outbox for removal.
    acknowledged: Vec<i64>,
    /// Removals handed to the outbox's writer and not finished yet.
    removals: Vec<tokio::task::JoinHandle<()>>,
    /// Failed notes not yet recorded as failed in the outbox, and the last failure.
    failed: Vec<i64>,
    last_error: String,
    backoff: Duration,
    resend_not_before: Instant,
    /// Whether Kafka acknowledged a note since the last failure.
    acknowledged_since_failure: bool,
    outbox_state_published_at: Instant,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            acknowledged: Vec::new(),
            removals: Vec::new(),
            failed: Vec::new(),
            last_error: String::new(),
            backoff: INITIAL_BACKOFF,
            resend_not_before: now,
            acknowledged_since_failure: false,
            outbox_state_published_at: now,
        }
    }

    fn on_acknowledged(&mut self, status: &RelayStatus) {
        if !self.acknowledged_since_failure {
            self.acknowledged_since_failure = true;
            self.backoff = INITIAL_BACKOFF;
            status.set_broker_reachable(true);
        }
    }

    /// A note was not acknowledged: two failures with no acknowledgement between them mean the
    /// broker is away; the first failure after a pause schedules the next resend.
    fn on_failure(&mut self, status: &RelayStatus, error: String, retry_interval: Duration) {
        if !self.acknowledged_since_failure {
            status.set_broker_reachable(false);
        }
        self.acknowledged_since_failure = false;
        let now = Instant::now();
        if now >= self.resend_not_before {
            let pause = with_jitter(self.backoff);
            tracing::warn!(error = %error, retry_in_ms = pause.as_millis(), "notes not acknowledged; they stay in the outbox");
            self.resend_not_before = now + pause;
            self.backoff = (self.backoff * 2).min(retry_interval);
        }
        self.last_error = error;
    }
}

impl Relay {
    /// Runs until `shutdown`. Notes are read from the outbox into a sliding window and sent as
    /// soon as the one-version-per-note rule lets them; each acknowledgement frees its place
    /// for the next note, so the outbox is read while Kafka works. Returns an error only when
    /// the producer failed for good: every later send would fail too, so the service must stop
    /// and be restarted with a new producer (the notes stay in the outbox).
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), rebound_kafka::KafkaError> {
        let mut flags = *self.flags.borrow();
        if !flags.retry_pending_notes && self.outbox.pending_notes() > 0 {
            tracing::info!(
                pending = self.outbox.pending_notes(),
                "retry_pending_notes is off: pending notes are kept, not resent"
            );
        }
        let mut progress = Progress::new();
        loop {
            let end = self.run_window(&mut flags, &mut progress, &shutdown).await;
            // Every send of the window was answered (or is abandoned at shutdown, its note still
            // in the outbox): write down what is known before anything else.
            self.record_failures(&mut progress).await;
            self.remove_acknowledged(&mut progress, true);
            for removal in std::mem::take(&mut progress.removals) {
                let _ = removal.await;
            }
            match end {
                WindowEnd::Shutdown => return Ok(()),
                WindowEnd::FailedForGood(fatal) => return Err(fatal),
                WindowEnd::ResendsSwitched if shutdown.is_triggered() => return Ok(()),
                WindowEnd::ResendsSwitched => {}
            }
        }
    }

    /// One window, from an empty one to the end given; see `run`.
    async fn run_window(&mut self, flags: &mut ResendFlags, progress: &mut Progress, shutdown: &Shutdown) -> WindowEnd {
        let resends = flags.retry_pending_notes;
        // With resends allowed, every pending note is read, from the first. Held back, only the
        // notes this process accepted, each flagged when its note has a version pending from an
        // earlier run (then the note is held back whole).
        let (cursor, earlier_than) = if resends {
            (0, None)
        } else {
            (self.first_fresh_seq - 1, Some(self.first_fresh_seq))
        };
        let mut window = RelayWindow::starting_after(cursor);
        let mut sends: FuturesUnordered<BoxFuture<'static, SendOutcome>> = FuturesUnordered::new();
        // No row after the cursor when last read: read again only after an append.
        let mut caught_up = false;
        // The next row did not fit in the window's bytes: read again only after a note left.
        let mut waiting_for_room = false;
        // The rule changes: send nothing more, let the sends in flight finish, start again.
        let mut switching = false;
        loop {
            while let Some(Some(outcome)) = sends.next().now_or_never() {
                waiting_for_room = false;
                if let Some(fatal) = self.settle(outcome, &mut window, progress, flags) {
                    return WindowEnd::FailedForGood(fatal);
                }
            }
            if switching {
                if window.in_flight() == 0 {
                    return WindowEnd::ResendsSwitched;
                }
            } else {
                let has_room = window.len() < MAX_WINDOW && window.bytes() < self.window_bytes;
                if has_room && !caught_up && !waiting_for_room && !window.has_refused() {
                    let asked = READ_BATCH.min(MAX_WINDOW - window.len());
                    let read = self
                        .outbox
                        .read_after(
                            window.cursor(),
                            asked,
                            self.window_bytes - window.bytes(),
                            window.len() == 0,
                            earlier_than,
                        )
                        .await;
                    match read {
                        Ok((rows, cut_by_bytes)) => {
                            caught_up = !cut_by_bytes && rows.len() < asked;
                            waiting_for_room = cut_by_bytes && rows.is_empty();
                            for row in rows {
                                let held = !resends
                                    && (row.earlier_version_pending || is_resend(&row.entry, self.first_fresh_seq));
                                window.admit(row.entry, row.value_bytes, held);
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot read the outbox");
                            tokio::select! {
                                () = shutdown.wait() => return WindowEnd::Shutdown,
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    }
                }
                if !window.has_refused() {
                    self.dispatch(&mut window, &mut sends, progress, resends).await;
                }
                if window.has_refused() && window.in_flight() == 0 {
                    // Kafka refuses a whole batch for one record it cannot take: each refused
                    // note goes once more alone, with nothing else in flight.
                    tokio::select! {
                        () = self.settle_refused_notes(&mut window, progress, resends) => {}
                        () = shutdown.wait() => return WindowEnd::Shutdown,
                    }
                    continue;
                }
            }
            self.record_failures(progress).await;
            self.remove_acknowledged(progress, caught_up || window.in_flight() == 0);
            self.publish_outbox_state(progress).await;
            if shutdown.is_triggered() {
                return WindowEnd::Shutdown;
            }
            let can_read_more = !switching
                && !caught_up
                && !waiting_for_room
                && !window.has_refused()
                && window.len() < MAX_WINDOW
                && window.bytes() < self.window_bytes;
            if can_read_more {
                continue;
            }
            let resend_due = resends && window.has_failed() && !switching;
            tokio::select! {
                () = shutdown.wait() => return WindowEnd::Shutdown,
                Some(outcome) = sends.next(), if !sends.is_empty() => {
                    waiting_for_room = false;
                    if let Some(fatal) = self.settle(outcome, &mut window, progress, flags) {
                        return WindowEnd::FailedForGood(fatal);
                    }
                }
                () = self.outbox.appended(), if caught_up && !switching => caught_up = false,
                () = tokio::time::sleep_until(progress.resend_not_before), if resend_due => {}
                changed = self.flags.changed(), if !switching => {
                    if changed.is_err() {
                        return WindowEnd::Shutdown;
                    }
                    let new_flags = *self.flags.borrow_and_update();
                    if new_flags.retry_pending_notes != flags.retry_pending_notes {
                        if new_flags.retry_pending_notes {
                            tracing::info!("retry_pending_notes switched on: resending pending notes now");
                            progress.backoff = INITIAL_BACKOFF;
                            progress.resend_not_before = Instant::now();
                        }
                        switching = true;
                    }
                    *flags = new_flags;
                }
            }
        }
    }

    /// Sends what the window lets go now: notes whose earlier versions have left, and, once the
    /// backoff has passed, the failed notes (read again from the outbox: their values went into
    /// the records that failed).
    async fn dispatch(
        &self,
        window: &mut RelayWindow,
        sends: &mut FuturesUnordered<BoxFuture<'static, SendOutcome>>,
        progress: &mut Progress,
        resends: bool,
    ) {
        let ready = window.take_ready();
        let earlier_run = ready
            .iter()
            .filter(|entry| is_resend(entry, self.first_fresh_seq))
            .count();
        if earlier_run > 0 {
            events::producer_resend_attempted(earlier_run);
        }
        for entry in ready {
            sends.push(self.send_in_background(entry));
        }
        if !(resends && window.has_failed() && Instant::now() >= progress.resend_not_before) {
            return;
        }
        let failed = window.take_failed();
        events::producer_resend_attempted(failed.len());
        match self.outbox.pending_entries(failed.clone()).await {
            Ok(entries) => {
                let found: std::collections::HashSet<i64> = entries.iter().map(|entry| entry.seq).collect();
                for seq in failed.into_iter().filter(|seq| !found.contains(seq)) {
                    // No longer pending (removed by an earlier run's late delete): nothing to send.
                    window.completed(seq);
                }
                for entry in entries {
                    sends.push(self.send_in_background(entry));
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot read failed notes to resend them");
                for seq in failed {
                    window.failed(seq, true);
                }
                progress.resend_not_before = Instant::now() + with_jitter(progress.backoff);
            }
        }
    }

    /// Records Kafka's answer to one send in the window and the bookkeeping. Returns the
    /// producer's fatal error if it failed for good.
    fn settle(
        &self,
        (seq, result): SendOutcome,
        window: &mut RelayWindow,
        progress: &mut Progress,
        flags: &ResendFlags,
    ) -> Option<rebound_kafka::KafkaError> {
        match result {
            Ok(_) => {
                window.completed(seq);
                progress.acknowledged.push(seq);
                progress.on_acknowledged(&self.status);
            }
            Err(error) if error.is_refusal_of_the_record() => window.refused(seq),
            Err(error) => {
                window.failed(seq, flags.retry_pending_notes);
                progress.failed.push(seq);
                if let Some(fatal) = self.producer.fatal_error() {
                    events::producer_failed_for_good("producer", &fatal);
                    self.status.set_broker_reachable(false);
                    progress.last_error = error.to_string();
                    return Some(fatal);
                }
                progress.on_failure(&self.status, error.to_string(), flags.retry_interval());
            }
        }
        None
    }

    /// Hands the acknowledged notes to the outbox for removal, in the background, once there
    /// are a batch of them or `now`.
    fn remove_acknowledged(&self, progress: &mut Progress, now: bool) {
        progress.removals.retain(|removal| !removal.is_finished());
        if progress.acknowledged.is_empty() || (!now && progress.acknowledged.len() < REMOVE_BATCH) {
            return;
        }
        let seqs = std::mem::take(&mut progress.acknowledged);
        events::producer_notes_acknowledged(seqs.len());
        let outbox = self.outbox.clone();
        // The outbox's one writer applies removals in the order they are handed over.
        progress.removals.push(tokio::spawn(async move {
            if let Err(error) = outbox.remove(seqs).await {
                tracing::error!(%error, "cannot remove acknowledged notes; they will be sent again");
            }
        }));
    }

    /// Counts the failed sends in the outbox (attempts and last error).
    async fn record_failures(&self, progress: &mut Progress) {
        if progress.failed.is_empty() {
            return;
        }
        let failed = std::mem::take(&mut progress.failed);
        if let Err(error) = self.outbox.mark_failed(failed, progress.last_error.clone()).await {
            tracing::error!(%error, "cannot record failed sends");
        }
    }

    async fn publish_outbox_state(&self, progress: &mut Progress) {
        if progress.outbox_state_published_at.elapsed() < OUTBOX_STATE_INTERVAL {
            return;
        }
        progress.outbox_state_published_at = Instant::now();
        events::producer_outbox_state(self.outbox.pending_notes(), oldest_age_seconds(&self.outbox).await);
    }

    /// The record of one note and the span of its send. The note's value moves into the record
    /// rather than being copied: the window is held once here (and once in librdkafka), not twice.
    fn record_of(&self, entry: OutboxEntry) -> (OutgoingRecord, tracing::Span) {
        // The send continues the trace begun when the note was accepted, and the record
        // carries it on to the consumer.
        let span = rebound_service::trace_context::record_span(
            || tracing::info_span!("producer.publish", messaging.destination = %self.topic, note_id = %entry.note_id, version = entry.version),
        );
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
        (record, span)
    }

    /// Sends one note; the future resolves once Kafka acknowledged or refused it.
    fn send_in_background(&self, entry: OutboxEntry) -> BoxFuture<'static, SendOutcome> {
        let seq = entry.seq;
        let (record, span) = self.record_of(entry);
        let producer = self.producer.clone();
        // Enqueued now, so the record's copy goes at once and only its acknowledgement waits;
        // with librdkafka's queue full, `send` waits for room instead.
        match span.in_scope(|| producer.enqueue(&record)) {
            Ok(Some(ack)) => Box::pin(async move { (seq, producer.acknowledgement(ack).instrument(span).await) }),
            Ok(None) => Box::pin(async move { (seq, producer.send(&record).instrument(span).await) }),
            Err(error) => Box::pin(std::future::ready((seq, Err(error)))),
        }
    }

    /// Sends one note and waits for Kafka's answer.
    async fn send_note(&self, entry: OutboxEntry) -> Result<rebound_kafka::AckedRecord, rebound_kafka::KafkaError> {
        let (record, span) = self.record_of(entry);
        self.producer.send(&record).instrument(span).await
    }

    /// Decides the fate of notes Kafka refused for what they are, with nothing else in flight.
    /// Kafka refuses a whole batch for one such record, so each is sent once more alone; refused
    /// alone, it can never be sent and moves to the rejected table, which lets its later versions
    /// go.
    async fn settle_refused_notes(&self, window: &mut RelayWindow, progress: &mut Progress, resends: bool) {
        while let Some(seq) = window.take_refused() {
            // Read again rather than kept: the value went into the refused record.
            let entry = match self.outbox.pending_entry(seq).await {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    window.completed(seq);
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, seq, "cannot read a refused note; it is sent again later");
                    window.failed(seq, resends);
                    progress.failed.push(seq);
                    progress.last_error = error.to_string();
                    continue;
                }
            };
            let (note_id, version) = (entry.note_id.clone(), entry.version);
            let refusal = match self.send_note(entry).await {
                Ok(_) => {
                    window.completed(seq);
                    progress.acknowledged.push(seq);
                    continue;
                }
                Err(error) if error.is_refusal_of_the_record() => error.to_string(),
                Err(error) => {
                    window.failed(seq, resends);
                    progress.failed.push(seq);
                    progress.last_error = error.to_string();
                    continue;
                }
            };
            match self
                .outbox
                .reject(seq, refusal.clone(), rebound_service::now_epoch_ms())
                .await
            {
                Ok(moved) => {
                    if moved {
                        events::producer_note_rejected(&note_id, version, &refusal);
                    }
                    window.completed(seq);
                }
                // Still pending: it is refused again after the backoff and moved then.
                Err(error) => {
                    tracing::error!(%error, note_id = %note_id, "cannot move a refused note to the rejected table");
                    window.failed(seq, resends);
                    progress.failed.push(seq);
                    progress.last_error = error.to_string();
                }
            }
        }
    }
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
