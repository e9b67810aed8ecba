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
    /// Starting or running on the shared consume-and-produce runtime failed: a topic missing,
    /// the endpoints, a Kafka client, the final commit, or a producer that failed for good.
    #[error(transparent)]
    Runtime(#[from] rebound_service::ServiceError),
}
