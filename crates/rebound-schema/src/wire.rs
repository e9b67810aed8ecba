//! The two wire formats a note record can have, told apart by their first byte: Avro
//! single-object encoding (`C3 01` + fingerprint) and the Confluent framing (`00` + a 4-byte
//! big-endian schema registry id), and writer schemas that arrive at run time (from a registry).

use std::fmt;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;

use crate::codec::WriterSchemaReader;
use crate::direct_reader::DirectReader;
use crate::{NoteCodec, SINGLE_OBJECT_HEADER_LEN, SINGLE_OBJECT_MARKER, SchemaError, SchemaFingerprint};

/// The first byte of a Confluent-framed record.
pub const CONFLUENT_MAGIC_BYTE: u8 = 0;

/// The magic byte plus the 4-byte schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// The format notes are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// Avro single-object encoding: `C3 01`, the writer schema's fingerprint, the body. Needs no
    /// registry: every reader carries the schemas.
    #[default]
    SingleObject,
    /// The Confluent framing: `00`, the writer schema's registry id (big-endian), the body.
    Confluent,
}

impl WireFormat {
    /// The name used by the `--wire-format` flag.
    pub fn name(self) -> &'static str {
        match self {
            Self::SingleObject => "single-object",
            Self::Confluent => "confluent",
        }
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A record's header, read without decoding its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFraming<'record> {
    /// Single-object encoding, with the writer schema's fingerprint.
    SingleObject {
        /// The fingerprint from the header.
        fingerprint: SchemaFingerprint,
        /// The Avro datum.
        body: &'record [u8],
    },
    /// Confluent framing, with the writer schema's registry id.
    Confluent {
        /// The schema id from the header.
        schema_id: u32,
        /// The Avro datum.
        body: &'record [u8],
    },
}

impl WireFraming<'_> {
    /// Reads a record's header. Never panics, whatever the input.
    pub fn parse(record: &[u8]) -> Result<WireFraming<'_>, SchemaError> {
        match record.first() {
            Some(&CONFLUENT_MAGIC_BYTE) => {
                let Some((header, body)) = record.split_first_chunk::<CONFLUENT_HEADER_LEN>() else {
                    return Err(SchemaError::DecodeConfluentTooShort { len: record.len() });
                };
                let schema_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                Ok(WireFraming::Confluent { schema_id, body })
            }
            Some(_) if record.len() >= 2 && record[..2] == SINGLE_OBJECT_MARKER => {
                let Some((header, body)) = record.split_first_chunk::<SINGLE_OBJECT_HEADER_LEN>() else {
                    return Err(SchemaError::DecodeTooShort { len: record.len() });
                };
                let mut fingerprint = [0_u8; 8];
                fingerprint.copy_from_slice(&header[2..]);
                Ok(WireFraming::SingleObject {
                    fingerprint: SchemaFingerprint(fingerprint),
                    body,
                })
            }
            Some(_) if record.len() >= 2 => Err(SchemaError::DecodeMarker {
                found: format!("{:02x} {:02x}", record[0], record[1]),
            }),
            _ => Err(SchemaError::DecodeTooShort { len: record.len() }),
        }
    }

    /// The writer schema as a reader would name it: `fingerprint <hex>` or `schema id <n>`.
    pub fn writer_schema_label(&self) -> String {
        match self {
            Self::SingleObject { fingerprint, .. } => format!("fingerprint {fingerprint}"),
            Self::Confluent { schema_id, .. } => format!("schema id {schema_id}"),
        }
    }
}

/// A writer schema that arrived at run time (from a schema registry), prepared once for reading
/// its records into the current schema.
pub struct PreparedWriterSchema {
    fingerprint: SchemaFingerprint,
    reader: PreparedReader,
}

enum PreparedReader {
    /// One of the codec's own schema versions: its prepared reader is used.
    Known,
    /// A schema the codec does not carry, such as a newer version another team registered.
    Foreign(Box<WriterSchemaReader>),
}

impl fmt::Debug for PreparedWriterSchema {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PreparedWriterSchema")
            .field("fingerprint", &self.fingerprint.to_string())
            .field("known", &matches!(self.reader, PreparedReader::Known))
            .field("direct_reader", &self.has_direct_reader_plan_unchecked())
            .finish()
    }
}

impl PreparedWriterSchema {
    /// The standard fingerprint of the writer schema.
    pub fn fingerprint(&self) -> SchemaFingerprint {
        self.fingerprint
    }

    /// Whether this writer schema is one of the versions compiled into the codec.
    pub fn is_known_version(&self) -> bool {
        matches!(self.reader, PreparedReader::Known)
    }

    fn has_direct_reader_plan_unchecked(&self) -> Option<bool> {
        match &self.reader {
            PreparedReader::Known => None,
            PreparedReader::Foreign(reader) => Some(reader.direct.is_some()),
        }
    }
}

impl NoteCodec {
    /// Prepares a writer schema given as JSON (as a registry returns it) for reading its records
    /// into the current schema. `source` names it in errors (such as `registry schema id 7`).
    ///
    /// A schema equal (by fingerprint) to a compiled-in version reuses that version's reader.
    /// Another schema is parsed and resolved against the current schema once; like the
    /// compiled-in ones it is leaked to live as long as the readers that borrow it. Callers cache
    /// the result per registry id, so this happens once per distinct schema a process meets.
    pub fn prepare_writer_schema(&self, source: &str, schema_json: &str) -> Result<PreparedWriterSchema, SchemaError> {
        let fingerprint =
            SchemaFingerprint::of_schema_json(schema_json).map_err(|reason| SchemaError::FingerprintSchema {
                file: source.to_owned(),
                reason,
            })?;
        if self.has_writer_schema(fingerprint) {
            return Ok(PreparedWriterSchema {
                fingerprint,
                reader: PreparedReader::Known,
            });
        }
        let schema = Schema::parse_str(schema_json).map_err(|source_error| SchemaError::ParseSchema {
            file: source.to_owned(),
            source: Box::new(source_error),
        })?;
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let generic = GenericDatumReader::builder(schema)
            .reader_schema(self.current_schema_static())
            .build()
            .map_err(|source_error| SchemaError::ResolveWriterSchema {
                schema: source.to_owned(),
                source: Box::new(source_error),
            })?;
        let direct = DirectReader::plan(schema, self.current_schema_static());
        Ok(PreparedWriterSchema {
            fingerprint,
            reader: PreparedReader::Foreign(Box::new(WriterSchemaReader { generic, direct })),
        })
    }

    /// Whether records of this prepared writer schema are read by the direct reader (fast) rather
    /// than apache-avro's generic reader (about ten times slower per note).
    pub fn reads_directly(&self, writer: &PreparedWriterSchema) -> bool {
        match &writer.reader {
            PreparedReader::Known => self.reads_fingerprint_directly(writer.fingerprint),
            PreparedReader::Foreign(reader) => reader.direct.is_some(),
        }
    }

    /// Decodes an Avro body written with `writer` (the part after a Confluent header).
    pub fn decode_body_with(&self, writer: &PreparedWriterSchema, body: &[u8]) -> Result<Note, SchemaError> {
        match &writer.reader {
            PreparedReader::Known => self.decode_body_of_fingerprint(writer.fingerprint, body),
            PreparedReader::Foreign(reader) => reader.read(body),
        }
    }

    /// Encodes a note with the current schema in the Confluent framing, under the registry id
    /// `schema_id` that the current schema has in the registry.
    pub fn encode_confluent(&self, note: &Note, schema_id: u32) -> Result<Vec<u8>, SchemaError> {
        let single_object = self.encode(note)?;
        self.single_object_to_confluent(&single_object, schema_id)
    }

    /// Re-frames a single-object record of the current schema as a Confluent one (the body is the
    /// same bytes): for notes encoded before the wire format was known, such as an outbox's.
    pub fn single_object_to_confluent(&self, record: &[u8], schema_id: u32) -> Result<Vec<u8>, SchemaError> {
        match WireFraming::parse(record)? {
            WireFraming::SingleObject { fingerprint, body } if fingerprint == self.current_fingerprint() => {
                let mut framed = Vec::with_capacity(CONFLUENT_HEADER_LEN + body.len());
                framed.push(CONFLUENT_MAGIC_BYTE);
                framed.extend_from_slice(&schema_id.to_be_bytes());
                framed.extend_from_slice(body);
                Ok(framed)
            }
            other => Err(SchemaError::Reframe {
                found: other.writer_schema_label(),
            }),
        }
    }
}

use crate::Note;
