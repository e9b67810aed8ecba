//! rebound's producer service: where client note changes enter the pipeline.
//!
//! `serve` takes notes over HTTP and `send` from NDJSON; both commit every accepted note to a
//! durable local outbox before saying yes, and a relay sends the outbox to Kafka in acceptance
//! order, removing each note only once Kafka acknowledged it, so notes survive a broker outage
//! and a producer crash. `generate` publishes synthetic notes straight to Kafka for demos and
//! benchmarks. Resending of pending notes is governed by hot-reloaded feature flags.

mod admission;
pub mod auth;
mod config;
pub mod flags;
mod generate;
mod generator;
mod http;
mod intake;
pub mod limits;
mod listener;
pub mod note_json;
pub mod outbox;
pub mod record_limit;
pub mod relay;
mod relay_window;
mod send;
mod serve;
pub mod tls;
mod watched_files;

use std::time::Duration;

pub use config::{
    DeliveryConfig, GenerateArgs, GenerateConfig, ModeConfig, NdjsonInput, OutboxArgs, OutboxConfig, ProducerArgs,
    ProducerConfig, ProducerMode, SendArgs, SendConfig, ServeArgs, ServeConfig,
};
pub use generator::NoteGenerator;
pub use intake::{IntakeArgs, IntakeConfig};
use rebound_kafka::{KafkaArgs, ProducerSettings, RecordProducer};
use rebound_registry::NoteEncoder;
use rebound_service::Shutdown;

/// Everything that can stop the producer.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The wire format could not be set up: the registry refused the note schema, does not
    /// have it registered (without `--auto-register`), or did not answer.
    #[error("failed to set up the confluent wire format: {source}")]
    ResolveWireFormat {
        /// What the registry client reported.
        #[source]
        source: rebound_registry::RegistryError,
    },
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
    AcceptNotes {
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
    SendNotes {
        /// Notes not yet acknowledged.
        unsent: u64,
        /// The timeout.
        timeout_seconds: u64,
        /// The outbox directory.
        outbox: String,
    },
    /// A file of the intake (bearer tokens, TLS certificate, key or client CA) could not be
    /// loaded at start-up.
    #[error("failed to load {what} {path}: {reason}")]
    LoadIntakeFile {
        /// The flags naming the file.
        what: &'static str,
        /// The file or files.
        path: String,
        /// What is wrong.
        reason: String,
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

/// Runs the configured mode until it is done or `shutdown` triggers.
pub async fn run(config: ProducerConfig, shutdown: Shutdown) -> Result<(), ProducerError> {
    let ProducerConfig {
        kafka,
        topic,
        mode,
        writer,
    } = config;
    // Before any note is taken: with the Confluent format, the note schema's registry id.
    let encoder = NoteEncoder::resolve(&writer, &topic)
        .await
        .map_err(|source| ProducerError::ResolveWireFormat { source })?;
    match mode {
        ModeConfig::Serve(serve) => serve::run(&kafka, topic, serve, encoder, shutdown).await,
        ModeConfig::Send(send) => send::run(&kafka, topic, send, encoder, shutdown).await,
        ModeConfig::Generate(generate) => generate::run(&kafka, &topic, &generate, encoder, &shutdown).await,
    }
}

/// The idempotent, `acks=all` producer of every mode; `message_timeout` is how long Kafka gets
/// to acknowledge one note.
fn create_producer(kafka: &KafkaArgs, message_timeout: Duration) -> Result<RecordProducer, ProducerError> {
    let settings = ProducerSettings {
        message_timeout,
        ..ProducerSettings::default()
    };
    RecordProducer::new(kafka, &settings).map_err(|source| ProducerError::Kafka {
        operation: "create producer",
        source,
    })
}
