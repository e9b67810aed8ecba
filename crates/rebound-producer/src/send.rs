//! `rebound-producer send`: NDJSON notes from a file or stdin, accepted all or nothing into the
//! durable outbox and relayed to Kafka; done once Kafka acknowledged every one of them (and any
//! left pending by earlier runs), or failed with a count when `--timeout` passes.
//!
//! The input is streamed, never held whole: a first pass checks every line and writes the
//! encoded notes to a spool file (unlinked, in the outbox's folder or the temporary folder),
//! and a second pass reads them back one by one into the outbox or straight to Kafka. Memory
//! stays bounded whatever the input's size, and a bad line still refuses the whole input.

use std::io::{BufRead as _, Seek as _};
use std::path::Path;
use std::time::Duration;

use rebound_kafka::{KafkaArgs, RecordProducer};
use rebound_registry::NoteEncoder;
use rebound_service::{OutputFormat, Shutdown, events, now_epoch_ms};

use crate::config::{NdjsonInput, OutboxConfig, SendConfig};
use crate::generate::{DirectRecord, publish_directly};
use crate::outbox::{NewEntry, Outbox, QueuedAppend};
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
    let spool_dir = config.outbox.as_ref().map(|outbox| outbox.dir.clone());
    // Created first: the idempotent producer needs a connection and a producer id before its
    // first record goes out (librdkafka asks again only every 500 ms while the connection is
    // not up), and that wait overlaps the pass over the input instead of following it.
    let producer = crate::create_producer(kafka, config.delivery.send_timeout)?;
    let notes = tokio::task::spawn_blocking(move || spool_ndjson_notes(&input, record_limit, spool_dir.as_deref()))
        .await
        .map_err(|error| ProducerError::ReadInput {
            input: config.input.to_string(),
            reason: error.to_string(),
        })??;
    let notes_in_input = notes.count;
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

/// The notes of the input, every one checked, encoded into a spool file to be read back once.
struct SpooledNotes {
    /// The spool file, unlinked: it goes away with the process, whatever happens.
    file: std::fs::File,
    /// How many notes it holds.
    count: usize,
}

/// Chunks of 1,000 notes queued to the outbox's writer at once; the writer commits what is
/// queued in one transaction, so a few in the queue keep it busy without waiting on the reader.
const APPENDS_IN_FLIGHT: usize = 4;

/// Bytes buffered when reading the input and the spool.
const SPOOL_BUFFER: usize = 1 << 16;

/// Reads NDJSON notes and encodes each once into a spool file; all or nothing, with the line
/// number of the first bad line or of the first note too large for Kafka. The spool goes in
/// `spool_dir` (the outbox's folder) when given, else in the temporary folder.
fn spool_ndjson_notes(
    input: &NdjsonInput,
    record_limit: RecordSizeLimit,
    spool_dir: Option<&Path>,
) -> Result<SpooledNotes, ProducerError> {
    let read_failed = |error: std::io::Error| ProducerError::ReadInput {
        input: input.to_string(),
        reason: error.to_string(),
    };
    let spool_failed = |error: std::io::Error| ProducerError::ReadInput {
        input: input.to_string(),
        reason: format!("cannot write the spool file of checked notes: {error}"),
    };
    let mut reader: Box<dyn std::io::BufRead> = match input {
        NdjsonInput::Stdin => Box::new(std::io::BufReader::with_capacity(SPOOL_BUFFER, std::io::stdin())),
        NdjsonInput::File(path) => Box::new(std::io::BufReader::with_capacity(
            SPOOL_BUFFER,
            std::fs::File::open(path).map_err(read_failed)?,
        )),
    };
    let spool = match spool_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(spool_failed)?;
            tempfile::tempfile_in(dir)
        }
        None => tempfile::tempfile(),
    }
    .map_err(spool_failed)?;
    let mut writer = std::io::BufWriter::with_capacity(SPOOL_BUFFER, spool);
    let mut line = String::new();
    let mut line_number = 0;
    let mut count = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(read_failed)? == 0 {
            break;
        }
        line_number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let note_json::CheckedNote { note, value } =
            note_json::parse_note_line(&line).map_err(|problem| ProducerError::ParseInput {
                line: line_number,
                reason: problem.message().to_owned(),
            })?;
        if let Err(too_large) = record_limit.check(&note.note_id, value.len()) {
            return Err(ProducerError::AcceptInput {
                line: line_number,
                note_id: note.note_id,
                version: note.version,
                reason: format!("too large for Kafka: {too_large}"),
            });
        }
        write_spooled(&mut writer, &note.note_id, note.version, &value).map_err(spool_failed)?;
        count += 1;
    }
    let mut file = writer.into_inner().map_err(|error| spool_failed(error.into_error()))?;
    file.rewind().map_err(spool_failed)?;
    Ok(SpooledNotes { file, count })
}

/// One spooled note: the id's length and bytes, the version, the value's length and bytes.
fn write_spooled(writer: &mut impl std::io::Write, note_id: &str, version: i64, value: &[u8]) -> std::io::Result<()> {
    let length = |bytes: usize| u32::try_from(bytes).map_err(|_| std::io::Error::other("note larger than 4 GiB"));
    writer.write_all(&length(note_id.len())?.to_le_bytes())?;
    writer.write_all(note_id.as_bytes())?;
    writer.write_all(&version.to_le_bytes())?;
    writer.write_all(&length(value.len())?.to_le_bytes())?;
    writer.write_all(value)
}

impl SpooledNotes {
    /// The notes, read back one at a time in input order.
    fn into_records(self) -> impl Iterator<Item = Result<DirectRecord, ProducerError>> + Send {
        let mut reader = std::io::BufReader::with_capacity(SPOOL_BUFFER, self.file);
        (0..self.count).map(move |_| {
            read_spooled(&mut reader).map_err(|error| ProducerError::ReadInput {
                input: "the spool file of checked notes".to_owned(),
                reason: error.to_string(),
            })
        })
    }
}

fn read_spooled(reader: &mut impl std::io::Read) -> std::io::Result<DirectRecord> {
    let mut length = [0_u8; 4];
    let mut version = [0_u8; 8];
    reader.read_exact(&mut length)?;
    let mut note_id = vec![0; u32::from_le_bytes(length) as usize];
    reader.read_exact(&mut note_id)?;
    reader.read_exact(&mut version)?;
    reader.read_exact(&mut length)?;
    let mut value = vec![0; u32::from_le_bytes(length) as usize];
    reader.read_exact(&mut value)?;
    Ok(DirectRecord {
        note_id: String::from_utf8(note_id).map_err(std::io::Error::other)?,
        version: i64::from_le_bytes(version),
        value,
    })
}

/// Commits the notes to the outbox while the relay already sends the committed ones, until
/// Kafka acknowledged them and every note left pending by earlier runs, `timeout` passes, or
/// `shutdown` triggers.
async fn send_through_outbox(
    producer: RecordProducer,
    topic: String,
    encoder: NoteEncoder,
    config: &OutboxConfig,
    notes: SpooledNotes,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<usize, ProducerError> {
    let flush_producer = producer.clone();
    let (outbox, relay, _status) = start_outbox(producer, topic, encoder, config).await?;
    // Notes left pending by an earlier run are part of what this run delivers, so that
    // `send` of an empty input is the way to flush a leftover outbox.
    let mut last_seq = relay.first_fresh_seq - 1;
    let earlier_pending = outbox.pending_up_to(last_seq).await?;
    let run_started_at_ms = now_epoch_ms();
    let note_count = notes.count;
    // The relay sends each chunk as soon as it is committed, while the next one is read.
    let relay_shutdown = Shutdown::new();
    let relay_task = tokio::spawn(relay.run(relay_shutdown.clone()));
    let appended = append_spooled_notes(&outbox, notes, config.max_bytes, last_seq).await;
    last_seq = match appended {
        Ok(seq) => seq,
        Err(error) => {
            relay_shutdown.trigger();
            let _ = relay_task.await;
            return Err(error);
        }
    };
    tracing::info!(notes = note_count, "notes accepted into the outbox");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut unsent = outbox.pending_up_to(last_seq).await?;
    let to_deliver = earlier_pending + note_count as u64;
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

/// Appends the spooled notes to the outbox in chunks of 1,000, up to `APPENDS_IN_FLIGHT` chunks
/// queued at once, and returns the last seq appended. The notes accepted are always a prefix of
/// the input: a chunk that might not fit the outbox's budget beside the queued ones is queued
/// only once they are committed, so a chunk refused for want of room never has a later chunk
/// committed behind it.
async fn append_spooled_notes(
    outbox: &Outbox,
    notes: SpooledNotes,
    budget_bytes: u64,
    mut last_seq: i64,
) -> Result<i64, ProducerError> {
    let mut records = notes.into_records().peekable();
    let mut queued = QueuedChunks::default();
    loop {
        if queued.chunks.len() >= APPENDS_IN_FLIGHT || records.peek().is_none() {
            match queued.commit_oldest().await? {
                Some(seq) => last_seq = seq.unwrap_or(last_seq),
                None => return Ok(last_seq),
            }
            continue;
        }
        let chunk = records.by_ref().take(1000).collect::<Result<Vec<DirectRecord>, _>>()?;
        let entries: Vec<NewEntry> = chunk
            .into_iter()
            .map(|note| {
                let span = rebound_service::trace_context::record_span(
                    || tracing::info_span!("producer.accept", note_id = %note.note_id, version = note.version),
                );
                NewEntry {
                    note_id: note.note_id,
                    version: note.version,
                    value: note.value,
                    traceparent: rebound_service::trace_context::traceparent_of(&span),
                }
            })
            .collect();
        let bytes: u64 = entries.iter().map(|entry| entry.value.len() as u64).sum();
        while !queued.chunks.is_empty()
            && outbox
                .pending_bytes()
                .saturating_add(queued.bytes)
                .saturating_add(bytes)
                > budget_bytes
        {
            if let Some(Some(seq)) = queued.commit_oldest().await? {
                last_seq = seq;
            }
        }
        let accepted = entries.len();
        let append = outbox.queue_append(entries, now_epoch_ms()).await?;
        queued.bytes += bytes;
        queued.chunks.push_back((append, accepted, bytes));
    }
}

/// Appends queued to the outbox's writer and not yet committed, oldest first, with their notes'
/// count and bytes.
#[derive(Default)]
struct QueuedChunks {
    chunks: std::collections::VecDeque<(QueuedAppend, usize, u64)>,
    bytes: u64,
}

impl QueuedChunks {
    /// Waits for the oldest queued append to commit: `None` when none is queued, else the last
    /// seq it appended (if it held any note).
    async fn commit_oldest(&mut self) -> Result<Option<Option<i64>>, ProducerError> {
        let Some((append, accepted, bytes)) = self.chunks.pop_front() else {
            return Ok(None);
        };
        let seqs = append.committed().await?;
        self.bytes -= bytes;
        events::producer_notes_accepted(accepted);
        Ok(Some(seqs.last().copied()))
    }
}

/// `send --no-outbox`: encodes and publishes the notes directly, as `generate` does, so the
/// benchmark can compare the outbox path with the same notes sent without it.
async fn send_without_outbox(
    producer: &RecordProducer,
    topic: &str,
    encoder: NoteEncoder,
    notes: SpooledNotes,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<usize, ProducerError> {
    let total = notes.count as u64;
    let records = notes.into_records();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_notes_read_back_in_input_order_as_they_were_encoded() {
        let directory = tempfile::tempdir().expect("tempdir");
        let input = directory.path().join("notes.ndjson");
        let lines = [
            r#"{"note_id":"a","user_id":"u","device_id":"d","version":1,"title":"t","body":"b","tags":[],"updated_at":"2026-11-28T09:00:00Z"}"#,
            "",
            r#"{"note_id":"b","user_id":"u","device_id":"d","version":7,"title":"é","body":"ünïcode","tags":["x"],"updated_at":"2026-11-28T09:00:00Z"}"#,
        ];
        std::fs::write(&input, lines.join("\n")).expect("writes");
        let spooled = spool_ndjson_notes(
            &NdjsonInput::File(input),
            RecordSizeLimit::from_message_max_bytes(None).expect("default limit"),
            Some(directory.path()),
        )
        .expect("spools");
        assert_eq!(spooled.count, 2);
        let records: Vec<DirectRecord> = spooled.into_records().collect::<Result<_, _>>().expect("reads back");
        let codec = rebound_schema::NoteCodec::embedded();
        let decoded: Vec<(String, i64, String)> = records
            .iter()
            .map(|record| {
                let note = codec.decode(&record.value).expect("decodes");
                assert_eq!(
                    (note.note_id.as_str(), note.version),
                    (record.note_id.as_str(), record.version)
                );
                (note.note_id, note.version, note.body)
            })
            .collect();
        assert_eq!(
            decoded,
            vec![
                ("a".to_owned(), 1, "b".to_owned()),
                ("b".to_owned(), 7, "ünïcode".to_owned())
            ]
        );
    }
}
