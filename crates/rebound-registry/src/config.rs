//! The registry flags, defined once for every binary that reads or writes Confluent-framed
//! notes, and the validated configuration they become before any work starts.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rebound_schema::WireFormat;
use rebound_service::parse_duration_flag;
use rebound_service::redact::redact_url;

use crate::RegistryError;

/// How to reach a Confluent-compatible schema registry (consumer, producer, generator, CLI).
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Base URL of a Confluent-compatible schema registry, such as
    /// `http://registry:8080/apis/ccompat/v7` (Apicurio) or `http://registry:8081` (Confluent).
    /// Needed to read Confluent-framed records and to write with `--wire-format confluent`.
    #[arg(long, global = true, env = "REBOUND_SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<String>,

    /// Basic authentication for the registry as `USER:PASSWORD` (prefer the variable or the
    /// file to the flag: a flag is visible to other users of the machine). Never logged.
    #[arg(
        long,
        global = true,
        env = "REBOUND_SCHEMA_REGISTRY_BASIC_AUTH",
        hide_env_values = true
    )]
    pub schema_registry_basic_auth: Option<String>,

    /// File holding `USER:PASSWORD` for the registry's basic authentication (one line).
    #[arg(long, global = true, env = "REBOUND_SCHEMA_REGISTRY_BASIC_AUTH_FILE")]
    pub schema_registry_basic_auth_file: Option<PathBuf>,

    /// Bearer token for the registry. Never logged.
    #[arg(
        long,
        global = true,
        env = "REBOUND_SCHEMA_REGISTRY_BEARER_TOKEN",
        hide_env_values = true
    )]
    pub schema_registry_bearer_token: Option<String>,

    /// File holding the registry's bearer token (one line).
    #[arg(long, global = true, env = "REBOUND_SCHEMA_REGISTRY_BEARER_TOKEN_FILE")]
    pub schema_registry_bearer_token_file: Option<PathBuf>,

    /// PEM file of the certificate authorities to trust for an `https` registry, in addition to
    /// the system's.
    #[arg(long, global = true, env = "REBOUND_SCHEMA_REGISTRY_CA_FILE")]
    pub schema_registry_ca_file: Option<PathBuf>,

    /// Timeout of one registry request. A look-up is tried three times before the record counts
    /// as a transient failure, so keep three timeouts well below `max.poll.interval.ms`.
    #[arg(long, global = true, env = "REBOUND_SCHEMA_REGISTRY_TIMEOUT", default_value = "5s", value_parser = parse_duration_flag)]
    pub schema_registry_timeout: Duration,
}

/// Credentials for the registry. Their `Debug` form never shows the secret.
#[derive(Clone)]
pub enum RegistryAuth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A bearer token.
    Bearer(String),
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(formatter, "Basic {{ user: {user:?}, password: \"<redacted>\" }}"),
            Self::Bearer(_) => formatter.write_str("Bearer(\"<redacted>\")"),
        }
    }
}

/// A validated registry configuration.
#[derive(Clone)]
pub struct RegistryConfig {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Credentials, if any.
    pub auth: Option<RegistryAuth>,
    /// Extra trusted certificate authorities (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of one request.
    pub timeout: Duration,
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RegistryConfig")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RegistryArgs {
    /// Validates the flags and reads the files they name. `None` when no registry URL is given
    /// (then no credential flag may be given either).
    pub fn into_config(self) -> Result<Option<RegistryConfig>, RegistryError> {
        let auth = self.auth()?;
        let Some(url) = self.schema_registry_url else {
            let given = [
                (
                    "--schema-registry-basic-auth or --schema-registry-bearer-token",
                    auth.is_some(),
                ),
                ("--schema-registry-ca-file", self.schema_registry_ca_file.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                return Err(RegistryError::InvalidFlag {
                    flag,
                    reason: "needs --schema-registry-url".to_owned(),
                });
            }
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(&url).map_err(|error| RegistryError::InvalidFlag {
            flag: "--schema-registry-url",
            reason: format!("{}: {error}", redact_url(&url)),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RegistryError::InvalidFlag {
                flag: "--schema-registry-url",
                reason: format!("{}: the scheme must be http or https", redact_url(&url)),
            });
        }
        if self.schema_registry_timeout.is_zero() {
            return Err(RegistryError::InvalidFlag {
                flag: "--schema-registry-timeout",
                reason: "must be above 0".to_owned(),
            });
        }
        let ca_pem = match &self.schema_registry_ca_file {
            Some(path) => Some(read_file("--schema-registry-ca-file", path)?),
            None => None,
        };
        Ok(Some(RegistryConfig {
            url: url.trim_end_matches('/').to_owned(),
            auth,
            ca_pem,
            timeout: self.schema_registry_timeout,
        }))
    }

    fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError> {
        let basic = match (&self.schema_registry_basic_auth, &self.schema_registry_basic_auth_file) {
            (Some(_), Some(_)) => {
                return Err(one_of(
                    "--schema-registry-basic-auth",
                    "--schema-registry-basic-auth-file",
                ));
            }
            (Some(text), None) => Some(parse_basic("--schema-registry-basic-auth", text)?),
            (None, Some(path)) => Some(parse_basic(
                "--schema-registry-basic-auth-file",
                &read_secret("--schema-registry-basic-auth-file", path)?,
            )?),
            (None, None) => None,
        };
        let bearer = match (
            &self.schema_registry_bearer_token,
            &self.schema_registry_bearer_token_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(one_of(
                    "--schema-registry-bearer-token",
                    "--schema-registry-bearer-token-file",
                ));
            }
            (Some(token), None) => Some(token.trim().to_owned()),
            (None, Some(path)) => Some(read_secret("--schema-registry-bearer-token-file", path)?),
            (None, None) => None,
        };
        match (basic, bearer) {
            (Some(_), Some(_)) => Err(one_of("basic authentication", "a bearer token")),
            (Some(basic), None) => Ok(Some(basic)),
            (None, Some(token)) if token.is_empty() => Err(RegistryError::InvalidFlag {
                flag: "--schema-registry-bearer-token",
                reason: "the token is empty".to_owned(),
            }),
            (None, Some(token)) => Ok(Some(RegistryAuth::Bearer(token))),
            (None, None) => Ok(None),
        }
    }
}

fn one_of(first: &str, second: &str) -> RegistryError {
    RegistryError::InvalidFlag {
        flag: "schema registry credentials",
        reason: format!("give {first} or {second}, not both"),
    }
}

/// `USER:PASSWORD`; the error never quotes the value.
fn parse_basic(flag: &'static str, text: &str) -> Result<RegistryAuth, RegistryError> {
    match text.trim().split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(RegistryAuth::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err(RegistryError::InvalidFlag {
            flag,
            reason: "expected USER:PASSWORD with a user name (the value is not shown)".to_owned(),
        }),
    }
}

fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path).map_err(|error| RegistryError::InvalidFlag {
        flag,
        reason: format!("cannot read {}: {error}", path.display()),
    })
}

/// A secret file's first line, without its line end.
fn read_secret(flag: &'static str, path: &Path) -> Result<String, RegistryError> {
    let bytes = read_file(flag, path)?;
    let text = String::from_utf8(bytes).map_err(|_| RegistryError::InvalidFlag {
        flag,
        reason: format!("{} is not UTF-8", path.display()),
    })?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// The `--wire-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WireFormatFlag {
    /// Avro single-object encoding (`C3 01` + schema fingerprint): needs no registry.
    #[default]
    SingleObject,
    /// Confluent framing (`00` + 4-byte schema id): needs `--schema-registry-url`.
    Confluent,
}

impl From<WireFormatFlag> for WireFormat {
    fn from(flag: WireFormatFlag) -> Self {
        match flag {
            WireFormatFlag::SingleObject => Self::SingleObject,
            WireFormatFlag::Confluent => Self::Confluent,
        }
    }
}

/// How the subject a schema is registered under is named (Confluent's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (Confluent's default, `TopicNameStrategy`).
    #[default]
    Topic,
    /// The record's full name, `dev.rebound.notes.Note` (`RecordNameStrategy`).
    Record,
    /// `<topic>-<record full name>` (`TopicRecordNameStrategy`).
    TopicRecord,
}

impl SubjectNameStrategy {
    /// The subject of record values of `record_full_name` written to `topic`.
    pub fn subject(self, topic: &str, record_full_name: &str) -> String {
        match self {
            Self::Topic => format!("{topic}-value"),
            Self::Record => record_full_name.to_owned(),
            Self::TopicRecord => format!("{topic}-{record_full_name}"),
        }
    }
}

/// The writing side's flags: the producer's and the generator's.
#[derive(Debug, Clone, clap::Args)]
pub struct WireFormatArgs {
    /// Wire format of the notes written: `single-object` (read by rebound without a registry)
    /// or `confluent` (read by Confluent's serializers in Java, Python, Go...).
    #[arg(long, global = true, env = "REBOUND_WIRE_FORMAT", value_enum, default_value_t)]
    pub wire_format: WireFormatFlag,

    /// Subject the note schema is registered under with `--wire-format confluent`: `topic`
    /// (`<topic>-value`), `record` (`dev.rebound.notes.Note`) or `topic-record`.
    #[arg(
        long,
        global = true,
        env = "REBOUND_SUBJECT_NAME_STRATEGY",
        value_enum,
        default_value_t
    )]
    pub subject_name_strategy: SubjectNameStrategy,

    /// Register the note schema under its subject if it is not there yet (off by default: then
    /// it must already be registered, and only its id is looked up).
    #[arg(long, global = true, env = "REBOUND_AUTO_REGISTER")]
    pub auto_register: bool,

    /// Schema registry connection.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The validated writing side.
#[derive(Debug, Clone)]
pub enum WriterConfig {
    /// Single-object encoding; no registry involved.
    SingleObject,
    /// Confluent framing through a registry.
    Confluent {
        /// The registry.
        registry: RegistryConfig,
        /// The subject naming strategy.
        subject_name_strategy: SubjectNameStrategy,
        /// Register the schema if it is missing.
        auto_register: bool,
    },
}

impl WireFormatArgs {
    /// Validates the flags: `confluent` needs a registry URL.
    pub fn into_config(self) -> Result<WriterConfig, RegistryError> {
        let registry = self.registry.into_config()?;
        match (self.wire_format, registry) {
            (WireFormatFlag::SingleObject, _) => Ok(WriterConfig::SingleObject),
            (WireFormatFlag::Confluent, None) => Err(RegistryError::InvalidFlag {
                flag: "--wire-format",
                reason: "confluent needs --schema-registry-url".to_owned(),
            }),
            (WireFormatFlag::Confluent, Some(registry)) => Ok(WriterConfig::Confluent {
                registry,
                subject_name_strategy: self.subject_name_strategy,
                auto_register: self.auto_register,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        writer: WireFormatArgs,
    }

    fn writer(flags: &[&str]) -> Result<WriterConfig, RegistryError> {
        let mut argv = vec!["test"];
        argv.extend_from_slice(flags);
        Flags::try_parse_from(argv).expect("flags parse").writer.into_config()
    }

    #[test]
    fn confluent_needs_a_registry_url() {
        let error = writer(&["--wire-format", "confluent"]).expect_err("no url");
        assert!(error.to_string().contains("--schema-registry-url"), "{error}");
        assert!(matches!(writer(&[]), Ok(WriterConfig::SingleObject)));
    }

    #[test]
    fn credentials_are_never_in_the_debug_form_or_errors() {
        let config = writer(&[
            "--wire-format",
            "confluent",
            "--schema-registry-url",
            "https://registry.example:8081/",
            "--schema-registry-basic-auth",
            "alice:s3cret-password",
        ])
        .expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-password"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        let WriterConfig::Confluent { registry, .. } = config else {
            panic!("confluent expected");
        };
        assert_eq!(registry.url, "https://registry.example:8081");
        let error = writer(&[
            "--schema-registry-url",
            "http://r",
            "--schema-registry-basic-auth",
            "no-colon-secret",
        ])
        .expect_err("malformed");
        assert!(!error.to_string().contains("no-colon-secret"), "{error}");
    }

    #[test]
    fn basic_and_bearer_together_are_refused() {
        let error = writer(&[
            "--schema-registry-url",
            "http://r",
            "--schema-registry-basic-auth",
            "a:b",
            "--schema-registry-bearer-token",
            "t",
        ])
        .expect_err("both");
        assert!(error.to_string().contains("not both"), "{error}");
    }

    #[test]
    fn subjects_follow_confluents_strategies() {
        let name = "dev.rebound.notes.Note";
        assert_eq!(SubjectNameStrategy::Topic.subject("notes", name), "notes-value");
        assert_eq!(SubjectNameStrategy::Record.subject("notes", name), name);
        assert_eq!(
            SubjectNameStrategy::TopicRecord.subject("notes", name),
            "notes-dev.rebound.notes.Note"
        );
    }
}
