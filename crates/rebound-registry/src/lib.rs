//! rebound's schema registry side: a small client of the Confluent-compatible REST API (the one
//! Confluent Schema Registry, Apicurio's `ccompat` API, Karapace and Redpanda serve), the
//! registry flags shared by every binary, the consumer's [`NoteDecoder`] (both wire formats,
//! writer schemas fetched once per id) and the producer's [`NoteEncoder`].
//!
//! Why a small reqwest client rather than `schema_registry_converter`: rebound needs four calls
//! (schema by id, register, look up, nothing else), its own error split (a registry that does not
//! answer is transient, an id it does not know is poison), a bounded retry whose time fits below
//! `max.poll.interval.ms`, and the decoding must stay rebound-schema's (the direct reader, and
//! resolution into the current schema). The converter brings its own Avro decoding to
//! `apache_avro::types::Value`, its own caching and retry rules, and a second HTTP stack; wrapping
//! it would be more code than these requests.
//!
//! The pure parts (telling the formats apart, decoding a body with a given writer schema) live
//! in `rebound-schema`; this crate does the I/O.

mod client;
mod config;
mod decoder;
mod encoder;

pub use client::RegistryClient;
pub use config::{
    RegistryArgs, RegistryAuth, RegistryConfig, SubjectNameStrategy, WireFormatArgs, WireFormatFlag, WriterConfig,
};
pub use decoder::{DecodeFailure, NoteDecoder};
pub use encoder::NoteEncoder;

/// Everything that can go wrong talking to a schema registry or configuring one.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A registry flag has an invalid value (or a file it names cannot be read).
    #[error("invalid {flag}: {reason}")]
    InvalidFlag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built (the CA file's certificates, TLS set-up).
    #[error("failed to build the schema registry client: {source}")]
    BuildClient {
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// The registry did not answer usefully after the bounded retry: down, unreachable, too
    /// slow, an error status of its own (5xx, 429) or refused credentials. Transient for records.
    #[error("failed to {operation} at schema registry {registry}: {reason}")]
    Unavailable {
        /// What was being done, such as `fetch schema id 7`.
        operation: String,
        /// The registry's URL, credentials redacted.
        registry: String,
        /// The last failure.
        reason: String,
    },
    /// The registry answered 404 for a schema id: records that name it can never be read.
    #[error(
        "failed to fetch schema id {schema_id} from schema registry {registry}: the registry does not know this id (404)"
    )]
    UnknownSchemaId {
        /// The id from the record's header.
        schema_id: u32,
        /// The registry's URL, credentials redacted.
        registry: String,
    },
    /// The registry refused a request for what it is (a 4xx other than 404, 401, 403 and 429),
    /// or looked up a subject or schema it does not have.
    #[error("failed to {operation} at schema registry {registry}: {reason}")]
    Refused {
        /// What was being done.
        operation: String,
        /// The registry's URL, credentials redacted.
        registry: String,
        /// The registry's status and message.
        reason: String,
    },
    /// The registry's answer is not what its API promises.
    #[error("failed to read the answer to {operation} from schema registry {registry}: {reason}")]
    ReadAnswer {
        /// What was being done.
        operation: String,
        /// The registry's URL, credentials redacted.
        registry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The schema a registry returned is not a note schema rebound can read.
    #[error("failed to prepare writer schema id {schema_id}: {source}")]
    PrepareSchema {
        /// The schema's id.
        schema_id: u32,
        /// What rebound-schema reported.
        #[source]
        source: rebound_schema::SchemaError,
    },
    /// A note could not be encoded.
    #[error("failed to encode note: {source}")]
    Encode {
        /// What rebound-schema reported.
        #[source]
        source: rebound_schema::SchemaError,
    },
}
