//! rebound's consumer service: reads notes from the source topics in a consumer group, applies
//! them to a sink, and routes every failure by the tier policy: transient failures to the next
//! retry tier, permanent and poison records (and those that used up their tiers) to the DLQ.
//!
//! Delivery is at least once. A record's offset is stored only after the sink applied it or
//! after its copy was acknowledged by a tier or the DLQ topic, so a crash at any point leaves
//! the record to be consumed again, never lost. See `ARCHITECTURE.md` for the full argument.

mod config;
mod key_order;
mod pipeline;
pub mod sink;

pub use config::{BreakerMode, ConsumerArgs, ConsumerConfig, DeadKeyMode, KeyOrderConfig, OrderingMode};
pub use pipeline::{run, run_with_sink};

/// Everything that can stop the consumer.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A flag has an invalid value.
    #[error("invalid {flag}: {reason}")]
    InvalidFlag {
        /// The flag.
        flag: String,
        /// What is wrong.
        reason: String,
    },
    /// The `--inject-failures` specification is malformed.
    #[error("failed to parse failure injection {input:?}: {reason}")]
    ParseFailureInjection {
        /// The specification as given.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// The sink could not be opened.
    #[error("failed to open sink {sink}: {reason}")]
    OpenSink {
        /// The sink, with credentials, query and fragment redacted.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// Starting or running on the shared consume-and-produce runtime failed: a topic missing,
    /// the endpoints, a Kafka client, the final commit, or a producer that failed for good.
    #[error(transparent)]
    Runtime(#[from] rebound_service::ServiceError),
    /// A Kafka operation failed.
    #[error("failed to {operation}: {source}")]
    Kafka {
        /// What was being done.
        operation: &'static str,
        /// The Kafka error.
        #[source]
        source: rebound_kafka::KafkaError,
    },
}
