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
