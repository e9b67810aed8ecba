//! Plumbing every rebound binary shares: the common flags (Kafka connection and log format, one
//! clap group defined once), telemetry set-up, the shutdown signal, and the operational events
//! (applied, retried, dead-lettered, republished) emitted as a log line and a metric together.

mod delivery;
pub mod events;
mod operational;
mod output;
mod producer_failure;
pub mod redact;
mod runtime;
mod service_main;
mod shutdown;
mod telemetry;
mod topology;
pub mod trace_context;

pub use delivery::{DeliveryArgs, DeliveryConfig, DeliveryMode, transactional_id};
pub use operational::{OperationalArgs, Readiness, metrics_handle, serve_operational_endpoints};
pub use output::OutputFormat;
pub use producer_failure::ProducerFailure;
pub use rebound_kafka::SourceOffset;
pub use runtime::{
    HopFailed, NotSentAlone, Position, Runtime, RuntimeSpec, SentAlone, ShutdownArgs, stub_for_refused_copy,
};
pub use service_main::service_main;
pub use shutdown::{Shutdown, shutdown_signal};
pub use telemetry::{LogFormat, TelemetryGuard, init_telemetry, use_colour};
pub use topology::{
    DEFAULT_TIERS, InvalidFlag, KeyOrderTopicArgs, SourceTopicArgs, TierDelays, TopicNamingArgs, TopologyArgs,
};

use rebound_kafka::KafkaArgs;

/// What can go wrong in the shared plumbing: a flag, start-up, or the runtime's Kafka clients.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A topic the service reads or writes does not exist.
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
    /// The service's producer failed for good; the service stopped so that it is restarted.
    #[error("failed to produce any more (the producer failed for good; restart the service): {source}")]
    ProducerFailedForGood {
        /// The fatal error.
        #[source]
        source: rebound_kafka::KafkaError,
    },
}

/// Flags shared by every service and the admin CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Log line format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "REBOUND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// OTLP/HTTP collector to export traces to, e.g. `http://127.0.0.1:4318` (off when not given).
    #[arg(long, env = "REBOUND_OTLP_ENDPOINT", global = true, hide_env_values = true)]
    pub otlp_endpoint: Option<String>,
}

/// The value parser of every duration flag (`value_parser = parse_duration_flag`), so that a
/// bad value is refused by clap itself (exit code 2, the flag named in its message) and every
/// binary reads durations alike: a number and a unit, such as `250ms`, `5s`, `1m` or `1h 30m`.
/// Checks that are more than parsing (above 0, below a limit) stay with each binary's
/// validation.
pub fn parse_duration_flag(text: &str) -> Result<std::time::Duration, String> {
    rebound_retry::parse_duration(text).map_err(|error| match error {
        rebound_retry::RetryError::ParseDuration { reason, .. } => {
            format!("not a duration ({reason}); use a number and a unit, such as 250ms, 5s, 1m or 1h 30m")
        }
        other => other.to_string(),
    })
}

/// Milliseconds since the Unix epoch by the wall clock, as Kafka timestamps and the retry
/// headers count time. A clock before 1970 reads as 0.
pub fn now_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration_flag;

    #[test]
    fn duration_flags_take_a_number_and_a_unit() {
        assert_eq!(parse_duration_flag("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration_flag(" 1h 30m "), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration_flag("30d"), Ok(Duration::from_secs(30 * 24 * 60 * 60)));
        for bad in ["soon", "5", "", "-1s", "5 parsecs"] {
            let error = parse_duration_flag(bad).expect_err(bad);
            assert!(
                error.starts_with("not a duration (") && error.contains("such as 250ms"),
                "{bad:?}: {error}"
            );
        }
    }
}
