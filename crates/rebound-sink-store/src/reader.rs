//! [`SinkReader`]: reads back what a SQLite or PostgreSQL sink stored, whichever `--sink` names,
//! for `rebound audit` and the tests.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::{
    AppliedNoteRow, DeliveryJournalSummary, PostgresSinkSpec, PostgresTlsArgs, SinkSpec, SinkStoreError,
    read_all_notes, read_all_notes_postgres, read_delivered_versions, read_delivered_versions_postgres,
    read_delivery_journal, read_delivery_journal_postgres,
};

/// A sink whose stored notes can be read back. Each read opens its own connection (read-only
/// for SQLite), so a reader never holds the writer up between reads.
#[derive(Debug, Clone)]
pub enum SinkReader {
    /// `sqlite://PATH`.
    Sqlite(PathBuf),
    /// `postgres://…`, with its TLS settings.
    Postgres(PostgresSinkSpec, PostgresTlsArgs),
}

impl SinkReader {
    /// The reader of `spec`; `None` for a sink that keeps nothing to read (HTTP, null).
    pub fn for_spec(spec: &SinkSpec, tls: &PostgresTlsArgs) -> Option<Self> {
        match spec {
            SinkSpec::Sqlite(path) => Some(Self::Sqlite(path.clone())),
            SinkSpec::Postgres(postgres) => Some(Self::Postgres(postgres.clone(), tls.clone())),
            SinkSpec::Http(_) | SinkSpec::Null => None,
        }
    }

    /// Every stored note, ordered by id.
    pub async fn read_all_notes(&self) -> Result<Vec<AppliedNoteRow>, SinkStoreError> {
        match self {
            Self::Sqlite(path) => read_all_notes(path),
            Self::Postgres(spec, tls) => read_all_notes_postgres(spec, tls).await,
        }
    }

    /// Every note version the delivery journal holds; `None` without a journal.
    pub async fn read_delivered_versions(&self) -> Result<Option<HashSet<(String, i64)>>, SinkStoreError> {
        match self {
            Self::Sqlite(path) => read_delivered_versions(path),
            Self::Postgres(spec, tls) => read_delivered_versions_postgres(spec, tls).await,
        }
    }

    /// The delivery journal's summary; `None` without a journal.
    pub async fn read_delivery_journal(&self) -> Result<Option<DeliveryJournalSummary>, SinkStoreError> {
        match self {
            Self::Sqlite(path) => read_delivery_journal(path),
            Self::Postgres(spec, tls) => read_delivery_journal_postgres(spec, tls).await,
        }
    }
}
