//! The producer's note encoder: single-object, or Confluent with the schema id the registry
//! gave the current note schema at start-up.

use rebound_schema::{Note, NoteCodec};

use crate::{RegistryClient, RegistryError, WriterConfig};

/// Encodes notes in the configured wire format. Copy it freely: it holds only the schema id.
#[derive(Debug, Clone, Copy)]
pub enum NoteEncoder {
    /// Avro single-object encoding.
    SingleObject,
    /// Confluent framing with this schema id.
    Confluent {
        /// The current note schema's id in the registry.
        schema_id: u32,
    },
}

impl NoteEncoder {
    /// Resolves the writing side before any note is sent: for Confluent, registers the current
    /// note schema under its subject for `topic` (`--auto-register`) or looks its id up.
    pub async fn resolve(config: &WriterConfig, topic: &str) -> Result<Self, RegistryError> {
        let WriterConfig::Confluent {
            registry,
            subject_name_strategy,
            auto_register,
        } = config
        else {
            return Ok(Self::SingleObject);
        };
        let codec = NoteCodec::embedded();
        let client = RegistryClient::new(registry)?;
        let schema = codec.current_schema_json();
        let subject = subject_name_strategy.subject(topic, &codec.current_record_full_name());
        let schema_id = if *auto_register {
            client.register(&subject, schema).await?
        } else {
            client.lookup(&subject, schema).await?
        };
        tracing::info!(subject, schema_id, registry = %client.display_url(), "writing notes in the confluent wire format");
        Ok(Self::Confluent { schema_id })
    }

    /// Encodes a note.
    pub fn encode(self, note: &Note) -> Result<Vec<u8>, RegistryError> {
        let codec = NoteCodec::embedded();
        match self {
            Self::SingleObject => codec.encode(note),
            Self::Confluent { schema_id } => codec.encode_confluent(note, schema_id),
        }
        .map_err(|source| RegistryError::Encode { source })
    }

    /// Frames a single-object record of the current schema (as the producer encodes notes at
    /// intake and keeps them in its outbox) in this encoder's format, just before it is sent.
    ///
    /// A record of another schema version (left in an outbox by an older build) cannot carry
    /// the current schema's id; it is sent as it is, single-object encoded, which every rebound
    /// consumer reads, rather than be held back or lost.
    pub fn frame_outbox_value(self, single_object: Vec<u8>) -> Vec<u8> {
        match self {
            Self::SingleObject => single_object,
            Self::Confluent { schema_id } => {
                match NoteCodec::embedded().single_object_to_confluent(&single_object, schema_id) {
                    Ok(framed) => framed,
                    Err(error) => {
                        tracing::warn!(%error, "note sent single-object encoded: its schema is not the current one");
                        single_object
                    }
                }
            }
        }
    }
}
