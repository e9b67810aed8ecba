//! Records written with version 1 of the note schema are still readable by a codec whose current
//! schema is version 2, with the added field taking its default.

use apache_avro::Schema;
use apache_avro::types::{Record, Value};
use rebound_schema::{NoteCodec, SINGLE_OBJECT_MARKER, SchemaFingerprint};

const NOTE_V1_SCHEMA: &str = include_str!("../../../schemas/note.v1.avsc");

fn encode_with_v1_schema(note_id: &str, version: i64) -> Vec<u8> {
    let schema = Schema::parse_str(NOTE_V1_SCHEMA).expect("v1 schema parses");
    let mut record = Record::new(&schema).expect("v1 schema is a record");
    record.put("note_id", note_id);
    record.put("user_id", "user-1");
    record.put("device_id", "laptop");
    record.put("version", version);
    record.put("title", "written by an old producer");
    record.put("body", "before notes could be pinned");
    record.put("tags", Value::Array(vec![Value::String("legacy".to_owned())]));
    record.put("updated_at", Value::TimestampMillis(1_700_000_000_000));
    record.put("deleted", false);
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .expect("v1 writer builds")
        .write_value_to_vec(record)
        .expect("v1 datum encodes");
    let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
    bytes.extend_from_slice(
        &SchemaFingerprint::of_schema_json(NOTE_V1_SCHEMA)
            .expect("fingerprints")
            .0,
    );
    bytes.extend_from_slice(&datum);
    bytes
}

#[test]
fn v1_record_decodes_into_current_schema_with_default_for_added_field() {
    let codec = NoteCodec::embedded();
    let note = codec
        .decode(&encode_with_v1_schema("old-note", 4))
        .expect("v1 record decodes");
    assert_eq!(note.note_id, "old-note");
    assert_eq!(note.version, 4);
    assert_eq!(note.tags, vec!["legacy".to_owned()]);
    assert_eq!(note.updated_at, 1_700_000_000_000);
    assert!(!note.pinned, "the field added in v2 takes its default");
}

#[test]
fn v1_and_current_fingerprints_differ() {
    let v1 = Schema::parse_str(NOTE_V1_SCHEMA).expect("v1 schema parses");
    assert_ne!(
        SchemaFingerprint::of_library_form(&v1),
        SchemaFingerprint::of_library_form(NoteCodec::embedded().current_schema())
    );
}

#[test]
fn codec_without_the_old_schema_rejects_v1_records() {
    let current_only = NoteCodec::from_schema_files(&[("note.avsc", include_str!("../../../schemas/note.avsc"))])
        .expect("current schema alone builds a codec");
    let error = current_only
        .decode(&encode_with_v1_schema("old-note", 1))
        .expect_err("v1 unknown");
    assert!(
        error.to_string().contains("unknown writer schema fingerprint"),
        "{error}"
    );
}

/// A version 3 of the note schema that adds an optional field, as a temporary copy: it is not
/// in `schemas/`, so the current build has never seen it (a producer upgraded before consumers).
fn note_v3_schema() -> String {
    include_str!("../../../schemas/note.avsc").replacen(
        r#""fields": ["#,
        r#""fields": [{"name": "color", "type": ["null", "string"], "default": null, "doc": "Added in version 3."},"#,
        1,
    )
}

/// The Avro body (no header) of a note written with `schema_text`; `color` only if it has it.
fn body_with(schema_text: &str, note_id: &str, with_pinned: bool, color: Option<&str>) -> Vec<u8> {
    let schema = Schema::parse_str(schema_text).expect("schema parses");
    let mut record = Record::new(&schema).expect("a record schema");
    record.put("note_id", note_id);
    record.put("user_id", "user-1");
    record.put("device_id", "laptop");
    record.put("version", 1_i64);
    record.put("title", note_id);
    record.put("body", "body");
    record.put("tags", Value::Array(vec![]));
    record.put("updated_at", Value::TimestampMillis(1_700_000_000_000));
    record.put("deleted", false);
    if with_pinned {
        record.put("pinned", true);
    }
    if let Some(color) = color {
        record.put("color", Value::Union(1, Box::new(Value::String(color.to_owned()))));
    }
    apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .expect("writer builds")
        .write_value_to_vec(record)
        .expect("datum encodes")
}

#[test]
fn a_newer_v3_writer_schema_from_a_registry_is_read_by_the_current_schema() {
    let codec = NoteCodec::embedded();
    let v3 = note_v3_schema();
    let prepared = codec
        .prepare_writer_schema("registry schema id 3", &v3)
        .expect("v3 prepares");
    assert!(!prepared.is_known_version());
    let note = codec
        .decode_body_with(&prepared, &body_with(&v3, "from-v3", true, Some("red")))
        .expect("v3 body decodes");
    assert_eq!(note.note_id, "from-v3");
    assert!(note.pinned);
    // The same schema as a compiled-in version reuses that version's reader.
    let current = codec
        .prepare_writer_schema("registry schema id 2", include_str!("../../../schemas/note.avsc"))
        .expect("current prepares");
    assert!(current.is_known_version());
    assert!(codec.reads_directly(&current));
}

#[test]
fn with_v3_as_the_current_schema_v1_v2_and_v3_records_all_decode() {
    let v3 = note_v3_schema();
    let v2 = include_str!("../../../schemas/note.avsc");
    let files = [
        ("note.avsc", v3.as_str()),
        ("note.v2.avsc", v2),
        ("note.v1.avsc", NOTE_V1_SCHEMA),
    ];
    rebound_schema::check_backward_compatibility(&files).expect("v3 reads v1 and v2");
    let codec = NoteCodec::from_schema_files(&files).expect("codec with v3 current");
    let framed = |schema_text: &str, body: Vec<u8>| {
        let mut bytes = SINGLE_OBJECT_MARKER.to_vec();
        bytes.extend_from_slice(&SchemaFingerprint::of_schema_json(schema_text).expect("fingerprints").0);
        bytes.extend_from_slice(&body);
        bytes
    };
    for (schema_text, note_id, pinned, color) in [
        (NOTE_V1_SCHEMA, "v1", false, None),
        (v2, "v2", true, None),
        (v3.as_str(), "v3", true, Some("blue")),
    ] {
        let note = codec
            .decode(&framed(schema_text, body_with(schema_text, note_id, pinned, color)))
            .unwrap_or_else(|error| panic!("{note_id} decodes: {error}"));
        assert_eq!(note.note_id, note_id);
        assert_eq!(note.pinned, pinned);
    }
}
