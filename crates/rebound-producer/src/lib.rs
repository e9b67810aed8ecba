//! rebound's producer service: where client note changes enter the pipeline. This version
//! offers the `generate` mode, which publishes synthetic notes (single-object Avro, keyed by
//! note id) with an idempotent `acks=all` producer and can log every acknowledged version for
//! later accounting with `rebound audit`.

mod generator;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
pub use generator::NoteGenerator;
use rebound_kafka::{OutgoingRecord, ProducerSettings, RecordProducer};
use rebound_retry::{RecordHeaders, apply_topic_prefix};
use rebound_schema::NoteCodec;
use rebound_service::{CommonArgs, Shutdown, now_epoch_ms};

/// Everything that can stop the producer.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// A flag has an invalid value.
    #[error("invalid {flag}: {reason}")]
    InvalidFlag {
        /// The flag.
        flag: String,
        /// What is wrong.
        reason: String,
    },
    /// The ids log could not be written.
    #[error("failed to write ids log {path}: {reason}")]
    WriteIdsLog {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A note could not be encoded.
    #[error("failed to encode note: {0}")]
    EncodeNote(#[from] rebound_schema::SchemaError),
    /// A Kafka operation failed.
    #[error("failed to {operation}: {source}")]
    Kafka {
        /// What was being done.
        operation: &'static str,
        /// The Kafka error.
        #[source]
        source: rebound_kafka::KafkaError,
    },
}

/// Flags of `rebound-producer`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rebound-producer",
    version,
    about = "Publishes client note changes to Kafka."
)]
pub struct ProducerArgs {
    /// Kafka connection and logging.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Topic notes are published to.
    #[arg(long, env = "REBOUND_TOPIC", default_value = "notes", global = true)]
    pub topic: String,

    /// Prefix applied to the topic name.
    #[arg(long, env = "REBOUND_TOPIC_PREFIX", default_value = "", global = true)]
    pub topic_prefix: String,

    /// The mode to run.
    #[command(subcommand)]
    pub mode: ProducerMode,
}

/// Producer modes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProducerMode {
    /// Publish synthetic, realistic note changes.
    Generate(GenerateArgs),
}

/// Flags of `rebound-producer generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// How many note versions to publish.
    #[arg(long, env = "REBOUND_GENERATE_COUNT", default_value_t = 1000)]
    pub count: u64,

    /// Distinct notes the versions are spread over (default: a quarter of the count).
    #[arg(long, env = "REBOUND_GENERATE_NOTES")]
    pub notes: Option<usize>,

    /// Notes per second (0: as fast as the broker takes them).
    #[arg(long, env = "REBOUND_GENERATE_RATE", default_value_t = 0)]
    pub rate: u64,

    /// Random seed, so a run can be repeated.
    #[arg(long, env = "REBOUND_GENERATE_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Prefix of generated note ids (default: derived from the seed and the clock).
    #[arg(long, env = "REBOUND_GENERATE_RUN_ID")]
    pub run_id: Option<String>,

    /// Append `NOTE_ID<TAB>VERSION` of every acknowledged note to this file.
    #[arg(long, env = "REBOUND_IDS_LOG")]
    pub ids_log: Option<PathBuf>,
}

/// How many sends `generate` keeps in flight.
const GENERATE_IN_FLIGHT: usize = 2048;

/// Runs the chosen mode until it is done or `shutdown` triggers.
pub async fn run(args: ProducerArgs, shutdown: Shutdown) -> Result<u64, ProducerError> {
    let topic = apply_topic_prefix(&args.topic_prefix, &args.topic);
    let producer = RecordProducer::new(&args.common.kafka, &ProducerSettings::default()).map_err(|source| {
        ProducerError::Kafka {
            operation: "create producer",
            source,
        }
    })?;
    match args.mode {
        ProducerMode::Generate(generate) => run_generate(&producer, &topic, &generate, &shutdown).await,
    }
}

async fn run_generate(
    producer: &RecordProducer,
    topic: &str,
    args: &GenerateArgs,
    shutdown: &Shutdown,
) -> Result<u64, ProducerError> {
    let distinct = args
        .notes
        .unwrap_or_else(|| usize::try_from(args.count / 4).unwrap_or(usize::MAX).max(1));
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("n{}-{}", args.seed, now_epoch_ms()));
    let mut generator = NoteGenerator::new(args.seed, distinct, &run_id, now_epoch_ms());
    let codec = NoteCodec::embedded();
    let mut ids_log = match &args.ids_log {
        None => None,
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| ProducerError::WriteIdsLog {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?,
        )),
    };
    let mut records = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0).min(1 << 20));
    for _ in 0..args.count {
        let note = generator.next_note();
        let value = codec.encode(&note)?;
        records.push((note.note_id, note.version, value));
    }
    let started = tokio::time::Instant::now();
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let sends = futures::stream::iter(records.into_iter().enumerate())
        .take_while(|_| std::future::ready(!shutdown.is_triggered()))
        .then(|(index, (note_id, version, value))| async move {
            if let Some(interval) = interval {
                tokio::time::sleep_until(started + interval * u32::try_from(index).unwrap_or(u32::MAX)).await;
            }
            (note_id, version, value)
        })
        .map(|(note_id, version, value)| async move {
            let outgoing = OutgoingRecord {
                topic: topic.to_owned(),
                partition: None,
                key: Some(note_id.clone().into_bytes()),
                value: Some(value),
                headers: RecordHeaders::new(),
            };
            producer.send(&outgoing).await.map(|_| (note_id, version))
        })
        // Ordered buffering keeps each note's versions acknowledged in the order they were made;
        // the idempotent producer keeps them in that order on the broker too.
        .buffered(GENERATE_IN_FLIGHT);
    futures::pin_mut!(sends);
    let mut acknowledged = 0_u64;
    while let Some(result) = sends.next().await {
        let (note_id, version) = result.map_err(|source| ProducerError::Kafka {
            operation: "publish note",
            source,
        })?;
        acknowledged += 1;
        if let Some(log) = ids_log.as_mut() {
            writeln!(log, "{note_id}\t{version}").map_err(|error| ProducerError::WriteIdsLog {
                path: args
                    .ids_log
                    .as_ref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
                reason: error.to_string(),
            })?;
        }
    }
    if let Some(mut log) = ids_log {
        log.flush().map_err(|error| ProducerError::WriteIdsLog {
            path: args
                .ids_log
                .as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            reason: error.to_string(),
        })?;
    }
    tracing::info!(acknowledged, topic, "generate finished");
    Ok(acknowledged)
}
