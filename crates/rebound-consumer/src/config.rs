//! The consumer's command-line flags and the validated configuration they turn into before any
//! work starts.

use std::time::Duration;

use rebound_kafka::KafkaArgs;
use rebound_registry::{NoteDecoder, RegistryArgs, RegistryClient, RegistryConfig, RegistryError};
use rebound_retry::TierPolicy;
use rebound_schema::NoteCodec;
use rebound_service::{CommonArgs, OperationalArgs, ServiceError, TierDelays, TopologyArgs, parse_duration_flag};
use rebound_sink_store::{SinkSpec, SinkStoreError};

use crate::ConsumerError;
use crate::sink::FailureInjection;

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

    /// How long shutdown may take to finish the batch in hand and commit.
    #[arg(long, env = "REBOUND_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration_flag)]
    pub shutdown_timeout: Duration,

    /// Schema registry, for Confluent-framed records (single-object ones need none).
    #[command(flatten)]
    pub registry: RegistryArgs,
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
    /// HTTP sink request timeout.
    pub http_timeout: Duration,
    /// Bound on one batch in the HTTP sink, below the consumer's poll interval.
    pub http_batch_timeout: Duration,
    /// Bound on shutdown.
    pub shutdown_timeout: Duration,
    /// Address of `/metrics`, `/healthz`, `/readyz`, if served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The schema registry of Confluent-framed records, if configured.
    pub registry: Option<RegistryConfig>,
}

/// The decoder of both wire formats, with the registry client if one is configured; warns about
/// every compiled-in writer schema the direct reader cannot read.
pub(crate) fn note_decoder(config: &ConsumerConfig) -> Result<NoteDecoder, ConsumerError> {
    let codec = NoteCodec::embedded();
    for fingerprint in codec.writer_schemas_read_generically() {
        rebound_service::events::schema_read_generically("compiled-in schema", &fingerprint.to_string());
    }
    let registry = config
        .registry
        .as_ref()
        .map(RegistryClient::new)
        .transpose()
        .map_err(|error| ConsumerError::InvalidFlag {
            flag: "--schema-registry-ca-file".to_owned(),
            reason: error.to_string(),
        })?;
    Ok(NoteDecoder::new(codec, registry))
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
        let registry = self.registry.into_config().map_err(|error| match error {
            RegistryError::InvalidFlag { flag, reason } => invalid(flag, reason),
            other => invalid("--schema-registry-url", other.to_string()),
        })?;
        Ok(ConsumerConfig {
            registry,
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
            http_timeout: self.http_timeout,
            http_batch_timeout,
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
        assert_eq!(config.http_batch_timeout, Duration::from_secs(150));
        let config = ConsumerArgs::parse_from(["rebound-consumer", "-X", "max.poll.interval.ms=10000"])
            .into_config()
            .expect("valid");
        assert_eq!(config.http_batch_timeout, Duration::from_secs(5));
    }

    #[test]
    fn invalid_flags_are_named() {
        let cases: [(&[&str], &str); 9] = [
            (&["--sink", "null://", "--sink-journal"], "--sink-journal"),
            (&["--tier", "retry-5s"], "--tier"),
            (&["--sink", "mysql://x"], "--sink"),
            (&["--source-topic", "dlq"], "would loop"),
            (&["--batch-linger", "soon"], "--batch-linger"),
            (&["--http-timeout", "10"], "--http-timeout"),
            (&["--http-batch-timeout", "later"], "--http-batch-timeout"),
            (&["--shutdown-timeout", "a while"], "--shutdown-timeout"),
            (&["--http-batch-timeout", "5m"], "below max.poll.interval.ms"),
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
