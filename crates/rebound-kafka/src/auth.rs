//! Noticing that the brokers refuse our credentials. librdkafka treats a failed SASL or TLS
//! handshake like any connection failure: it retries, and an operation waiting for a broker runs
//! into its timeout with a generic "timed out" or "transport failure". Its log lines name the real
//! cause at once, so a client context that watches them (and the client's error events) lets an
//! operation end within a second or so with an error that says "authentication".

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaError;

/// Parts of librdkafka log lines that report refused credentials or a failed TLS handshake.
const AUTH_FAILURE_MARKERS: [&str; 3] = [
    "SASL authentication error",
    "Authentication failed",
    "SSL handshake failed",
];

/// A client context that records the first authentication failure librdkafka reports.
#[derive(Clone, Default)]
pub(crate) struct AuthWatch {
    failure: Arc<Mutex<Option<String>>>,
}

impl AuthWatch {
    /// The authentication failure seen so far, as an error, if any.
    pub(crate) fn error(&self) -> Option<KafkaError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .map(|reason| KafkaError::Authenticate { reason })
    }

    /// Records an error event of the client if it is an authentication failure. The log line
    /// that comes with it says more, so it is kept when it came first.
    pub(crate) fn record_error(&self, error: &rdkafka::error::KafkaError) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
            self.record(&error.to_string());
        }
    }

    fn record(&self, message: &str) {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| message.to_owned());
    }
}

impl ClientContext for AuthWatch {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if AUTH_FAILURE_MARKERS.iter().any(|marker| message.contains(marker)) {
            self.record(message);
        }
        // The same levels as rdkafka's default context, which this one replaces.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}"),
        }
    }
}

impl ConsumerContext for AuthWatch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authentication_failures_are_recorded_and_the_first_one_wins() {
        let watch = AuthWatch::default();
        watch.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed",
        );
        assert!(watch.error().is_none());
        watch.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "sasl_plaintext://127.0.0.1:9094/bootstrap: SASL authentication error: Authentication failed \
             during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        );
        watch.log(RDKafkaLogLevel::Error, "FAIL", "SSL handshake failed: later");
        let error = watch.error().expect("recorded").to_string();
        assert!(error.starts_with("failed to authenticate with kafka"), "{error}");
        assert!(error.contains("invalid credentials"), "{error}");
        assert!(!error.contains("later"), "{error}");
    }
}
