//! The consumer's command-line flags and the validated configuration they turn into before any
//! work starts.

use std::path::PathBuf;
use std::time::Duration;

use rebound_kafka::KafkaArgs;
use rebound_registry::{NoteDecoder, RegistryArgs, RegistryClient, RegistryConfig, RegistryError};
use rebound_retry::{BreakerSettings, OnDeadKey, TierPolicy};
use rebound_schema::NoteCodec;
use rebound_service::{
    CommonArgs, DeliveryArgs, DeliveryConfig, KeyOrderTopicArgs, OperationalArgs, ShutdownArgs, SourceTopicArgs,
    TierDelays, TopologyArgs, parse_duration_flag,
};
use rebound_sink_store::{PostgresTlsArgs, SinkSpec, SinkStoreError};

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

    /// The source topics.
    #[command(flatten)]
    pub sources: SourceTopicArgs,

    /// Where notes are applied: sqlite://PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE (also
    /// postgresql://), http(s)://URL or null://.
    // An HTTP sink's URL may carry credentials or a token, so `--help` must not print the variable.
    #[arg(
        long,
        env = "REBOUND_SINK",
        default_value = "sqlite://notes.db",
        hide_env_values = true
    )]
    pub sink: String,

    /// Record every delivery in a `deliveries` table of the SQLite or PostgreSQL sink, committed
    /// with its batch, so redeliveries can be counted (soak tests; off by default).
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

    /// Circuit breaker: `on` pauses the source partitions while the sink fails transiently
    /// (records wait in Kafka instead of walking the tiers into the DLQ); `off` routes every
    /// failure to the tiers.
    #[arg(long, env = "REBOUND_BREAKER", value_enum, default_value_t = BreakerMode::On)]
    pub breaker: BreakerMode,

    /// The breaker opens when at least this share of the recent sink attempts (the last 200,
    /// none older than 30 s) failed transiently...
    #[arg(long, env = "REBOUND_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    pub breaker_failure_ratio: f64,

    /// ...out of at least this many attempts.
    #[arg(long, env = "REBOUND_BREAKER_MIN_ATTEMPTS", default_value_t = 20)]
    pub breaker_min_attempts: u32,

    /// The breaker also opens after this many transient failures in a row.
    #[arg(long, env = "REBOUND_BREAKER_CONSECUTIVE", default_value_t = 10)]
    pub breaker_consecutive: u32,

    /// While open, one held record is tried this long after opening; each failed probe doubles
    /// the wait up to `--breaker-probe-max`, spread by ±20%.
    #[arg(long, env = "REBOUND_BREAKER_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration_flag)]
    pub breaker_probe_interval: Duration,

    /// Longest wait between two probes of an open breaker (at least the probe interval).
    #[arg(long, env = "REBOUND_BREAKER_PROBE_MAX", default_value = "60s", value_parser = parse_duration_flag)]
    pub breaker_probe_max: Duration,

    /// Per-key order during retries: `key` never applies a record while an earlier record of
    /// its Kafka key waits in a tier (later ones are parked behind it, durably); `none` lets
    /// later records overtake it.
    #[arg(long, env = "REBOUND_ORDERING", value_enum, default_value_t = OrderingMode::Key)]
    pub ordering: OrderingMode,

    /// With `--ordering key`, what becomes of the records parked behind a record that is
    /// dead-lettered: `dlq` sends them after it, untried (`retry.error.kind=blocked-by-key`);
    /// `continue` applies them.
    #[arg(long, env = "REBOUND_ON_DEAD_KEY", value_enum, default_value_t = DeadKeyMode::Dlq)]
    pub on_dead_key: DeadKeyMode,

    /// With `--ordering key`, parked records per source partition at which the partition is
    /// paused until releases bring it below (order is never dropped; memory stays bounded).
    #[arg(long, env = "REBOUND_MAX_PARKED", default_value_t = 10_000)]
    pub max_parked: usize,

    /// The per-key order state topic.
    #[command(flatten)]
    pub key_order_topic: KeyOrderTopicArgs,

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

    /// TLS of a PostgreSQL sink (whom to trust; `sslmode` in the URL says whether).
    #[command(flatten)]
    pub postgres_tls: PostgresTlsArgs,

    /// Most connections the PostgreSQL sink keeps open. A batch uses one; more let a broken
    /// connection be replaced while another serves.
    #[arg(long, env = "REBOUND_POSTGRES_POOL_SIZE", default_value_t = 2)]
    pub postgres_pool_size: usize,

    /// Longest time one batch may spend in the PostgreSQL sink, connecting included; a batch
    /// that takes longer fails transiently as a whole (its transaction is rolled back). Must
    /// stay below `max.poll.interval.ms`.
    #[arg(long, env = "REBOUND_POSTGRES_TIMEOUT", default_value = "30s", value_parser = parse_duration_flag)]
    pub postgres_timeout: Duration,

    /// The bound on shutdown.
    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Exactly-once or at-least-once hops.
    #[command(flatten)]
    pub delivery: DeliveryArgs,

    /// Schema registry, for Confluent-framed records (single-object ones need none).
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Whether the consumer's circuit breaker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BreakerMode {
    /// Open on a failing sink: pause, hold, probe.
    On,
    /// Route every failure to the tiers, as without a breaker.
    Off,
}

/// Whether the consumer keeps per-key order during retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderingMode {
    /// A key's later records wait behind its record in a tier.
    Key,
    /// Later records may overtake a record waiting in a tier.
    None,
}

/// What follows a dead-lettered record whose key has parked records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeadKeyMode {
    /// The parked records follow it to the DLQ.
    Dlq,
    /// The parked records are applied.
    Continue,
}

/// Per-key order settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOrderConfig {
    /// The state topic, prefix applied.
    pub state_topic: String,
    /// What follows a dead-lettered blocker.
    pub on_dead_key: OnDeadKey,
    /// Parked records per partition at which it is paused.
    pub max_parked: usize,
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
    /// Whether the SQLite or PostgreSQL sink keeps its delivery journal.
    pub sink_journal: bool,
    /// Injected failures, if any, and their seed.
    pub failure_injection: Option<(FailureInjection, u64)>,
    /// Tiers and DLQ, prefix applied.
    pub policy: TierPolicy,
    /// The circuit breaker's settings; `None` with `--breaker off`.
    pub breaker: Option<BreakerSettings>,
    /// Largest batch.
    pub batch_size: usize,
    /// Longest wait to fill a batch.
    pub batch_linger: Duration,
    /// How the HTTP sink sends: timeouts (the batch bound below the consumer's poll interval),
    /// concurrency, header, trusted CAs, signing.
    pub http: HttpSinkSettings,
    /// TLS of a PostgreSQL sink.
    pub postgres_tls: PostgresTlsArgs,
    /// Connections of the PostgreSQL sink's pool.
    pub postgres_pool_size: usize,
    /// Bound on one batch in the PostgreSQL sink.
    pub postgres_timeout: Duration,
    /// Bound on shutdown.
    pub shutdown_timeout: Duration,
    /// Exactly-once (hops in transactions) or at-least-once.
    pub delivery: DeliveryConfig,
    /// Address of `/metrics`, `/healthz`, `/readyz`, if served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The schema registry of Confluent-framed records, if configured.
    pub registry: Option<RegistryConfig>,
    /// Per-key order during retries; `None` with `--ordering none`.
    pub key_order: Option<KeyOrderConfig>,
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
            .map_err(|error| invalid(error.flag, error.reason))?;
        let source_topics = self
            .sources
            .prefixed(&self.topology.naming, &policy)
            .map_err(|error| invalid(error.flag, error.reason))?;
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
        if self.sink_journal && !matches!(sink, SinkSpec::Sqlite(_) | SinkSpec::Postgres(_)) {
            return Err(invalid(
                "--sink-journal",
                "the delivery journal is kept by the sqlite:// and postgres:// sinks only".to_owned(),
            ));
        }
        if self.postgres_pool_size == 0 {
            return Err(invalid("--postgres-pool-size", "must be at least 1".to_owned()));
        }
        let breaker = match self.breaker {
            BreakerMode::Off => None,
            BreakerMode::On => Some(
                BreakerSettings {
                    failure_ratio: self.breaker_failure_ratio,
                    min_attempts: self.breaker_min_attempts,
                    consecutive: self.breaker_consecutive,
                    probe_interval: self.breaker_probe_interval,
                    max_probe_interval: self.breaker_probe_max,
                    ..BreakerSettings::default()
                }
                .validate()
                .map_err(|error| {
                    let text = error.to_string();
                    let flag = if text.contains("ratio") {
                        "--breaker-failure-ratio"
                    } else if text.contains("consecutive") {
                        "--breaker-consecutive"
                    } else if text.contains("longest probe interval") {
                        "--breaker-probe-max"
                    } else if text.contains("probe") {
                        "--breaker-probe-interval"
                    } else {
                        "--breaker-min-attempts"
                    };
                    invalid(flag, text)
                })?,
            ),
        };
        let key_order = match self.ordering {
            OrderingMode::None => None,
            OrderingMode::Key => {
                if self.max_parked == 0 {
                    return Err(invalid("--max-parked", "must be at least 1".to_owned()));
                }
                let state_topic = self
                    .key_order_topic
                    .prefixed(&self.topology.naming)
                    .map_err(|error| invalid(error.flag, error.reason))?;
                if source_topics.contains(&state_topic)
                    || policy.tiers().iter().any(|tier| tier.topic == state_topic)
                    || policy.dead_letter_topic() == state_topic
                {
                    return Err(invalid(
                        "--blocked-keys-topic",
                        format!("{state_topic} is also a source, tier or DLQ topic"),
                    ));
                }
                Some(KeyOrderConfig {
                    state_topic,
                    on_dead_key: match self.on_dead_key {
                        DeadKeyMode::Dlq => OnDeadKey::DeadLetter,
                        DeadKeyMode::Continue => OnDeadKey::Continue,
                    },
                    max_parked: self.max_parked,
                })
            }
        };
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
        let postgres_sink = matches!(sink, SinkSpec::Postgres(_));
        if postgres_sink && (self.postgres_timeout.is_zero() || self.postgres_timeout >= max_poll_interval) {
            return Err(invalid(
                "--postgres-timeout",
                format!(
                    "must be above 0 and below max.poll.interval.ms ({} ms)",
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
        let registry = self.registry.into_config().map_err(|error| match error {
            RegistryError::InvalidFlag { flag, reason } => invalid(flag, reason),
            other => invalid("--schema-registry-url", other.to_string()),
        })?;
        let delivery = self
            .delivery
            .validate()
            .map_err(|error| invalid(error.flag, error.reason))?;
        Ok(ConsumerConfig {
            registry,
            sink,
            postgres_tls: self.postgres_tls,
            postgres_pool_size: self.postgres_pool_size,
            postgres_timeout: self.postgres_timeout,
            sink_journal: self.sink_journal,
            kafka: self.common.kafka,
            metrics_listen: self.operational.metrics_listen,
            group: self.group,
            source_topics,
            failure_injection,
            policy,
            breaker,
            batch_size: self.batch_size,
            batch_linger: self.batch_linger,
            http,
            shutdown_timeout: self.shutdown.shutdown_timeout,
            key_order,
            delivery,
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
    fn the_breaker_is_on_with_the_documented_thresholds_unless_turned_off() {
        let config = ConsumerArgs::parse_from(["rebound-consumer"])
            .into_config()
            .expect("valid");
        let breaker = config.breaker.expect("on by default");
        assert_eq!(
            (breaker.failure_ratio, breaker.min_attempts, breaker.consecutive),
            (0.5, 20, 10)
        );
        assert_eq!(breaker.probe_interval, Duration::from_secs(5));
        assert_eq!(breaker.max_probe_interval, Duration::from_secs(60));
        let config = ConsumerArgs::parse_from(["rebound-consumer", "--breaker", "off"])
            .into_config()
            .expect("valid");
        assert_eq!(config.breaker, None);
        let config = ConsumerArgs::parse_from(["rebound-consumer", "--breaker-probe-max", "2m"])
            .into_config()
            .expect("valid");
        let breaker = config.breaker.expect("on");
        assert_eq!(breaker.max_probe_interval, Duration::from_secs(120));
    }

    #[test]
    fn invalid_flags_are_named() {
        let cases: [(&[&str], &str); 21] = [
            (&["--postgres-pool-size", "0"], "--postgres-pool-size"),
            (
                &["--sink", "postgres://u@h/db", "--postgres-timeout", "10m"],
                "--postgres-timeout",
            ),
            (
                &["--breaker-probe-interval", "10s", "--breaker-probe-max", "5s"],
                "--breaker-probe-max",
            ),
            (&["--breaker", "maybe"], "--breaker"),
            (&["--breaker-failure-ratio", "0"], "--breaker-failure-ratio"),
            (&["--breaker-failure-ratio", "1.5"], "--breaker-failure-ratio"),
            (&["--breaker-min-attempts", "0"], "--breaker-min-attempts"),
            (&["--breaker-consecutive", "0"], "--breaker-consecutive"),
            (&["--breaker-probe-interval", "0s"], "--breaker-probe-interval"),
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
