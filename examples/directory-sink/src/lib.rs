//! An example of a sink of one's own: every note is a JSON file `DIR/<note_id>.json`, replaced
//! only by a higher version, written to a temporary file, fsynced and renamed, so a file is
//! always a whole note and a note reported applied survives a crash. `docs/sinks.md` walks
//! through it; `src/main.rs` runs rebound's consumer with it.

use std::path::{Path, PathBuf};

use rebound_sink_store::{ApplyBatchFuture, ApplyItem, ApplyOutcome, Sink, SinkFailure};

/// The directory sink.
#[derive(Debug, Clone)]
pub struct DirectorySink {
    directory: PathBuf,
}

impl DirectorySink {
    /// A sink writing into `directory`, created if needed.
    pub fn open(directory: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(directory)?;
        Ok(Self {
            directory: directory.to_owned(),
        })
    }

    /// Writes one note unless a version at least as high is stored: the version rule that makes
    /// redelivery (at-least-once) harmless.
    fn apply_one(&self, item: &ApplyItem) -> ApplyOutcome {
        let note = &item.note;
        // The note id comes from the network: a name that could leave the directory is bad
        // input, refused for good (the DLQ), never a panic and never retried.
        let valid_name = !note.note_id.is_empty()
            && note.note_id.len() <= 200
            && note
                .note_id
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
            && !note.note_id.starts_with('.');
        if !valid_name {
            return Err(SinkFailure::permanent(format!(
                "note id {:?} is not a safe file name",
                note.note_id
            )));
        }
        let path = self.directory.join(format!("{}.json", note.note_id));
        // An I/O error (disk full, permissions being fixed) may pass: transient, so the note
        // goes through the retry tiers.
        let transient = |what: &str, error: std::io::Error| SinkFailure::transient(format!("{what}: {error}"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let stored_version = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|stored| stored.get("version").and_then(serde_json::Value::as_i64));
                if stored_version.is_some_and(|stored| stored >= note.version) {
                    return Ok(());
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(transient("cannot read the stored note", error)),
        }
        let json = serde_json::json!({
            "note_id": note.note_id,
            "version": note.version,
            "title": note.title,
            "body": note.body,
            "tags": note.tags,
            "deleted": note.deleted,
            "pinned": note.pinned,
            "updated_at_ms": note.updated_at,
            "applied_attempt": item.previous_attempts,
            "applied_tier": item.last_tier,
        });
        let temporary = self.directory.join(format!(".{}.json.tmp", note.note_id));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            std::io::Write::write_all(&mut file, json.to_string().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(&self.directory)?.sync_all()
        };
        write().map_err(|error| transient("cannot write the note", error))
    }
}

impl Sink for DirectorySink {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        let sink = self.clone();
        Box::pin(async move {
            // File I/O blocks: it runs on tokio's blocking pool, never on the consumer's task.
            let count = items.len();
            tokio::task::spawn_blocking(move || items.iter().map(|item| sink.apply_one(item)).collect())
                .await
                .unwrap_or_else(|error| vec![Err(SinkFailure::transient(format!("sink task failed: {error}"))); count])
        })
    }
}

#[cfg(test)]
mod tests {
    use rebound_retry::ErrorKind;
    use rebound_schema::Note;

    use super::*;

    fn item(note_id: &str, version: i64) -> ApplyItem {
        ApplyItem {
            note: Note {
                note_id: note_id.to_owned(),
                user_id: "u".to_owned(),
                device_id: "d".to_owned(),
                version,
                title: format!("{note_id} v{version}"),
                body: String::new(),
                tags: Vec::new(),
                updated_at: 1,
                deleted: false,
                pinned: false,
            },
            previous_attempts: 0,
            last_tier: None,
        }
    }

    #[tokio::test]
    async fn the_newest_version_is_kept_and_a_bad_id_fails_alone() {
        let directory = tempfile::tempdir().expect("tempdir");
        let sink = DirectorySink::open(directory.path()).expect("opens");
        let outcomes = sink
            .apply_batch(vec![item("a", 2), item("a", 1), item("../escape", 1), item("b", 1)])
            .await;
        let kinds: Vec<Option<ErrorKind>> = outcomes
            .iter()
            .map(|outcome| outcome.as_ref().err().map(|failure| failure.kind))
            .collect();
        assert_eq!(kinds, vec![None, None, Some(ErrorKind::Permanent), None]);
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(directory.path().join("a.json")).expect("reads")).expect("json");
        assert_eq!(stored["version"], 2);
        assert!(!directory.path().join("../escape.json").exists());
    }
}
