//! The requests rebound makes of a Confluent-compatible schema registry, each with a bounded
//! retry: a schema by id, a subject's version look-up, and a registration.

use std::time::Duration;

use rebound_service::redact::redact_url;
use serde::Deserialize;

use crate::{RegistryAuth, RegistryConfig, RegistryError};

/// Attempts per request before the registry counts as unavailable.
const ATTEMPTS: u32 = 3;

/// Pause after the first failed attempt; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The content type of the Confluent API's requests.
const SCHEMA_REGISTRY_JSON: &str = "application/vnd.schemaregistry.v1+json";

/// A client of one registry. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base_url: String,
    auth: Option<RegistryAuth>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RegistryClient")
            .field("url", &redact_url(&self.base_url))
            .field("auth", &self.auth)
            .finish()
    }
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

/// What one attempt came to.
enum Attempt {
    /// 2xx with its body.
    Answered(String),
    /// 404: the id, subject or schema does not exist.
    NotFound(String),
    /// Another 4xx that trying again cannot change.
    Refused(String),
    /// No answer, or one worth trying again (5xx, 429, 401, 403: a registry being restarted
    /// or a credential being rotated).
    Unavailable(String),
}

impl RegistryClient {
    /// Builds the client (TLS roots, timeout); no request is made.
    pub fn new(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A registry that redirects is misconfigured; following could send credentials on.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.ca_pem {
            for certificate in
                reqwest::Certificate::from_pem_bundle(pem).map_err(|source| RegistryError::BuildClient { source })?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|source| RegistryError::BuildClient { source })?;
        Ok(Self {
            http,
            base_url: config.url.clone(),
            auth: config.auth.clone(),
        })
    }

    /// The registry's URL with credentials redacted, for messages.
    pub fn display_url(&self) -> String {
        redact_url(&self.base_url)
    }

    /// The writer schema (JSON text) registered under `schema_id`.
    pub async fn schema_by_id(&self, schema_id: u32) -> Result<String, RegistryError> {
        let operation = format!("fetch schema id {schema_id}");
        let url = format!("{}/schemas/ids/{schema_id}", self.base_url);
        match self.request(&operation, || self.http.get(&url)).await? {
            Ok(body) => {
                let answer: SchemaAnswer = self.parse(&operation, &body)?;
                if let Some(kind) = answer.schema_type.filter(|kind| kind != "AVRO") {
                    return Err(RegistryError::ReadAnswer {
                        operation,
                        registry: self.display_url(),
                        reason: format!("schema id {schema_id} is a {kind} schema, not Avro"),
                    });
                }
                Ok(answer.schema)
            }
            Err(_) => Err(RegistryError::UnknownSchemaId {
                schema_id,
                registry: self.display_url(),
            }),
        }
    }

    /// The id `schema` has under `subject`, which must already be registered there.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let operation = format!("look up the note schema under subject {subject:?}");
        let url = format!("{}/subjects/{}", self.base_url, path_segment(subject));
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        match self.request(&operation, || self.post_json(&url, &body)).await? {
            Ok(answer) => Ok(self.parse::<IdAnswer>(&operation, &answer)?.id),
            Err(reason) => Err(RegistryError::Refused {
                operation,
                registry: self.display_url(),
                reason: format!("not registered ({reason}); register it first or start with --auto-register"),
            }),
        }
    }

    /// Registers `schema` under `subject` (a no-op answering the same id if it is there).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let operation = format!("register the note schema under subject {subject:?}");
        let url = format!("{}/subjects/{}/versions", self.base_url, path_segment(subject));
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        match self.request(&operation, || self.post_json(&url, &body)).await? {
            Ok(answer) => Ok(self.parse::<IdAnswer>(&operation, &answer)?.id),
            Err(reason) => Err(RegistryError::Refused {
                operation,
                registry: self.display_url(),
                reason,
            }),
        }
    }

    fn post_json(&self, url: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, SCHEMA_REGISTRY_JSON)
            .body(body.to_string())
    }

    /// Sends a request up to [`ATTEMPTS`] times. `Ok(Ok(body))` on success, `Ok(Err(message))`
    /// on 404, `Err` when the registry refused it or stayed unavailable.
    async fn request(
        &self,
        operation: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Result<String, String>, RegistryError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt(build()).await {
                Attempt::Answered(body) => return Ok(Ok(body)),
                Attempt::NotFound(message) => return Ok(Err(message)),
                Attempt::Refused(reason) => {
                    return Err(RegistryError::Refused {
                        operation: operation.to_owned(),
                        registry: self.display_url(),
                        reason,
                    });
                }
                Attempt::Unavailable(reason) if attempt >= ATTEMPTS => {
                    return Err(RegistryError::Unavailable {
                        operation: operation.to_owned(),
                        registry: self.display_url(),
                        reason: format!("{reason} (after {ATTEMPTS} attempts)"),
                    });
                }
                Attempt::Unavailable(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, request: reqwest::RequestBuilder) -> Attempt {
        let request = match &self.auth {
            Some(RegistryAuth::Basic { user, password }) => request.basic_auth(user, Some(password)),
            Some(RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        let response = match request
            .header(reqwest::header::ACCEPT, SCHEMA_REGISTRY_JSON)
            .send()
            .await
        {
            Ok(response) => response,
            // Without the URL: reqwest's message names it, with any credentials it carries.
            Err(error) => return Attempt::Unavailable(describe_send_error(&error.without_url())),
        };
        let status = response.status();
        let body = match response.text().await {
            Ok(body) => body,
            Err(error) => return Attempt::Unavailable(format!("reading the answer failed: {}", error.without_url())),
        };
        let message = || format!("HTTP {status}: {}", registry_message(&body));
        if status.is_success() {
            Attempt::Answered(body)
        } else if status == reqwest::StatusCode::NOT_FOUND {
            Attempt::NotFound(message())
        } else if status.is_server_error()
            || matches!(status.as_u16(), 401 | 403 | 408 | 429)
            || status.is_redirection()
        {
            Attempt::Unavailable(message())
        } else {
            Attempt::Refused(message())
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, operation: &str, body: &str) -> Result<T, RegistryError> {
        serde_json::from_str(body).map_err(|error| RegistryError::ReadAnswer {
            operation: operation.to_owned(),
            registry: self.display_url(),
            reason: error.to_string(),
        })
    }
}

fn describe_send_error(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "no answer in time".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The Confluent API's `message` field of an error answer, or the start of the body.
fn registry_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .get("message")
                .and_then(|message| message.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// A subject as one URL path segment (subjects may hold `/`, `.` and other characters).
fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
