//! The typed note record, as the current schema (`schemas/note.avsc`) describes it.

use serde::{Deserialize, Serialize};

/// One version of a client's note, as it travels through Kafka and reaches a sink.
///
/// Field names match the Avro schema and the JSON accepted by the producer's HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Stable identifier of the note; also the Kafka record key.
    pub note_id: String,
    /// Owner of the note.
    pub user_id: String,
    /// Device that made this change.
    pub device_id: String,
    /// Monotonically increasing per note; sinks never replace a higher version with a lower one.
    pub version: i64,
    /// Title text.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When the device made this change, in milliseconds since the Unix epoch.
    pub updated_at: i64,
    /// A delete is a versioned tombstone rather than the absence of a record.
    #[serde(default)]
    pub deleted: bool,
    /// The user pinned the note (added in schema version 2, defaults to false).
    #[serde(default)]
    pub pinned: bool,
}
