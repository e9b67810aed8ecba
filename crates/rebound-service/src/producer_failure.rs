//! What a service keeps of its Kafka producer's fatal error: the first one, announced once (a
//! log line, a counter, `/readyz` unready), then handed back when the service stops so that it
//! exits non-zero and its orchestrator restarts it with a new producer.

use std::sync::{Mutex, PoisonError};

use rebound_kafka::KafkaError;

use crate::{Readiness, events};

/// The fatal error of a service's producer, once one was seen.
#[derive(Debug)]
pub struct ProducerFailure {
    service: &'static str,
    error: Mutex<Option<KafkaError>>,
}

impl ProducerFailure {
    /// No failure yet, for the service named in events.
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            error: Mutex::new(None),
        }
    }

    /// Keeps the first fatal error and announces it; later ones add nothing.
    pub fn record(&self, error: KafkaError, readiness: &Readiness) {
        let mut kept = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.is_none() {
            events::producer_failed_for_good(self.service, &error);
            readiness.set("kafka", false, format!("the producer failed for good: {error}"));
            *kept = Some(error);
        }
    }

    /// True once a fatal error was recorded.
    pub fn is_recorded(&self) -> bool {
        self.error.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// The recorded error, for the service's exit.
    pub fn into_error(self) -> Option<KafkaError> {
        self.error.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any error will do: the latch keeps what it is given (a fatal one cannot be built without
    /// rdkafka, which only rebound-kafka touches).
    fn fatal(operation: &'static str) -> KafkaError {
        KafkaError::Timeout {
            operation,
            timeout_ms: 1,
        }
    }

    #[test]
    fn the_first_fatal_error_is_kept_announced_once_and_makes_the_service_unready() {
        let readiness = Readiness::default();
        readiness.set("kafka", true, "assigned");
        let failure = ProducerFailure::new("test");
        assert!(!failure.is_recorded());
        failure.record(fatal("first"), &readiness);
        failure.record(fatal("second"), &readiness);
        assert!(failure.is_recorded());
        assert!(!readiness.report().0, "not ready after a fatal error");
        let kept = failure.into_error().expect("recorded").to_string();
        assert!(kept.contains("first"), "{kept}");
    }
}
