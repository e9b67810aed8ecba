//! What the consumer's sinks are and store, in a crate of its own so that the admin CLI and
//! users' own sinks can use it without depending on the consumer service:
//! - the plug-in point: the [`Sink`] trait, [`ApplyItem`] in, one [`ApplyOutcome`] per item out;
//! - the `--sink` URL ([`SinkSpec`]);
//! - everything the SQLite and PostgreSQL sinks' tables are made of (versioned schema, the
//!   version-rule upsert, the delivery journal) with the functions that read them back, and
//!   [`SinkReader`], which reads either for `rebound audit` and the tests.
//!
//! No Kafka.

mod plugin;
mod postgres;
mod reader;
mod spec;
mod sqlite;

pub use plugin::{ApplyBatchFuture, ApplyItem, ApplyOutcome, NullSink, Sink, SinkFailure};
pub use postgres::{
    POSTGRES_JOURNAL_INSERT_SQL, POSTGRES_JOURNAL_SCHEMA_SQL, POSTGRES_NOTES_MIGRATIONS, POSTGRES_NOTES_SCHEMA,
    POSTGRES_UPSERT_SQL, PostgresNoteParams, PostgresSinkSpec, PostgresTlsArgs, connect_postgres,
    describe_postgres_error, migrate_postgres_notes, postgres_tls_connector, read_all_notes_postgres,
    read_delivered_versions_postgres, read_delivery_journal_postgres,
};
pub use reader::SinkReader;
pub use spec::SinkSpec;
pub use sqlite::{
    AppliedNoteRow, DeliveryJournalSummary, NoteWrites, SQLITE_NOTES_MIGRATIONS, SQLITE_NOTES_SCHEMA,
    create_delivery_journal, migrate_notes_table, read_all_notes, read_delivered_versions, read_delivery_journal,
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
        /// The sink, `sqlite://PATH` or the redacted `postgres://` URL.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// Creating or migrating the sink's tables failed.
    #[error("failed to migrate sink {sink}: {source}")]
    MigrateSink {
        /// The sink, `sqlite://PATH` or the redacted `postgres://` URL.
        sink: String,
        /// The migration error.
        #[source]
        source: rebound_migrate::MigrateError,
    },
    /// Reading the sink's tables failed.
    #[error("failed to read sink {sink}: {reason}")]
    ReadSink {
        /// The sink, `sqlite://PATH` or the redacted `postgres://` URL.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// The PostgreSQL sink's CA file could not be read.
    #[error("failed to read the postgresql ca file {path}: {reason}")]
    ReadCaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}
