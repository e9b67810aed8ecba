//! The producer's command-line flags and the validated configuration they turn into before any
//! Kafka client, outbox or listener exists, so that a bad flag is refused (exit code 2, the flag
//! named) instead of surfacing after the service has started doing I/O.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rebound_kafka::KafkaArgs;
use rebound_registry::{RegistryError, WireFormatArgs, WriterConfig};
use rebound_retry::apply_topic_prefix;
use rebound_service::{CommonArgs, OperationalArgs, OutputFormat, parse_duration_flag};

use crate::ProducerError;
use crate::flags::FlagsSource;
use crate::intake::{IntakeArgs, IntakeConfig};
use crate::record_limit::RecordSizeLimit;

/// Flags of `rebound-producer`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rebound-producer",
    version,
    about = "Publishes client note changes to Kafka."
)]
pub struct ProducerArgs {
    /// Kafka connection and logging.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Topic notes are published to.
    #[arg(long, env = "REBOUND_TOPIC", default_value = "notes", global = true)]
    pub topic: String,

    /// Prefix applied to the topic name.
    #[arg(long, env = "REBOUND_TOPIC_PREFIX", default_value = "", global = true)]
    pub topic_prefix: String,

    /// Wire format and schema registry (the flags are shared with the consumer and defined in
    /// rebound-registry).
    #[command(flatten)]
    pub wire: WireFormatArgs,

    /// The mode to run.
    #[command(subcommand)]
    pub mode: ProducerMode,
}

/// Producer modes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProducerMode {
    /// Accept notes over HTTP into the durable outbox and relay them to Kafka.
    Serve(ServeArgs),
    /// Send NDJSON notes from a file (or `-` for stdin) through the outbox; exit once Kafka
    /// acknowledged them all.
    Send(SendArgs),
    /// Publish synthetic, realistic note changes straight to Kafka.
    Generate(GenerateArgs),
}

/// Outbox and resend flags shared by `serve` and `send`.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxArgs {
    /// Directory of the durable outbox (created if missing).
    #[arg(long, env = "REBOUND_OUTBOX_DIR", default_value = "rebound-outbox")]
    pub outbox_dir: PathBuf,

    /// Disk budget of pending notes, in bytes; past it, intake answers 503 with Retry-After.
    #[arg(long, env = "REBOUND_OUTBOX_MAX_BYTES", default_value_t = 1 << 30)]
    pub outbox_max_bytes: u64,

    /// JSON file of resend flags, re-read when it changes.
    #[arg(long = "flags", env = "REBOUND_FLAGS_FILE", conflicts_with = "flags_url")]
    pub flags_file: Option<PathBuf>,

    /// URL answering the resend flags document, polled.
    // The URL may carry a token, so `--help` must not print the variable.
    #[arg(long, env = "REBOUND_FLAGS_URL", hide_env_values = true)]
    pub flags_url: Option<String>,

    /// How often the flags file or URL is checked.
    #[arg(long, env = "REBOUND_FLAGS_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration_flag)]
    pub flags_poll_interval: Duration,

    /// How long Kafka gets to acknowledge one note before the send counts as failed.
    #[arg(long, env = "REBOUND_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration_flag)]
    pub send_timeout: Duration,

    /// Most bytes of notes the relay reads from the outbox and keeps in flight (a single larger
    /// note still goes, alone). Bounds the relay's memory whatever the notes' size: the window is
    /// held about twice (the relay's copy and librdkafka's), so 8 MiB keeps a producer draining
    /// large notes within its 64 MiB budget.
    #[arg(
        long,
        env = "REBOUND_RELAY_WINDOW_BYTES",
        default_value_t = 8 << 20,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub relay_window_bytes: u64,
}

/// Flags of `rebound-producer serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "REBOUND_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest accepted request body, in bytes (larger: 413).
    #[arg(long, env = "REBOUND_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Metrics and health endpoints (the API port serves `/healthz` and `/readyz` too).
    #[command(flatten)]
    pub operational: OperationalArgs,

    /// Authentication, TLS and limits of the HTTP API.
    #[command(flatten)]
    pub intake: IntakeArgs,

    /// Outbox and resend.
    #[command(flatten)]
    pub outbox: OutboxArgs,
}

/// Flags of `rebound-producer send`.
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// NDJSON file of notes, one JSON object per line; `-` reads stdin.
    pub input: String,

    /// How long to wait for Kafka to acknowledge every note.
    // Not `REBOUND_TIMEOUT`: that variable is the `rebound` CLI's broker wait (30 s), and one
    // variable set for both would silently change this 60 s default as well.
    #[arg(long, env = "REBOUND_SEND_RUN_TIMEOUT", default_value = "60s", value_parser = parse_duration_flag)]
    pub timeout: Duration,

    /// Publish straight to Kafka, skipping the durable outbox: nothing is kept if the process
    /// or the broker fails mid-way. It exists so that scripts/bench.sh can measure what the
    /// outbox costs on the same input; do not use it to deliver notes.
    #[arg(long, env = "REBOUND_NO_OUTBOX")]
    pub no_outbox: bool,

    /// `text`: one line saying how many notes Kafka acknowledged; `json`: one object with the
    /// same figures (schema in the README). Printed on stdout once every note is acknowledged.
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Outbox and resend.
    #[command(flatten)]
    pub outbox: OutboxArgs,
}

/// Flags of `rebound-producer generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// How many note versions to publish.
    #[arg(long, env = "REBOUND_GENERATE_COUNT", default_value_t = 1000)]
    pub count: u64,

    /// Distinct notes the versions are spread over (default: a quarter of the count).
    #[arg(long, env = "REBOUND_GENERATE_NOTES")]
    pub notes: Option<usize>,

    /// Notes per second (0: as fast as the broker takes them).
    #[arg(long, env = "REBOUND_GENERATE_RATE", default_value_t = 0)]
    pub rate: u64,

    /// Random seed, so a run can be repeated.
    #[arg(long, env = "REBOUND_GENERATE_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Prefix of generated note ids (default: derived from the seed and the clock).
    #[arg(long, env = "REBOUND_GENERATE_RUN_ID")]
    pub run_id: Option<String>,

    /// Append `NOTE_ID<TAB>VERSION` of every acknowledged note to this file.
    #[arg(long, env = "REBOUND_IDS_LOG")]
    pub ids_log: Option<PathBuf>,
}

/// The producer's validated configuration.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Kafka connection.
    pub kafka: KafkaArgs,
    /// Topic notes are published to, prefix applied.
    pub topic: String,
    /// The mode to run and its settings.
    pub mode: ModeConfig,
    /// The wire format notes are written in, and the registry it needs.
    pub writer: WriterConfig,
}

/// The validated settings of one mode.
#[derive(Debug, Clone)]
pub enum ModeConfig {
    /// `serve`.
    Serve(ServeConfig),
    /// `send`.
    Send(SendConfig),
    /// `generate`.
    Generate(GenerateConfig),
}

/// What Kafka may take from `serve` and `send`, and how long it gets to take each note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// The largest note's record, from the effective `message.max.bytes`.
    pub record_limit: RecordSizeLimit,
    /// How long Kafka gets to acknowledge one note (librdkafka's `message.timeout.ms`).
    pub send_timeout: Duration,
}

/// The validated outbox and resend settings of `serve` and `send`.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Directory of the outbox.
    pub dir: PathBuf,
    /// Disk budget of pending notes, in bytes.
    pub max_bytes: u64,
    /// Where the resend flags come from, and how often they are checked.
    pub flags: FlagsSource,
    /// Most bytes of notes in flight per relay round.
    pub relay_window_bytes: u64,
}

/// The validated settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Authentication, TLS and limits of the HTTP API (the body limit among them); boxed, as
    /// the largest part of the largest mode.
    pub intake: Box<IntakeConfig>,
    /// Address of `/metrics`, `/healthz`, `/readyz`, if served.
    pub metrics_listen: Option<SocketAddr>,
    /// Record limit and send timeout.
    pub delivery: DeliveryConfig,
    /// The outbox.
    pub outbox: OutboxConfig,
}

/// Where `send` reads its NDJSON from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdjsonInput {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl fmt::Display for NdjsonInput {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdin => formatter.write_str("-"),
            Self::File(path) => write!(formatter, "{}", path.display()),
        }
    }
}

/// The validated settings of `send`.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Where the notes come from.
    pub input: NdjsonInput,
    /// How long to wait for Kafka to acknowledge every note.
    pub timeout: Duration,
    /// Record limit and send timeout.
    pub delivery: DeliveryConfig,
    /// The outbox, or `None` for `--no-outbox` (publish straight to Kafka).
    pub outbox: Option<OutboxConfig>,
    /// How the result is printed.
    pub output: OutputFormat,
}

/// The validated settings of `generate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateConfig {
    /// How many note versions to publish.
    pub count: u64,
    /// Distinct notes the versions are spread over.
    pub distinct_notes: usize,
    /// Notes per second (0: unpaced).
    pub rate: u64,
    /// Random seed.
    pub seed: u64,
    /// Prefix of note ids; `None` derives one from the seed and the clock when the run starts.
    pub run_id: Option<String>,
    /// File that every acknowledged `NOTE_ID<TAB>VERSION` is appended to.
    pub ids_log: Option<PathBuf>,
}

/// The most librdkafka accepts for `message.timeout.ms`, which `--send-timeout` sets.
const MAX_SEND_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl ProducerArgs {
    /// Validates the flags; every error names the flag and the problem. Reads the Kafka config
    /// file, if one is given, and nothing else.
    pub fn into_config(self) -> Result<ProducerConfig, ProducerError> {
        // What Kafka will take from this producer decides what intake may accept.
        let kafka_config = self.common.kafka.resolve().map_err(|source| ProducerError::Kafka {
            operation: "read the kafka configuration",
            source,
        })?;
        let record_limit = RecordSizeLimit::from_message_max_bytes(kafka_config.property("message.max.bytes"))
            .map_err(|reason| invalid("message.max.bytes (-X or --kafka-config-file)", reason))?;
        let mode = match self.mode {
            ProducerMode::Serve(serve) => ModeConfig::Serve(serve.into_config(record_limit)?),
            ProducerMode::Send(send) => ModeConfig::Send(send.into_config(record_limit)?),
            ProducerMode::Generate(generate) => ModeConfig::Generate(generate.into_config()),
        };
        let writer = self.wire.into_config().map_err(|error| match error {
            RegistryError::InvalidFlag { flag, reason } => invalid(flag, reason),
            other => invalid("--schema-registry-url", other.to_string()),
        })?;
        Ok(ProducerConfig {
            writer,
            kafka: self.common.kafka,
            topic: apply_topic_prefix(&self.topic_prefix, &self.topic),
            mode,
        })
    }
}

impl ServeArgs {
    fn into_config(self, record_limit: RecordSizeLimit) -> Result<ServeConfig, ProducerError> {
        let metrics_listen = self.operational.metrics_listen;
        // Both are bound by this process; the second bind would fail only after the outbox and
        // the metrics endpoint were already up.
        if metrics_listen == Some(self.listen) && self.listen.port() != 0 {
            return Err(invalid(
                "--metrics-listen",
                format!("{} is also the --listen address of the HTTP API", self.listen),
            ));
        }
        Ok(ServeConfig {
            listen: self.listen,
            intake: Box::new(
                self.intake
                    .into_config(self.listen, self.max_body_bytes, record_limit)?,
            ),
            metrics_listen,
            delivery: self.outbox.delivery(record_limit)?,
            outbox: self.outbox.into_config()?,
        })
    }
}

impl SendArgs {
    fn into_config(self, record_limit: RecordSizeLimit) -> Result<SendConfig, ProducerError> {
        let input = match self.input.as_str() {
            "-" => NdjsonInput::Stdin,
            "" => {
                return Err(invalid(
                    "INPUT",
                    "an NDJSON file name, or - for stdin, is needed".to_owned(),
                ));
            }
            path => NdjsonInput::File(PathBuf::from(path)),
        };
        let delivery = self.outbox.delivery(record_limit)?;
        // The outbox flags are checked with --no-outbox too: a flag is either valid or refused.
        let outbox = self.outbox.into_config()?;
        Ok(SendConfig {
            input,
            timeout: self.timeout,
            delivery,
            outbox: (!self.no_outbox).then_some(outbox),
            output: self.output,
        })
    }
}

impl GenerateArgs {
    fn into_config(self) -> GenerateConfig {
        GenerateConfig {
            count: self.count,
            distinct_notes: self
                .notes
                .unwrap_or_else(|| usize::try_from(self.count / 4).unwrap_or(usize::MAX).max(1)),
            rate: self.rate,
            seed: self.seed,
            run_id: self.run_id,
            ids_log: self.ids_log,
        }
    }
}

impl OutboxArgs {
    fn delivery(&self, record_limit: RecordSizeLimit) -> Result<DeliveryConfig, ProducerError> {
        let send_timeout = self.send_timeout;
        if send_timeout > MAX_SEND_TIMEOUT {
            return Err(invalid(
                "--send-timeout",
                format!(
                    "{} is over librdkafka's limit for message.timeout.ms ({} ms)",
                    humantime::format_duration(send_timeout),
                    MAX_SEND_TIMEOUT.as_millis()
                ),
            ));
        }
        Ok(DeliveryConfig {
            record_limit,
            send_timeout,
        })
    }

    fn into_config(self) -> Result<OutboxConfig, ProducerError> {
        let poll = self.flags_poll_interval;
        if poll.is_zero() {
            return Err(invalid("--flags-poll-interval", "must be above 0".to_owned()));
        }
        let flags = match (self.flags_file, self.flags_url) {
            (Some(path), _) => FlagsSource::File { path, poll },
            (None, Some(url)) => FlagsSource::Url {
                url: checked_flags_url(url)?,
                poll,
            },
            (None, None) => FlagsSource::Defaults,
        };
        Ok(OutboxConfig {
            dir: self.outbox_dir,
            max_bytes: self.outbox_max_bytes,
            flags,
            relay_window_bytes: self.relay_window_bytes,
        })
    }
}

/// The flags URL if it is an http(s) URL; the error shows it redacted, since it may carry a
/// token.
fn checked_flags_url(url: String) -> Result<String, ProducerError> {
    let shown = rebound_service::redact::redact_url(&url);
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(url),
        Ok(_) => Err(invalid(
            "--flags-url",
            format!("{shown:?} is not an http:// or https:// URL"),
        )),
        Err(error) => Err(invalid("--flags-url", format!("{shown:?} is not a URL: {error}"))),
    }
}

fn invalid(flag: &str, reason: String) -> ProducerError {
    ProducerError::InvalidFlag {
        flag: flag.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(flags: &[&str]) -> Result<ProducerConfig, ProducerError> {
        let mut argv = vec!["rebound-producer"];
        argv.extend_from_slice(flags);
        ProducerArgs::parse_from(argv).into_config()
    }

    /// The error of flags that clap refuses (a value that is no duration) or `into_config`
    /// refuses (the rest), as a person would read it.
    fn flag_error(flags: &[&str]) -> String {
        let mut argv = vec!["rebound-producer"];
        argv.extend_from_slice(flags);
        match ProducerArgs::try_parse_from(argv) {
            Err(error) => error.to_string(),
            Ok(args) => args.into_config().expect_err("invalid").to_string(),
        }
    }

    #[test]
    fn http_endpoints_bind_loopback_unless_told_otherwise() {
        let ModeConfig::Serve(serve) = config(&["serve"]).expect("valid").mode else {
            unreachable!("parsed serve")
        };
        // The API accepts notes without authentication: it must not face the network by default.
        assert!(serve.listen.ip().is_loopback(), "{}", serve.listen);
        assert_eq!(serve.metrics_listen, None);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = config(&["--topic-prefix", "t1.", "send", "-"]).expect("valid");
        assert_eq!(config.topic, "t1.notes");
        let ModeConfig::Send(send) = config.mode else {
            unreachable!("parsed send")
        };
        assert_eq!(send.input, NdjsonInput::Stdin);
        assert_eq!(send.timeout, Duration::from_secs(60));
        assert_eq!(send.delivery.send_timeout, Duration::from_secs(30));
        assert_eq!(send.delivery.record_limit, RecordSizeLimit::default());
        let outbox = send.outbox.expect("the outbox is on by default");
        assert_eq!(outbox.dir, PathBuf::from("rebound-outbox"));
        assert_eq!(outbox.max_bytes, 1 << 30);
        assert_eq!(outbox.relay_window_bytes, 8 << 20);
        assert!(matches!(outbox.flags, FlagsSource::Defaults));
    }

    #[test]
    fn flags_sources_and_no_outbox_are_typed() {
        let ModeConfig::Send(send) = config(&["send", "notes.ndjson", "--no-outbox"]).expect("valid").mode else {
            unreachable!("parsed send")
        };
        assert_eq!(send.input, NdjsonInput::File(PathBuf::from("notes.ndjson")));
        assert!(send.outbox.is_none());
        let ModeConfig::Serve(serve) = config(&[
            "serve",
            "--flags-url",
            "https://flags.example/rebound?token=secret",
            "--flags-poll-interval",
            "250ms",
        ])
        .expect("valid")
        .mode
        else {
            unreachable!("parsed serve")
        };
        let FlagsSource::Url { url, poll } = serve.outbox.flags else {
            unreachable!("a flags URL was given")
        };
        assert_eq!(url, "https://flags.example/rebound?token=secret");
        assert_eq!(poll, Duration::from_millis(250));
    }

    #[test]
    fn generate_spreads_versions_over_a_quarter_of_the_count_by_default() {
        let ModeConfig::Generate(generate) = config(&["generate", "--count", "100"]).expect("valid").mode else {
            unreachable!("parsed generate")
        };
        assert_eq!(generate.distinct_notes, 25);
        let ModeConfig::Generate(generate) = config(&["generate", "--count", "2"]).expect("valid").mode else {
            unreachable!("parsed generate")
        };
        assert_eq!(generate.distinct_notes, 1, "never zero notes");
    }

    #[test]
    fn invalid_flags_are_named() {
        let cases: [(&[&str], &str); 10] = [
            (&["serve", "--send-timeout", "soon"], "--send-timeout"),
            (&["send", "-", "--send-timeout", "30d"], "--send-timeout"),
            (&["send", "-", "--timeout", "a minute"], "--timeout"),
            (
                &["send", "-", "--no-outbox", "--flags-poll-interval", "x"],
                "--flags-poll-interval",
            ),
            (&["serve", "--flags-poll-interval", "0s"], "--flags-poll-interval"),
            (&["serve", "--flags-url", "flags.example/x"], "--flags-url"),
            (&["serve", "--flags-url", "file:///etc/flags.json"], "--flags-url"),
            (&["send", ""], "INPUT"),
            (
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:8080",
                    "--metrics-listen",
                    "127.0.0.1:8080",
                ],
                "--metrics-listen",
            ),
            (&["-X", "message.max.bytes=10", "generate"], "message.max.bytes"),
        ];
        for (flags, expected) in cases {
            let error = flag_error(flags);
            assert!(error.contains(expected), "{flags:?}: {error}");
        }
    }

    #[test]
    fn a_flags_url_is_redacted_in_its_error() {
        let error = config(&["serve", "--flags-url", "ftp://flags.example/x?token=secret"])
            .expect_err("not http")
            .to_string();
        assert!(!error.contains("secret"), "{error}");
    }
}
