//! The connection flags every rebound service and the CLI share, and how they become a
//! librdkafka client configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use rdkafka::ClientConfig;

use crate::KafkaError;

/// The bootstrap brokers when neither a flag, a variable nor the config file names any.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Kafka connection flags, flattened into every binary's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Comma-separated bootstrap brokers [default: 127.0.0.1:9092]. Given as a flag or
    /// variable, it wins over `bootstrap.servers` in `--kafka-config-file`; `-X
    /// bootstrap.servers=...` wins over both.
    // No clap default: an explicit value must be told apart from the default, which the file
    // may override.
    #[arg(long, env = "REBOUND_BROKERS", global = true)]
    pub brokers: Option<String>,

    /// librdkafka property passed through as is (repeatable), as with kcat: `-X security.protocol=SASL_SSL`.
    /// Applied after the config file, so it wins.
    // The variable's value may hold `sasl.password`, so `--help` must not print it.
    #[arg(
        short = 'X',
        long = "kafka-config",
        value_name = "KEY=VALUE",
        env = "REBOUND_KAFKA_CONFIG",
        value_delimiter = ';',
        global = true,
        hide_env_values = true
    )]
    pub kafka_config: Vec<KafkaConfigPair>,

    /// Java-style properties file of librdkafka properties (TLS, SASL, tuning).
    #[arg(long, value_name = "PATH", env = "REBOUND_KAFKA_CONFIG_FILE", global = true)]
    pub kafka_config_file: Option<PathBuf>,
}

impl KafkaArgs {
    /// Connection flags for the given brokers with no passthrough properties.
    pub fn for_brokers(brokers: impl Into<String>) -> Self {
        Self {
            brokers: Some(brokers.into()),
            kafka_config: Vec::new(),
            kafka_config_file: None,
        }
    }

    /// The brokers as given by `--brokers` or `REBOUND_BROKERS`, else the default; for
    /// messages. The brokers actually used are [`ResolvedKafkaConfig::brokers`].
    pub fn brokers(&self) -> &str {
        self.brokers.as_deref().unwrap_or(DEFAULT_BROKERS)
    }

    /// Resolves the flags into librdkafka properties, each source overriding the ones before
    /// it: the default brokers, the config file, an explicit `--brokers`, then `-X` pairs. Reads
    /// the file, so call it once at start-up; a bad file or pair is reported before any work
    /// starts.
    pub fn resolve(&self) -> Result<ResolvedKafkaConfig, KafkaError> {
        let mut properties = BTreeMap::new();
        properties.insert("bootstrap.servers".to_owned(), DEFAULT_BROKERS.to_owned());
        if let Some(path) = &self.kafka_config_file {
            let file = std::fs::File::open(path).map_err(|error| KafkaError::ReadConfigFile {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
            let from_file =
                java_properties::read(std::io::BufReader::new(file)).map_err(|error| KafkaError::ReadConfigFile {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                })?;
            properties.extend(from_file);
        }
        if let Some(brokers) = &self.brokers {
            properties.insert("bootstrap.servers".to_owned(), brokers.clone());
        }
        for pair in &self.kafka_config {
            properties.insert(pair.key.clone(), pair.value.clone());
        }
        Ok(ResolvedKafkaConfig { properties })
    }
}

/// librdkafka properties resolved from the shared flags; `Debug` hides secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedKafkaConfig {
    properties: BTreeMap<String, String>,
}

impl ResolvedKafkaConfig {
    /// A client configuration holding these properties, with `defaults` applied first so that
    /// the user's properties override them.
    pub(crate) fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// [`Self::client_config`] for a client that reads rebound's topics: `isolation.level` is
    /// `read_committed` whatever the flags, file or `-X` say, so records of aborted or still open
    /// transactions (a crashed hop's copies) are never read. librdkafka's default is the same; it
    /// is set here so that no override can turn it off.
    pub(crate) fn reader_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = self.client_config(defaults);
        config.set(ISOLATION_LEVEL, READ_COMMITTED);
        config
    }

    /// A property's value as the user set it (flags, file or `-X`), if set; librdkafka's
    /// default applies otherwise.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// The bootstrap servers.
    pub fn brokers(&self) -> &str {
        self.properties.get("bootstrap.servers").map_or("", String::as_str)
    }
}

/// The librdkafka property of a consumer's isolation level.
pub const ISOLATION_LEVEL: &str = "isolation.level";
/// The only isolation level rebound's readers use.
pub const READ_COMMITTED: &str = "read_committed";

impl fmt::Debug for ResolvedKafkaConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_map()
            .entries(
                self.properties
                    .iter()
                    .map(|(key, value)| (key, redact_config_value(key, value))),
            )
            .finish()
    }
}

/// What a redacted secret is shown as.
pub const REDACTED: &str = "***";

/// Parts of property names that mark a secret. Matching on parts rather than a fixed list also
/// covers properties a newer librdkafka adds (`*.password`, `*.secret`) and Java-style keys
/// that a shared properties file may carry (`sasl.jaas.config`).
const SECRET_KEY_PARTS: [&str; 8] = [
    "password",
    "secret",
    "sasl.jaas.config",
    "sasl.oauthbearer.config",
    "ssl.key.pem",
    "ssl_key",
    "token",
    "credential",
];

/// True when a property's value is a secret that must not be shown.
pub fn is_secret_config_key(key: &str) -> bool {
    let lowered = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|part| lowered.contains(part))
}

/// Replaces the value of a secret-bearing property with `***`, for logs and errors.
pub fn redact_config_value<'value>(key: &str, value: &'value str) -> &'value str {
    if is_secret_config_key(key) { REDACTED } else { value }
}

/// One `-X key=value` librdkafka property.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfigPair {
    /// Property name.
    pub key: String,
    /// Property value.
    pub value: String,
}

impl fmt::Debug for KafkaConfigPair {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}={}",
            self.key,
            redact_config_value(&self.key, &self.value)
        )
    }
}

impl FromStr for KafkaConfigPair {
    type Err = KafkaError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(Self {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(KafkaError::ParseConfigPair {
                input: input.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn pair_parses_key_and_value_with_equals_signs_in_value() {
        let pair: KafkaConfigPair = "sasl.jaas.config=a=b".parse().expect("valid");
        assert_eq!(pair.key, "sasl.jaas.config");
        assert_eq!(pair.value, "a=b");
        assert!("novalue".parse::<KafkaConfigPair>().is_err());
        assert!("=x".parse::<KafkaConfigPair>().is_err());
    }

    #[test]
    fn an_explicit_brokers_flag_wins_over_the_file_and_x_wins_over_both() {
        let mut file = tempfile_in_target("override");
        writeln!(
            file.1,
            "# comment\nbootstrap.servers=file:9092\nclient.id = from-file\nlinger.ms: 7"
        )
        .expect("write");
        let args = KafkaArgs::parse_from(["test", "--brokers", "flag:9092", "-X", "client.id=from-flag"])
            .with_config_file(&file.0);
        let resolved = args.resolve().expect("resolves");
        assert_eq!(
            resolved.brokers(),
            "flag:9092",
            "an explicit --brokers is not overridden by the file"
        );
        assert_eq!(
            resolved.properties.get("client.id").map(String::as_str),
            Some("from-flag")
        );
        assert_eq!(resolved.properties.get("linger.ms").map(String::as_str), Some("7"));
        let args = KafkaArgs::parse_from(["test", "--brokers", "flag:9092", "-X", "bootstrap.servers=x:9092"])
            .with_config_file(&file.0);
        assert_eq!(args.resolve().expect("resolves").brokers(), "x:9092");
        std::fs::remove_file(&file.0).expect("cleanup");
    }

    #[test]
    fn the_file_wins_over_the_default_brokers() {
        let mut file = tempfile_in_target("default-brokers");
        writeln!(file.1, "bootstrap.servers=file:9092").expect("write");
        let args = KafkaArgs::parse_from(["test"]).with_config_file(&file.0);
        assert_eq!(args.resolve().expect("resolves").brokers(), "file:9092");
        let args = KafkaArgs::parse_from(["test"]);
        assert_eq!(args.resolve().expect("resolves").brokers(), "127.0.0.1:9092");
        std::fs::remove_file(&file.0).expect("cleanup");
    }

    /// The connection flags alone, as a binary would parse them.
    #[derive(clap::Parser)]
    struct FlagsOnly {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    impl KafkaArgs {
        fn parse_from<const N: usize>(argv: [&str; N]) -> Self {
            <FlagsOnly as clap::Parser>::parse_from(argv).kafka
        }

        fn with_config_file(mut self, path: &std::path::Path) -> Self {
            self.kafka_config_file = Some(path.to_owned());
            self
        }
    }

    #[test]
    fn missing_config_file_is_named_in_the_error() {
        let args = KafkaArgs {
            kafka_config_file: Some(PathBuf::from("/nonexistent/kafka.properties")),
            ..KafkaArgs::for_brokers("x:1")
        };
        let error = args.resolve().expect_err("missing").to_string();
        assert!(error.contains("/nonexistent/kafka.properties"), "{error}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let args = KafkaArgs {
            kafka_config: vec![
                "sasl.password=hunter2".parse().expect("valid"),
                "sasl.username=alice".parse().expect("valid"),
            ],
            ..KafkaArgs::for_brokers("x:1")
        };
        let shown = format!("{args:?} {:?}", args.resolve().expect("resolves"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(shown.contains("sasl.password=***"), "{shown}");
    }

    #[test]
    fn every_secret_librdkafka_property_is_redacted() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
            "SASL.PASSWORD",
        ] {
            assert_eq!(redact_config_value(key, "s3cret"), REDACTED, "{key}");
        }
        for key in [
            "sasl.username",
            "security.protocol",
            "sasl.mechanisms",
            "ssl.ca.location",
        ] {
            assert_eq!(redact_config_value(key, "shown"), "shown", "{key}");
        }
    }

    #[test]
    fn secrets_from_the_config_file_are_redacted_too() {
        let mut file = tempfile_in_target("secrets");
        writeln!(file.1, "sasl.username=bob\nssl.key.password=from-file-secret").expect("write");
        let args = KafkaArgs {
            kafka_config_file: Some(file.0.clone()),
            ..KafkaArgs::for_brokers("x:1")
        };
        let shown = format!("{:?}", args.resolve().expect("resolves"));
        std::fs::remove_file(&file.0).expect("cleanup");
        assert!(!shown.contains("from-file-secret"), "{shown}");
        assert!(shown.contains("\"ssl.key.password\": \"***\""), "{shown}");
        assert!(shown.contains("bob"), "{shown}");
    }

    // Tests run in parallel threads of one process, so each names its own file.
    fn tempfile_in_target(test: &str) -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("rebound-kafka-config-{}-{test}.properties", std::process::id()));
        let file = std::fs::File::create(&path).expect("create");
        (path, file)
    }
}
