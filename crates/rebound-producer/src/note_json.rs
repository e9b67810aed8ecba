//! Turns client JSON into notes: one object or an array, field names as in the Avro schema,
//! timestamps as epoch milliseconds or RFC 3339. Every problem names the item and the field.
//!
//! Two classes of problems, as HTTP tells them apart: the body is not JSON, or a field is missing
//! or of the wrong JSON type (400, `Malformed`); or the JSON is well formed but a value breaks
//! the schema's rules (422, `Invalid`). Pure: no I/O.
//!
//! Two readers, one set of rules. Well-formed notes, nearly all of them, are read straight into
//! typed fields (`NoteFields`), which costs a fraction of building a generic JSON tree. Anything
//! that reader refuses is read again through the generic tree (`note_from_json`), which words
//! the problem and decides: so the fast reader only ever has to accept a subset of what the
//! generic one accepts, never to reproduce its messages. A differential test holds the two to
//! the same notes.

use rebound_schema::{Note, NoteCodec};
use serde_json::{Map, Value};

/// Fields the schema knows; anything else is rejected so that a typo never silently drops data.
const KNOWN_FIELDS: [&str; 10] = [
    "note_id",
    "user_id",
    "device_id",
    "version",
    "title",
    "body",
    "tags",
    "updated_at",
    "deleted",
    "pinned",
];

/// Longest note id, in bytes; ids are Kafka keys and sink primary keys.
const MAX_NOTE_ID_BYTES: usize = 256;

/// Why a note was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteRejection {
    /// Not JSON, or a field missing or of the wrong JSON type.
    Malformed(String),
    /// Well-formed JSON whose values break the schema's rules.
    Invalid(String),
}

impl NoteRejection {
    /// The message, whatever the class.
    pub fn message(&self) -> &str {
        match self {
            NoteRejection::Malformed(message) | NoteRejection::Invalid(message) => message,
        }
    }
}

/// A note that passed every check, with the single-object record (current schema) that checking
/// it against the schema encoded: the bytes the outbox stores, so no note is encoded twice.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedNote {
    /// The note.
    pub note: Note,
    /// Its single-object Avro record.
    pub value: Vec<u8>,
}

/// A parsed request body: notes in order, or the problems of every item that was refused.
pub type ParsedNotes = Result<Vec<CheckedNote>, Vec<(Option<usize>, NoteRejection)>>;

/// Parses a body holding one note object or an array of them. All or nothing: one bad item
/// rejects the whole body, and every bad item is reported (by index for arrays).
pub fn parse_notes_body(body: &[u8]) -> ParsedNotes {
    // The first byte tells an array from an object; serde's untagged enums would buffer the
    // body into a generic tree first, which is the cost the fast reader avoids.
    let fast = match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<NoteFields>>(body).ok(),
        Some(b'{') => serde_json::from_slice::<NoteFields>(body)
            .ok()
            .map(|fields| vec![fields]),
        _ => None,
    };
    if let Some(fields) = fast.filter(|fields| !fields.is_empty())
        && let Ok(checked) = fields.into_iter().map(check_fields).collect::<Result<Vec<_>, _>>()
    {
        return Ok(checked);
    }
    parse_notes_body_generically(body)
}

/// Parses one NDJSON line holding one note object (what `send` reads).
pub fn parse_note_line(line: &str) -> Result<CheckedNote, NoteRejection> {
    if let Ok(fields) = serde_json::from_str::<NoteFields>(line)
        && let Ok(checked) = check_fields(fields)
    {
        return Ok(checked);
    }
    let value = serde_json::from_str::<Value>(line)
        .map_err(|error| NoteRejection::Malformed(format!("not valid JSON: {error}")))?;
    checked_note_from_json(&value)
}

/// [`parse_notes_body`] through the generic JSON tree only: the reference reader.
fn parse_notes_body_generically(body: &[u8]) -> ParsedNotes {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        vec![(
            None,
            NoteRejection::Malformed(format!(
                "body is not valid JSON: {error} (line {}, column {})",
                error.line(),
                error.column()
            )),
        )]
    })?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(vec![(
                    None,
                    NoteRejection::Invalid("the array holds no notes".to_owned()),
                )]);
            }
            let mut notes = Vec::with_capacity(items.len());
            let mut problems = Vec::new();
            for (index, item) in items.iter().enumerate() {
                match checked_note_from_json(item) {
                    Ok(note) => notes.push(note),
                    Err(problem) => problems.push((Some(index), problem)),
                }
            }
            if problems.is_empty() { Ok(notes) } else { Err(problems) }
        }
        other => checked_note_from_json(&other)
            .map(|note| vec![note])
            .map_err(|problem| vec![(None, problem)]),
    }
}

/// What a well-formed note object holds, read without a generic tree. Unknown fields, a wrong
/// type or a duplicate field fail it, and the generic reader then decides.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteFields {
    note_id: String,
    user_id: String,
    device_id: String,
    version: i64,
    title: Option<String>,
    body: Option<String>,
    tags: Option<Vec<String>>,
    updated_at: FastTimestamp,
    deleted: Option<bool>,
    pinned: Option<bool>,
}

/// `updated_at` for the fast reader: a whole number of epoch milliseconds or an RFC 3339 string.
struct FastTimestamp(i64);

impl<'de> serde::Deserialize<'de> for FastTimestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = FastTimestamp;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("epoch milliseconds or an RFC 3339 date-time")
            }
            fn visit_i64<E: serde::de::Error>(self, millis: i64) -> Result<FastTimestamp, E> {
                Ok(FastTimestamp(millis))
            }
            fn visit_u64<E: serde::de::Error>(self, millis: u64) -> Result<FastTimestamp, E> {
                i64::try_from(millis)
                    .map(FastTimestamp)
                    .map_err(|_| E::custom("out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FastTimestamp, E> {
                parse_rfc3339_millis(text)
                    .map(FastTimestamp)
                    .ok_or_else(|| E::custom("not an RFC 3339 date-time"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The fast reader's fields, checked by the same rules as the generic reader's.
fn check_fields(fields: NoteFields) -> Result<CheckedNote, NoteRejection> {
    check_note(Note {
        note_id: fields.note_id,
        user_id: fields.user_id,
        device_id: fields.device_id,
        version: fields.version,
        title: fields.title.unwrap_or_default(),
        body: fields.body.unwrap_or_default(),
        tags: fields.tags.unwrap_or_default(),
        updated_at: fields.updated_at.0,
        deleted: fields.deleted.unwrap_or_default(),
        pinned: fields.pinned.unwrap_or_default(),
    })
}

/// Parses one note from a JSON value and checks it against the schema by encoding it.
pub fn note_from_json(value: &Value) -> Result<Note, NoteRejection> {
    checked_note_from_json(value).map(|checked| checked.note)
}

/// [`note_from_json`], keeping the record the check encoded.
fn checked_note_from_json(value: &Value) -> Result<CheckedNote, NoteRejection> {
    let Value::Object(fields) = value else {
        return Err(NoteRejection::Malformed(format!(
            "expected a note object, found {}",
            json_type(value)
        )));
    };
    if let Some(unknown) = fields.keys().find(|key| !KNOWN_FIELDS.contains(&key.as_str())) {
        return Err(NoteRejection::Invalid(format!(
            "field {unknown:?} is not part of the note schema"
        )));
    }
    let note = Note {
        note_id: required_string(fields, "note_id")?,
        user_id: required_string(fields, "user_id")?,
        device_id: required_string(fields, "device_id")?,
        version: required_integer(fields, "version")?,
        title: optional_string(fields, "title")?,
        body: optional_string(fields, "body")?,
        tags: optional_tags(fields)?,
        updated_at: required_timestamp(fields, "updated_at")?,
        deleted: optional_bool(fields, "deleted")?,
        pinned: optional_bool(fields, "pinned")?,
    };
    check_note(note)
}

/// The rules a note's values must keep, whichever reader read it; encoding is the last check.
fn check_note(note: Note) -> Result<CheckedNote, NoteRejection> {
    if note.note_id.is_empty() {
        return Err(NoteRejection::Invalid("field \"note_id\" is empty".to_owned()));
    }
    if note.note_id.len() > MAX_NOTE_ID_BYTES {
        return Err(NoteRejection::Invalid(format!(
            "field \"note_id\" is {} bytes long; at most {MAX_NOTE_ID_BYTES}",
            note.note_id.len()
        )));
    }
    if note.version < 1 {
        return Err(NoteRejection::Invalid(format!(
            "field \"version\" is {}; versions start at 1",
            note.version
        )));
    }
    let value = NoteCodec::embedded()
        .encode(&note)
        .map_err(|error| NoteRejection::Invalid(format!("note does not fit the schema: {error}")))?;
    Ok(CheckedNote { note, value })
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, found: &Value) -> NoteRejection {
    NoteRejection::Malformed(format!(
        "field {field:?} must be {expected}, found {}",
        json_type(found)
    ))
}

fn required_string(fields: &Map<String, Value>, field: &str) -> Result<String, NoteRejection> {
    match fields.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(wrong_type(field, "a string", other)),
        None => Err(NoteRejection::Malformed(format!("field {field:?} is missing"))),
    }
}

fn optional_string(fields: &Map<String, Value>, field: &str) -> Result<String, NoteRejection> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

fn optional_bool(fields: &Map<String, Value>, field: &str) -> Result<bool, NoteRejection> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(other) => Err(wrong_type(field, "true or false", other)),
    }
}

fn required_integer(fields: &Map<String, Value>, field: &str) -> Result<i64, NoteRejection> {
    match fields.get(field) {
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or_else(|| NoteRejection::Malformed(format!("field {field:?} must be a whole number, found {number}"))),
        Some(other) => Err(wrong_type(field, "a whole number", other)),
        None => Err(NoteRejection::Malformed(format!("field {field:?} is missing"))),
    }
}

fn optional_tags(fields: &Map<String, Value>) -> Result<Vec<String>, NoteRejection> {
    match fields.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(tag) => Ok(tag.clone()),
                other => Err(wrong_type(&format!("tags[{index}]"), "a string", other)),
            })
            .collect(),
        Some(other) => Err(wrong_type("tags", "an array of strings", other)),
    }
}

/// Epoch milliseconds as a number, or an RFC 3339 date-time string.
fn required_timestamp(fields: &Map<String, Value>, field: &str) -> Result<i64, NoteRejection> {
    match fields.get(field) {
        Some(Value::Number(_)) => required_integer(fields, field),
        Some(Value::String(text)) => parse_rfc3339_millis(text).ok_or_else(|| {
            NoteRejection::Malformed(format!(
                "field {field:?} must be epoch milliseconds or an RFC 3339 date-time, found {text:?}"
            ))
        }),
        Some(other) => Err(wrong_type(field, "epoch milliseconds or an RFC 3339 string", other)),
        None => Err(NoteRejection::Malformed(format!("field {field:?} is missing"))),
    }
}

/// RFC 3339 with any offset (`Z`, `+02:00`) and optional fractional seconds, to epoch ms.
fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    // humantime reads UTC (`Z`) timestamps; a numeric offset is applied by hand.
    let (local, offset_minutes) = split_offset(text)?;
    let parsed = humantime::parse_rfc3339_weak(local).ok()?;
    let millis = match parsed.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_millis()).ok()?,
    };
    Some(millis - offset_minutes * 60_000)
}

/// Splits `2026-11-28T10:00:00+02:00` into the local part and +120 minutes.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix('Z').or_else(|| text.strip_suffix('z')) {
        return Some((local, 0));
    }
    let time_start = text.find(['T', 't', ' '])?;
    let sign_index = text[time_start..].rfind(['+', '-'])? + time_start;
    let (local, offset) = text.split_at(sign_index);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let (hours, minutes) = offset[1..].split_once(':')?;
    let hours: i64 = hours.parse().ok()?;
    let minutes: i64 = minutes.parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((local, sign * (hours * 60 + minutes)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn valid() -> Value {
        json!({
            "note_id": "n-1", "user_id": "u", "device_id": "phone", "version": 2,
            "title": "Hi", "body": "there", "tags": ["a"], "updated_at": 1_764_000_000_000_i64,
        })
    }

    #[test]
    fn a_valid_object_and_an_array_parse() {
        let single = parse_notes_body(valid().to_string().as_bytes()).expect("valid");
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].note.version, 2);
        assert!(!single[0].note.deleted && !single[0].note.pinned);
        let array = parse_notes_body(json!([valid(), valid()]).to_string().as_bytes()).expect("valid");
        assert_eq!(array.len(), 2);
    }

    #[test]
    fn timestamps_accept_epoch_millis_and_rfc3339_with_offsets() {
        let mut note = valid();
        for (text, expected) in [
            ("2025-11-24T16:00:00Z", 1_764_000_000_000_i64),
            ("2025-11-24T16:00:00.123Z", 1_764_000_000_123),
            ("2025-11-24T18:00:00+02:00", 1_764_000_000_000),
            ("2025-11-24T11:30:00-04:30", 1_764_000_000_000),
        ] {
            note["updated_at"] = json!(text);
            assert_eq!(
                note_from_json(&note).map(|note| note.updated_at),
                Ok(expected),
                "{text}"
            );
        }
        note["updated_at"] = json!("yesterday");
        assert!(
            matches!(note_from_json(&note), Err(NoteRejection::Malformed(message)) if message.contains("updated_at"))
        );
    }

    #[test]
    fn malformed_input_names_the_field() {
        let cases = [
            (json!({"user_id": "u"}), "\"note_id\" is missing"),
            (
                json!({"note_id": 5, "user_id": "u", "device_id": "d", "version": 1, "updated_at": 1}),
                "\"note_id\" must be a string",
            ),
            (
                json!({"note_id": "n", "user_id": "u", "device_id": "d", "version": "2", "updated_at": 1}),
                "\"version\" must be a whole number",
            ),
            (
                json!({"note_id": "n", "user_id": "u", "device_id": "d", "version": 1.5, "updated_at": 1}),
                "\"version\" must be a whole number",
            ),
            (
                json!({"note_id": "n", "user_id": "u", "device_id": "d", "version": 1, "updated_at": 1, "tags": [1]}),
                "\"tags[0]\" must be a string",
            ),
            (json!("a string"), "expected a note object"),
        ];
        for (input, expected) in cases {
            match note_from_json(&input) {
                Err(NoteRejection::Malformed(message)) => assert!(message.contains(expected), "{message}"),
                other => panic!("{input}: expected malformed, got {other:?}"),
            }
        }
        let syntax = parse_notes_body(b"{\"note_id\": ").expect_err("not json");
        assert!(matches!(&syntax[0].1, NoteRejection::Malformed(message) if message.contains("line 1")));
    }

    #[test]
    fn schema_violations_are_invalid_not_malformed() {
        let mut empty_id = valid();
        empty_id["note_id"] = json!("");
        let mut zero_version = valid();
        zero_version["version"] = json!(0);
        let mut unknown = valid();
        unknown["colour"] = json!("red");
        for (input, expected) in [
            (empty_id, "empty"),
            (zero_version, "versions start at 1"),
            (unknown, "colour"),
        ] {
            match note_from_json(&input) {
                Err(NoteRejection::Invalid(message)) => assert!(message.contains(expected), "{message}"),
                other => panic!("expected invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_array_with_one_bad_item_is_refused_whole_with_the_index() {
        let mut bad = valid();
        bad["version"] = json!("x");
        let problems = parse_notes_body(json!([valid(), bad, valid()]).to_string().as_bytes()).expect_err("refused");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, Some(1));
    }

    /// Every field replaced in turn by each kind of JSON value (or removed), plus duplicates and
    /// unknown fields: the fast reader accepts a note only when the generic one accepts the same
    /// note, and otherwise leaves the word to it, so both paths answer alike.
    #[test]
    fn the_fast_reader_and_the_generic_reader_agree_on_every_variation() {
        let replacements = [
            None,
            Some(json!(null)),
            Some(json!("")),
            Some(json!("text")),
            Some(json!(0)),
            Some(json!(-1)),
            Some(json!(7)),
            Some(json!(1.5)),
            Some(json!(2.0)),
            Some(json!(u64::MAX)),
            Some(json!(i64::MIN)),
            Some(json!(true)),
            Some(json!([])),
            Some(json!(["a", "ü"])),
            Some(json!([1])),
            Some(json!({})),
            Some(json!("2025-11-24T16:00:00Z")),
            Some(json!("2025-11-24T18:00:00.5+02:00")),
            Some(json!("x".repeat(MAX_NOTE_ID_BYTES + 1))),
        ];
        let mut inputs = vec![valid().to_string()];
        for field in KNOWN_FIELDS.iter().chain(&["colour"]) {
            for replacement in &replacements {
                let mut note = valid();
                let fields = note.as_object_mut().expect("object");
                match replacement {
                    Some(value) => fields.insert((*field).to_owned(), value.clone()),
                    None => fields.remove(*field),
                };
                inputs.push(note.to_string());
            }
        }
        // serde_json's tree keeps the last of duplicate keys; the typed reader refuses them.
        inputs.push(
            r#"{"note_id":"a","note_id":"b","user_id":"u","device_id":"d","version":1,"updated_at":1}"#.to_owned(),
        );
        inputs.push(r#"  {"note_id":"a","user_id":"u","device_id":"d","version":1,"updated_at":1} "#.to_owned());
        inputs.push(r#"{"note_id":"a","user_id":"u","device_id":"d","version":1,"updated_at":1} x"#.to_owned());
        let mut accepted = 0;
        for input in &inputs {
            let generic = serde_json::from_str::<Value>(input)
                .map_err(|error| NoteRejection::Malformed(format!("not valid JSON: {error}")))
                .and_then(|value| checked_note_from_json(&value));
            accepted += usize::from(generic.is_ok());
            assert_eq!(parse_note_line(input), generic, "line {input}");
            assert_eq!(
                parse_notes_body(input.as_bytes()),
                parse_notes_body_generically(input.as_bytes()),
                "body {input}"
            );
            let array = format!("[{input},{}]", valid());
            assert_eq!(
                parse_notes_body(array.as_bytes()),
                parse_notes_body_generically(array.as_bytes()),
                "array {array}"
            );
        }
        assert!(
            accepted > 40 && accepted < inputs.len() - 40,
            "the variations exercise both outcomes: {accepted} of {} accepted",
            inputs.len()
        );
    }

    #[test]
    fn garbage_never_panics() {
        for body in [
            &b""[..],
            b"[",
            b"null",
            b"[null]",
            b"{\"version\": 1e400}",
            b"\xff\xfe",
            b"[[[[[]]]]]",
        ] {
            assert!(parse_notes_body(body).is_err());
        }
    }
}
