//! Authenticated Kafka through librdkafka passthrough alone: against the SASL_PLAINTEXT listener
//! with SCRAM-SHA-512 that `scripts/kafka-local.sh` opens next to the plain one, the `-X` flags
//! (and, once, a `--kafka-config-file`) are all it takes to create topics, produce a note and
//! read it back; a wrong password ends with an error that names the authentication failure,
//! within a deadline, without a panic and without showing the password.
//!
//! The listener's address comes from `REBOUND_TEST_SASL_BROKERS` (set by `scripts/test.sh` to
//! the broker's port + 2). A test fails, never skips, when nothing answers there.

mod common;

use common::{dash_x, refused_topics_create, round_trip};
use rebound_testkit::unique_prefix;

/// The variable naming the SASL listener.
const SASL_BROKERS_ENV: &str = "REBOUND_TEST_SASL_BROKERS";
/// The SCRAM user `scripts/kafka-local.sh` creates.
const USER: &str = "rebound";
const PASSWORD: &str = "rebound-secret";
/// A wrong password, distinctive enough to search the output for.
const WRONG_PASSWORD: &str = "not-the-password-7f3a";

/// The SASL listener's address, checked to accept connections; panics with instructions when it
/// does not, so a missing listener fails the run instead of passing it vacuously.
fn sasl_broker() -> String {
    common::listener(
        SASL_BROKERS_ENV,
        "the SASL_PLAINTEXT listener with SCRAM-SHA-512, the broker's port + 2",
    )
}

/// The `-X` flags that authenticate as `password`.
fn scram_flags(password: &str) -> Vec<String> {
    dash_x(&[
        "security.protocol=SASL_PLAINTEXT".to_owned(),
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        format!("sasl.username={USER}"),
        format!("sasl.password={password}"),
    ])
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
    let mut connection = vec!["--brokers".to_owned(), sasl_broker()];
    connection.extend(scram_flags(WRONG_PASSWORD));
    let refused = refused_topics_create(&connection, &unique_prefix("sasl-wrong"));
    assert!(
        refused.stderr.to_lowercase().contains("authentication"),
        "the error does not name the authentication failure: {}",
        refused.stderr
    );
    assert!(
        !refused.stdout.contains(WRONG_PASSWORD) && !refused.stderr.contains(WRONG_PASSWORD),
        "the password was shown: {refused:?}"
    );
    eprintln!("refused in {:?}", refused.elapsed);
}
