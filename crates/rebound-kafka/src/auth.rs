//! Noticing that the brokers refuse our credentials or that TLS fails. librdkafka treats a
//! failed SASL or TLS handshake like any connection failure: it retries, and an operation waiting
//! for a broker runs into its timeout with a generic "timed out" or "transport failure". Its log
//! lines name the real cause at once, so a client context that watches them (and the client's
//! error events) lets an operation end within a second or so with an error that says
//! "authentication" (SASL) or "TLS handshake" (a broker certificate the CA does not vouch for, a
//! client certificate the broker wants and did not get or does not trust).

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaError;

/// Parts of librdkafka log lines that report refused SASL credentials.
const AUTH_FAILURE_MARKERS: [&str; 2] = ["SASL authentication error", "Authentication failed"];

/// Parts of librdkafka log lines that report a failed TLS handshake. With TLS 1.3 a broker that
/// requires a client certificate refuses it only after the client considers the handshake done,
/// so that refusal arrives as an alert on the first read ("Receive failed: ... alert bad
/// certificate"), not as "SSL handshake failed".
const TLS_FAILURE_MARKERS: [&str; 4] = [
    "SSL handshake failed",
    "certificate verify failed",
    "alert bad certificate",
    "alert certificate required",
];

/// What kind of refusal a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// SASL credentials refused.
    Authentication,
    /// The TLS handshake failed.
    TlsHandshake,
}

/// A client context that records the first authentication or TLS failure librdkafka reports.
#[derive(Clone, Default)]
pub(crate) struct AuthWatch {
    failure: Arc<Mutex<Option<(Refusal, String)>>>,
}

impl AuthWatch {
    /// The authentication or TLS failure seen so far, as an error, if any.
    pub(crate) fn error(&self) -> Option<KafkaError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .map(|(refusal, reason)| match refusal {
                Refusal::Authentication => KafkaError::Authenticate { reason },
                Refusal::TlsHandshake => KafkaError::TlsHandshake { reason },
            })
    }

    /// Records an error event of the client if it is an authentication or TLS failure. The log
    /// line that comes with it says more, so it is kept when it came first.
    pub(crate) fn record_error(&self, error: &rdkafka::error::KafkaError) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => self.record(Refusal::Authentication, &error.to_string()),
            Some(RDKafkaErrorCode::SSL) => self.record(Refusal::TlsHandshake, &error.to_string()),
            _ => {}
        }
    }

    fn record(&self, refusal: Refusal, message: &str) {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| (refusal, message.to_owned()));
    }
}

/// The kind of refusal a librdkafka log line reports, if it reports one. TLS is looked at first:
/// a TLS failure on a SASL_SSL listener happens before SASL starts.
fn refusal_in_log_line(message: &str) -> Option<Refusal> {
    if TLS_FAILURE_MARKERS.iter().any(|marker| message.contains(marker)) {
        Some(Refusal::TlsHandshake)
    } else if AUTH_FAILURE_MARKERS.iter().any(|marker| message.contains(marker)) {
        Some(Refusal::Authentication)
    } else {
        None
    }
}

impl ClientContext for AuthWatch {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        if let Some(refusal) = refusal_in_log_line(message) {
            self.record(refusal, message);
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

    #[test]
    fn tls_failures_are_named_as_such_whether_in_the_handshake_or_on_the_first_read() {
        // The lines librdkafka logs for a broker certificate signed by another CA, and for a
        // listener that requires a client certificate the client did not present (TLS 1.3).
        for line in [
            "ssl://127.0.0.1:9095/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate \
             verify failed: broker certificate could not be verified, verify that ssl.ca.location is \
             correctly configured or root CA certificates are installed (after 72ms in state SSL_HANDSHAKE)",
            "ssl://127.0.0.1:9097/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad \
             certificate: SSL alert number 42 (after 19ms in state APIVERSION_QUERY)",
        ] {
            let watch = AuthWatch::default();
            watch.log(RDKafkaLogLevel::Error, "FAIL", line);
            let error = watch.error().expect("recorded");
            assert!(matches!(error, KafkaError::TlsHandshake { .. }), "{error:?}");
            let shown = error.to_string();
            assert!(shown.starts_with("TLS handshake with kafka failed"), "{shown}");
            assert!(shown.contains("ssl.ca.location"), "{shown}");
        }
    }
}
