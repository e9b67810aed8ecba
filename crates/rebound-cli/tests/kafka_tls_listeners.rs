//! Kafka over TLS through librdkafka passthrough alone, against the TLS listeners that
//! `scripts/kafka-local.sh` opens on its single broker: server-authenticated TLS (`SSL`, the
//! client trusts the throwaway CA), mutual TLS (the listener requires a client certificate
//! signed by that CA) and SCRAM-SHA-512 over TLS (`SASL_SSL`). Each creates topics, produces a
//! note and reads it back. A client that trusts another CA, and a client without a certificate
//! at the mutual-TLS listener, end within a deadline with an error that names the TLS failure.
//!
//! The listeners and the TLS folder come from `REBOUND_TEST_SSL_BROKERS`,
//! `REBOUND_TEST_SASL_SSL_BROKERS`, `REBOUND_TEST_MTLS_BROKERS` and `REBOUND_TEST_KAFKA_TLS_DIR`
//! (set by `scripts/test.sh` to the broker's port + 3, + 4, + 5 and `kafka-local.sh tls-dir`).
//! A test fails, never skips, when one is unset or nothing answers there.

mod common;

use common::{dash_x, listener, refused_topics_create, round_trip, tls_file};
use rebound_testkit::unique_prefix;

/// The SSL listener (no client certificate).
fn ssl_broker() -> String {
    listener("REBOUND_TEST_SSL_BROKERS", "the broker's SSL listener")
}

/// The SASL_SSL listener (SCRAM-SHA-512 over TLS).
fn sasl_ssl_broker() -> String {
    listener("REBOUND_TEST_SASL_SSL_BROKERS", "the broker's SASL_SSL listener")
}

/// The SSL listener that requires a client certificate.
fn mtls_broker() -> String {
    listener("REBOUND_TEST_MTLS_BROKERS", "the broker's mutual-TLS listener")
}

/// `--brokers BROKERS` and `-X` flags for the given properties.
fn connection(brokers: String, properties: &[String]) -> Vec<String> {
    let mut flags = vec!["--brokers".to_owned(), brokers];
    flags.extend(dash_x(properties));
    flags
}

/// The properties of a TLS client that trusts `ca`.
fn trusting(ca: &str) -> Vec<String> {
    vec!["security.protocol=SSL".to_owned(), format!("ssl.ca.location={ca}")]
}

/// The properties of a mutual-TLS client: the CA plus the client certificate and key.
fn with_client_certificate() -> Vec<String> {
    let mut properties = trusting(&tls_file("ca.crt"));
    properties.push(format!("ssl.certificate.location={}", tls_file("client.crt")));
    properties.push(format!("ssl.key.location={}", tls_file("client.key")));
    properties
}

/// Asserts that a refusal names the TLS handshake as its cause.
fn assert_names_the_tls_failure(refused: &common::Refused) {
    assert!(
        refused.stderr.contains("TLS handshake with kafka failed"),
        "the error does not name the TLS failure: {}",
        refused.stderr
    );
    eprintln!("refused in {:?}", refused.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssl_listener_with_the_ca_creates_topics_produces_and_consumes() {
    let flags = connection(ssl_broker(), &trusting(&tls_file("ca.crt")));
    round_trip(&flags, &unique_prefix("tls-ssl")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate_creates_topics_produces_and_consumes() {
    let flags = connection(mtls_broker(), &with_client_certificate());
    round_trip(&flags, &unique_prefix("tls-mutual")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_creates_topics_produces_and_consumes() {
    let mut properties = vec![
        "security.protocol=SASL_SSL".to_owned(),
        format!("ssl.ca.location={}", tls_file("ca.crt")),
    ];
    properties.extend([
        "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
        "sasl.username=rebound".to_owned(),
        "sasl.password=rebound-secret".to_owned(),
    ]);
    round_trip(&connection(sasl_ssl_broker(), &properties), &unique_prefix("tls-scram")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_settings_from_a_kafka_config_file_work_too() {
    let directory = tempfile::tempdir().expect("temp dir");
    let file = directory.path().join("client.properties");
    let mut text = format!("bootstrap.servers={}\n", mtls_broker());
    for property in with_client_certificate() {
        text.push_str(&property);
        text.push('\n');
    }
    std::fs::write(&file, text).expect("write properties");
    let flags = vec!["--kafka-config-file".to_owned(), file.display().to_string()];
    round_trip(&flags, &unique_prefix("tls-file")).await;
}

#[test]
fn a_client_that_trusts_another_ca_fails_fast_naming_the_tls_failure() {
    let flags = connection(ssl_broker(), &trusting(&tls_file("untrusted-ca.crt")));
    let refused = refused_topics_create(&flags, &unique_prefix("tls-wrong-ca"));
    assert_names_the_tls_failure(&refused);
    assert!(
        refused.stderr.contains("certificate verify failed"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_client_without_a_certificate_at_the_mutual_tls_listener_fails_fast_naming_the_tls_failure() {
    let flags = connection(mtls_broker(), &trusting(&tls_file("ca.crt")));
    let refused = refused_topics_create(&flags, &unique_prefix("tls-no-cert"));
    assert_names_the_tls_failure(&refused);
}
