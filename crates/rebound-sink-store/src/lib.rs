//! What the consumer's sinks store, in a crate of its own so that the admin CLI can read it
//! without depending on the consumer service: the `--sink` URL ([`SinkSpec`]) and everything the
//! SQLite sink's tables are made of (schema, the version-rule upsert, the delivery journal) with
//! the functions that read them back ([`read_all_notes`], [`read_delivery_journal`]).
//!
//! The consumer applies batches through [`NoteWrites`]; `rebound audit` and the tests read with
//! the `read_*` functions. No async runtime, no Kafka.

mod spec;
mod sqlite;

pub use spec::SinkSpec;
pub use sqlite::{
    AppliedNoteRow, DeliveryJournalSummary, NoteWrites, create_delivery_journal, create_notes_table, read_all_notes,
    read_delivered_versions, read_delivery_journal,
};

/// Everything that can go wrong while naming a sink or reading what it stored.
#[derive(Debug, thiserror::Error)]
pub enum SinkStoreError {
    /// The `--sink` URL is not one of the supported forms.
    #[error("failed to parse sink url {url:?}: {reason}")]
    ParseSinkUrl {
        /// The URL as given, with credentials, query and fragment redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The sink's database could not be opened.
    #[error("failed to open sink {sink}: {reason}")]
    OpenSink {
        /// The sink, `sqlite://PATH`.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// Reading the sink's tables failed.
    #[error("failed to read sink {sink}: {reason}")]
    ReadSink {
        /// The sink, `sqlite://PATH`.
        sink: String,
        /// What went wrong.
        reason: String,
    },
}
