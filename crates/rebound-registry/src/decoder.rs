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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryArgs;

    fn decoder_of_a_registry_that_is_down() -> NoteDecoder {
        // Port 1 on loopback: nothing listens, every connection is refused.
        let config = RegistryArgs {
            schema_registry_url: Some("http://127.0.0.1:1/apis/ccompat/v7".to_owned()),
            schema_registry_basic_auth: None,
            schema_registry_basic_auth_file: None,
            schema_registry_bearer_token: None,
            schema_registry_bearer_token_file: None,
            schema_registry_ca_file: None,
            schema_registry_timeout: Duration::from_secs(1),
        }
        .into_config()
        .expect("valid")
        .expect("a registry");
        NoteDecoder::new(
            NoteCodec::embedded(),
            Some(RegistryClient::new(&config).expect("client")),
        )
    }

    fn confluent_record(schema_id: u32) -> Vec<u8> {
        let mut record = vec![0];
        record.extend_from_slice(&schema_id.to_be_bytes());
        record.extend_from_slice(b"\x02a");
        record
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_is_down_is_transient_and_not_asked_again_for_a_while() {
        let decoder = decoder_of_a_registry_that_is_down();
        let first = decoder.decode(&confluent_record(7)).await.expect_err("registry down");
        assert_eq!(first.kind, ErrorKind::Transient, "{first:?}");
        assert!(first.message.contains("after 3 attempts"), "{first:?}");
        // Within the hold: failed at once, without a request.
        let held = decoder.decode(&confluent_record(8)).await.expect_err("still down");
        assert_eq!(held.kind, ErrorKind::Transient);
        assert!(held.message.contains("not asked again"), "{held:?}");
        tokio::time::advance(UNAVAILABLE_HOLD + Duration::from_millis(1)).await;
        let asked = decoder.decode(&confluent_record(8)).await.expect_err("still down");
        assert!(asked.message.contains("after 3 attempts"), "asked again: {asked:?}");
    }

    #[tokio::test]
    async fn without_a_registry_a_confluent_record_is_poison_and_single_object_ones_decode() {
        let decoder = NoteDecoder::new(NoteCodec::embedded(), None);
        let failure = decoder.decode(&confluent_record(7)).await.expect_err("no registry");
        assert_eq!(failure.kind, ErrorKind::Poison);
        assert!(failure.message.contains("schema id 7"), "{failure:?}");
        let garbage = decoder.decode(b"{}").await.expect_err("not avro");
        assert_eq!(garbage.kind, ErrorKind::Poison);
        assert!(decoder.decode(&[]).await.is_err());
        assert!(decoder.decode(&[0, 1]).await.is_err());
    }
}
