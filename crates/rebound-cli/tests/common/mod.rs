//! What the tests of the secured listeners share (SASL_PLAINTEXT, SSL, SASL_SSL, mutual TLS):
//! finding a listener named by an environment variable, running `rebound` with connection flags,
//! the create-produce-consume round trip, and a refused connection that must end in time.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::net::ToSocketAddrs as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use rebound_cli::Cli;
use rebound_kafka::{KafkaArgs, OutgoingRecord, ProducerSettings, RecordProducer, read_topic_to_end};
use rebound_retry::RecordHeaders;
use rebound_schema::NoteCodec;
use rebound_testkit::note;

/// How long a refused connection (credentials, TLS) may take to be reported.
pub const REFUSAL_DEADLINE: Duration = Duration::from_secs(45);

/// The value of `variable`; panics with instructions when it is unset, so a missing listener
/// fails the run instead of passing it vacuously.
pub fn required_env(variable: &str, what: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: it names {what}. `scripts/test.sh` sets it for the broker of \
             `scripts/kafka-local.sh start` (see the script's header for the listeners)."
        )
    })
}

/// The listener named by `variable` (host:port), checked to accept TCP connections.
pub fn listener(variable: &str, what: &str) -> String {
    let brokers = required_env(variable, what);
    let reachable = brokers
        .split(',')
        .next()
        .and_then(|first| first.to_socket_addrs().ok())
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_ok());
    assert!(
        reachable,
        "no listener answers at {brokers} ({variable}, {what}). Start the broker with \
         `scripts/kafka-local.sh start`, or run `scripts/test.sh`."
    );
    brokers
}

/// A file of the broker's TLS folder (`REBOUND_TEST_KAFKA_TLS_DIR`), checked to exist.
pub fn tls_file(name: &str) -> String {
    let directory = required_env(
        "REBOUND_TEST_KAFKA_TLS_DIR",
        "the folder of the local broker's CA and client certificate (`scripts/kafka-local.sh tls-dir`)",
    );
    let path = PathBuf::from(directory).join(name);
    assert!(path.is_file(), "{} does not exist", path.display());
    path.display().to_string()
}

/// `-X` flags for the given librdkafka properties.
pub fn dash_x(properties: &[String]) -> Vec<String> {
    properties
        .iter()
        .flat_map(|pair| ["-X".to_owned(), pair.clone()])
        .collect()
}

/// Runs `rebound` with the given arguments and no inherited Kafka settings.
pub fn rebound(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(args)
        .env_remove("REBOUND_KAFKA_CONFIG")
        .env_remove("REBOUND_KAFKA_CONFIG_FILE")
        .env_remove("REBOUND_BROKERS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("rebound runs")
}

/// The connection flags exactly as the command line turns them into `KafkaArgs`.
pub fn parsed_kafka_args(flags: &[String]) -> KafkaArgs {
    let mut argv = vec!["rebound".to_owned()];
    argv.extend_from_slice(flags);
    argv.extend(["topics".to_owned(), "create".to_owned()]);
    Cli::try_parse_from(argv).expect("flags parse").common.kafka
}

/// Creates the topics with `rebound topics create`, produces one note and reads it back, all
/// with the given connection flags.
pub async fn round_trip(connection: &[String], prefix: &str) {
    let mut create = connection.to_vec();
    create.extend(
        [
            "topics",
            "create",
            "--topic-prefix",
            prefix,
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ]
        .map(str::to_owned),
    );
    let created = rebound(&create);
    let stderr = String::from_utf8_lossy(&created.stderr);
    assert!(created.status.success(), "topics create failed: {stderr}");
    assert!(
        String::from_utf8_lossy(&created.stdout).contains(&format!("created  {prefix}notes")),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );

    let kafka = parsed_kafka_args(connection);
    let topic = format!("{prefix}notes");
    let sent = note("secured-note", 1);
    let producer = RecordProducer::new(&kafka, &ProducerSettings::default()).expect("producer");
    producer
        .send(&OutgoingRecord {
            topic: topic.clone(),
            partition: None,
            key: Some(sent.note_id.clone().into_bytes()),
            value: Some(NoteCodec::embedded().encode(&sent).expect("encodes")),
            headers: RecordHeaders::new(),
        })
        .await
        .expect("the note is acknowledged");
    let records = read_topic_to_end(&kafka, &topic, Duration::from_secs(30))
        .await
        .expect("the topic is read");
    assert_eq!(records.len(), 1, "{records:?}");
    let value = records[0].value.as_deref().expect("a value");
    let received = NoteCodec::embedded().decode(value).expect("decodes");
    assert_eq!(received, sent);
}

/// How a `rebound topics create` that must be refused ended.
#[derive(Debug)]
pub struct Refused {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `rebound CONNECTION topics create` expecting a refusal: it must exit with status 1
/// within [`REFUSAL_DEADLINE`] (a hang is a failure too), without a panic and without creating
/// anything.
pub fn refused_topics_create(connection: &[String], prefix: &str) -> Refused {
    let mut args = connection.to_vec();
    args.extend(["topics", "create", "--topic-prefix", prefix, "--timeout", "30s"].map(str::to_owned));
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rebound"))
        .args(&args)
        .env_remove("REBOUND_KAFKA_CONFIG")
        .env_remove("REBOUND_KAFKA_CONFIG_FILE")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rebound starts");
    // Poll the child against the deadline, then kill it.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > REFUSAL_DEADLINE {
            child.kill().expect("kill");
            break None;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let status = status.unwrap_or_else(|| panic!("still running after {REFUSAL_DEADLINE:?}: {stderr}"));
    assert_eq!(status.code(), Some(1), "exit status {status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stdout.contains("created"), "{stdout}");
    Refused {
        stdout,
        stderr,
        elapsed,
    }
}
