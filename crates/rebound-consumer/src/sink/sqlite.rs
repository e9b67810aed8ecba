//! The embedded SQLite sink: one row per note, upserted only when the incoming version is
//! higher than the stored one, so redelivery and out-of-order retries never regress a note.
//! Deletes are stored as versioned tombstones (`deleted = 1`) for the same reason.
//!
//! An opt-in delivery journal (`deliveries` table, off by default) records every note the sink
//! was handed, in the same transaction, so soak tests can count redeliveries exactly.
//!
//! The tables and statements are `rebound-sink-store`'s, which also reads them back for
//! `rebound audit`; this module owns the writer: connection settings, transactions, and which
//! failure fails one note or the whole batch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rebound_sink_store::{NoteWrites, create_delivery_journal, migrate_notes_table};
use rusqlite::Connection;

use super::{ApplyBatchFuture, ApplyItem, Sink, SinkFailure};
use crate::ConsumerError;

/// The SQLite sink. Writes run on a blocking thread, one transaction per batch.
#[derive(Debug, Clone)]
pub struct SqliteSink {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    journal: bool,
}

impl SqliteSink {
    /// Opens (creating if needed) the database, and creates or migrates its table.
    pub fn open(path: &Path) -> Result<Self, ConsumerError> {
        let fail = |error: rusqlite::Error| sink_error(path, &error);
        let mut connection = Connection::open(path).map_err(fail)?;
        // WAL with synchronous=FULL: a committed batch survives a crash of the process and of
        // the machine, and readers (the accounting tools) never block the writer. An 8 MiB page
        // cache (the default is 2 MiB) keeps the upper levels of the note index in memory once
        // the table outgrows the default, within the consumer's 64 MiB memory budget.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; \
                 PRAGMA cache_size = -8192;",
            )
            .map_err(fail)?;
        let migrated = migrate_notes_table(&mut connection).map_err(|error| ConsumerError::OpenSink {
            sink: format!("sqlite://{}", path.display()),
            reason: error.to_string(),
        })?;
        if migrated.from != migrated.to {
            tracing::info!(sink = %path.display(), from = migrated.from, to = migrated.to, "sink schema migrated");
        }
        Ok(Self {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
            journal: false,
        })
    }

    /// Turns the delivery journal on: from now on every delivered note also gets a row in the
    /// `deliveries` table (created if needed), committed with the batch. Off by default, and
    /// then it costs nothing; it exists so soak tests can count redeliveries.
    pub fn enable_delivery_journal(&mut self) -> Result<(), ConsumerError> {
        let connection = self.connection.lock().map_err(|_| ConsumerError::OpenSink {
            sink: format!("sqlite://{}", self.path.display()),
            reason: "sqlite connection lock poisoned".to_owned(),
        })?;
        create_delivery_journal(&connection).map_err(|error| ConsumerError::OpenSink {
            sink: format!("sqlite://{}", self.path.display()),
            reason: format!("cannot create the delivery journal: {error}"),
        })?;
        drop(connection);
        self.journal = true;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the batch in one transaction. A failure of the transaction itself (disk full,
    /// database locked past the busy timeout) fails every note transiently: none was applied.
    pub async fn apply_batch(&self, items: Vec<ApplyItem>) -> Vec<Result<(), SinkFailure>> {
        let connection = Arc::clone(&self.connection);
        let count = items.len();
        let journal = self.journal;
        let outcome = tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .map_err(|_| SinkFailure::transient("sqlite connection lock poisoned"))?;
            apply_in_transaction(&mut connection, &items, journal)
                .map_err(|error| SinkFailure::transient(format!("sqlite transaction failed: {error}")))
        })
        .await;
        match outcome {
            Ok(Ok(results)) => results,
            Ok(Err(failure)) => vec![Err(failure); count],
            Err(join_error) => vec![Err(SinkFailure::transient(format!("sqlite task failed: {join_error}"))); count],
        }
    }
}

/// The error of any operation on the sink's database, naming the sink.
impl Sink for SqliteSink {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        Box::pin(SqliteSink::apply_batch(self, items))
    }
}

fn sink_error(path: &Path, error: &rusqlite::Error) -> ConsumerError {
    ConsumerError::OpenSink {
        sink: format!("sqlite://{}", path.display()),
        reason: error.to_string(),
    }
}

fn apply_in_transaction(
    connection: &mut Connection,
    items: &[ApplyItem],
    journal: bool,
) -> Result<Vec<Result<(), SinkFailure>>, rusqlite::Error> {
    let transaction = connection.transaction()?;
    let mut results = vec![Ok(()); items.len()];
    // Upserting in key order touches the index's pages in order instead of at random; the
    // outcome is the same, since each note's row depends only on that note's versions, which
    // keep their relative order (the sort is stable).
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|left, right| items[*left].note.note_id.cmp(&items[*right].note.note_id));
    {
        let mut writes = NoteWrites::prepare(&transaction, journal)?;
        for index in order {
            let item = &items[index];
            let note = &item.note;
            if note.note_id.is_empty() {
                results[index] = Err(SinkFailure::permanent("note_id is empty"));
                continue;
            }
            let outcome = writes.upsert(note, item.previous_attempts, item.last_tier.as_deref());
            results[index] = match outcome {
                Ok(changed) => {
                    writes.journal(note, item.previous_attempts, changed)?;
                    Ok(())
                }
                // A statement error for one note (a constraint, say) leaves the transaction
                // usable; that note is rejected for good, the others still commit.
                Err(
                    error @ rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error {
                            code: rusqlite::ErrorCode::ConstraintViolation,
                            ..
                        },
                        _,
                    ),
                ) => Err(SinkFailure::permanent(format!("sqlite rejected note: {error}"))),
                Err(error) => return Err(error),
            };
        }
    }
    transaction.commit()?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rebound_schema::Note;
    use rebound_sink_store::{DeliveryJournalSummary, read_all_notes, read_delivered_versions, read_delivery_journal};

    use super::*;

    fn item(note_id: &str, version: i64, title: &str) -> ApplyItem {
        ApplyItem {
            note: Note {
                note_id: note_id.to_owned(),
                user_id: "u".to_owned(),
                device_id: "d".to_owned(),
                version,
                title: title.to_owned(),
                body: String::new(),
                tags: vec!["t".to_owned()],
                updated_at: 1,
                deleted: false,
                pinned: false,
            },
            previous_attempts: 0,
            last_tier: None,
        }
    }

    #[tokio::test]
    async fn older_or_equal_versions_never_overwrite_newer_ones() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("notes.db");
        let sink = SqliteSink::open(&path).expect("opens");
        let results = sink
            .apply_batch(vec![item("a", 2, "v2"), item("a", 1, "v1"), item("b", 1, "b1")])
            .await;
        assert!(results.iter().all(Result::is_ok));
        let results = sink
            .apply_batch(vec![item("a", 2, "v2 again"), item("b", 3, "b3")])
            .await;
        assert!(results.iter().all(Result::is_ok));
        let rows = read_all_notes(&path).expect("reads");
        let titles: Vec<(&str, i64, &str)> = rows
            .iter()
            .map(|row| (row.note_id.as_str(), row.version, row.title.as_str()))
            .collect();
        assert_eq!(titles, vec![("a", 2, "v2"), ("b", 3, "b3")]);
    }

    #[tokio::test]
    async fn a_delete_is_a_versioned_tombstone() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("notes.db");
        let sink = SqliteSink::open(&path).expect("opens");
        let mut delete = item("a", 5, "");
        delete.note.deleted = true;
        sink.apply_batch(vec![item("a", 4, "live"), delete, item("a", 3, "stale")])
            .await;
        let rows = read_all_notes(&path).expect("reads");
        assert_eq!(rows.len(), 1);
        assert!(rows[0].deleted);
        assert_eq!(rows[0].version, 5);
    }

    #[tokio::test]
    async fn the_delivery_journal_counts_every_delivery_only_when_enabled() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("notes.db");
        let mut sink = SqliteSink::open(&path).expect("opens");
        sink.apply_batch(vec![item("a", 1, "before the journal")]).await;
        assert_eq!(read_delivery_journal(&path).expect("reads"), None);
        assert_eq!(read_delivered_versions(&path).expect("reads"), None);
        sink.enable_delivery_journal().expect("enables");
        let results = sink
            .apply_batch(vec![item("a", 2, "v2"), item("a", 2, "v2 again"), item("b", 1, "b1")])
            .await;
        assert!(results.iter().all(Result::is_ok));
        sink.apply_batch(vec![item("a", 2, "v2 a third time"), item("a", 1, "stale")])
            .await;
        let delivered = read_delivered_versions(&path).expect("reads").expect("journal exists");
        assert_eq!(
            delivered,
            HashSet::from([("a".to_owned(), 2), ("a".to_owned(), 1), ("b".to_owned(), 1)])
        );
        let summary = read_delivery_journal(&path).expect("reads").expect("journal exists");
        assert_eq!(
            summary,
            DeliveryJournalSummary {
                deliveries: 5,
                distinct_versions: 3,
                redelivered_versions: 1,
                extra_deliveries: 2,
                max_deliveries_of_one_version: 3,
                changed_rows: 2,
            }
        );
    }

    #[tokio::test]
    async fn an_empty_note_id_is_rejected_without_failing_the_batch() {
        let directory = tempfile::tempdir().expect("tempdir");
        let sink = SqliteSink::open(&directory.path().join("notes.db")).expect("opens");
        let results = sink.apply_batch(vec![item("", 1, "x"), item("ok", 1, "y")]).await;
        assert_eq!(
            results[0].as_ref().map_err(|failure| failure.kind),
            Err(rebound_retry::ErrorKind::Permanent)
        );
        assert!(results[1].is_ok());
    }
}
