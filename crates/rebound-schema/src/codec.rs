//! Single-object encoding and decoding of notes, with a registry of every known writer schema.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;

use crate::direct_reader::DirectReader;
use crate::{Note, SchemaError, WireFraming};

include!(concat!(env!("OUT_DIR"), "/embedded_schemas.rs"));

/// The two bytes every single-object encoded record starts with.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// Marker plus the 8-byte fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;

/// File name of the current note schema; older versions are named `note.vN.avsc`.
pub(crate) const CURRENT_NOTE_SCHEMA_FILE: &str = "note.avsc";

/// The CRC-64-AVRO fingerprint of a schema's parsing canonical form, as the 8 bytes that follow
/// the marker on the wire (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchemaFingerprint(pub [u8; 8]);

impl SchemaFingerprint {
    /// The standard CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, the one
    /// Java, Python and every other conforming writer put on the wire.
    ///
    /// apache-avro's canonical form keeps a logical type's base as `{"type":"long"}` where the
    /// specification has `"long"`, so logical types are stripped here first; what remains has
    /// the same canonical form in both.
    pub fn of_schema_json(schema_json: &str) -> Result<Self, String> {
        let mut value: serde_json::Value =
            serde_json::from_str(schema_json).map_err(|error| format!("not JSON: {error}"))?;
        strip_logical_types(&mut value);
        let plain = Schema::parse(&value).map_err(|error| error.to_string())?;
        Ok(Self::of_library_form(&plain))
    }

    /// The fingerprint of a parsed schema as apache-avro computes it: equal to the standard
    /// one for schemas without logical types, different for the others.
    pub fn of_library_form(schema: &Schema) -> Self {
        let digest = schema.fingerprint::<Rabin>();
        let mut bytes = [0_u8; 8];
        // Rabin digests are exactly eight bytes, already in the little-endian order the
        // single-object specification puts on the wire.
        bytes.copy_from_slice(&digest.bytes[..8]);
        Self(bytes)
    }
}

/// Removes `logicalType` annotations (with their `precision` and `scale`), and collapses what is
/// left of `{"type": "long"}` into `"long"`, recursively: the Parsing Canonical Form knows only
/// the underlying types.
fn strip_logical_types(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_logical_types),
        serde_json::Value::Object(fields) => {
            if fields.remove("logicalType").is_some() {
                fields.remove("precision");
                fields.remove("scale");
            }
            fields.values_mut().for_each(strip_logical_types);
            let primitive = match fields.get("type") {
                Some(serde_json::Value::String(name)) if fields.len() == 1 => Some(name.clone()),
                _ => None,
            };
            if let Some(name) = primitive
                && matches!(
                    name.as_str(),
                    "null" | "boolean" | "int" | "long" | "float" | "double" | "bytes" | "string"
                )
            {
                *value = serde_json::Value::String(name);
            }
        }
        _ => {}
    }
}

impl fmt::Display for SchemaFingerprint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Encodes notes with the current schema and decodes notes written with any known version.
pub struct NoteCodec {
    current_schema: &'static Schema,
    current_schema_json: String,
    current_header: [u8; SINGLE_OBJECT_HEADER_LEN],
    writer: GenericDatumWriter<'static>,
    readers_by_fingerprint: HashMap<SchemaFingerprint, WriterSchemaReader>,
}

/// How to read records of one writer schema: directly when a plan exists for it, otherwise with
/// apache-avro's generic reader (kept for every schema, as the reference the direct reader is
/// tested against).
pub(crate) struct WriterSchemaReader {
    pub(crate) generic: GenericDatumReader<'static>,
    pub(crate) direct: Option<DirectReader>,
}

impl WriterSchemaReader {
    /// Reads one body, directly when a plan exists.
    pub(crate) fn read(&self, body: &[u8]) -> Result<Note, SchemaError> {
        match &self.direct {
            Some(direct) => direct.read(body),
            None => NoteCodec::decode_body_generically(&self.generic, body),
        }
    }
}

impl fmt::Debug for NoteCodec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NoteCodec")
            .field("current_fingerprint", &self.current_fingerprint().to_string())
            .field("known_writer_schemas", &self.readers_by_fingerprint.len())
            .finish()
    }
}

static EMBEDDED_CODEC: LazyLock<NoteCodec> = LazyLock::new(|| {
    NoteCodec::from_schema_files(EMBEDDED_SCHEMA_FILES)
        .expect("the schemas compiled into rebound-schema are valid (checked by its unit tests)")
});

impl NoteCodec {
    /// The codec built from every `schemas/*.avsc` file compiled into this crate.
    pub fn embedded() -> &'static NoteCodec {
        &EMBEDDED_CODEC
    }

    /// Builds a codec from (file name, schema JSON) pairs. The file named `note.avsc` is the
    /// current schema, used for writing and as the reader schema; every file is a known writer.
    ///
    /// The parsed schemas are leaked so that the prepared readers and writer, which borrow them,
    /// can live inside the codec. A process builds one codec (tests a handful), so the leak is a
    /// few kilobytes once, and in exchange no schema is resolved again per record.
    pub fn from_schema_files(files: &[(&str, &str)]) -> Result<Self, SchemaError> {
        let mut parsed: Vec<(&str, &'static Schema, SchemaFingerprint)> = Vec::with_capacity(files.len());
        for (file, text) in files {
            let schema = Schema::parse_str(text).map_err(|source| SchemaError::ParseSchema {
                file: (*file).to_owned(),
                source: Box::new(source),
            })?;
            let fingerprint =
                SchemaFingerprint::of_schema_json(text).map_err(|reason| SchemaError::FingerprintSchema {
                    file: (*file).to_owned(),
                    reason,
                })?;
            parsed.push((file, Box::leak(Box::new(schema)), fingerprint));
        }
        let current_schema_json = files
            .iter()
            .find(|(file, _)| *file == CURRENT_NOTE_SCHEMA_FILE)
            .map(|(_, text)| (*text).to_owned())
            .unwrap_or_default();
        let (current_schema, current_fingerprint) = parsed
            .iter()
            .find(|(file, _, _)| *file == CURRENT_NOTE_SCHEMA_FILE)
            .map(|(_, schema, fingerprint)| (*schema, *fingerprint))
            .ok_or_else(|| SchemaError::FindCurrentSchema {
                file: CURRENT_NOTE_SCHEMA_FILE.to_owned(),
            })?;
        let mut readers_by_fingerprint = HashMap::new();
        for (file, writer_schema, fingerprint) in &parsed {
            let reader = || {
                let generic = GenericDatumReader::builder(writer_schema)
                    .reader_schema(current_schema)
                    .build()
                    .map_err(|source| SchemaError::ParseSchema {
                        file: (*file).to_owned(),
                        source: Box::new(source),
                    })?;
                Ok::<_, SchemaError>(WriterSchemaReader {
                    generic,
                    direct: DirectReader::plan(writer_schema, current_schema),
                })
            };
            readers_by_fingerprint.insert(*fingerprint, reader()?);
            // Records written by earlier rebound builds carry apache-avro's variant of the
            // fingerprint (see `of_library_form`); they stay readable.
            let legacy = SchemaFingerprint::of_library_form(writer_schema);
            if let std::collections::hash_map::Entry::Vacant(slot) = readers_by_fingerprint.entry(legacy) {
                slot.insert(reader()?);
            }
        }
        let writer =
            GenericDatumWriter::builder(current_schema)
                .build()
                .map_err(|source| SchemaError::ParseSchema {
                    file: CURRENT_NOTE_SCHEMA_FILE.to_owned(),
                    source: Box::new(source),
                })?;
        let mut current_header = [0_u8; SINGLE_OBJECT_HEADER_LEN];
        current_header[..2].copy_from_slice(&SINGLE_OBJECT_MARKER);
        current_header[2..].copy_from_slice(&current_fingerprint.0);
        Ok(Self {
            current_schema,
            current_schema_json,
            current_header,
            writer,
            readers_by_fingerprint,
        })
    }

    /// The fingerprint records are written with: the standard one of the current schema.
    pub fn current_fingerprint(&self) -> SchemaFingerprint {
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(&self.current_header[2..]);
        SchemaFingerprint(bytes)
    }

    /// The schema notes are written with and read into.
    pub fn current_schema(&self) -> &Schema {
        self.current_schema
    }

    /// The current schema as the JSON text of its file: what a registry is given to register.
    pub fn current_schema_json(&self) -> &str {
        &self.current_schema_json
    }

    /// The current schema's full name, such as `dev.rebound.notes.Note` (for subject names).
    pub fn current_record_full_name(&self) -> String {
        match self.current_schema {
            Schema::Record(record) => record.name.fullname(None),
            other => format!("{other:?}"),
        }
    }

    pub(crate) fn current_schema_static(&self) -> &'static Schema {
        self.current_schema
    }

    pub(crate) fn has_writer_schema(&self, fingerprint: SchemaFingerprint) -> bool {
        self.readers_by_fingerprint.contains_key(&fingerprint)
    }

    pub(crate) fn reads_fingerprint_directly(&self, fingerprint: SchemaFingerprint) -> bool {
        self.readers_by_fingerprint
            .get(&fingerprint)
            .is_some_and(|reader| reader.direct.is_some())
    }

    pub(crate) fn decode_body_of_fingerprint(
        &self,
        fingerprint: SchemaFingerprint,
        body: &[u8],
    ) -> Result<Note, SchemaError> {
        self.readers_by_fingerprint
            .get(&fingerprint)
            .ok_or_else(|| SchemaError::DecodeUnknownFingerprint {
                fingerprint: fingerprint.to_string(),
            })?
            .read(body)
    }

    /// The fingerprints of the compiled-in writer schemas that the direct reader cannot read, so
    /// that their records go through apache-avro's generic reader (about ten times slower per
    /// note). Services warn about each at start-up; a schema change should keep this empty.
    pub fn writer_schemas_read_generically(&self) -> Vec<SchemaFingerprint> {
        let mut fingerprints: Vec<SchemaFingerprint> = self
            .readers_by_fingerprint
            .iter()
            .filter(|(_, reader)| reader.direct.is_none())
            .map(|(fingerprint, _)| *fingerprint)
            .collect();
        fingerprints.sort_by_key(|fingerprint| fingerprint.0);
        fingerprints
    }

    /// How many schema versions this codec can read.
    pub fn known_writer_schema_count(&self) -> usize {
        self.readers_by_fingerprint.len()
    }

    /// Encodes a note as a single-object record of the current schema.
    pub fn encode(&self, note: &Note) -> Result<Vec<u8>, SchemaError> {
        let mut record = Vec::with_capacity(SINGLE_OBJECT_HEADER_LEN + 64 + note.title.len() + note.body.len());
        record.extend_from_slice(&self.current_header);
        // The schema-aware serializer checks the note against the schema as it writes, so a note
        // that does not fit is an error here rather than a corrupt record.
        self.writer
            .write_ser(&mut record, note)
            .map_err(|source| SchemaError::Encode {
                source: Box::new(source),
            })?;
        Ok(record)
    }

    /// Decodes a single-object record written with any known schema version into a [`Note`].
    ///
    /// Any input, however malformed, yields either a note or a typed error; it never panics.
    pub fn decode(&self, record: &[u8]) -> Result<Note, SchemaError> {
        self.reader_for(record)?.read(&record[SINGLE_OBJECT_HEADER_LEN..])
    }

    /// Decodes like [`NoteCodec::decode`], but always with apache-avro's generic reader: the
    /// reference the direct reader is compared with in tests, fuzzing and benchmarks.
    #[doc(hidden)]
    pub fn decode_with_generic_reader(&self, record: &[u8]) -> Result<Note, SchemaError> {
        let reader = self.reader_for(record)?;
        Self::decode_body_generically(&reader.generic, &record[SINGLE_OBJECT_HEADER_LEN..])
    }

    pub(crate) fn decode_body_generically(
        reader: &GenericDatumReader<'static>,
        mut body: &[u8],
    ) -> Result<Note, SchemaError> {
        let value = reader.read_value(&mut body).map_err(|source| SchemaError::DecodeBody {
            source: Box::new(source),
        })?;
        if !body.is_empty() {
            return Err(SchemaError::DecodeTrailingBytes { count: body.len() });
        }
        apache_avro::from_value::<Note>(&value).map_err(|source| SchemaError::DecodeBody {
            source: Box::new(source),
        })
    }

    /// Finds the reader prepared for the writer schema named by a record's single-object header.
    fn reader_for(&self, record: &[u8]) -> Result<&WriterSchemaReader, SchemaError> {
        let fingerprint = match WireFraming::parse(record)? {
            WireFraming::SingleObject { fingerprint, .. } => fingerprint,
            // Its writer schema is known only to a registry; `rebound-registry` reads these.
            WireFraming::Confluent { schema_id, .. } => {
                return Err(SchemaError::DecodeNeedsRegistry { schema_id });
            }
        };
        self.readers_by_fingerprint
            .get(&fingerprint)
            .ok_or_else(|| SchemaError::DecodeUnknownFingerprint {
                fingerprint: fingerprint.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_note() -> Note {
        Note {
            note_id: "note-1".to_owned(),
            user_id: "user-7".to_owned(),
            device_id: "phone".to_owned(),
            version: 3,
            title: "Groceries 🥕".to_owned(),
            body: "milk, eggs, 日本茶".to_owned(),
            tags: vec!["home".to_owned(), "weekly".to_owned()],
            updated_at: 1_764_300_000_123,
            deleted: false,
            pinned: true,
        }
    }

    #[test]
    fn every_embedded_schema_parses_and_the_current_one_exists() {
        let codec = NoteCodec::embedded();
        assert!(
            codec.known_writer_schema_count() >= 2,
            "note.avsc and note.v1.avsc are both known"
        );
    }

    #[test]
    fn encoded_note_starts_with_marker_and_current_fingerprint() {
        let codec = NoteCodec::embedded();
        let record = codec.encode(&sample_note()).expect("encodes");
        assert_eq!(record[..2], SINGLE_OBJECT_MARKER);
        assert_eq!(record[2..10], codec.current_fingerprint().0);
    }

    #[test]
    fn fingerprints_are_the_standard_parsing_canonical_form_ones() {
        // Reference values from an independent implementation: Python's fastavro,
        // `fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")`, which prints the
        // fingerprint's little-endian bytes, the order the wire carries them in.
        for (file, expected) in [("note.avsc", "17398454654a9a29"), ("note.v1.avsc", "de721a8f256e4187")] {
            let text = EMBEDDED_SCHEMA_FILES
                .iter()
                .find(|(name, _)| *name == file)
                .map(|(_, text)| *text)
                .expect("embedded");
            let fingerprint = SchemaFingerprint::of_schema_json(text).expect("fingerprints");
            assert_eq!(fingerprint.to_string(), expected, "{file}");
        }
    }

    #[test]
    fn records_with_the_legacy_library_fingerprint_still_decode() {
        let codec = NoteCodec::embedded();
        let mut record = codec.encode(&sample_note()).expect("encodes");
        let legacy = SchemaFingerprint::of_library_form(codec.current_schema());
        assert_ne!(legacy, codec.current_fingerprint(), "the schema has a logical type");
        record[2..10].copy_from_slice(&legacy.0);
        assert_eq!(codec.decode(&record).expect("decodes"), sample_note());
    }

    #[test]
    fn body_matches_apache_avro_single_object_writer() {
        // apache-avro's own single-object writer is an independent encoder of the body; its
        // header carries the library's fingerprint variant, ours the standard one.
        let codec = NoteCodec::embedded();
        let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(codec.current_schema(), 1024)
            .expect("writer builds");
        let value = apache_avro::to_value(sample_note())
            .expect("to value")
            .resolve(codec.current_schema())
            .expect("resolves");
        let mut theirs = Vec::new();
        writer.write_value(value, &mut theirs).expect("writes");
        let ours = codec.encode(&sample_note()).expect("encodes");
        assert_eq!(ours[SINGLE_OBJECT_HEADER_LEN..], theirs[SINGLE_OBJECT_HEADER_LEN..]);
        assert_eq!(
            theirs[2..10],
            SchemaFingerprint::of_library_form(codec.current_schema()).0
        );
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let codec = NoteCodec::embedded();
        let note = sample_note();
        let decoded = codec.decode(&codec.encode(&note).expect("encodes")).expect("decodes");
        assert_eq!(decoded, note);
    }

    #[test]
    fn short_input_is_a_typed_error() {
        let error = NoteCodec::embedded().decode(&[0xC3]).expect_err("too short");
        assert!(matches!(error, SchemaError::DecodeTooShort { len: 1 }), "{error}");
    }

    #[test]
    fn wrong_marker_is_a_typed_error() {
        let error = NoteCodec::embedded().decode(b"{\"json\": true}").expect_err("not avro");
        assert!(matches!(error, SchemaError::DecodeMarker { .. }), "{error}");
    }

    #[test]
    fn unknown_fingerprint_is_a_typed_error() {
        let mut record = NoteCodec::embedded().encode(&sample_note()).expect("encodes");
        record[5] ^= 0xFF;
        let error = NoteCodec::embedded().decode(&record).expect_err("unknown schema");
        assert!(matches!(error, SchemaError::DecodeUnknownFingerprint { .. }), "{error}");
    }

    #[test]
    fn truncated_body_is_a_typed_error() {
        let record = NoteCodec::embedded().encode(&sample_note()).expect("encodes");
        for cut in SINGLE_OBJECT_HEADER_LEN..record.len() {
            let error = NoteCodec::embedded().decode(&record[..cut]).expect_err("truncated");
            assert!(
                matches!(error, SchemaError::DecodeField { .. }),
                "cut at {cut}: {error}"
            );
            let generic = NoteCodec::embedded()
                .decode_with_generic_reader(&record[..cut])
                .expect_err("truncated");
            assert!(
                matches!(generic, SchemaError::DecodeBody { .. }),
                "cut at {cut}: {generic}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_a_typed_error() {
        let mut record = NoteCodec::embedded().encode(&sample_note()).expect("encodes");
        record.extend_from_slice(b"extra");
        let error = NoteCodec::embedded().decode(&record).expect_err("trailing");
        assert!(
            matches!(error, SchemaError::DecodeTrailingBytes { count: 5 }),
            "{error}"
        );
    }

    /// The direct reader must agree with apache-avro's generic reader on every input: the same
    /// note when both read one, an error from both otherwise (one exception, below). Inputs are valid records of both
    /// schema versions and deterministic corruptions of them (flipped, inserted and removed
    /// bytes, truncations).
    #[test]
    fn direct_reader_agrees_with_the_generic_reader_on_valid_and_corrupt_input() {
        let codec = NoteCodec::embedded();
        let v1_schema = Schema::parse_str(include_str!("../../../schemas/note.v1.avsc")).expect("parses");
        let v1_writer = GenericDatumWriter::builder(&v1_schema).build().expect("v1 writer");
        let v1_header = {
            let mut header = SINGLE_OBJECT_MARKER.to_vec();
            header.extend_from_slice(
                &SchemaFingerprint::of_schema_json(include_str!("../../../schemas/note.v1.avsc"))
                    .expect("fingerprints")
                    .0,
            );
            header
        };
        let mut notes = vec![sample_note()];
        let mut long_note = sample_note();
        long_note.body = "x".repeat(5000);
        long_note.tags = (0..100).map(|index| format!("tag-{index}")).collect();
        long_note.version = i64::MAX;
        long_note.updated_at = i64::MIN;
        long_note.deleted = true;
        notes.push(long_note);
        let mut empty_note = sample_note();
        empty_note.tags.clear();
        empty_note.title.clear();
        notes.push(empty_note);
        let mut records = Vec::new();
        for note in &notes {
            records.push(codec.encode(note).expect("encodes"));
            let value = apache_avro::to_value(note).expect("to value");
            let apache_avro::types::Value::Record(mut fields) = value else {
                panic!("a note is a record")
            };
            fields.retain(|(name, _)| name != "pinned");
            let mut record = v1_header.clone();
            record.extend(
                v1_writer
                    .write_value_to_vec(apache_avro::types::Value::Record(fields))
                    .expect("v1"),
            );
            records.push(record);
        }
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut compared = 0;
        for record in &records {
            let mut inputs = vec![record.clone()];
            // Every byte position near the ends of the body set to values that matter to varints,
            // booleans and lengths; then random corruptions anywhere.
            let positions = (SINGLE_OBJECT_HEADER_LEN..record.len())
                .filter(|position| *position < 400 || *position + 50 > record.len());
            for position in positions {
                for value in [0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF] {
                    let mut mutated = record.clone();
                    mutated[position] = value;
                    inputs.push(mutated);
                }
            }
            for _ in 0..3000 {
                let mut mutated = record.clone();
                let body_len = mutated.len() - SINGLE_OBJECT_HEADER_LEN;
                let at = SINGLE_OBJECT_HEADER_LEN + usize::try_from(next()).unwrap_or(0) % body_len;
                match next() % 4 {
                    0 => mutated[at] ^= u8::try_from(next() % 255 + 1).unwrap_or(1),
                    1 => mutated.insert(at, u8::try_from(next() % 256).unwrap_or(0)),
                    2 => {
                        mutated.remove(at);
                    }
                    _ => mutated.truncate(at),
                }
                inputs.push(mutated);
            }
            for input in inputs {
                let direct = codec.decode(&input);
                let generic = codec.decode_with_generic_reader(&input);
                match (&direct, &generic) {
                    (Ok(left), Ok(right)) => assert_eq!(left, right, "{input:02x?}"),
                    (Err(_), Err(_)) => {}
                    // The one intended difference: a tenth varint byte carrying more than the
                    // top bit. apache-avro drops the excess bits; the direct reader rejects the
                    // value, as Java's Avro does ("Invalid long encoding").
                    (Err(SchemaError::DecodeField { reason, .. }), Ok(_)) if reason.contains("overflows 64 bits") => {}
                    _ => panic!("readers disagree on {input:02x?}: direct {direct:?}, generic {generic:?}"),
                }
                compared += 1;
            }
        }
        assert!(compared > records.len() * 3000, "{compared} inputs compared");
    }

    #[test]
    fn garbage_after_a_valid_header_never_panics() {
        let codec = NoteCodec::embedded();
        let header = codec.encode(&sample_note()).expect("encodes")[..SINGLE_OBJECT_HEADER_LEN].to_vec();
        // Deterministic pseudo-random bodies, including huge varint lengths and negative lengths.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for length in 0..400 {
            let mut record = header.clone();
            for _ in 0..length {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                record.push(state.to_le_bytes()[0]);
            }
            let _ = codec.decode(&record);
        }
        let mut huge_length = header;
        huge_length.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert!(codec.decode(&huge_length).is_err());
    }
}
