//! rebound's retry scheduler: consumes the retry-tier topics, holds each record until its
//! `retry.due.timestamp`, and republishes it, key, value and headers unchanged, to its
//! `retry.original.topic`. It never republishes early, pauses only the partitions whose head is
//! waiting, stores an offset only after the republished copy is acknowledged, and sends records
//! it cannot route back to the DLQ as poison instead of crashing or looping.

mod config;
mod holdings;
mod refusal;
mod service;

pub use config::{SchedulerArgs, SchedulerConfig};
pub use holdings::{FetchDecision, ReadAhead};
pub use service::run;

/// Everything that can stop the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A flag has an invalid value.
    #[error("invalid {flag}: {reason}")]
    InvalidFlag {
        /// The flag.
        flag: String,
        /// What is wrong.
        reason: String,
    },
    /// A tier or the DLQ topic does not exist.
    #[error("failed to find topic {topic}: {reason} (create the topics with `rebound topics create`)")]
    FindTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// The metrics and health endpoints could not be served.
    #[error("failed to serve metrics on {listen}: {reason}")]
    ServeEndpoints {
        /// The address.
        listen: String,
        /// What went wrong.
        reason: String,
    },
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
