//! The consumer's note decoder: single-object records straight through `rebound-schema`,
//! Confluent-framed ones with their writer schema fetched from the registry once per id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rebound_retry::ErrorKind;
use rebound_schema::{Note, NoteCodec, PreparedWriterSchema, WireFraming};
use rebound_service::events;

use crate::{RegistryClient, RegistryError};

/// After a look-up found the registry unavailable (all its attempts failed), further look-ups
/// fail at once for this long, so a batch of hundreds of records does not wait for hundreds of
/// bounded retries; the records go to the retry tiers instead.
const UNAVAILABLE_HOLD: Duration = Duration::from_secs(2);

/// Why a record could not be decoded, and whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    /// `Poison` for bytes that can never be read, `Transient` when the registry was unavailable.
    pub kind: ErrorKind,
    /// What went wrong, for the record's retry headers.
    pub message: String,
}

/// Decodes note records of either wire format.
#[derive(Debug)]
pub struct NoteDecoder {
    codec: &'static NoteCodec,
    registry: Option<RegistryClient>,
    schemas_by_id: Mutex<HashMap<u32, Arc<PreparedWriterSchema>>>,
    unavailable_until: Mutex<Option<(tokio::time::Instant, String)>>,
}

impl NoteDecoder {
    /// A decoder with the compiled-in schemas; Confluent-framed records need `registry`.
    pub fn new(codec: &'static NoteCodec, registry: Option<RegistryClient>) -> Self {
        Self {
            codec,
            registry,
            schemas_by_id: Mutex::new(HashMap::new()),
            unavailable_until: Mutex::new(None),
        }
    }

    /// Decodes one record value. Never panics, whatever the bytes.
    pub async fn decode(&self, record: &[u8]) -> Result<Note, DecodeFailure> {
        let poison = |message: String| DecodeFailure {
            kind: ErrorKind::Poison,
            message,
        };
        match WireFraming::parse(record).map_err(|error| poison(error.to_string()))? {
            WireFraming::SingleObject { .. } => self.codec.decode(record).map_err(|error| poison(error.to_string())),
            WireFraming::Confluent { schema_id, body } => {
                let writer = self.writer_schema(schema_id).await?;
                self.codec
                    .decode_body_with(&writer, body)
                    .map_err(|error| poison(format!("schema id {schema_id}: {error}")))
            }
        }
    }

    /// The prepared writer schema of a registry id: from the cache, or fetched once.
    async fn writer_schema(&self, schema_id: u32) -> Result<Arc<PreparedWriterSchema>, DecodeFailure> {
        if let Some(prepared) = self.cached(schema_id) {
            return Ok(prepared);
        }
        let Some(registry) = &self.registry else {
            return Err(DecodeFailure {
                kind: ErrorKind::Poison,
                message: rebound_schema::SchemaError::DecodeNeedsRegistry { schema_id }.to_string(),
            });
        };
        if let Some(reason) = self.still_unavailable() {
            return Err(DecodeFailure {
                kind: ErrorKind::Transient,
                message: reason,
            });
        }
        let fetched = registry.schema_by_id(schema_id).await.and_then(|schema| {
            self.codec
                .prepare_writer_schema(&format!("registry schema id {schema_id}"), &schema)
                .map_err(|source| RegistryError::PrepareSchema { schema_id, source })
        });
        match fetched {
            Ok(prepared) => {
                let prepared = Arc::new(prepared);
                let direct = self.codec.reads_directly(&prepared);
                events::schema_registry_schema_fetched(schema_id, &prepared.fingerprint().to_string(), direct);
                if let Ok(mut cache) = self.schemas_by_id.lock() {
                    cache.insert(schema_id, Arc::clone(&prepared));
                }
                Ok(prepared)
            }
            Err(error @ RegistryError::Unavailable { .. }) => {
                events::schema_registry_unavailable(&error);
                if let Ok(mut until) = self.unavailable_until.lock() {
                    *until = Some((tokio::time::Instant::now() + UNAVAILABLE_HOLD, error.to_string()));
                }
                Err(DecodeFailure {
                    kind: ErrorKind::Transient,
                    message: error.to_string(),
                })
            }
            Err(error) => {
                events::schema_registry_refused_schema(schema_id, &error);
                Err(DecodeFailure {
                    kind: ErrorKind::Poison,
                    message: error.to_string(),
                })
            }
        }
    }

    fn cached(&self, schema_id: u32) -> Option<Arc<PreparedWriterSchema>> {
        self.schemas_by_id.lock().ok()?.get(&schema_id).cloned()
    }

    fn still_unavailable(&self) -> Option<String> {
        let guard = self.unavailable_until.lock().ok()?;
        let (until, reason) = guard.as_ref()?;
        (tokio::time::Instant::now() < *until)
            .then(|| format!("{reason} (not asked again within {UNAVAILABLE_HOLD:?})"))
    }
}
