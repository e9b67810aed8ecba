//! One dead letter as the `rebound dlq` commands see it: the record plus what its headers say
//! (kind, error, fingerprint, origin), rendered as text for people or JSON for scripts.
//!
//! Headers are read leniently, one by one: a dead letter with a garbled header is still shown,
//! with that field missing, rather than hidden by a parse error.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use rebound_kafka::ConsumedRecord;
use rebound_retry::{ErrorFingerprint, ErrorKind, contract, error_fingerprint};
use rebound_schema::NoteCodec;
use serde_json::{Value, json};

/// Longest value shown in hex by the text output; JSON always carries every byte.
const TEXT_HEX_BYTES: usize = 256;

/// A dead letter and its parsed failure story.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record as read from the DLQ.
    pub record: ConsumedRecord,
    /// `retry.error.kind`, when it names a known kind.
    pub kind: Option<ErrorKind>,
    /// `retry.error.message`.
    pub error_message: Option<String>,
    /// Fingerprint of the error message (of the empty message when there is none).
    pub fingerprint: ErrorFingerprint,
    /// `retry.original.topic`.
    pub original_topic: Option<String>,
    /// Whether the replay ledger says it was replayed.
    pub replayed: bool,
}

impl DeadLetter {
    /// Reads the failure story from the record's headers.
    pub fn new(record: ConsumedRecord, replayed: bool) -> Self {
        let error_message = record.headers.get_str(contract::ERROR_MESSAGE).map(str::to_owned);
        Self {
            kind: record
                .headers
                .get_str(contract::ERROR_KIND)
                .and_then(|kind| kind.parse().ok()),
            fingerprint: error_fingerprint(error_message.as_deref().unwrap_or_default()),
            error_message,
            original_topic: record.headers.get_str(contract::ORIGINAL_TOPIC).map(str::to_owned),
            record,
            replayed,
        }
    }

    /// The kind's name, `unknown` when the header is missing or not a kind.
    pub fn kind_label(&self) -> &'static str {
        self.kind.map_or("unknown", ErrorKind::as_str)
    }

    /// The original topic, `unknown` when the header is missing.
    pub fn original_topic_label(&self) -> &str {
        self.original_topic.as_deref().unwrap_or("unknown")
    }

    /// The key for display: UTF-8 text, or hex when it is not text.
    pub fn key_label(&self) -> String {
        match self.record.key.as_deref() {
            None => "(none)".to_owned(),
            Some(key) => match std::str::from_utf8(key) {
                Ok(text) => text.to_owned(),
                Err(_) => format!("hex:{}", hex::encode(key)),
            },
        }
    }

    /// `retry.replay.count` as a number when it is one.
    pub fn replay_count(&self) -> Option<u32> {
        self.number(contract::REPLAY_COUNT)
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.record.headers.get_str(key).and_then(|text| text.parse().ok())
    }

    /// Where the dead letter sits, `TOPIC[PARTITION]@OFFSET`.
    pub fn position(&self) -> String {
        format!(
            "{}[{}]@{}",
            self.record.topic, self.record.partition, self.record.offset
        )
    }

    /// One JSON object with everything about the dead letter: position, failure story, every
    /// header, and the decoded note or the value in hex.
    pub fn to_json(&self, codec: &impl ReadNote) -> Value {
        let record = &self.record;
        let headers: Vec<Value> = record
            .headers
            .iter()
            .map(|header| match header.value.as_deref() {
                None => json!({ "key": header.key, "value": null }),
                Some(value) => match std::str::from_utf8(value) {
                    Ok(text) => json!({ "key": header.key, "value": text }),
                    Err(_) => json!({ "key": header.key, "value_hex": hex::encode(value) }),
                },
            })
            .collect();
        let mut object = json!({
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp_ms,
            "timestamp": record.timestamp_ms.map(format_time),
            "key": record.key.as_deref().map(|key| String::from_utf8_lossy(key).into_owned()),
            "kind": self.kind_label(),
            "error_message": self.error_message,
            "fingerprint": self.fingerprint.id,
            "fingerprint_pattern": self.fingerprint.pattern,
            "original_topic": self.original_topic,
            "original_partition": self.number::<i32>(contract::ORIGINAL_PARTITION),
            "original_offset": self.number::<i64>(contract::ORIGINAL_OFFSET),
            "original_timestamp_ms": self.number::<i64>(contract::ORIGINAL_TIMESTAMP),
            "first_failure_timestamp_ms": self.number::<i64>(contract::FIRST_FAILURE_TIMESTAMP),
            "attempt": self.number::<u32>(contract::ATTEMPT),
            "tier": record.headers.get_str(contract::TIER),
            "replay_count": self.replay_count().unwrap_or(0),
            "replayed": self.replayed,
            "headers": headers,
        });
        if let Some(key) = record.key.as_deref()
            && std::str::from_utf8(key).is_err()
        {
            object["key_hex"] = json!(hex::encode(key));
        }
        match record.value.as_deref() {
            None => {
                object["note"] = Value::Null;
                object["value_hex"] = Value::Null;
                object["decode_error"] = json!("no value");
            }
            Some(value) => match codec.read_note(value) {
                Ok(note) => {
                    object["writer_schema"] = json!(writer_schema_label(value));
                    object["note"] = serde_json::to_value(&note).unwrap_or(Value::Null);
                }
                Err(error) => {
                    object["note"] = Value::Null;
                    object["value_hex"] = json!(hex::encode(value));
                    object["writer_schema"] = json!(writer_schema_label(value));
                    object["decode_error"] = json!(error.to_string());
                }
            },
        }
        object
    }

    /// A few aligned lines for a person reading a terminal.
    pub fn render_text(&self, codec: &impl ReadNote) -> String {
        let record = &self.record;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{}  {}  key={}  {}  fingerprint {}{}",
            self.position(),
            record
                .timestamp_ms
                .map_or_else(|| "(no timestamp)".to_owned(), format_time),
            self.key_label(),
            self.kind_label(),
            self.fingerprint.id,
            if self.replayed { "  [replayed]" } else { "" },
        );
        let _ = writeln!(
            text,
            "  error     {}",
            self.error_message.as_deref().unwrap_or("(no retry.error.message)")
        );
        let _ = writeln!(
            text,
            "  origin    {}[{}]@{}  attempts {}  replays {}",
            self.original_topic_label(),
            self.number::<i32>(contract::ORIGINAL_PARTITION)
                .map_or_else(|| "?".to_owned(), |partition| partition.to_string()),
            self.number::<i64>(contract::ORIGINAL_OFFSET)
                .map_or_else(|| "?".to_owned(), |offset| offset.to_string()),
            self.number::<u32>(contract::ATTEMPT)
                .map_or_else(|| "?".to_owned(), |attempt| attempt.to_string()),
            self.replay_count().unwrap_or(0),
        );
        let mut label = "headers";
        for header in record.headers.iter() {
            let value = match header.value.as_deref() {
                None => "(null)".to_owned(),
                Some(value) => match std::str::from_utf8(value) {
                    Ok(text) => text.to_owned(),
                    Err(_) => format!("hex:{}", hex::encode(value)),
                },
            };
            let _ = writeln!(text, "  {label:<8}  {}: {value}", header.key);
            label = "";
        }
        match record.value.as_deref() {
            None => {
                let _ = writeln!(text, "  value     (none)");
            }
            Some(value) => match codec.read_note(value) {
                Ok(note) => {
                    if let Some(label) = writer_schema_label(value) {
                        let _ = writeln!(text, "  schema    {label}");
                    }
                    let _ = writeln!(text, "  note      {}", serde_json::to_string(&note).unwrap_or_default());
                }
                Err(error) => {
                    let shown = &value[..value.len().min(TEXT_HEX_BYTES)];
                    let _ = writeln!(
                        text,
                        "  value     {} bytes, not a note ({error}): {}{}",
                        value.len(),
                        hex::encode(shown),
                        if shown.len() < value.len() { "…" } else { "" }
                    );
                }
            },
        }
        text
    }
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_time(epoch_ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(epoch_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// A duration in milliseconds as `3h 12m 5s`, to the second.
pub fn format_age(age_ms: i64) -> String {
    let seconds = u64::try_from(age_ms / 1000).unwrap_or(0);
    if seconds == 0 {
        return "0s".to_owned();
    }
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

/// Reads a note from a record value: the compiled-in codec (single-object records only), or
/// the codec with a schema registry (both wire formats).
pub trait ReadNote {
    /// The note, or why the value is not one.
    fn read_note(&self, value: &[u8]) -> Result<rebound_schema::Note, String>;
}

impl ReadNote for NoteCodec {
    fn read_note(&self, value: &[u8]) -> Result<rebound_schema::Note, String> {
        self.decode(value).map_err(|error| error.to_string())
    }
}

/// The value's wire format and writer schema, `single-object, fingerprint <hex>` or
/// `confluent, schema id <n>`, when its header can be read.
fn writer_schema_label(value: &[u8]) -> Option<String> {
    let framing = rebound_schema::WireFraming::parse(value).ok()?;
    let format = match framing {
        rebound_schema::WireFraming::SingleObject { .. } => "single-object",
        rebound_schema::WireFraming::Confluent { .. } => "confluent",
    };
    Some(format!("{format}, {}", framing.writer_schema_label()))
}

#[cfg(test)]
mod tests {
    use rebound_retry::RecordHeaders;

    use super::*;

    fn record(value: Option<Vec<u8>>, headers: RecordHeaders) -> ConsumedRecord {
        ConsumedRecord {
            topic: "dlq".to_owned(),
            partition: 1,
            offset: 7,
            timestamp_ms: Some(1_764_324_000_000),
            key: Some(b"note-1".to_vec()),
            value,
            headers,
        }
    }

    #[test]
    fn both_wire_formats_show_their_writer_schema() {
        let codec = NoteCodec::embedded();
        let note = rebound_schema::Note {
            note_id: "note-1".to_owned(),
            user_id: "u".to_owned(),
            device_id: "d".to_owned(),
            version: 1,
            title: "t".to_owned(),
            body: "b".to_owned(),
            tags: Vec::new(),
            updated_at: 1,
            deleted: false,
            pinned: false,
        };
        let single_object = codec.encode(&note).expect("encodes");
        let json = DeadLetter::new(record(Some(single_object), RecordHeaders::new()), false).to_json(codec);
        let label = json["writer_schema"].as_str().expect("a label");
        assert!(label.starts_with("single-object, fingerprint "), "{label}");
        assert_eq!(json["note"]["note_id"], "note-1");
        // Without a registry a Confluent record is not decoded, but its schema id is shown.
        let confluent = codec.encode_confluent(&note, 42).expect("encodes");
        let letter = DeadLetter::new(record(Some(confluent), RecordHeaders::new()), false);
        let json = letter.to_json(codec);
        assert_eq!(json["writer_schema"], "confluent, schema id 42");
        assert!(
            json["decode_error"]
                .as_str()
                .is_some_and(|error| error.contains("no schema registry")),
            "{json}"
        );
        let text = letter.render_text(codec);
        assert!(text.contains("schema id 42"), "{text}");
    }

    #[test]
    fn a_note_is_decoded_and_every_header_is_shown() {
        let codec = NoteCodec::embedded();
        let note = rebound_schema::Note {
            note_id: "note-1".to_owned(),
            user_id: "u".to_owned(),
            device_id: "d".to_owned(),
            version: 3,
            title: "t".to_owned(),
            body: "b".to_owned(),
            tags: Vec::new(),
            updated_at: 1,
            deleted: false,
            pinned: false,
        };
        let mut headers = RecordHeaders::new();
        headers.set(contract::ERROR_KIND, "permanent");
        headers.set(contract::ERROR_MESSAGE, "http sink answered 422 Unprocessable Entity");
        headers.set(contract::ORIGINAL_TOPIC, "notes");
        headers.set(contract::REPLAY_COUNT, "2");
        headers.push("binary", Some(vec![0xFF, 0x00]));
        headers.push("null", None);
        let letter = DeadLetter::new(record(Some(codec.encode(&note).expect("encodes")), headers), true);
        let json = letter.to_json(codec);
        assert_eq!(json["kind"], "permanent");
        assert_eq!(json["note"]["version"], 3);
        assert_eq!(json["replay_count"], 2);
        assert_eq!(json["replayed"], true);
        assert_eq!(json["timestamp"], "2025-11-28T10:00:00.000Z");
        assert_eq!(
            json["fingerprint"],
            error_fingerprint("http sink answered 499 Unprocessable Entity").id
        );
        assert!(json.get("value_hex").is_none());
        let headers = json["headers"].as_array().expect("array");
        assert_eq!(headers.len(), 6);
        assert_eq!(headers[4]["value_hex"], "ff00");
        assert!(headers[5]["value"].is_null());
        let text = letter.render_text(codec);
        assert!(text.contains("dlq[1]@7") && text.contains("[replayed]"), "{text}");
        assert!(text.contains("\"note_id\":\"note-1\""), "{text}");
        assert!(text.contains("binary: hex:ff00"), "{text}");
    }

    #[test]
    fn poison_is_shown_in_hex_with_the_decode_error() {
        let codec = NoteCodec::embedded();
        let letter = DeadLetter::new(record(Some(b"garbage".to_vec()), RecordHeaders::new()), false);
        let json = letter.to_json(codec);
        assert!(json["note"].is_null());
        assert_eq!(json["value_hex"], hex::encode(b"garbage"));
        assert!(
            json["decode_error"]
                .as_str()
                .is_some_and(|error| error.contains("failed to decode"))
        );
        assert_eq!(json["kind"], "unknown");
        let text = letter.render_text(codec);
        assert!(text.contains(&hex::encode(b"garbage")), "{text}");
        let empty = DeadLetter::new(record(None, RecordHeaders::new()), false).to_json(codec);
        assert_eq!(empty["decode_error"], "no value");
    }

    #[test]
    fn ages_are_rounded_to_the_second() {
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(999), "0s");
        assert_eq!(format_age(3_725_400), "1h 2m 5s");
    }
}
