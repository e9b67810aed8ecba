//! `rebound-producer send`: NDJSON notes from a file or stdin, accepted all or nothing into the
//! durable outbox and relayed to Kafka; done once Kafka acknowledged every one of them (and any
//! left pending by earlier runs), or failed with a count when `--timeout` passes.

use std::io::BufRead as _;
use std::time::Duration;

use rebound_kafka::{KafkaArgs, RecordProducer};
use rebound_registry::NoteEncoder;
use rebound_schema::NoteCodec;
use rebound_service::{OutputFormat, Shutdown, events, now_epoch_ms};

use crate::config::{NdjsonInput, OutboxConfig, SendConfig};
use crate::generate::{DirectRecord, publish_directly};
use crate::outbox::NewEntry;
use crate::record_limit::RecordSizeLimit;
use crate::relay::{relay_failed_for_good, start_outbox};
use crate::{ProducerError, note_json};

/// Reads every note of the input, then delivers them through the outbox (or, with
/// `--no-outbox`, straight to Kafka).
pub(crate) async fn run(
    kafka: &KafkaArgs,
    topic: String,
    config: SendConfig,
    encoder: NoteEncoder,
    shutdown: Shutdown,
) -> Result<(), ProducerError> {
    let input = config.input.clone();
    let record_limit = config.delivery.record_limit;
    let notes = tokio::task::spawn_blocking(move || read_ndjson_notes(&input, record_limit))
        .await
        .map_err(|error| ProducerError::ReadInput {
            input: config.input.to_string(),
            reason: error.to_string(),
        })??;
    let producer = crate::create_producer(kafka, config.delivery.send_timeout)?;
    let notes_in_input = notes.len();
    let acknowledged = match &config.outbox {
        None => send_without_outbox(&producer, &topic, encoder, notes, config.timeout, &shutdown).await?,
        Some(outbox) => {
            send_through_outbox(
                producer,
                topic.clone(),
                encoder,
                outbox,
                notes,
                config.timeout,
                &shutdown,
            )
            .await?
        }
    };
    let report = SendReport {
        notes: notes_in_input,
        acknowledged,
        earlier_pending: acknowledged.saturating_sub(notes_in_input),
        outbox: config.outbox.is_some(),
        topic,
    };
    // The command's result, on stdout; the log lines stay on stderr.
    match config.output {
        OutputFormat::Text => println!("{}", report.render_text()),
        OutputFormat::Json => println!("{}", serde_json::json!(report)),
    }
    Ok(())
}

/// What `send` delivered; its `--output json` form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SendReport {
    /// Notes read from the input.
    pub notes: usize,
    /// Notes Kafka acknowledged in this run: the input's and those left pending by earlier runs.
    pub acknowledged: usize,
    /// Of those, notes an earlier run had left in the outbox.
    pub earlier_pending: usize,
    /// Whether the notes went through the durable outbox (false with `--no-outbox`).
    pub outbox: bool,
    /// The topic they were sent to.
    pub topic: String,
}

impl SendReport {
    /// One line for people.
    pub fn render_text(&self) -> String {
        let earlier = if self.earlier_pending > 0 {
            format!(", {} of them left pending by an earlier run", self.earlier_pending)
        } else {
            String::new()
        };
        format!(
            "sent {} notes to {}: {} acknowledged by Kafka{earlier}",
            self.notes, self.topic, self.acknowledged
        )
    }
}

/// Reads NDJSON notes and encodes each once; all or nothing, with the line number of the first
/// bad line or of the first note too large for Kafka.
fn read_ndjson_notes(input: &NdjsonInput, record_limit: RecordSizeLimit) -> Result<Vec<DirectRecord>, ProducerError> {
    let read_failed = |error: std::io::Error| ProducerError::ReadInput {
        input: input.to_string(),
        reason: error.to_string(),
    };
    let reader: Box<dyn std::io::BufRead> = match input {
        NdjsonInput::Stdin => Box::new(std::io::BufReader::new(std::io::stdin())),
        NdjsonInput::File(path) => Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(read_failed)?)),
    };
    let codec = NoteCodec::embedded();
    let mut notes = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(read_failed)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|error| format!("not valid JSON: {error}"))
            .and_then(|value| note_json::note_from_json(&value).map_err(|problem| problem.message().to_owned()));
        let note = parsed.map_err(|reason| ProducerError::ParseInput {
            line: index + 1,
            reason,
        })?;
        let value = codec.encode(&note)?;
        if let Err(too_large) = record_limit.check(&note.note_id, value.len()) {
            return Err(ProducerError::AcceptInput {
                line: index + 1,
                note_id: note.note_id,
                version: note.version,
                reason: format!("too large for Kafka: {too_large}"),
            });
        }
        notes.push(DirectRecord {
            note_id: note.note_id,
            version: note.version,
            value,
        });
    }
    Ok(notes)
}

/// Commits the notes to the outbox, then runs the relay until Kafka acknowledged them and every
/// note left pending by earlier runs, `timeout` passes, or `shutdown` triggers.
async fn send_through_outbox(
    producer: RecordProducer,
    topic: String,
    encoder: NoteEncoder,
    config: &OutboxConfig,
    notes: Vec<DirectRecord>,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<usize, ProducerError> {
    let flush_producer = producer.clone();
    let (outbox, relay, _status) = start_outbox(producer, topic, encoder, config).await?;
    // Notes left pending by an earlier run are part of what this run delivers, so that
    // `send` of an empty input is the way to flush a leftover outbox.
    let mut last_seq = relay.first_fresh_seq - 1;
    let run_started_at_ms = now_epoch_ms();
    let note_count = notes.len();
    let mut notes = notes.into_iter().peekable();
    while notes.peek().is_some() {
        let chunk: Vec<DirectRecord> = notes.by_ref().take(1000).collect();
        let mut entries = Vec::with_capacity(chunk.len());
        for note in chunk {
            let span = tracing::info_span!("producer.accept", note_id = %note.note_id, version = note.version);
            entries.push(NewEntry {
                note_id: note.note_id,
                version: note.version,
                value: note.value,
                traceparent: rebound_service::trace_context::traceparent_of(&span),
            });
        }
        let accepted = entries.len();
        let seqs = outbox.append(entries, now_epoch_ms()).await?;
        last_seq = seqs.last().copied().unwrap_or(last_seq);
        events::producer_notes_accepted(accepted);
    }
    tracing::info!(notes = note_count, "notes accepted into the outbox; sending");
    let relay_shutdown = Shutdown::new();
    let relay_task = tokio::spawn(relay.run(relay_shutdown.clone()));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut unsent = outbox.pending_up_to(last_seq).await?;
    let to_deliver = unsent;
    while unsent > 0 && tokio::time::Instant::now() < deadline && !shutdown.is_triggered() {
        tokio::select! {
            () = shutdown.wait() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        unsent = outbox.pending_up_to(last_seq).await?;
    }
    relay_shutdown.trigger();
    relay_failed_for_good(relay_task.await)?;
    let _ = flush_producer.flush(Duration::from_secs(5)).await;
    if unsent > 0 {
        return Err(ProducerError::SendNotes {
            unsent,
            timeout_seconds: timeout.as_secs(),
            outbox: config.dir.display().to_string(),
        });
    }
    // A note Kafka refused for good left the pending notes without being delivered.
    let rejected = outbox.rejected_since(run_started_at_ms).await?;
    if rejected > 0 {
        return Err(ProducerError::DeliverNotes {
            rejected,
            outbox: config.dir.display().to_string(),
        });
    }
    tracing::info!(notes = note_count, "every note acknowledged by kafka");
    Ok(usize::try_from(to_deliver).unwrap_or(usize::MAX))
}

/// `send --no-outbox`: encodes and publishes the notes directly, as `generate` does, so the
/// benchmark can compare the outbox path with the same notes sent without it.
async fn send_without_outbox(
    producer: &RecordProducer,
    topic: &str,
    encoder: NoteEncoder,
    notes: Vec<DirectRecord>,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<usize, ProducerError> {
    let total = notes.len() as u64;
    let records = notes.into_iter().map(Ok);
    let mut acknowledged = 0_u64;
    let sent = tokio::time::timeout(
        timeout,
        publish_directly(producer, topic, encoder, records, 0, shutdown, |_, _| {
            acknowledged += 1;
            Ok(())
        }),
    )
    .await;
    match sent {
        Ok(result) => {
            result?;
        }
        Err(_) => {
            return Err(ProducerError::SendNotes {
                unsent: total - acknowledged,
                timeout_seconds: timeout.as_secs(),
                outbox: "(none: --no-outbox)".to_owned(),
            });
        }
    }
    tracing::info!(notes = acknowledged, "every note acknowledged by kafka (no outbox)");
    Ok(usize::try_from(acknowledged).unwrap_or(usize::MAX))
}
