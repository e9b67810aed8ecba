//! The durable local outbox: every accepted note is committed here (SQLite, WAL,
//! `synchronous=FULL`) before it is acknowledged to the client, and leaves only when Kafka has
//! acknowledged it.
//!
//! Writes go through one writer thread that drains every queued request into a single
//! transaction: many concurrent HTTP requests share one fsync (group commit), which is what
//! keeps durable intake fast. Reads use their own connection; WAL lets them run beside the writer.
//! SQLite rather than a hand-written log: it is crash-safe, well tested, and already the sink's
//! store; a custom WAL would have to beat it by a measured margin to be worth owning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rebound_migrate::{SqliteMigration, migrate_sqlite};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::ProducerError;

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    note_id         TEXT NOT NULL,
    version         INTEGER NOT NULL,
    value           BLOB NOT NULL,
    accepted_at_ms  INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    traceparent     TEXT
);
-- The relay's choice of sendable notes asks, per note, whether an earlier version is pending.
CREATE INDEX IF NOT EXISTS outbox_by_note_id ON outbox (note_id, seq);
-- Notes Kafka refused for what they are (too large for the topic, invalid): they can never be
-- sent, so they leave the pending notes, which would otherwise retry them forever and hold back
-- every later version of their note. Kept, value and all, for an operator to look at.
CREATE TABLE IF NOT EXISTS rejected (
    seq             INTEGER PRIMARY KEY,
    note_id         TEXT NOT NULL,
    version         INTEGER NOT NULL,
    value           BLOB NOT NULL,
    accepted_at_ms  INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    traceparent     TEXT,
    rejected_at_ms  INTEGER NOT NULL,
    error           TEXT NOT NULL
);
";

/// The relay's read: the next rows after its cursor (`?1`), at most `?2`, in acceptance order.
/// The value's length, not the value: the rows are cut by bytes before any value is read.
const READ_AFTER_SQL: &str = "
SELECT seq, note_id, version, LENGTH(value), accepted_at_ms, attempts, traceparent, 0 FROM outbox
WHERE seq > ?1 ORDER BY seq LIMIT ?2
";

/// As `READ_AFTER_SQL`, and whether the row's note has a pending version below `?3` (accepted
/// by an earlier run): with resends held back, such a note is held back whole.
const READ_AFTER_SQL_WITH_EARLIER: &str = "
SELECT seq, note_id, version, LENGTH(value), accepted_at_ms, attempts, traceparent,
       EXISTS (SELECT 1 FROM outbox AS earlier WHERE earlier.note_id = pending.note_id AND earlier.seq < ?3)
FROM outbox AS pending
WHERE seq > ?1 ORDER BY seq LIMIT ?2
";

/// Most write requests folded into one transaction.
const MAX_REQUESTS_PER_TRANSACTION: usize = 1024;

/// A note waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in acceptance order.
    pub seq: i64,
    /// Note id, the Kafka key.
    pub note_id: String,
    /// Note version.
    pub version: i64,
    /// Encoded record value.
    pub value: Vec<u8>,
    /// When the note was accepted, epoch milliseconds.
    pub accepted_at_ms: i64,
    /// Failed send attempts so far.
    pub attempts: u32,
    /// W3C trace context of the acceptance, continued when the note is sent.
    pub traceparent: Option<String>,
}

/// A pending note as the relay reads it into its window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRow {
    /// The note, value and all.
    pub entry: OutboxEntry,
    /// Size of its value in bytes.
    pub value_bytes: u64,
    /// Whether a version of its note accepted before the asked bound is still pending.
    pub earlier_version_pending: bool,
}

/// A note Kafka refused for good, as `GET /v1/outbox` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedNote {
    /// Its position in acceptance order while it was pending.
    pub seq: i64,
    /// Note id.
    pub note_id: String,
    /// Note version.
    pub version: i64,
    /// Size of the encoded note, in bytes.
    pub bytes: u64,
    /// When it was accepted, epoch milliseconds.
    pub accepted_at_ms: i64,
    /// When Kafka's refusal moved it here, epoch milliseconds.
    pub rejected_at_ms: i64,
    /// Kafka's refusal.
    pub error: String,
}

/// A note to append: id, version, encoded value.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Note id.
    pub note_id: String,
    /// Note version.
    pub version: i64,
    /// Encoded record value.
    pub value: Vec<u8>,
    /// W3C trace context of the acceptance, if traced.
    pub traceparent: Option<String>,
}

enum WriteRequest {
    Append {
        entries: Vec<NewEntry>,
        accepted_at_ms: i64,
        reply: oneshot::Sender<Result<Vec<i64>, ProducerError>>,
    },
    Remove {
        seqs: Vec<i64>,
        reply: oneshot::Sender<Result<(), ProducerError>>,
    },
    MarkFailed {
        seqs: Vec<i64>,
        error: String,
        reply: oneshot::Sender<Result<(), ProducerError>>,
    },
    Reject {
        seq: i64,
        error: String,
        rejected_at_ms: i64,
        reply: oneshot::Sender<Result<bool, ProducerError>>,
    },
}

#[derive(Debug, Default)]
struct Counters {
    pending_notes: AtomicU64,
    pending_bytes: AtomicU64,
}

/// An append in the writer's queue (see [`Outbox::queue_append`]).
#[derive(Debug)]
#[must_use = "the notes are accepted only once the append is committed"]
pub struct QueuedAppend {
    answer: oneshot::Receiver<Result<Vec<i64>, ProducerError>>,
    appended: Arc<Notify>,
}

impl QueuedAppend {
    /// Waits until the notes are committed to disk; their seqs, in order.
    pub async fn committed(self) -> Result<Vec<i64>, ProducerError> {
        let seqs = self.answer.await.map_err(|_| writer_gone())??;
        self.appended.notify_one();
        Ok(seqs)
    }
}

/// The outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    path: PathBuf,
    writer: mpsc::Sender<WriteRequest>,
    reader: Arc<Mutex<Connection>>,
    counters: Arc<Counters>,
    appended: Arc<Notify>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Outbox")
            .field("path", &self.path)
            .field("pending_notes", &self.pending_notes())
            .finish_non_exhaustive()
    }
}

/// The outbox's schema name, for migration messages.
const OUTBOX_SCHEMA: &str = "the producer's outbox";

/// The outbox's migrations, oldest first. Never edit one that shipped: add the next.
const OUTBOX_MIGRATIONS: &[SqliteMigration] = &[SqliteMigration {
    version: 1,
    name: "outbox, rejected, traceparent",
    apply: adopt_unversioned_outbox,
}];

/// Version 1: the tables as they were when versioning began, adopting the files made before
/// (`user_version` 0) as they are. The oldest of those lack the `traceparent` column.
fn adopt_unversioned_outbox(transaction: &Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(SCHEMA_SQL)?;
    let has_traceparent: bool = transaction.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('outbox') WHERE name = 'traceparent'",
        [],
        |row| row.get(0),
    )?;
    if !has_traceparent {
        transaction.execute_batch("ALTER TABLE outbox ADD COLUMN traceparent TEXT")?;
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, ProducerError> {
    let fail = |error: rusqlite::Error| ProducerError::OpenOutbox {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    let connection = Connection::open(path).map_err(fail)?;
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;")
        .map_err(fail)?;
    Ok(connection)
}

impl Outbox {
    /// Opens (creating if needed) the outbox in `directory`, refusing appends that would take
    /// the pending notes' bytes past `budget_bytes`.
    pub fn open(directory: &Path, budget_bytes: u64) -> Result<Self, ProducerError> {
        std::fs::create_dir_all(directory).map_err(|error| ProducerError::OpenOutbox {
            path: directory.display().to_string(),
            reason: error.to_string(),
        })?;
        let path = directory.join("outbox.db");
        let mut writer_connection = open_connection(&path)?;
        let migrated = migrate_sqlite(&mut writer_connection, OUTBOX_SCHEMA, OUTBOX_MIGRATIONS).map_err(|error| {
            ProducerError::OpenOutbox {
                path: path.display().to_string(),
                reason: error.to_string(),
            }
        })?;
        if migrated.from != migrated.to {
            tracing::info!(outbox = %path.display(), from = migrated.from, to = migrated.to, "outbox schema migrated");
        }
        let (pending_notes, pending_bytes): (i64, i64) = writer_connection
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM outbox",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|error| ProducerError::OpenOutbox {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        let counters = Arc::new(Counters {
            pending_notes: AtomicU64::new(u64::try_from(pending_notes).unwrap_or(0)),
            pending_bytes: AtomicU64::new(u64::try_from(pending_bytes).unwrap_or(0)),
        });
        let reader = Arc::new(Mutex::new(open_connection(&path)?));
        let (writer, requests) = mpsc::channel(4096);
        let thread_counters = Arc::clone(&counters);
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("rebound-outbox-writer".to_owned())
            .spawn(move || {
                run_writer(
                    writer_connection,
                    requests,
                    &thread_counters,
                    budget_bytes,
                    &thread_path,
                )
            })
            .map_err(|error| ProducerError::OpenOutbox {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        Ok(Self {
            path,
            writer,
            reader,
            counters,
            appended: Arc::new(Notify::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends notes in order; resolves once they are committed to disk. All or nothing.
    pub async fn append(&self, entries: Vec<NewEntry>, accepted_at_ms: i64) -> Result<Vec<i64>, ProducerError> {
        self.queue_append(entries, accepted_at_ms).await?.committed().await
    }

    /// Queues an append behind every one queued before it, and returns without waiting for
    /// the commit: a caller with many notes keeps the next chunk coming while the writer
    /// commits this one, and the writer folds queued chunks into one transaction. Chunks are
    /// committed, and get their seqs, in the order they were queued.
    pub async fn queue_append(
        &self,
        entries: Vec<NewEntry>,
        accepted_at_ms: i64,
    ) -> Result<QueuedAppend, ProducerError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest::Append {
                entries,
                accepted_at_ms,
                reply,
            })
            .await
            .map_err(|_| writer_gone())?;
        Ok(QueuedAppend {
            answer,
            appended: Arc::clone(&self.appended),
        })
    }

    /// Removes acknowledged notes.
    pub async fn remove(&self, seqs: Vec<i64>) -> Result<(), ProducerError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest::Remove { seqs, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Records a failed send of these notes.
    pub async fn mark_failed(&self, seqs: Vec<i64>, error: String) -> Result<(), ProducerError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest::MarkFailed { seqs, error, reply })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Moves a note Kafka refused for good from the pending notes to the rejected table, in
    /// one transaction. False when it was no longer pending.
    pub async fn reject(&self, seq: i64, error: String, rejected_at_ms: i64) -> Result<bool, ProducerError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest::Reject {
                seq,
                error,
                rejected_at_ms,
                reply,
            })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// How many notes were rejected, and the newest `limit` of them.
    pub async fn rejected_notes(&self, limit: usize) -> Result<(u64, Vec<RejectedNote>), ProducerError> {
        self.read(move |connection| {
            let count: i64 = connection.query_row("SELECT COUNT(*) FROM rejected", [], |row| row.get(0))?;
            let mut statement = connection.prepare_cached(
                "SELECT seq, note_id, version, LENGTH(value), accepted_at_ms, rejected_at_ms, error \
                 FROM rejected ORDER BY rejected_at_ms DESC, seq DESC LIMIT ?1",
            )?;
            let listed = statement
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    Ok(RejectedNote {
                        seq: row.get(0)?,
                        note_id: row.get(1)?,
                        version: row.get(2)?,
                        bytes: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                        accepted_at_ms: row.get(4)?,
                        rejected_at_ms: row.get(5)?,
                        error: row.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((u64::try_from(count).unwrap_or(0), listed))
        })
        .await
    }

    /// Notes rejected at or after `since_ms` (epoch milliseconds).
    pub async fn rejected_since(&self, since_ms: i64) -> Result<u64, ProducerError> {
        self.count("SELECT COUNT(*) FROM rejected WHERE rejected_at_ms >= ?1", since_ms)
            .await
    }

    /// The pending notes after `cursor`, oldest first, as the relay reads them into its window:
    /// at most `limit`, and at most `max_bytes` of values (but the first however large when
    /// `at_least_one`, so that no note is too large to go). Each comes with its value's size and
    /// whether its note has a pending version below `earlier_than` (checked only when given:
    /// with resends held back, the relay holds such notes back whole). The flag says that rows
    /// were left out for want of bytes (so there are more to read once the window has room).
    pub async fn read_after(
        &self,
        cursor: i64,
        limit: usize,
        max_bytes: u64,
        at_least_one: bool,
        earlier_than: Option<i64>,
    ) -> Result<(Vec<ReadRow>, bool), ProducerError> {
        self.read(move |connection| {
            // Two statements rather than one with a condition on a parameter: the plain one walks
            // the primary key and looks at nothing else.
            let (sql, floor) = match earlier_than {
                Some(floor) => (READ_AFTER_SQL_WITH_EARLIER, floor),
                None => (READ_AFTER_SQL, i64::MIN),
            };
            let mut statement = connection.prepare_cached(sql)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut bind = |row: &rusqlite::Row<'_>| {
                // The value's length stands in column 3; the value is loaded below, only for
                // the notes that fit.
                let value_bytes = u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0);
                Ok(ReadRow {
                    entry: entry_of_row(row, None)?,
                    value_bytes,
                    earlier_version_pending: row.get(7)?,
                })
            };
            let candidates = if earlier_than.is_some() {
                statement
                    .query_map(params![cursor, limit, floor], &mut bind)?
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                statement
                    .query_map(params![cursor, limit], &mut bind)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            let mut taken = notes_within_bytes(candidates.iter().map(|row| row.value_bytes), max_bytes);
            if !at_least_one && candidates.first().is_some_and(|row| row.value_bytes > max_bytes) {
                taken = 0;
            }
            let mut load_value = connection.prepare_cached("SELECT value FROM outbox WHERE seq = ?1")?;
            let cut_by_bytes = taken < candidates.len();
            let mut rows = Vec::with_capacity(taken);
            for mut row in candidates.into_iter().take(taken) {
                // Only the relay removes notes, and it is the one asking: the row is there.
                let value: Option<Vec<u8>> = load_value.query_row([row.entry.seq], |found| found.get(0)).optional()?;
                if let Some(value) = value {
                    row.entry.value = value;
                    rows.push(row);
                }
            }
            Ok((rows, cut_by_bytes))
        })
        .await
    }

    /// These notes, those still pending, in the order asked: what the relay resends.
    pub async fn pending_entries(&self, seqs: Vec<i64>) -> Result<Vec<OutboxEntry>, ProducerError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, note_id, version, value, accepted_at_ms, attempts, traceparent \
                 FROM outbox WHERE seq = ?1",
            )?;
            let mut entries = Vec::with_capacity(seqs.len());
            for seq in seqs {
                if let Some(entry) = statement
                    .query_row([seq], |row| entry_of_row(row, Some(3)))
                    .optional()?
                {
                    entries.push(entry);
                }
            }
            Ok(entries)
        })
        .await
    }

    /// One pending note, if it is still pending.
    pub async fn pending_entry(&self, seq: i64) -> Result<Option<OutboxEntry>, ProducerError> {
        self.read(move |connection| {
            connection
                .query_row(
                    "SELECT seq, note_id, version, value, accepted_at_ms, attempts, traceparent \
                     FROM outbox WHERE seq = ?1",
                    [seq],
                    |row| entry_of_row(row, Some(3)),
                )
                .optional()
        })
        .await
    }

    /// The oldest `limit` pending notes, in acceptance order.
    pub async fn oldest_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>, ProducerError> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, note_id, version, value, accepted_at_ms, attempts, traceparent \
                 FROM outbox ORDER BY seq LIMIT ?1",
            )?;
            statement
                .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                    entry_of_row(row, Some(3))
                })?
                .collect()
        })
        .await
    }

    /// Acceptance time of the oldest pending note, epoch milliseconds.
    pub async fn oldest_accepted_at_ms(&self) -> Result<Option<i64>, ProducerError> {
        self.read(|connection| connection.query_row("SELECT MIN(accepted_at_ms) FROM outbox", [], |row| row.get(0)))
            .await
    }

    /// Pending notes accepted at or before `seq`.
    pub async fn pending_up_to(&self, seq: i64) -> Result<u64, ProducerError> {
        self.count("SELECT COUNT(*) FROM outbox WHERE seq <= ?1", seq).await
    }

    /// The lowest sequence number a note appended from now on can get: everything below it
    /// was accepted earlier (by this process or an earlier one).
    pub async fn next_seq_floor(&self) -> Result<i64, ProducerError> {
        self.read(|connection| {
            connection.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox", [], |row| row.get(0))
        })
        .await
    }

    /// Runs `query` on the reader connection, on a blocking thread so the async runtime keeps
    /// serving; any SQLite error is a read failure.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ProducerError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let connection = reader.lock().map_err(|_| read_failed("reader lock poisoned"))?;
            query(&connection).map_err(|error| read_failed(&error.to_string()))
        })
        .await
        .map_err(|error| read_failed(&error.to_string()))?
    }

    /// A `COUNT(*)` query with one parameter.
    async fn count(&self, sql: &'static str, parameter: i64) -> Result<u64, ProducerError> {
        self.read(move |connection| connection.query_row(sql, [parameter], |row| row.get::<_, i64>(0)))
            .await
            .map(|count| u64::try_from(count).unwrap_or(0))
    }

    /// Number of pending notes.
    pub fn pending_notes(&self) -> u64 {
        self.counters.pending_notes.load(Ordering::Relaxed)
    }

    /// Bytes of pending note values.
    pub fn pending_bytes(&self) -> u64 {
        self.counters.pending_bytes.load(Ordering::Relaxed)
    }

    /// Completes after the next append (at once if one happened since the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }
}

/// How many of the leading notes, of these value sizes, fit in `max_bytes` together; at least
/// one when there is any, so that a note larger than the bound still goes, alone.
pub fn notes_within_bytes(value_sizes: impl IntoIterator<Item = u64>, max_bytes: u64) -> usize {
    let mut total = 0_u64;
    let mut taken = 0;
    for size in value_sizes {
        total = total.saturating_add(size);
        if taken > 0 && total > max_bytes {
            break;
        }
        taken += 1;
    }
    taken
}

/// An outbox row selected as `seq, note_id, version, <value or its length>, accepted_at_ms,
/// attempts, traceparent`; the value is read from `value_column` when given, else left empty.
fn entry_of_row(row: &rusqlite::Row<'_>, value_column: Option<usize>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        seq: row.get(0)?,
        note_id: row.get(1)?,
        version: row.get(2)?,
        value: match value_column {
            Some(column) => row.get(column)?,
            None => Vec::new(),
        },
        accepted_at_ms: row.get(4)?,
        attempts: row.get(5)?,
        traceparent: row.get(6)?,
    })
}

fn writer_gone() -> ProducerError {
    ProducerError::WriteOutbox {
        reason: "the outbox writer thread stopped".to_owned(),
    }
}

fn read_failed(reason: &str) -> ProducerError {
    ProducerError::ReadOutbox {
        reason: reason.to_owned(),
    }
}

/// The writer thread: folds every queued request into one transaction, commits (one fsync),
/// then answers each request. A request's answer is sent only after the commit.
fn run_writer(
    mut connection: Connection,
    mut requests: mpsc::Receiver<WriteRequest>,
    counters: &Counters,
    budget_bytes: u64,
    path: &Path,
) {
    while let Some(first) = requests.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_REQUESTS_PER_TRANSACTION {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let outcome = write_batch(&mut connection, &batch, counters, budget_bytes);
        let (results, added_notes, added_bytes, removed_notes, removed_bytes) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                let reason = format!("{}: {error}", path.display());
                tracing::error!(%reason, "outbox write failed; nothing of this batch was committed");
                (
                    batch
                        .iter()
                        .map(|_| Err(WriteRefusal::Failed(reason.clone())))
                        .collect(),
                    0,
                    0,
                    0,
                    0,
                )
            }
        };
        // Only this thread changes the counters; others just read them.
        let notes = counters.pending_notes.load(Ordering::Relaxed);
        counters
            .pending_notes
            .store((notes + added_notes).saturating_sub(removed_notes), Ordering::Relaxed);
        let bytes = counters.pending_bytes.load(Ordering::Relaxed);
        counters
            .pending_bytes
            .store((bytes + added_bytes).saturating_sub(removed_bytes), Ordering::Relaxed);
        for (request, result) in batch.into_iter().zip(results) {
            match request {
                WriteRequest::Append { reply, .. } => {
                    let _ = reply.send(result.map_err(|outcome| match outcome {
                        WriteRefusal::Full { pending_bytes } => ProducerError::AcceptNotes {
                            pending_bytes,
                            budget_bytes,
                        },
                        WriteRefusal::Failed(reason) => ProducerError::WriteOutbox { reason },
                    }));
                }
                WriteRequest::Remove { reply, .. } | WriteRequest::MarkFailed { reply, .. } => {
                    let _ = reply.send(result.map(|_| ()).map_err(refusal_to_error));
                }
                WriteRequest::Reject { reply, .. } => {
                    let _ = reply.send(result.map(|moved| !moved.is_empty()).map_err(refusal_to_error));
                }
            }
        }
    }
}

/// The seqs as runs of consecutive numbers, `(first, last)` inclusive, ascending; duplicates
/// count once. Every number of a run is one of the seqs, so deleting a run deletes nothing else.
fn consecutive_runs(seqs: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for seq in sorted {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(seq) => *last = seq,
            _ => runs.push((seq, seq)),
        }
    }
    runs
}

fn refusal_to_error(outcome: WriteRefusal) -> ProducerError {
    ProducerError::WriteOutbox {
        reason: match outcome {
            WriteRefusal::Failed(reason) => reason,
            WriteRefusal::Full { .. } => "outbox full".to_owned(),
        },
    }
}

/// Why one request of a write batch was refused.
enum WriteRefusal {
    Full { pending_bytes: u64 },
    Failed(String),
}

type BatchOutcome = (Vec<Result<Vec<i64>, WriteRefusal>>, u64, u64, u64, u64);

fn write_batch(
    connection: &mut Connection,
    batch: &[WriteRequest],
    counters: &Counters,
    budget_bytes: u64,
) -> Result<BatchOutcome, rusqlite::Error> {
    let transaction = connection.transaction()?;
    let mut results = Vec::with_capacity(batch.len());
    let mut projected_bytes = counters.pending_bytes.load(Ordering::Relaxed);
    let (mut added_notes, mut added_bytes, mut removed_notes, mut removed_bytes) = (0_u64, 0_u64, 0_u64, 0_u64);
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO outbox (note_id, version, value, accepted_at_ms, traceparent) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        // One statement deletes a note and reports its size for the byte budget; a seq that is
        // already gone (removed twice after a resend) returns no row.
        let mut delete = transaction.prepare_cached("DELETE FROM outbox WHERE seq = ?1 RETURNING LENGTH(value)")?;
        // Acknowledged notes are removed by runs of consecutive seqs: the relay acknowledges
        // mostly in order, so a batch of 1,024 is a few runs, and two statements per run cost
        // less than a `DELETE ... RETURNING` per note (which was two thirds of this thread's
        // time). `LENGTH` of a blob reads its header, not its bytes.
        let mut measure_run = transaction.prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM outbox WHERE seq BETWEEN ?1 AND ?2",
        )?;
        let mut delete_run = transaction.prepare_cached("DELETE FROM outbox WHERE seq BETWEEN ?1 AND ?2")?;
        let mut fail =
            transaction.prepare_cached("UPDATE outbox SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1")?;
        let mut copy_to_rejected = transaction.prepare_cached(
            "INSERT OR REPLACE INTO rejected \
             (seq, note_id, version, value, accepted_at_ms, attempts, traceparent, rejected_at_ms, error) \
             SELECT seq, note_id, version, value, accepted_at_ms, attempts, traceparent, ?2, ?3 FROM outbox WHERE seq = ?1",
        )?;
        for request in batch {
            match request {
                WriteRequest::Append {
                    entries,
                    accepted_at_ms,
                    ..
                } => {
                    let bytes: u64 = entries.iter().map(|entry| entry.value.len() as u64).sum();
                    if projected_bytes.saturating_add(bytes) > budget_bytes {
                        results.push(Err(WriteRefusal::Full {
                            pending_bytes: projected_bytes,
                        }));
                        continue;
                    }
                    let mut seqs = Vec::with_capacity(entries.len());
                    for entry in entries {
                        insert.execute(params![
                            entry.note_id,
                            entry.version,
                            entry.value,
                            accepted_at_ms,
                            entry.traceparent
                        ])?;
                        seqs.push(transaction.last_insert_rowid());
                    }
                    projected_bytes += bytes;
                    added_notes += entries.len() as u64;
                    added_bytes += bytes;
                    results.push(Ok(seqs));
                }
                WriteRequest::Remove { seqs, .. } => {
                    for (first, last) in consecutive_runs(seqs) {
                        let (count, size): (i64, i64) =
                            measure_run.query_row([first, last], |row| Ok((row.get(0)?, row.get(1)?)))?;
                        delete_run.execute([first, last])?;
                        let size = u64::try_from(size).unwrap_or(0);
                        removed_notes += u64::try_from(count).unwrap_or(0);
                        removed_bytes += size;
                        projected_bytes = projected_bytes.saturating_sub(size);
                    }
                    results.push(Ok(Vec::new()));
                }
                WriteRequest::MarkFailed { seqs, error, .. } => {
                    for seq in seqs {
                        fail.execute(params![seq, error])?;
                    }
                    results.push(Ok(Vec::new()));
                }
                WriteRequest::Reject {
                    seq,
                    error,
                    rejected_at_ms,
                    ..
                } => {
                    // Copy and delete in the same transaction: the note is in exactly one table.
                    copy_to_rejected.execute(params![seq, rejected_at_ms, error])?;
                    let size: Option<i64> = delete.query_row([seq], |row| row.get(0)).optional()?;
                    if let Some(size) = size {
                        removed_notes += 1;
                        removed_bytes += u64::try_from(size).unwrap_or(0);
                        projected_bytes = projected_bytes.saturating_sub(u64::try_from(size).unwrap_or(0));
                        results.push(Ok(vec![*seq]));
                    } else {
                        results.push(Ok(Vec::new()));
                    }
                }
            }
        }
    }
    transaction.commit()?;
    Ok((results, added_notes, added_bytes, removed_notes, removed_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_seqs_group_into_runs_that_hold_only_those_seqs() {
        assert_eq!(consecutive_runs(&[]), vec![]);
        assert_eq!(consecutive_runs(&[5]), vec![(5, 5)]);
        assert_eq!(
            consecutive_runs(&[7, 3, 4, 5, 9, 10, 4, i64::MAX, i64::MAX - 1]),
            vec![(3, 5), (7, 7), (9, 10), (i64::MAX - 1, i64::MAX)]
        );
    }

    fn entry(note_id: &str, version: i64, size: usize) -> NewEntry {
        NewEntry {
            note_id: note_id.to_owned(),
            version,
            value: vec![7; size],
            traceparent: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn removing_scattered_and_repeated_seqs_removes_exactly_those_notes() {
        let directory = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(directory.path(), 1 << 20).expect("opens");
        let seqs = outbox
            .append(
                (1..=6)
                    .map(|index| entry(&format!("n{index}"), 1, index * 10))
                    .collect(),
                5,
            )
            .await
            .expect("appends");
        // Out of order, with a gap and a repeat, and a seq removed before.
        outbox.remove(vec![seqs[5]]).await.expect("removes");
        outbox
            .remove(vec![seqs[3], seqs[0], seqs[2], seqs[3], seqs[5]])
            .await
            .expect("removes");
        assert_eq!(outbox.pending_notes(), 2);
        assert_eq!(outbox.pending_bytes(), 20 + 50);
        let left: Vec<String> = outbox
            .oldest_pending(10)
            .await
            .expect("reads")
            .into_iter()
            .map(|entry| entry.note_id)
            .collect();
        assert_eq!(left, ["n2", "n5"]);
        drop(outbox);
        let reopened = Outbox::open(directory.path(), 1 << 20).expect("reopens");
        assert_eq!((reopened.pending_notes(), reopened.pending_bytes()), (2, 70));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_notes_survive_reopening_in_order_until_removed() {
        let directory = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(directory.path(), 1 << 20).expect("opens");
        let first = outbox
            .append(vec![entry("a", 1, 10), entry("b", 1, 10)], 5)
            .await
            .expect("appends");
        let second = outbox.append(vec![entry("a", 2, 10)], 6).await.expect("appends");
        assert!(first[1] < second[0]);
        assert_eq!(outbox.pending_notes(), 3);
        drop(outbox);

        let reopened = Outbox::open(directory.path(), 1 << 20).expect("reopens");
        assert_eq!(reopened.pending_notes(), 3);
        assert_eq!(reopened.pending_bytes(), 30);
        let pending = reopened.oldest_pending(10).await.expect("reads");
        let order: Vec<(&str, i64)> = pending
            .iter()
            .map(|entry| (entry.note_id.as_str(), entry.version))
            .collect();
        assert_eq!(order, vec![("a", 1), ("b", 1), ("a", 2)]);
        reopened
            .mark_failed(vec![pending[0].seq], "broker down".to_owned())
            .await
            .expect("marks");
        reopened.remove(vec![pending[1].seq]).await.expect("removes");
        let pending = reopened.oldest_pending(10).await.expect("reads");
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].attempts, 1);
        assert_eq!(reopened.pending_notes(), 2);
        assert_eq!(reopened.oldest_accepted_at_ms().await.expect("reads"), Some(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outbox_made_before_versioned_migrations_is_migrated_with_its_notes() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("outbox.db");
        // The file exactly as the outbox made it before its schema was versioned.
        {
            let connection = Connection::open(&path).expect("creates");
            connection.execute_batch(SCHEMA_SQL).expect("unversioned schema");
            connection
                .execute(
                    "INSERT INTO outbox (note_id, version, value, accepted_at_ms, traceparent) \
                     VALUES ('a', 1, x'0102', 5, NULL)",
                    [],
                )
                .expect("pending note");
        }
        let outbox = Outbox::open(directory.path(), 1 << 20).expect("opens");
        assert_eq!(outbox.pending_notes(), 1);
        let pending = outbox.oldest_pending(10).await.expect("reads");
        assert_eq!((pending[0].note_id.as_str(), pending[0].version), ("a", 1));
        drop(outbox);
        let version: u32 = Connection::open(&path)
            .expect("opens")
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("reads");
        assert_eq!(version, OUTBOX_MIGRATIONS.len() as u32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_note_moves_to_the_rejected_table_of_an_outbox_written_before_it_existed() {
        let directory = tempfile::tempdir().expect("tempdir");
        // An outbox file as older versions wrote it: no rejected table, no traceparent column.
        {
            let connection = Connection::open(directory.path().join("outbox.db")).expect("creates");
            connection
                .execute_batch(
                    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, note_id TEXT NOT NULL, \
                     version INTEGER NOT NULL, value BLOB NOT NULL, accepted_at_ms INTEGER NOT NULL, \
                     attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT); \
                     INSERT INTO outbox (note_id, version, value, accepted_at_ms) VALUES ('a', 1, x'0102', 5);",
                )
                .expect("old schema");
        }
        let outbox = Outbox::open(directory.path(), 1 << 20).expect("opens an old outbox");
        assert_eq!(outbox.rejected_notes(10).await.expect("lists"), (0, Vec::new()));
        outbox.append(vec![entry("a", 2, 10)], 6).await.expect("appends");
        let pending = outbox.oldest_pending(10).await.expect("reads");
        assert!(
            outbox
                .reject(pending[0].seq, "too large".to_owned(), 99)
                .await
                .expect("rejects")
        );
        assert!(
            !outbox
                .reject(pending[0].seq, "too large".to_owned(), 100)
                .await
                .expect("no-op"),
            "a note no longer pending is not rejected twice"
        );
        assert_eq!(outbox.pending_notes(), 1);
        assert_eq!(outbox.pending_bytes(), 10);
        let remaining = outbox.oldest_pending(10).await.expect("reads");
        assert_eq!((remaining[0].note_id.as_str(), remaining[0].version), ("a", 2));
        let (count, listed) = outbox.rejected_notes(10).await.expect("lists");
        assert_eq!(count, 1);
        assert_eq!(
            listed,
            vec![RejectedNote {
                seq: pending[0].seq,
                note_id: "a".to_owned(),
                version: 1,
                bytes: 2,
                accepted_at_ms: 5,
                rejected_at_ms: 99,
                error: "too large".to_owned(),
            }]
        );
        assert_eq!(outbox.rejected_since(99).await.expect("counts"), 1);
        assert_eq!(outbox.rejected_since(100).await.expect("counts"), 0);
    }

    /// An outbox holding `(note_id, failed attempts)` in this order; returns it and the seqs.
    async fn outbox_of(notes: &[(&str, u32)]) -> (tempfile::TempDir, Outbox, Vec<i64>) {
        let directory = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(directory.path(), 1 << 30).expect("opens");
        let entries = notes
            .iter()
            .enumerate()
            .map(|(version, (note_id, _))| entry(note_id, version as i64, 10))
            .collect();
        let seqs = outbox.append(entries, 1).await.expect("appends");
        for (seq, (_, attempts)) in seqs.iter().zip(notes) {
            for _ in 0..*attempts {
                outbox.mark_failed(vec![*seq], "down".to_owned()).await.expect("marks");
            }
        }
        (directory, outbox, seqs)
    }

    async fn read_seqs(outbox: &Outbox, cursor: i64, limit: usize) -> Vec<i64> {
        outbox
            .read_after(cursor, limit, u64::MAX, true, None)
            .await
            .expect("reads")
            .0
            .iter()
            .map(|row| row.entry.seq)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_relay_reads_every_version_after_its_cursor_in_acceptance_order() {
        let (_directory, outbox, seqs) = outbox_of(&[("a", 0), ("b", 0), ("a", 0), ("c", 0)]).await;
        assert_eq!(read_seqs(&outbox, 0, 10).await, seqs);
        assert_eq!(read_seqs(&outbox, seqs[1], 10).await, seqs[2..].to_vec());
        assert_eq!(read_seqs(&outbox, 0, 3).await, seqs[..3].to_vec(), "bounded by count");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notes_with_a_version_pending_from_an_earlier_run_are_flagged() {
        // With resends held back, note a's later version must wait for the earlier run's
        // version, however far back it is, or it would reach Kafka first.
        let held: Vec<(String, u32)> = (0..3000).map(|index| (format!("held-{index}"), 0)).collect();
        let mut notes: Vec<(&str, u32)> = held.iter().map(|(id, attempts)| (id.as_str(), *attempts)).collect();
        notes.push(("held-7", 0));
        notes.push(("fresh", 0));
        let (_directory, outbox, seqs) = outbox_of(&notes).await;
        let first_fresh = seqs[3000];
        let (rows, _) = outbox
            .read_after(first_fresh - 1, 10, u64::MAX, true, Some(first_fresh))
            .await
            .expect("reads");
        let flagged: Vec<(&str, bool)> = rows
            .iter()
            .map(|row| (row.entry.note_id.as_str(), row.earlier_version_pending))
            .collect();
        assert_eq!(flagged, vec![("held-7", true), ("fresh", false)]);
    }

    #[test]
    fn the_window_is_cut_by_bytes_but_a_note_larger_than_the_bound_still_goes_alone() {
        assert_eq!(notes_within_bytes([4, 4, 4, 4], 10), 2);
        assert_eq!(notes_within_bytes([4, 4, 2, 4], 10), 3);
        assert_eq!(notes_within_bytes([50, 1, 1], 10), 1);
        assert_eq!(notes_within_bytes([1, 50, 1], 10), 1);
        assert_eq!(notes_within_bytes([], 10), 0);
        assert_eq!(notes_within_bytes([3, 3], u64::MAX), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sendable_notes_are_bounded_by_bytes_and_carry_their_values() {
        let directory = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(directory.path(), 1 << 30).expect("opens");
        let seqs = outbox
            .append(
                vec![
                    entry("a", 1, 600),
                    entry("b", 1, 300),
                    entry("c", 1, 300),
                    entry("d", 1, 10),
                ],
                1,
            )
            .await
            .expect("appends");
        let (window, cut_by_bytes) = outbox.read_after(0, 10, 1000, true, None).await.expect("reads");
        assert!(cut_by_bytes);
        assert_eq!(
            window.iter().map(|row| row.entry.seq).collect::<Vec<_>>(),
            seqs[..2].to_vec()
        );
        assert_eq!(window[0].entry.value, vec![7; 600]);
        assert_eq!(window[0].value_bytes, 600);
        let (alone, _) = outbox.read_after(0, 10, 100, true, None).await.expect("reads");
        assert_eq!(alone.len(), 1, "larger than the bound, the first note goes alone");
        let (no_room, cut_by_bytes) = outbox.read_after(0, 10, 100, false, None).await.expect("reads");
        assert!(cut_by_bytes);
        assert!(no_room.is_empty(), "not alone, a note larger than the room waits");
        assert_eq!(
            outbox
                .pending_entries(vec![seqs[3], seqs[0] + 1000, seqs[1]])
                .await
                .expect("reads")
                .iter()
                .map(|entry| entry.seq)
                .collect::<Vec<_>>(),
            vec![seqs[3], seqs[1]]
        );
        assert_eq!(
            outbox
                .pending_entry(seqs[3])
                .await
                .expect("reads")
                .map(|entry| entry.value),
            Some(vec![7; 10])
        );
        outbox.remove(vec![seqs[3]]).await.expect("removes");
        assert_eq!(outbox.pending_entry(seqs[3]).await.expect("reads"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_past_the_budget_are_refused_whole_and_write_nothing() {
        let directory = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(directory.path(), 100).expect("opens");
        outbox.append(vec![entry("a", 1, 60)], 1).await.expect("fits");
        let refused = outbox.append(vec![entry("b", 1, 30), entry("c", 1, 30)], 2).await;
        assert!(matches!(
            refused,
            Err(ProducerError::AcceptNotes {
                pending_bytes: 60,
                budget_bytes: 100
            })
        ));
        assert_eq!(outbox.pending_notes(), 1);
        assert_eq!(outbox.oldest_pending(10).await.expect("reads").len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_all_committed() {
        let directory = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(directory.path(), 1 << 30).expect("opens");
        let appends: Vec<_> = (0..200)
            .map(|index| {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.append(vec![entry(&format!("n{index}"), 1, 100)], 1).await })
            })
            .collect();
        for append in appends {
            append.await.expect("task").expect("appended");
        }
        assert_eq!(outbox.oldest_pending(1000).await.expect("reads").len(), 200);
    }
}
