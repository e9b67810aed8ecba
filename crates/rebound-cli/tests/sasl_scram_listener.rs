//! Authenticated Kafka through librdkafka passthrough alone: against the SASL_PLAINTEXT listener
//! with SCRAM-SHA-512 that `scripts/kafka-local.sh` opens next to the plain one, the `-X` flags
//! (and, once, a `--kafka-config-file`) are all it takes to create topics, produce a note and
//! read it back; a wrong password ends with an error that names the authentication failure,
//! within a deadline, without a panic and without showing the password.
//!
//! The listener's address comes from `REBOUND_TEST_SASL_BROKERS` (set by `scripts/test.sh` to
//! the broker's port + 2). A test fails, never skips, when nothing answers there.

use std::net::ToSocketAddrs as _;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use rebound_cli::Cli;
use rebound_kafka::{KafkaArgs, OutgoingRecord, ProducerSettings, RecordProducer, read_topic_to_end};
use rebound_retry::RecordHeaders;
use rebound_schema::NoteCodec;
use rebound_testkit::{note, unique_prefix};

/// The variable naming the SASL listener.
const SASL_BROKERS_ENV: &str = "REBOUND_TEST_SASL_BROKERS";
/// The SCRAM user `scripts/kafka-local.sh` creates.
const USER: &str = "rebound";
const PASSWORD: &str = "rebound-secret";
/// A wrong password, distinctive enough to search the output for.
const WRONG_PASSWORD: &str = "not-the-password-7f3a";
/// How long a refused login may take to be reported.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(45);

/// The SASL listener's address, checked to accept connections; panics with instructions when it
/// does not, so a missing listener fails the run instead of passing it vacuously.
fn sasl_broker() -> String {
    let brokers = std::env::var(SASL_BROKERS_ENV).unwrap_or_else(|_| "127.0.0.1:9094".to_owned());
    let reachable = brokers
        .split(',')
        .next()
        .and_then(|first| first.to_socket_addrs().ok())
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5)).is_ok());
    assert!(
        reachable,
        "no SASL listener answers at {brokers} ({SASL_BROKERS_ENV}). Start the broker with \
         `scripts/kafka-local.sh start` (it listens for SCRAM-SHA-512 on its port + 2), or run `scripts/test.sh`."
    );
    brokers
}

/// The `-X` flags that authenticate as `password`.
fn scram_flags(password: &str) -> Vec<String> {
    [
        "security.protocol=SASL_PLAINTEXT".to_owned(),
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        format!("sasl.username={USER}"),
        format!("sasl.password={password}"),
    ]
    .into_iter()
    .flat_map(|pair| ["-X".to_owned(), pair])
    .collect()
}

/// Runs `rebound` with the given arguments and no inherited Kafka settings.
fn rebound(args: &[String]) -> Output {
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
fn parsed_kafka_args(flags: &[String]) -> KafkaArgs {
    let mut argv = vec!["rebound".to_owned()];
    argv.extend_from_slice(flags);
    argv.extend(["topics".to_owned(), "create".to_owned()]);
    Cli::try_parse_from(argv).expect("flags parse").common.kafka
}

/// Creates the topics with `rebound topics create`, produces one note and reads it back, all
/// with the given connection flags.
async fn round_trip(connection: &[String], prefix: &str) {
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
    assert!(created.status.success(), "topics create over SASL failed: {stderr}");
    assert!(
        String::from_utf8_lossy(&created.stdout).contains(&format!("created  {prefix}notes")),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );

    let kafka = parsed_kafka_args(connection);
    let topic = format!("{prefix}notes");
    let sent = note("sasl-note", 1);
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
        .expect("the note is acknowledged over SASL");
    let records = read_topic_to_end(&kafka, &topic, Duration::from_secs(30))
        .await
        .expect("the topic is read over SASL");
    assert_eq!(records.len(), 1, "{records:?}");
    let value = records[0].value.as_deref().expect("a value");
    let received = NoteCodec::embedded().decode(value).expect("decodes");
    assert_eq!(received, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_given_as_dash_x_flags_create_topics_produce_and_consume() {
    let mut connection = vec!["--brokers".to_owned(), sasl_broker()];
    connection.extend(scram_flags(PASSWORD));
    round_trip(&connection, &unique_prefix("sasl-x")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_from_a_kafka_config_file_create_topics_produce_and_consume() {
    let directory = std::env::temp_dir().join(format!("rebound-sasl-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let file = directory.join("client.properties");
    std::fs::write(
        &file,
        format!(
            "# librdkafka properties, as an operator would keep them\n\
             bootstrap.servers={}\n\
             security.protocol=SASL_PLAINTEXT\n\
             sasl.mechanisms=SCRAM-SHA-512\n\
             sasl.username={USER}\n\
             sasl.password={PASSWORD}\n",
            sasl_broker()
        ),
    )
    .expect("write properties");
    let connection = vec!["--kafka-config-file".to_owned(), file.display().to_string()];
    round_trip(&connection, &unique_prefix("sasl-file")).await;
    std::fs::remove_dir_all(&directory).expect("cleanup");
}

#[test]
fn a_wrong_password_fails_fast_naming_authentication_without_showing_the_password() {
    let prefix = unique_prefix("sasl-wrong");
    let mut args = vec!["--brokers".to_owned(), sasl_broker()];
    args.extend(scram_flags(WRONG_PASSWORD));
    args.extend(["topics", "create", "--topic-prefix", &prefix, "--timeout", "30s"].map(str::to_owned));
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
    // A hang is a failure too: poll the child against the deadline, then kill it.
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let status = status.unwrap_or_else(|| panic!("still running after {REFUSAL_DEADLINE:?}: {stderr}"));
    assert_eq!(status.code(), Some(1), "exit status {status}: {stderr}");
    assert!(
        stderr.to_lowercase().contains("authentication"),
        "the error does not name the authentication failure: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stdout.contains(WRONG_PASSWORD) && !stderr.contains(WRONG_PASSWORD),
        "the password was shown: {stdout}{stderr}"
    );
    assert!(!stdout.contains("created"), "{stdout}");
    eprintln!("refused in {elapsed:?}");
}
