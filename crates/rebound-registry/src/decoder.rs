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

/// After the registry refused a schema id (404, or a schema that cannot be used), records naming
/// that id are poison at once for this long, without asking again: a flood of records with an
/// unknown id costs the registry one request, not one per record. Not forever, because an id can
/// become known (a registry restored from a backup, a producer that registers late), and records
/// dead-lettered meanwhile can be replayed.
const REFUSED_HOLD: Duration = Duration::from_secs(60);

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
    refused_ids: Mutex<HashMap<u32, (tokio::time::Instant, String)>>,
}

impl NoteDecoder {
    /// A decoder with the compiled-in schemas; Confluent-framed records need `registry`.
    pub fn new(codec: &'static NoteCodec, registry: Option<RegistryClient>) -> Self {
        Self {
            codec,
            registry,
            schemas_by_id: Mutex::new(HashMap::new()),
            unavailable_until: Mutex::new(None),
            refused_ids: Mutex::new(HashMap::new()),
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
        if let Some(reason) = self.still_refused(schema_id) {
            return Err(DecodeFailure {
                kind: ErrorKind::Poison,
                message: reason,
            });
        }
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
                if let Ok(mut refused) = self.refused_ids.lock() {
                    refused.insert(
                        schema_id,
                        (tokio::time::Instant::now() + REFUSED_HOLD, error.to_string()),
                    );
                }
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

    fn still_refused(&self, schema_id: u32) -> Option<String> {
        let mut refused = self.refused_ids.lock().ok()?;
        let now = tokio::time::Instant::now();
        // Expired refusals go, so the map holds at most the ids refused within the hold.
        refused.retain(|_, (until, _)| now < *until);
        refused
            .get(&schema_id)
            .map(|(_, reason)| format!("{reason} (refused within the last {REFUSED_HOLD:?}; not asked again yet)"))
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

    /// A registry on loopback that answers 404 to every schema id and counts the requests.
    async fn registry_that_knows_no_id() -> (RegistryClient, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let app = axum::Router::new().route(
            "/schemas/ids/{id}",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        axum::http::StatusCode::NOT_FOUND,
                        r#"{"error_code":40403,"message":"Schema not found"}"#,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = RegistryArgs {
            schema_registry_url: Some(format!("http://{address}")),
            schema_registry_basic_auth: None,
            schema_registry_basic_auth_file: None,
            schema_registry_bearer_token: None,
            schema_registry_bearer_token_file: None,
            schema_registry_ca_file: None,
            schema_registry_timeout: Duration::from_secs(5),
        }
        .into_config()
        .expect("valid")
        .expect("a registry");
        (RegistryClient::new(&config).expect("client"), requests)
    }

    #[tokio::test]
    async fn an_id_the_registry_does_not_know_is_poison_and_not_asked_again_for_a_while() {
        use std::sync::atomic::Ordering;
        let (client, requests) = registry_that_knows_no_id().await;
        let decoder = NoteDecoder::new(NoteCodec::embedded(), Some(client));
        let first = decoder.decode(&confluent_record(404)).await.expect_err("unknown id");
        assert_eq!(first.kind, ErrorKind::Poison, "{first:?}");
        assert!(first.message.contains("404"), "{first:?}");
        // A flood of records naming the same unknown id costs the registry one request.
        for _ in 0..50 {
            let again = decoder.decode(&confluent_record(404)).await.expect_err("still unknown");
            assert_eq!(again.kind, ErrorKind::Poison);
            assert!(again.message.contains("404"), "{again:?}");
        }
        assert_eq!(requests.load(Ordering::SeqCst), 1, "the refusal is remembered");
        // Another id is asked for.
        decoder.decode(&confluent_record(405)).await.expect_err("unknown too");
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        // Past the hold the id is asked again: it may have been registered since.
        tokio::time::pause();
        tokio::time::advance(REFUSED_HOLD + Duration::from_millis(1)).await;
        tokio::time::resume();
        decoder.decode(&confluent_record(404)).await.expect_err("unknown still");
        assert_eq!(requests.load(Ordering::SeqCst), 3, "asked again after the hold");
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
