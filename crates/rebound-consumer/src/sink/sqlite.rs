//! The embedded SQLite sink: one row per note, upserted only when the incoming version is
//! higher than the stored one, so redelivery and out-of-order retries never regress a note.
//! Deletes are stored as versioned tombstones (`deleted = 1`) for the same reason.
//!
//! An opt-in delivery journal (`deliveries` table, off by default) records every note the sink
//! was handed, in the same transaction, so soak tests can count redeliveries exactly.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, params};

use super::{ApplyItem, SinkFailure};
use crate::ConsumerError;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS notes (
    note_id          TEXT PRIMARY KEY NOT NULL,
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    version          INTEGER NOT NULL,
    title            TEXT NOT NULL,
    body             TEXT NOT NULL,
    tags_json        TEXT NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    deleted          INTEGER NOT NULL,
    pinned           INTEGER NOT NULL,
    applied_attempt  INTEGER NOT NULL,
    applied_tier     TEXT
) WITHOUT ROWID;
";

// The WHERE clause on the update is the version rule: a stale or repeated version leaves the
// row as it is, and the statement still succeeds, because the newer state is already applied.
const UPSERT_SQL: &str = "
INSERT INTO notes (note_id, user_id, device_id, version, title, body, tags_json, updated_at_ms,
                   deleted, pinned, applied_attempt, applied_tier)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (note_id) DO UPDATE SET
    user_id = excluded.user_id, device_id = excluded.device_id, version = excluded.version,
    title = excluded.title, body = excluded.body, tags_json = excluded.tags_json,
    updated_at_ms = excluded.updated_at_ms, deleted = excluded.deleted, pinned = excluded.pinned,
    applied_attempt = excluded.applied_attempt, applied_tier = excluded.applied_tier
WHERE excluded.version > notes.version
";

// The delivery journal: one row per note the sink applied (or found already applied), written in
// the batch's own transaction, so a row exists exactly when the delivery's effect was committed.
const JOURNAL_SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    note_id            TEXT NOT NULL,
    version            INTEGER NOT NULL,
    previous_attempts  INTEGER NOT NULL,
    changed            INTEGER NOT NULL
);
";

const JOURNAL_INSERT_SQL: &str =
    "INSERT INTO deliveries (note_id, version, previous_attempts, changed) VALUES (?1, ?2, ?3, ?4)";

/// What the delivery journal says about redeliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryJournalSummary {
    /// Deliveries committed in total.
    pub deliveries: u64,
    /// Distinct note versions among them.
    pub distinct_versions: u64,
    /// Note versions delivered more than once.
    pub redelivered_versions: u64,
    /// Deliveries beyond the first of each version.
    pub extra_deliveries: u64,
    /// Most deliveries of one version.
    pub max_deliveries_of_one_version: u64,
    /// Deliveries that changed the stored row (the others were older or repeated versions).
    pub changed_rows: u64,
}

/// One stored note, as the accounting tools read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedNoteRow {
    /// Note id.
    pub note_id: String,
    /// Stored version.
    pub version: i64,
    /// Tombstone flag.
    pub deleted: bool,
    /// Title.
    pub title: String,
    /// Failed attempts before the stored version was applied (0: first try).
    pub applied_attempt: u32,
    /// Tier the stored version last went through, if any.
    pub applied_tier: Option<String>,
}

/// The SQLite sink. Writes run on a blocking thread, one transaction per batch.
#[derive(Debug, Clone)]
pub struct SqliteSink {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    journal: bool,
}

impl SqliteSink {
    /// Opens (creating if needed) the database and its table.
    pub fn open(path: &Path) -> Result<Self, ConsumerError> {
        let fail = |error: rusqlite::Error| sink_error(path, &error);
        let connection = Connection::open(path).map_err(fail)?;
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
        connection.execute_batch(SCHEMA_SQL).map_err(fail)?;
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
        connection
            .execute_batch(JOURNAL_SCHEMA_SQL)
            .map_err(|error| ConsumerError::OpenSink {
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

    /// Reads every stored note, ordered by id. Opens its own read-only connection.
    pub fn read_all(path: &Path) -> Result<Vec<AppliedNoteRow>, ConsumerError> {
        let fail = |error: rusqlite::Error| sink_error(path, &error);
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail)?;
        let mut statement = connection
            .prepare(
                "SELECT note_id, version, deleted, title, applied_attempt, applied_tier FROM notes ORDER BY note_id",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map([], |row| {
                Ok(AppliedNoteRow {
                    note_id: row.get(0)?,
                    version: row.get(1)?,
                    deleted: row.get(2)?,
                    title: row.get(3)?,
                    applied_attempt: row.get(4)?,
                    applied_tier: row.get(5)?,
                })
            })
            .map_err(fail)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(fail)
    }

    /// Every note version the delivery journal holds; `None` when the database has none.
    /// Opens its own read-only connection.
    pub fn read_delivered_versions(path: &Path) -> Result<Option<HashSet<(String, i64)>>, ConsumerError> {
        let fail = |error: rusqlite::Error| sink_error(path, &error);
        let Some(connection) = open_journal_read_only(path)? else {
            return Ok(None);
        };
        let mut statement = connection
            .prepare("SELECT DISTINCT note_id, version FROM deliveries")
            .map_err(fail)?;
        let versions = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .map_err(fail)?;
        versions.collect::<Result<HashSet<_>, _>>().map(Some).map_err(fail)
    }

    /// Summarises the delivery journal; `None` when the database has none (the consumer ran
    /// without it). Opens its own read-only connection.
    pub fn read_delivery_journal(path: &Path) -> Result<Option<DeliveryJournalSummary>, ConsumerError> {
        let fail = |error: rusqlite::Error| sink_error(path, &error);
        let Some(connection) = open_journal_read_only(path)? else {
            return Ok(None);
        };
        let mut statement = connection
            .prepare("SELECT count(*), sum(changed) FROM deliveries GROUP BY note_id, version")
            .map_err(fail)?;
        let groups = statement
            .query_map([], |row| Ok((row.get::<_, u64>(0)?, row.get::<_, u64>(1)?)))
            .map_err(fail)?;
        let mut summary = DeliveryJournalSummary::default();
        for group in groups {
            let (deliveries, changed) = group.map_err(fail)?;
            summary.deliveries += deliveries;
            summary.distinct_versions += 1;
            summary.changed_rows += changed;
            if deliveries > 1 {
                summary.redelivered_versions += 1;
                summary.extra_deliveries += deliveries - 1;
            }
            summary.max_deliveries_of_one_version = summary.max_deliveries_of_one_version.max(deliveries);
        }
        Ok(Some(summary))
    }
}

/// The error of any operation on the sink's database, naming the sink.
fn sink_error(path: &Path, error: &rusqlite::Error) -> ConsumerError {
    ConsumerError::OpenSink {
        sink: format!("sqlite://{}", path.display()),
        reason: error.to_string(),
    }
}

/// A read-only connection to a sink database that has a delivery journal; `None` without one.
fn open_journal_read_only(path: &Path) -> Result<Option<Connection>, ConsumerError> {
    let fail = |error: rusqlite::Error| sink_error(path, &error);
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail)?;
    Ok(journal_exists(&connection).map_err(fail)?.then_some(connection))
}

fn journal_exists(connection: &Connection) -> Result<bool, rusqlite::Error> {
    connection.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'",
        [],
        |row| row.get(0),
    )
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
        let mut upsert = transaction.prepare_cached(UPSERT_SQL)?;
        let mut journal_insert = if journal {
            Some(transaction.prepare_cached(JOURNAL_INSERT_SQL)?)
        } else {
            None
        };
        for index in order {
            let item = &items[index];
            let note = &item.note;
            if note.note_id.is_empty() {
                results[index] = Err(SinkFailure::permanent("note_id is empty"));
                continue;
            }
            let tags_json = serde_json::to_string(&note.tags).unwrap_or_else(|_| "[]".to_owned());
            let outcome = upsert.execute(params![
                note.note_id,
                note.user_id,
                note.device_id,
                note.version,
                note.title,
                note.body,
                tags_json,
                note.updated_at,
                note.deleted,
                note.pinned,
                item.previous_attempts,
                item.last_tier,
            ]);
            results[index] = match outcome {
                Ok(changed) => {
                    if let Some(insert) = journal_insert.as_mut() {
                        insert.execute(params![note.note_id, note.version, item.previous_attempts, changed])?;
                    }
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
    use rebound_schema::Note;

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
        let rows = SqliteSink::read_all(&path).expect("reads");
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
        let rows = SqliteSink::read_all(&path).expect("reads");
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
        assert_eq!(SqliteSink::read_delivery_journal(&path).expect("reads"), None);
        assert_eq!(SqliteSink::read_delivered_versions(&path).expect("reads"), None);
        sink.enable_delivery_journal().expect("enables");
        let results = sink
            .apply_batch(vec![item("a", 2, "v2"), item("a", 2, "v2 again"), item("b", 1, "b1")])
            .await;
        assert!(results.iter().all(Result::is_ok));
        sink.apply_batch(vec![item("a", 2, "v2 a third time"), item("a", 1, "stale")])
            .await;
        let delivered = SqliteSink::read_delivered_versions(&path)
            .expect("reads")
            .expect("journal exists");
        assert_eq!(
            delivered,
            HashSet::from([("a".to_owned(), 2), ("a".to_owned(), 1), ("b".to_owned(), 1)])
        );
        let summary = SqliteSink::read_delivery_journal(&path)
            .expect("reads")
            .expect("journal exists");
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
