//! Avro schemas shared by every rebound crate: the typed [`Note`] record and its single-object
//! encoding, with a fingerprint registry so that records written with an older schema version
//! stay readable after the schema evolves.
//!
//! Wire formats: records start either with `00` and a 4-byte big-endian schema registry id (the
//! Confluent framing, whose writer schema the caller fetches from a registry and prepares with
//! [`NoteCodec::prepare_writer_schema`]; see `wire.rs`), or, as rebound writes by default, with
//! Avro single-object encoding, that is the two marker bytes `C3 01`, the 8-byte
//! little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form, then the
//! Avro binary datum. The decoder looks the fingerprint up among every schema version found in
//! `schemas/` at build time and resolves the datum into the newest reader schema.
//!
//! This crate does no I/O and knows nothing of Kafka or of an async runtime.

mod codec;
mod compatibility;
mod direct_reader;
mod note;
mod wire;

pub use codec::{NoteCodec, SINGLE_OBJECT_HEADER_LEN, SINGLE_OBJECT_MARKER, SchemaFingerprint};
pub use compatibility::{check_backward_compatibility, embedded_schema_files};
pub use note::Note;
pub use wire::{CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC_BYTE, PreparedWriterSchema, WireFormat, WireFraming};

/// Everything that can go wrong while loading schemas or encoding and decoding records.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A compiled-in or supplied schema file is not a valid Avro schema.
    #[error("failed to parse schema {file}: {source}")]
    ParseSchema {
        /// The schema file's name, such as `note.avsc`.
        file: String,
        /// What the Avro parser reported.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// The standard fingerprint of a schema could not be computed.
    #[error("failed to fingerprint schema {file}: {reason}")]
    FingerprintSchema {
        /// The schema file's name.
        file: String,
        /// What went wrong.
        reason: String,
    },
    /// No schema file named the current (unversioned) schema for records of this name.
    #[error("failed to find the current schema: no file named {file}")]
    FindCurrentSchema {
        /// The expected file name.
        file: String,
    },
    /// The bytes are too short to hold the single-object header.
    #[error("failed to decode record: {len} bytes is shorter than the 10-byte single-object header")]
    DecodeTooShort {
        /// Length of the input.
        len: usize,
    },
    /// The bytes start with neither the single-object marker `C3 01` nor the Confluent magic byte `00`.
    #[error("failed to decode record: expected single-object marker c3 01 or confluent magic byte 00, found {found}")]
    DecodeMarker {
        /// The first two bytes, in hex.
        found: String,
    },
    /// The bytes start with the Confluent magic byte but are too short for its schema id.
    #[error(
        "failed to decode record: {len} bytes is shorter than the 5-byte confluent header (magic byte 00 and schema id)"
    )]
    DecodeConfluentTooShort {
        /// Length of the input.
        len: usize,
    },
    /// A Confluent-framed record was given to a reader without a schema registry.
    #[error(
        "failed to decode record: it is confluent-framed (schema id {schema_id}) and no schema registry is configured"
    )]
    DecodeNeedsRegistry {
        /// The schema id from the header.
        schema_id: u32,
    },
    /// A writer schema from a registry cannot be resolved into the current reader schema.
    #[error("failed to resolve writer schema ({schema}) into the current note schema: {source}")]
    ResolveWriterSchema {
        /// Where the writer schema came from, such as `registry schema id 7`.
        schema: String,
        /// What the Avro resolver reported.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// A record given to be re-framed is not a single-object record of the current schema.
    #[error("failed to re-frame record as confluent: it is not a single-object record of the current schema ({found})")]
    Reframe {
        /// What the record's header names instead.
        found: String,
    },
    /// A schema version cannot be read by the current schema (backward compatibility broken).
    #[error("schema {file} is not readable by the current schema note.avsc: {reason}")]
    IncompatibleWriterSchema {
        /// The writer schema's file.
        file: String,
        /// apache-avro's explanation, naming the field.
        reason: String,
    },
    /// The writer schema fingerprint is not one of the known schema versions.
    #[error("failed to decode record: unknown writer schema fingerprint {fingerprint}")]
    DecodeUnknownFingerprint {
        /// The fingerprint from the header, as 16 hex digits in wire order.
        fingerprint: String,
    },
    /// The Avro datum does not match its writer schema, or cannot be resolved into the reader schema.
    #[error("failed to decode record body: {source}")]
    DecodeBody {
        /// What the Avro reader reported.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// A field of the datum is malformed (found by the direct reader, which names the field).
    #[error("failed to decode record body: field {field}: {reason}")]
    DecodeField {
        /// The writer schema's field name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The datum was read completely but bytes remain after it.
    #[error("failed to decode record: {count} trailing bytes after the avro datum")]
    DecodeTrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// A note could not be turned into an Avro datum of the current schema.
    #[error("failed to encode note: {source}")]
    Encode {
        /// What the Avro writer reported.
        #[source]
        source: Box<apache_avro::Error>,
    },
}
