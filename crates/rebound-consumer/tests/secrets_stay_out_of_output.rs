//! Secrets given to `rebound-consumer` never reach its output: not `--help` (which would print
//! the values of environment variables), not the effective-configuration line at start-up, not
//! the error it stops with. Covered: librdkafka secrets as `-X` flags, in a
//! `--kafka-config-file` and in `REBOUND_KAFKA_CONFIG`; an HTTP or PostgreSQL sink URL's
//! credentials and token; an OTLP endpoint's token; the HTTP sink's authentication header (from
//! the environment and from a file) and its signing secret. Each must appear as `***` where it is
//! shown at all.

use std::process::{Command, Output, Stdio};

use rebound_testkit::{broker, unique_prefix};

/// Distinctive values, so a leak cannot hide behind a common word.
const KAFKA_PASSWORD: &str = "kafka-pw-5d1e";
const KEY_PASSWORD: &str = "key-pw-90ab";
const FILE_SECRET: &str = "keystore-pw-77c3";
const ENV_SECRET: &str = "env-pw-41fe";
const SINK_USER: &str = "sinkuser-c0de";
const SINK_PASSWORD: &str = "sink-pw-b00c";
const SINK_TOKEN: &str = "sink-token-e11a";
const OTLP_TOKEN: &str = "otlp-token-3f0d";
const HEADER_TOKEN: &str = "header-token-a9e2";
const HEADER_FILE_TOKEN: &str = "header-file-token-6b7c";
const SIGNING_SECRET: &str = "signing-secret-d4c8-0123456789";

const SECRETS: [&str; 11] = [
    KAFKA_PASSWORD,
    KEY_PASSWORD,
    FILE_SECRET,
    ENV_SECRET,
    SINK_USER,
    SINK_PASSWORD,
    SINK_TOKEN,
    OTLP_TOKEN,
    HEADER_TOKEN,
    HEADER_FILE_TOKEN,
    SIGNING_SECRET,
];

fn sink_url() -> String {
    format!("https://{SINK_USER}:{SINK_PASSWORD}@127.0.0.1:9/notes?token={SINK_TOKEN}")
}

/// The consumer with every secret in its environment, JSON logs at info.
fn consumer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rebound-consumer"));
    command
        .env("RUST_LOG", "info")
        .env("REBOUND_SINK", sink_url())
        .env("REBOUND_KAFKA_CONFIG", format!("sasl.password={ENV_SECRET}"))
        .env(
            "REBOUND_OTLP_ENDPOINT",
            format!("http://127.0.0.1:9/?token={OTLP_TOKEN}"),
        )
        .env("REBOUND_HTTP_HEADER", format!("Authorization: Bearer {HEADER_TOKEN}"))
        .env_remove("REBOUND_KAFKA_CONFIG_FILE")
        .env_remove("REBOUND_HTTP_HEADER_FILE")
        .env_remove("REBOUND_HTTP_SIGNING_SECRET_FILE")
        .stdin(Stdio::null());
    command
}

fn assert_no_secret(output: &Output) -> String {
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret:?} was shown:\n{shown}");
    }
    shown
}

#[test]
fn help_does_not_print_secret_environment_values() {
    let output = consumer().arg("--help").output().expect("runs");
    assert!(output.status.success());
    let shown = assert_no_secret(&output);
    // The variables are still named, only their values are hidden.
    for variable in [
        "REBOUND_SINK",
        "REBOUND_KAFKA_CONFIG",
        "REBOUND_OTLP_ENDPOINT",
        "REBOUND_HTTP_HEADER",
    ] {
        assert!(shown.contains(variable), "{variable} missing from --help:\n{shown}");
    }
}

#[test]
fn startup_log_and_the_final_error_redact_every_secret() {
    let directory = tempfile::tempdir().expect("temp dir");
    let properties = directory.path().join("client.properties");
    std::fs::write(
        &properties,
        format!("ssl.keystore.password={FILE_SECRET}\nclient.id=secret-test\n"),
    )
    .expect("write properties");
    let signing_secret = directory.path().join("signing-secret");
    std::fs::write(&signing_secret, format!("{SIGNING_SECRET}\n")).expect("write secret");
    // Topics under a fresh prefix do not exist, so the consumer stops right after start-up with
    // an error, having logged its effective configuration.
    let output = consumer()
        .args(["--brokers", &broker(), "--log-format", "json"])
        .args(["--topic-prefix", &unique_prefix("secrets")])
        .args(["-X", &format!("sasl.password={KAFKA_PASSWORD}")])
        .args(["-X", &format!("ssl.key.password={KEY_PASSWORD}")])
        .arg("--kafka-config-file")
        .arg(&properties)
        .arg("--http-signing-secret-file")
        .arg(&signing_secret)
        .output()
        .expect("runs");
    let shown = assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("effective configuration"), "{shown}");
    assert!(shown.contains("authorization: ***"), "{shown}");
    assert!(shown.contains("WebhookSigner(***)"), "{shown}");
    assert!(shown.contains("sasl.password=***"), "{shown}");
    assert!(shown.contains("https://***@127.0.0.1:9/notes?***"), "{shown}");
    assert!(shown.contains("failed to find topic"), "{shown}");
}

#[test]
fn an_invalid_sink_url_is_reported_without_its_credentials() {
    let output = consumer()
        .args([
            "--sink",
            &format!("https://{SINK_USER}:{SINK_PASSWORD}@host:99999999/?token={SINK_TOKEN}"),
        ])
        .output()
        .expect("runs");
    let shown = assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("invalid --sink"), "{shown}");
    assert!(shown.contains("https://***@host:99999999/?***"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_sink_that_refuses_the_password_is_reported_without_it() {
    let prefix = unique_prefix("postgres-secret");
    rebound_testkit::create_test_topics(&prefix, &["notes", "retry-5s", "retry-1m", "dlq"], 1).await;
    let server = rebound_testkit::postgres_url();
    let (_, host_and_database) = server.split_once('@').expect("the test URL has credentials");
    let output = consumer()
        .args(["--brokers", &broker(), "--topic-prefix", &prefix])
        .args([
            "--sink",
            &format!("postgres://{SINK_USER}:{SINK_PASSWORD}@{host_and_database}"),
        ])
        .output()
        .expect("runs");
    let shown = assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("failed to open sink postgres://***@"), "{shown}");
    assert!(shown.contains("authentication failed"), "{shown}");
}

#[test]
fn a_header_file_and_its_errors_never_show_the_value() {
    let directory = tempfile::tempdir().expect("temp dir");
    let header_file = directory.path().join("sink-header");
    // Two header lines: refused, naming the file and the problem, not the values.
    std::fs::write(
        &header_file,
        format!("Authorization: Bearer {HEADER_FILE_TOKEN}\nX-Other: {HEADER_FILE_TOKEN}\n"),
    )
    .expect("write header");
    let output = consumer()
        .env_remove("REBOUND_HTTP_HEADER")
        .arg("--http-header-file")
        .arg(&header_file)
        .output()
        .expect("runs");
    let shown = assert_no_secret(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("invalid --http-header-file") && shown.contains("more than one header line"),
        "{shown}"
    );
}
