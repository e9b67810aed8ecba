//! `rebound-producer generate`: synthetic notes published straight to Kafka, without the
//! outbox, for demos and benchmarks; and the direct publishing it shares with
//! `send --no-outbox`.

use std::io::Write as _;
use std::time::Duration;

use rebound_kafka::{KafkaArgs, OutgoingRecord, ProducerSettings, RecordProducer};
use rebound_registry::NoteEncoder;
use rebound_retry::RecordHeaders;
use rebound_schema::NoteCodec;
use rebound_service::{Shutdown, now_epoch_ms};

use crate::ProducerError;
use crate::config::GenerateConfig;
use crate::generator::NoteGenerator;

/// How many sends direct publishing keeps in flight.
const DIRECT_IN_FLIGHT: usize = 8192;
/// How many bytes of values direct publishing keeps in flight (each is held twice until it is
/// acknowledged: in its send and in librdkafka's queue), so that large notes stay within the
/// memory small ones take.
const DIRECT_IN_FLIGHT_BYTES: usize = 8 << 20;
/// How long to wait when librdkafka's queue is full and none of our records is in it.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// A note published without the outbox: id, version, encoded value.
pub(crate) struct DirectRecord {
    pub(crate) note_id: String,
    pub(crate) version: i64,
    pub(crate) value: Vec<u8>,
}

/// Publishes `config.count` generated note versions, appending each acknowledged one to the ids
/// log if there is one, until done or `shutdown` (the sends in flight still finish).
pub(crate) async fn run(
    kafka: &KafkaArgs,
    topic: &str,
    config: &GenerateConfig,
    encoder: NoteEncoder,
    shutdown: &Shutdown,
) -> Result<(), ProducerError> {
    // `generate` has no --send-timeout: librdkafka gets the shared default.
    let producer = crate::create_producer(kafka, ProducerSettings::default().message_timeout)?;
    let ids_log_path = config
        .ids_log
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let write_failed = |error: std::io::Error| ProducerError::WriteIdsLog {
        path: ids_log_path.clone(),
        reason: error.to_string(),
    };
    let mut ids_log = match &config.ids_log {
        None => None,
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(write_failed)?,
        )),
    };
    let run_id = config
        .run_id
        .clone()
        .unwrap_or_else(|| format!("n{}-{}", config.seed, now_epoch_ms()));
    let mut generator = NoteGenerator::new(config.seed, config.distinct_notes, &run_id, now_epoch_ms());
    let codec = NoteCodec::embedded();
    // Notes are made and encoded as they are sent: memory holds the window in flight only.
    let records = (0..config.count).map(move |_| {
        let note = generator.next_note();
        let value = codec.encode(&note)?;
        Ok(DirectRecord {
            note_id: note.note_id,
            version: note.version,
            value,
        })
    });
    let acknowledged = publish_directly(
        &producer,
        topic,
        encoder,
        records,
        config.rate,
        shutdown,
        |note_id, version| match ids_log.as_mut() {
            Some(log) => writeln!(log, "{note_id}\t{version}").map_err(write_failed),
            None => Ok(()),
        },
    )
    .await?;
    if let Some(mut log) = ids_log {
        log.flush().map_err(write_failed)?;
    }
    tracing::info!(acknowledged, topic, "generate finished");
    Ok(())
}

/// Publishes records straight to Kafka, up to `DIRECT_IN_FLIGHT` at once (and
/// `DIRECT_IN_FLIGHT_BYTES` of values), optionally paced to
/// `rate` per second, and reports each acknowledgement in input order: with the idempotent
/// producer that keeps every note's versions in the order they were made. Stops taking new
/// records once `shutdown` triggers, and still waits for those in flight. Returns how many
/// records Kafka acknowledged.
///
/// Each record is copied into librdkafka's queue and dropped here at once; what stays in flight
/// is its acknowledgement, awaited oldest first. That is one small future per record rather
/// than one polled future holding the record until the broker answers, which is where the
/// publishing thread spent most of its time.
pub(crate) async fn publish_directly(
    producer: &RecordProducer,
    topic: &str,
    encoder: NoteEncoder,
    records: impl Iterator<Item = Result<DirectRecord, ProducerError>> + Send,
    rate: u64,
    shutdown: &Shutdown,
    mut on_acknowledged: impl FnMut(&str, i64) -> Result<(), ProducerError>,
) -> Result<u64, ProducerError> {
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let started = tokio::time::Instant::now();
    let mut pending = records.enumerate();
    let mut in_flight = std::collections::VecDeque::new();
    let mut in_flight_bytes = 0_usize;
    // A record librdkafka's full queue refused, enqueued again after the next acknowledgement.
    let mut refused: Option<(OutgoingRecord, i64)> = None;
    let mut acknowledged = 0_u64;
    let kafka_failed = |source| ProducerError::Kafka {
        operation: "publish note",
        source,
    };
    loop {
        while in_flight.len() < DIRECT_IN_FLIGHT
            && (in_flight.is_empty() || in_flight_bytes < DIRECT_IN_FLIGHT_BYTES)
            && !shutdown.is_triggered()
        {
            let (outgoing, version) = match refused.take() {
                Some(record) => record,
                None => {
                    let Some((index, record)) = pending.next() else {
                        break;
                    };
                    let record = record?;
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(started + interval * u32::try_from(index).unwrap_or(u32::MAX)).await;
                    }
                    let outgoing = OutgoingRecord {
                        topic: topic.to_owned(),
                        partition: None,
                        key: Some(record.note_id.into_bytes()),
                        value: Some(encoder.frame_outbox_value(record.value)),
                        headers: RecordHeaders::new(),
                    };
                    (outgoing, record.version)
                }
            };
            match producer.enqueue(&outgoing).map_err(kafka_failed)? {
                Some(ack) => {
                    let size = outgoing.value.as_ref().map_or(0, Vec::len);
                    in_flight_bytes += size;
                    in_flight.push_back((ack, outgoing.key.unwrap_or_default(), version, size));
                }
                None if in_flight.is_empty() => {
                    // Full with other records than ours (a shared producer): wait for room.
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    refused = Some((outgoing, version));
                }
                None => {
                    refused = Some((outgoing, version));
                    break;
                }
            }
        }
        let Some((ack, key, version, size)) = in_flight.pop_front() else {
            if refused.is_some() && !shutdown.is_triggered() {
                continue;
            }
            break;
        };
        producer.acknowledgement(ack).await.map_err(kafka_failed)?;
        in_flight_bytes -= size;
        acknowledged += 1;
        on_acknowledged(&String::from_utf8_lossy(&key), version)?;
    }
    Ok(acknowledged)
}
