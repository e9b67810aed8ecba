//! rebound's producer service: where client note changes enter the pipeline.
//!
//! `serve` takes notes over HTTP and `send` from NDJSON; both commit every accepted note to a
//! durable local outbox before saying yes, and a relay sends the outbox to Kafka in acceptance
//! order, removing each note only once Kafka acknowledged it, so notes survive a broker outage
//! and a producer crash. `generate` publishes synthetic notes straight to Kafka for demos and
//! benchmarks. Resending of pending notes is governed by hot-reloaded feature flags.

pub mod flags;
mod generator;
mod http;
pub mod note_json;
pub mod outbox;
pub mod record_limit;
pub mod relay;

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
pub use generator::NoteGenerator;
use rebound_kafka::{OutgoingRecord, ProducerSettings, RecordProducer};
use rebound_retry::{RecordHeaders, apply_topic_prefix};
use rebound_schema::NoteCodec;
use rebound_service::{
    CommonArgs, OperationalArgs, Readiness, Shutdown, events, now_epoch_ms, serve_operational_endpoints,
};

use crate::flags::{FlagsSource, watch_flags};
use crate::outbox::{NewEntry, Outbox};
use crate::record_limit::RecordSizeLimit;
use crate::relay::{Relay, RelayStatus};

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
    /// The outbox could not be opened.
    #[error("failed to open outbox {path}: {reason}")]
    OpenOutbox {
        /// The outbox path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A write to the outbox failed; nothing of it was committed.
    #[error("failed to write outbox: {reason}")]
    WriteOutbox {
        /// What went wrong.
        reason: String,
    },
    /// A read of the outbox failed.
    #[error("failed to read outbox: {reason}")]
    ReadOutbox {
        /// What went wrong.
        reason: String,
    },
    /// Accepting the notes would take the outbox past its disk budget.
    #[error("failed to accept notes: the outbox holds {pending_bytes} bytes of its {budget_bytes}-byte budget")]
    OutboxFull {
        /// Bytes pending now.
        pending_bytes: u64,
        /// The budget.
        budget_bytes: u64,
    },
    /// The `send` input could not be read.
    #[error("failed to read input {input}: {reason}")]
    ReadInput {
        /// File name or `-`.
        input: String,
        /// What went wrong.
        reason: String,
    },
    /// A line of the `send` input is not a valid note; nothing was accepted.
    #[error("failed to parse input line {line}: {reason}; nothing was accepted")]
    ParseInput {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A note of the `send` input is valid but can never be sent (too large for Kafka);
    /// nothing was accepted.
    #[error("failed to accept input line {line} (note {note_id:?} version {version}): {reason}; nothing was accepted")]
    AcceptInput {
        /// 1-based line number.
        line: usize,
        /// The note's id.
        note_id: String,
        /// The note's version.
        version: i64,
        /// Why it cannot be sent.
        reason: String,
    },
    /// Kafka refused notes of a `send` run for what they are; they left the pending notes for
    /// the outbox's rejected table.
    #[error(
        "failed to deliver {rejected} notes: Kafka refused them for good; they are kept in the rejected table of the outbox {outbox}"
    )]
    DeliverNotes {
        /// Notes rejected during the run.
        rejected: u64,
        /// The outbox directory.
        outbox: String,
    },
    /// `send` gave up waiting for Kafka; the unsent notes stay in the outbox.
    #[error(
        "failed to send {unsent} notes within {timeout_seconds} s; they stay in the outbox {outbox} for the next run"
    )]
    SendTimedOut {
        /// Notes not yet acknowledged.
        unsent: u64,
        /// The timeout.
        timeout_seconds: u64,
        /// The outbox directory.
        outbox: String,
    },
    /// The HTTP listener could not be bound or failed.
    #[error("failed to serve http on {listen}: {reason}")]
    ServeHttp {
        /// The address.
        listen: String,
        /// What went wrong.
        reason: String,
    },
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
    /// Accept notes over HTTP into the durable outbox and relay them to Kafka.
    Serve(ServeArgs),
    /// Send NDJSON notes from a file (or `-` for stdin) through the outbox; exit once Kafka
    /// acknowledged them all.
    Send(SendArgs),
    /// Publish synthetic, realistic note changes straight to Kafka.
    Generate(GenerateArgs),
}

/// Outbox and resend flags shared by `serve` and `send`.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxArgs {
    /// Directory of the durable outbox (created if missing).
    #[arg(long, env = "REBOUND_OUTBOX_DIR", default_value = "rebound-outbox")]
    pub outbox_dir: PathBuf,

    /// Disk budget of pending notes, in bytes; past it, intake answers 503 with Retry-After.
    #[arg(long, env = "REBOUND_OUTBOX_MAX_BYTES", default_value_t = 1 << 30)]
    pub outbox_max_bytes: u64,

    /// JSON file of resend flags, re-read when it changes.
    #[arg(long = "flags", env = "REBOUND_FLAGS_FILE", conflicts_with = "flags_url")]
    pub flags_file: Option<PathBuf>,

    /// URL answering the resend flags document, polled.
    // The URL may carry a token, so `--help` must not print the variable.
    #[arg(long, env = "REBOUND_FLAGS_URL", hide_env_values = true)]
    pub flags_url: Option<String>,

    /// How often the flags file or URL is checked.
    #[arg(long, env = "REBOUND_FLAGS_POLL_INTERVAL", default_value = "2s")]
    pub flags_poll_interval: String,

    /// How long Kafka gets to acknowledge one note before the send counts as failed.
    #[arg(long, env = "REBOUND_SEND_TIMEOUT", default_value = "30s")]
    pub send_timeout: String,

    /// Most bytes of notes the relay reads from the outbox and keeps in flight per round (a
    /// single larger note still goes, alone). Bounds the relay's memory whatever the notes' size.
    #[arg(
        long,
        env = "REBOUND_RELAY_WINDOW_BYTES",
        default_value_t = 16 << 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub relay_window_bytes: u64,
}

/// Flags of `rebound-producer serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "REBOUND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest accepted request body, in bytes (larger: 413).
    #[arg(long, env = "REBOUND_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Metrics and health endpoints (the API port serves `/healthz` and `/readyz` too).
    #[command(flatten)]
    pub operational: OperationalArgs,

    /// Outbox and resend.
    #[command(flatten)]
    pub outbox: OutboxArgs,
}

/// Flags of `rebound-producer send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// NDJSON file of notes, one JSON object per line; `-` reads stdin.
    pub input: String,

    /// How long to wait for Kafka to acknowledge every note.
    #[arg(long, env = "REBOUND_TIMEOUT", default_value = "60s")]
    pub timeout: String,

    /// Publish straight to Kafka, skipping the durable outbox: nothing is kept if the process
    /// or the broker fails mid-way. It exists so that scripts/bench.sh can measure what the
    /// outbox costs on the same input; do not use it to deliver notes.
    #[arg(long, env = "REBOUND_NO_OUTBOX")]
    pub no_outbox: bool,

    /// Outbox and resend.
    #[command(flatten)]
    pub outbox: OutboxArgs,
}

/// What a producer run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    /// Notes acknowledged by Kafka during the run (for `serve`, notes accepted).
    pub acknowledged: u64,
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
const GENERATE_IN_FLIGHT: usize = 8192;

/// Runs the chosen mode until it is done or `shutdown` triggers.
pub async fn run(args: ProducerArgs, shutdown: Shutdown) -> Result<u64, ProducerError> {
    let topic = apply_topic_prefix(&args.topic_prefix, &args.topic);
    let send_timeout = match &args.mode {
        ProducerMode::Serve(serve) => parse_flag_duration("--send-timeout", &serve.outbox.send_timeout)?,
        ProducerMode::Send(send) => parse_flag_duration("--send-timeout", &send.outbox.send_timeout)?,
        ProducerMode::Generate(_) => ProducerSettings::default().message_timeout,
    };
    // What Kafka will take from this producer decides what intake may accept.
    let kafka_config = args.common.kafka.resolve().map_err(|source| ProducerError::Kafka {
        operation: "read the kafka configuration",
        source,
    })?;
    let record_limit =
        RecordSizeLimit::from_message_max_bytes(kafka_config.property("message.max.bytes")).map_err(|reason| {
            ProducerError::InvalidFlag {
                flag: "message.max.bytes (-X or --kafka-config-file)".to_owned(),
                reason,
            }
        })?;
    let settings = ProducerSettings {
        message_timeout: send_timeout,
        ..ProducerSettings::default()
    };
    let producer = RecordProducer::new(&args.common.kafka, &settings).map_err(|source| ProducerError::Kafka {
        operation: "create producer",
        source,
    })?;
    match args.mode {
        ProducerMode::Serve(serve) => run_serve(producer, topic, serve, record_limit, shutdown).await,
        ProducerMode::Send(send) => run_send(producer, topic, send, record_limit, shutdown).await,
        ProducerMode::Generate(generate) => run_generate(&producer, &topic, &generate, &shutdown).await,
    }
}

fn parse_flag_duration(flag: &str, text: &str) -> Result<Duration, ProducerError> {
    rebound_retry::parse_duration(text).map_err(|error| ProducerError::InvalidFlag {
        flag: flag.to_owned(),
        reason: error.to_string(),
    })
}

/// Opens the outbox, loads the flags and builds the relay of `serve` and `send`.
async fn start_outbox(
    producer: RecordProducer,
    topic: String,
    args: &OutboxArgs,
) -> Result<(Outbox, Relay, Arc<RelayStatus>), ProducerError> {
    let poll = parse_flag_duration("--flags-poll-interval", &args.flags_poll_interval)?;
    let outbox = Outbox::open(&args.outbox_dir, args.outbox_max_bytes)?;
    let first_fresh_seq = outbox.next_seq_floor().await?;
    let source = match (&args.flags_file, &args.flags_url) {
        (Some(path), _) => FlagsSource::File {
            path: path.clone(),
            poll,
        },
        (None, Some(url)) => FlagsSource::Url { url: url.clone(), poll },
        (None, None) => FlagsSource::Defaults,
    };
    let flags = watch_flags(source).await;
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
        flags,
        status: Arc::clone(&status),
        first_fresh_seq,
        window_bytes: args.relay_window_bytes,
    };
    Ok((outbox, relay, status))
}

async fn run_serve(
    producer: RecordProducer,
    topic: String,
    args: ServeArgs,
    record_limit: RecordSizeLimit,
    shutdown: Shutdown,
) -> Result<u64, ProducerError> {
    let flush_producer = producer.clone();
    let (outbox, relay, status) = start_outbox(producer, topic, &args.outbox).await?;
    let flags = relay.flags.clone();
    let readiness = Arc::new(Readiness::default());
    readiness.set("outbox", true, format!("open at {}", outbox.path().display()));
    if let Some(listen) = args.operational.metrics_listen {
        serve_operational_endpoints(listen, Arc::clone(&readiness), shutdown.clone())
            .await
            .map_err(|error| ProducerError::ServeHttp {
                listen: listen.to_string(),
                reason: error.to_string(),
            })?;
    }
    events::producer_rejection_counter_starts_at_zero();
    tokio::spawn(publish_outbox_state(
        outbox.clone(),
        Arc::clone(&status),
        readiness,
        shutdown.clone(),
    ));
    // A relay whose producer failed for good stops the whole service, so it is restarted.
    let relay_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let outcome = relay.run(shutdown.clone()).await;
            if outcome.is_err() {
                shutdown.trigger();
            }
            outcome
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| ProducerError::ServeHttp {
            listen: args.listen.to_string(),
            reason: error.to_string(),
        })?;
    tracing::info!(listen = %args.listen, "http api listening");
    let app = http::router(http::ApiState {
        outbox,
        flags,
        status,
        max_body_bytes: args.max_body_bytes,
        record_limit,
    });
    let graceful = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { graceful.wait().await })
        .await
        .map_err(|error| ProducerError::ServeHttp {
            listen: args.listen.to_string(),
            reason: error.to_string(),
        })?;
    shutdown.trigger();
    relay_failed_for_good(relay_task.await)?;
    if let Err(error) = flush_producer.flush(Duration::from_secs(5)).await {
        tracing::warn!(%error, "producer flush at shutdown failed; unacknowledged notes stay in the outbox");
    }
    tracing::info!("producer stopped");
    Ok(0)
}

/// The relay's outcome as the service's: a producer that failed for good ends the service
/// with an error (the notes stay in the outbox for the next start).
fn relay_failed_for_good(
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

/// Keeps the outbox gauges and the readiness of the broker check current, also while idle.
async fn publish_outbox_state(outbox: Outbox, status: Arc<RelayStatus>, readiness: Arc<Readiness>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        events::producer_outbox_state(outbox.pending_notes(), relay::oldest_age_seconds(&outbox).await);
        let reachable = status.broker_reachable();
        events::producer_broker_reachable(reachable);
        readiness.set(
            "kafka",
            reachable,
            if reachable {
                "acknowledging"
            } else {
                "refusing sends; notes are kept in the outbox"
            },
        );
    }
}

/// Reads NDJSON notes and encodes each once; all or nothing, with the line number of the first
/// bad line or of the first note too large for Kafka.
fn read_ndjson_notes(input: &str, record_limit: RecordSizeLimit) -> Result<Vec<DirectRecord>, ProducerError> {
    let read_failed = |error: std::io::Error| ProducerError::ReadInput {
        input: input.to_owned(),
        reason: error.to_string(),
    };
    let reader: Box<dyn std::io::BufRead> = if input == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).map_err(read_failed)?,
        ))
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

async fn run_send(
    producer: RecordProducer,
    topic: String,
    args: SendArgs,
    record_limit: RecordSizeLimit,
    shutdown: Shutdown,
) -> Result<u64, ProducerError> {
    let timeout = parse_flag_duration("--timeout", &args.timeout)?;
    let input = args.input.clone();
    let notes = tokio::task::spawn_blocking(move || read_ndjson_notes(&input, record_limit))
        .await
        .map_err(|error| ProducerError::ReadInput {
            input: args.input.clone(),
            reason: error.to_string(),
        })??;
    if args.no_outbox {
        return send_without_outbox(&producer, &topic, notes, timeout, &shutdown).await;
    }
    let flush_producer = producer.clone();
    let (outbox, relay, _status) = start_outbox(producer, topic, &args.outbox).await?;
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
        return Err(ProducerError::SendTimedOut {
            unsent,
            timeout_seconds: timeout.as_secs(),
            outbox: args.outbox.outbox_dir.display().to_string(),
        });
    }
    // A note Kafka refused for good left the pending notes without being delivered.
    let rejected = outbox.rejected_since(run_started_at_ms).await?;
    if rejected > 0 {
        return Err(ProducerError::DeliverNotes {
            rejected,
            outbox: args.outbox.outbox_dir.display().to_string(),
        });
    }
    tracing::info!(notes = note_count, "every note acknowledged by kafka");
    Ok(note_count as u64)
}

/// `send --no-outbox`: encodes and publishes the notes directly, as `generate` does, so the
/// benchmark can compare the outbox path with the same notes sent without it.
async fn send_without_outbox(
    producer: &RecordProducer,
    topic: &str,
    notes: Vec<DirectRecord>,
    timeout: Duration,
    shutdown: &Shutdown,
) -> Result<u64, ProducerError> {
    let total = notes.len() as u64;
    let records = notes.into_iter().map(Ok);
    let mut acknowledged = 0_u64;
    let sent = tokio::time::timeout(
        timeout,
        publish_directly(producer, topic, records, 0, shutdown, |_, _| {
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
            return Err(ProducerError::SendTimedOut {
                unsent: total - acknowledged,
                timeout_seconds: timeout.as_secs(),
                outbox: "(none: --no-outbox)".to_owned(),
            });
        }
    }
    tracing::info!(notes = acknowledged, "every note acknowledged by kafka (no outbox)");
    Ok(acknowledged)
}

/// A note published without the outbox: id, version, encoded value.
struct DirectRecord {
    note_id: String,
    version: i64,
    value: Vec<u8>,
}

/// Publishes records straight to Kafka, up to `GENERATE_IN_FLIGHT` at once, optionally paced to
/// `rate` per second, and reports each acknowledgement in input order: with the idempotent
/// producer that keeps every note's versions in the order they were made. Stops taking new
/// records once `shutdown` triggers, and still waits for those in flight.
///
/// The sends are owned futures in a `FuturesOrdered` rather than a stream of borrowing
/// closures, which keeps the whole future `Send` so that callers can spawn it.
async fn publish_directly(
    producer: &RecordProducer,
    topic: &str,
    records: impl Iterator<Item = Result<DirectRecord, ProducerError>> + Send,
    rate: u64,
    shutdown: &Shutdown,
    mut on_acknowledged: impl FnMut(&str, i64) -> Result<(), ProducerError>,
) -> Result<u64, ProducerError> {
    let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / rate as f64));
    let started = tokio::time::Instant::now();
    let mut pending = records.enumerate();
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut acknowledged = 0_u64;
    loop {
        while in_flight.len() < GENERATE_IN_FLIGHT && !shutdown.is_triggered() {
            let Some((index, record)) = pending.next() else {
                break;
            };
            let record = record?;
            if let Some(interval) = interval {
                tokio::time::sleep_until(started + interval * u32::try_from(index).unwrap_or(u32::MAX)).await;
            }
            let producer = producer.clone();
            let outgoing = OutgoingRecord {
                topic: topic.to_owned(),
                partition: None,
                key: Some(record.note_id.clone().into_bytes()),
                value: Some(record.value),
                headers: RecordHeaders::new(),
            };
            let (note_id, version) = (record.note_id, record.version);
            in_flight.push_back(async move { producer.send(&outgoing).await.map(|_| (note_id, version)) });
        }
        let Some(result) = in_flight.next().await else {
            break;
        };
        let (note_id, version) = result.map_err(|source| ProducerError::Kafka {
            operation: "publish note",
            source,
        })?;
        acknowledged += 1;
        on_acknowledged(&note_id, version)?;
    }
    Ok(acknowledged)
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
    // Notes are made and encoded as they are sent: memory holds the window in flight only.
    let records = (0..args.count).map(move |_| {
        let note = generator.next_note();
        let value = codec.encode(&note)?;
        Ok(DirectRecord {
            note_id: note.note_id,
            version: note.version,
            value,
        })
    });
    let ids_log_path = args
        .ids_log
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let acknowledged = publish_directly(
        producer,
        topic,
        records,
        args.rate,
        shutdown,
        |note_id, version| match ids_log.as_mut() {
            Some(log) => writeln!(log, "{note_id}\t{version}").map_err(|error| ProducerError::WriteIdsLog {
                path: ids_log_path.clone(),
                reason: error.to_string(),
            }),
            None => Ok(()),
        },
    )
    .await?;
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn http_endpoints_bind_loopback_unless_told_otherwise() {
        let args = ProducerArgs::parse_from(["rebound-producer", "serve"]);
        let ProducerMode::Serve(serve) = args.mode else {
            unreachable!("parsed serve")
        };
        // The API accepts notes without authentication: it must not face the network by default.
        assert!(serve.listen.ip().is_loopback(), "{}", serve.listen);
        assert_eq!(serve.operational.metrics_listen, None);
    }
}
