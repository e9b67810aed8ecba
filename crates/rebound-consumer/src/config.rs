//! The consumer's command-line flags and the validated configuration they turn into before any
//! work starts.

use std::path::PathBuf;
use std::time::Duration;

use rebound_kafka::KafkaArgs;
use rebound_retry::TierPolicy;
use rebound_service::{CommonArgs, OperationalArgs, ServiceError, TierDelays, TopologyArgs, parse_duration_flag};
use rebound_sink_store::{SinkSpec, SinkStoreError};

use crate::ConsumerError;
use crate::sink::{
    DEFAULT_CONCURRENCY, FailureInjection, HeaderText, HttpSinkSettings, SecretHeader, TrustedCa, signer_from_file,
};

/// Flags of `rebound-consumer`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rebound-consumer",
    version,
    about = "Applies notes from Kafka to a sink; routes failures to retry tiers and the DLQ."
)]
pub struct ConsumerArgs {
    /// Kafka connection and logging.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Metrics and health endpoints.
    #[command(flatten)]
    pub operational: OperationalArgs,

    /// Consumer group; run more instances with the same group to scale out.
    #[arg(long, env = "REBOUND_GROUP", default_value = "rebound-consumer")]
    pub group: String,

    /// Source topic to consume (repeatable).
    #[arg(
        long = "source-topic",
        env = "REBOUND_SOURCE_TOPICS",
        value_delimiter = ',',
        default_value = "notes"
    )]
    pub source_topics: Vec<String>,

    /// Where notes are applied: sqlite://PATH, http(s)://URL or null://.
    // An HTTP sink's URL may carry credentials or a token, so `--help` must not print the variable.
    #[arg(
        long,
        env = "REBOUND_SINK",
        default_value = "sqlite://notes.db",
        hide_env_values = true
    )]
    pub sink: String,

    /// Record every delivery in a `deliveries` table of the SQLite sink, committed with its
    /// batch, so redeliveries can be counted (soak tests; off by default).
    #[arg(long, env = "REBOUND_SINK_JOURNAL")]
    pub sink_journal: bool,

    /// Inject random sink failures, e.g. `transient=0.1,permanent=0.01` (demo and tests).
    #[arg(long, env = "REBOUND_INJECT_FAILURES")]
    pub inject_failures: Option<String>,

    /// Seed of the failure injector, so runs can be repeated.
    #[arg(long, env = "REBOUND_INJECT_SEED", default_value_t = 1)]
    pub inject_seed: u64,

    /// Tiers, DLQ and topic prefix, shared with the scheduler and the CLI.
    #[command(flatten)]
    pub topology: TopologyArgs,

    /// Most records processed as one batch (one sink transaction).
    #[arg(long, env = "REBOUND_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// Longest wait for more records before a partial batch is processed.
    #[arg(long, env = "REBOUND_BATCH_LINGER", default_value = "20ms", value_parser = parse_duration_flag)]
    pub batch_linger: Duration,

    /// Timeout of one HTTP sink request.
    #[arg(long, env = "REBOUND_HTTP_TIMEOUT", default_value = "10s", value_parser = parse_duration_flag)]
    pub http_timeout: Duration,

    /// Longest time one batch may spend in the HTTP sink; notes without an answer by then are
    /// transient failures. Must stay below `max.poll.interval.ms`, or a receiver that never
    /// answers gets the consumer evicted from its group. Default: half of
    /// `max.poll.interval.ms` (150 s with librdkafka's default of 300 s).
    #[arg(long, env = "REBOUND_HTTP_BATCH_TIMEOUT", value_parser = parse_duration_flag)]
    pub http_batch_timeout: Option<Duration>,

    /// Most HTTP sink requests of one batch in flight at once.
    #[arg(long, env = "REBOUND_HTTP_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub http_concurrency: usize,

    /// File holding one `Name: value` header sent with every HTTP sink request, e.g.
    /// `Authorization: Bearer ...`; the value is never logged.
    #[arg(long, env = "REBOUND_HTTP_HEADER_FILE", conflicts_with = "http_header")]
    pub http_header_file: Option<PathBuf>,

    /// The same header given directly (`Name: value`); prefer the environment variable or the
    /// file, since command lines are visible to every user of the host.
    #[arg(long, env = "REBOUND_HTTP_HEADER", hide_env_values = true)]
    pub http_header: Option<HeaderText>,

    /// PEM file of CA certificates the HTTP sink trusts in addition to the bundled and the
    /// system roots (a receiver with a private CA).
    #[arg(long, env = "REBOUND_HTTP_CA_FILE")]
    pub http_ca_file: Option<PathBuf>,

    /// File holding the secret that signs every HTTP sink request (`X-Rebound-Signature`);
    /// at least 16 bytes, surrounding whitespace ignored.
    #[arg(long, env = "REBOUND_HTTP_SIGNING_SECRET_FILE")]
    pub http_signing_secret_file: Option<PathBuf>,

    /// How long shutdown may take to finish the batch in hand and commit.
    #[arg(long, env = "REBOUND_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration_flag)]
    pub shutdown_timeout: Duration,
}

/// The consumer's validated configuration.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Kafka connection.
    pub kafka: KafkaArgs,
    /// Consumer group.
    pub group: String,
    /// Source topics, prefix applied.
    pub source_topics: Vec<String>,
    /// The sink.
    pub sink: SinkSpec,
    /// Whether the SQLite sink keeps its delivery journal.
    pub sink_journal: bool,
    /// Injected failures, if any, and their seed.
    pub failure_injection: Option<(FailureInjection, u64)>,
    /// Tiers and DLQ, prefix applied.
    pub policy: TierPolicy,
    /// Largest batch.
    pub batch_size: usize,
    /// Longest wait to fill a batch.
    pub batch_linger: Duration,
    /// How the HTTP sink sends: timeouts (the batch bound below the consumer's poll interval),
    /// concurrency, header, trusted CAs, signing.
    pub http: HttpSinkSettings,
    /// Bound on shutdown.
    pub shutdown_timeout: Duration,
    /// Address of `/metrics`, `/healthz`, `/readyz`, if served.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl ConsumerArgs {
    /// Validates the flags; every error names the flag and the problem.
    pub fn into_config(self) -> Result<ConsumerConfig, ConsumerError> {
        let invalid = |flag: &str, reason: String| ConsumerError::InvalidFlag {
            flag: flag.to_owned(),
            reason,
        };
        let policy = self
            .topology
            .tier_policy(TierDelays::Required)
            .map_err(|error| match error {
                ServiceError::InvalidTopology { flag, reason } => invalid(flag, reason),
                other => invalid("--tier", other.to_string()),
            })?;
        if self.source_topics.is_empty() {
            return Err(invalid(
                "--source-topic",
                "at least one source topic is needed".to_owned(),
            ));
        }
        let source_topics: Vec<String> = self
            .source_topics
            .iter()
            .map(|topic| self.topology.naming.prefixed(topic))
            .collect();
        for topic in &source_topics {
            if policy.tier_by_topic(topic).is_some() || topic == policy.dead_letter_topic() {
                return Err(invalid(
                    "--source-topic",
                    format!("{topic:?} is also a tier or the DLQ; records would loop"),
                ));
            }
        }
        if self.batch_size == 0 {
            return Err(invalid("--batch-size", "must be at least 1".to_owned()));
        }
        let failure_injection = match &self.inject_failures {
            None => None,
            Some(spec) => Some((
                spec.parse::<FailureInjection>()
                    .map_err(|error| invalid("--inject-failures", error.to_string()))?,
                self.inject_seed,
            )),
        };
        let sink: SinkSpec = self
            .sink
            .parse()
            .map_err(|error: SinkStoreError| invalid("--sink", error.to_string()))?;
        if self.sink_journal && !matches!(sink, SinkSpec::Sqlite(_)) {
            return Err(invalid(
                "--sink-journal",
                "the delivery journal is kept by the sqlite:// sink only".to_owned(),
            ));
        }
        let max_poll_interval = max_poll_interval(&self.common.kafka)?;
        let http_batch_timeout = self.http_batch_timeout.unwrap_or(max_poll_interval / 2);
        if http_batch_timeout.is_zero() || http_batch_timeout >= max_poll_interval {
            return Err(invalid(
                "--http-batch-timeout",
                format!(
                    "must be above 0 and below max.poll.interval.ms ({} ms), or a sink that never \
                     answers gets the consumer evicted from its group",
                    max_poll_interval.as_millis()
                ),
            ));
        }
        if self.http_concurrency == 0 {
            return Err(invalid("--http-concurrency", "must be at least 1".to_owned()));
        }
        let header = match (&self.http_header_file, &self.http_header) {
            (Some(path), _) => {
                Some(SecretHeader::from_file(path).map_err(|reason| invalid("--http-header-file", reason))?)
            }
            (None, Some(text)) => {
                Some(SecretHeader::parse(text.expose()).map_err(|reason| invalid("--http-header", reason))?)
            }
            (None, None) => None,
        };
        let trusted_ca = self
            .http_ca_file
            .as_deref()
            .map(TrustedCa::from_file)
            .transpose()
            .map_err(|reason| invalid("--http-ca-file", reason))?;
        let signer = self
            .http_signing_secret_file
            .as_deref()
            .map(signer_from_file)
            .transpose()
            .map_err(|reason| invalid("--http-signing-secret-file", reason))?;
        let http = HttpSinkSettings {
            concurrency: self.http_concurrency,
            header,
            trusted_ca,
            signer,
            ..HttpSinkSettings::new(self.http_timeout, http_batch_timeout)
        };
        Ok(ConsumerConfig {
            sink,
            sink_journal: self.sink_journal,
            kafka: self.common.kafka,
            metrics_listen: self.operational.metrics_listen,
            group: self.group,
            source_topics,
            failure_injection,
            policy,
            batch_size: self.batch_size,
            batch_linger: self.batch_linger,
            http,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL: Duration = Duration::from_secs(300);

/// The effective `max.poll.interval.ms`: what `-X` or the config file set, else librdkafka's
/// default. A member that does not poll for that long is evicted from its group.
fn max_poll_interval(kafka: &KafkaArgs) -> Result<Duration, ConsumerError> {
    let resolved = kafka.resolve().map_err(|source| ConsumerError::Kafka {
        operation: "read kafka config",
        source,
    })?;
    match resolved.property("max.poll.interval.ms") {
        None => Ok(DEFAULT_MAX_POLL_INTERVAL),
        Some(text) => {
            text.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|error| ConsumerError::InvalidFlag {
                    flag: "-X max.poll.interval.ms".to_owned(),
                    reason: format!("{text:?} is not a number of milliseconds: {error}"),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_are_the_documented_tiers_and_topics() {
        let config = ConsumerArgs::parse_from(["rebound-consumer"])
            .into_config()
            .expect("valid");
        let tiers: Vec<(&str, u64)> = config
            .policy
            .tiers()
            .iter()
            .map(|tier| (tier.topic.as_str(), tier.delay.as_secs()))
            .collect();
        assert_eq!(tiers, vec![("retry-5s", 5), ("retry-1m", 60)]);
        assert_eq!(config.policy.dead_letter_topic(), "dlq");
        assert_eq!(config.source_topics, vec!["notes".to_owned()]);
        assert_eq!(config.group, "rebound-consumer");
        // Metrics and health endpoints are opt-in, so nothing listens unless asked to.
        assert_eq!(config.metrics_listen, None);
    }

    #[test]
    fn prefix_applies_to_every_topic() {
        let config = ConsumerArgs::parse_from(["rebound-consumer", "--topic-prefix", "t1."])
            .into_config()
            .expect("valid");
        assert_eq!(config.source_topics, vec!["t1.notes".to_owned()]);
        assert_eq!(config.policy.dead_letter_topic(), "t1.dlq");
    }

    #[test]
    fn the_http_batch_timeout_defaults_to_half_the_poll_interval() {
        let config = ConsumerArgs::parse_from(["rebound-consumer"])
            .into_config()
            .expect("valid");
        assert_eq!(config.http.batch_deadline, Duration::from_secs(150));
        let config = ConsumerArgs::parse_from(["rebound-consumer", "-X", "max.poll.interval.ms=10000"])
            .into_config()
            .expect("valid");
        assert_eq!(config.http.batch_deadline, Duration::from_secs(5));
    }

    #[test]
    fn http_sink_options_default_to_16_requests_unsigned_without_header_or_extra_ca() {
        let config = ConsumerArgs::parse_from(["rebound-consumer"])
            .into_config()
            .expect("valid");
        assert_eq!(config.http.concurrency, 16);
        assert!(config.http.header.is_none() && config.http.trusted_ca.is_none() && config.http.signer.is_none());
    }

    #[test]
    fn the_http_header_and_signing_secret_never_appear_in_debug_output() {
        let directory = tempfile::tempdir().expect("temp dir");
        let secret = directory.path().join("secret");
        std::fs::write(&secret, "signing-secret-5e1f-0123456789\n").expect("write");
        let args = ConsumerArgs::parse_from([
            "rebound-consumer",
            "--http-header",
            "Authorization: Bearer header-token-77aa",
            "--http-signing-secret-file",
            &secret.display().to_string(),
        ]);
        let shown_args = format!("{args:?}");
        let config = args.into_config().expect("valid");
        let shown_config = format!("{config:?}");
        for shown in [shown_args, shown_config.clone()] {
            assert!(!shown.contains("header-token-77aa"), "{shown}");
            assert!(!shown.contains("signing-secret-5e1f"), "{shown}");
        }
        assert!(shown_config.contains("authorization: ***"), "{shown_config}");
        assert!(shown_config.contains("WebhookSigner(***)"), "{shown_config}");
    }

    #[test]
    fn invalid_flags_are_named() {
        let cases: [(&[&str], &str); 12] = [
            (&["--sink", "null://", "--sink-journal"], "--sink-journal"),
            (&["--tier", "retry-5s"], "--tier"),
            (&["--sink", "mysql://x"], "--sink"),
            (&["--source-topic", "dlq"], "would loop"),
            (&["--batch-linger", "soon"], "--batch-linger"),
            (&["--http-timeout", "10"], "--http-timeout"),
            (&["--http-batch-timeout", "later"], "--http-batch-timeout"),
            (&["--shutdown-timeout", "a while"], "--shutdown-timeout"),
            (&["--http-batch-timeout", "5m"], "below max.poll.interval.ms"),
            (&["--http-concurrency", "0"], "--http-concurrency"),
            (&["--http-header", "no colon"], "--http-header"),
            (&["--http-ca-file", "/nonexistent/ca.pem"], "--http-ca-file"),
        ];
        for (flags, expected) in cases {
            let mut argv = vec!["rebound-consumer"];
            argv.extend_from_slice(flags);
            // A value that is no duration is refused by clap, the rest by `into_config`.
            let error = match ConsumerArgs::try_parse_from(argv) {
                Err(error) => error.to_string(),
                Ok(args) => args.into_config().expect_err(expected).to_string(),
            };
            assert!(error.contains(expected), "{error}");
        }
    }
}
