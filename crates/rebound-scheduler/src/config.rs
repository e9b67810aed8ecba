//! The scheduler's command-line flags and the validated configuration they turn into.

use std::time::Duration;

use rebound_kafka::KafkaArgs;
use rebound_retry::TierPolicy;
use rebound_service::{
    CommonArgs, DeliveryArgs, DeliveryConfig, OperationalArgs, ShutdownArgs, TierDelays, TopologyArgs,
    parse_duration_flag,
};

use crate::SchedulerError;
use crate::holdings::ReadAhead;

/// Flags of `rebound-scheduler`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "rebound-scheduler",
    version,
    about = "Holds retry-tier records until due and republishes them to their source topic."
)]
pub struct SchedulerArgs {
    /// Kafka connection and logging.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Metrics and health endpoints.
    #[command(flatten)]
    pub operational: OperationalArgs,

    /// Consumer group; run more instances with the same group to scale out.
    #[arg(long, env = "REBOUND_GROUP", default_value = "rebound-scheduler")]
    pub group: String,

    /// Tiers, DLQ and topic prefix, shared with the consumer and the CLI.
    #[command(flatten)]
    pub topology: TopologyArgs,

    /// Most records held in memory per partition: a partition holding this many is paused (it
    /// resumes at half). Bounds memory; records never go out early whatever the value.
    #[arg(long, env = "REBOUND_READ_AHEAD", default_value_t = 5000)]
    pub read_ahead: usize,

    /// How far ahead a partition is read: a partition whose newest held record is due this far
    /// in the future is paused, and resumes when that is down to half. Must be longer than a
    /// fetch takes, so the next records arrive before they are due.
    #[arg(long, env = "REBOUND_READ_AHEAD_TIME", default_value = "4s", value_parser = parse_duration_flag)]
    pub read_ahead_time: Duration,

    /// Most bytes (keys, values, headers) held in memory across all partitions: every partition
    /// is paused when this much is held, and fetching resumes once it is down to half. Accepts
    /// `67108864`, `64MiB`, `512KiB`, `1GiB`.
    #[arg(long, env = "REBOUND_READ_AHEAD_BYTES", default_value = "64MiB")]
    pub read_ahead_bytes: String,

    /// Furthest a `retry.due.timestamp` may lie ahead. A record due later is bad input (a
    /// corrupted header, a producer's clock far off) and goes to the DLQ as poison; no record is
    /// ever released before its due time.
    #[arg(long, env = "REBOUND_MAX_DUE_AHEAD", default_value = "30d", value_parser = parse_duration_flag)]
    pub max_due_ahead: Duration,

    /// The bound on shutdown.
    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Exactly-once or at-least-once hops.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
}

/// The scheduler's validated configuration.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Kafka connection.
    pub kafka: KafkaArgs,
    /// Consumer group.
    pub group: String,
    /// Tiers served (prefix applied) and the DLQ.
    pub policy: TierPolicy,
    /// Address of `/metrics`, `/healthz`, `/readyz`, if served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How far ahead each partition is read, in records and in time, and how many bytes are
    /// held in all.
    pub read_ahead: ReadAhead,
    /// Furthest ahead a due time is accepted; a later one is poison.
    pub max_due_ahead: Duration,
    /// Bound on shutdown.
    pub shutdown_timeout: Duration,
    /// Exactly-once (hops in transactions) or at-least-once.
    pub delivery: DeliveryConfig,
}

impl SchedulerArgs {
    /// Validates the flags; every error names the flag and the problem.
    pub fn into_config(self) -> Result<SchedulerConfig, SchedulerError> {
        let invalid = |flag: &str, reason: String| SchedulerError::InvalidFlag {
            flag: flag.to_owned(),
            reason,
        };
        let policy = self
            .topology
            .tier_policy(TierDelays::FallbackOnly)
            .map_err(|error| invalid(error.flag, error.reason))?;
        if self.read_ahead == 0 {
            return Err(invalid("--read-ahead", "must be at least 1".to_owned()));
        }
        let max_bytes = parse_byte_size(&self.read_ahead_bytes)
            .map_err(|reason| invalid("--read-ahead-bytes", format!("{:?}: {reason}", self.read_ahead_bytes)))?;
        if max_bytes < MIN_READ_AHEAD_BYTES {
            return Err(invalid(
                "--read-ahead-bytes",
                format!("{:?} is less than 1MiB", self.read_ahead_bytes),
            ));
        }
        if self.max_due_ahead.is_zero() {
            return Err(invalid("--max-due-ahead", "must be longer than 0".to_owned()));
        }
        let delivery = self
            .delivery
            .validate()
            .map_err(|error| invalid(error.flag, error.reason))?;
        Ok(SchedulerConfig {
            read_ahead: ReadAhead {
                max_records: self.read_ahead,
                max_time: self.read_ahead_time,
                max_bytes,
            },
            max_due_ahead: self.max_due_ahead,
            metrics_listen: self.operational.metrics_listen,
            kafka: self.common.kafka,
            group: self.group,
            policy,
            shutdown_timeout: self.shutdown.shutdown_timeout,
            delivery,
        })
    }
}

/// The smallest `--read-ahead-bytes`: below it a single ordinary record could pause everything.
const MIN_READ_AHEAD_BYTES: usize = 1024 * 1024;

/// Parses a byte count: a whole number, optionally followed by `B`, `KiB`, `MiB`, `GiB` (powers
/// of 1024) or `KB`, `MB`, `GB` (powers of 1000).
fn parse_byte_size(input: &str) -> Result<usize, String> {
    let input = input.trim();
    let split = input
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(input.len());
    let (digits, unit) = input.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| "expected a whole number of bytes, such as 64MiB".to_owned())?;
    let multiplier: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?}: use B, KiB, MiB, GiB, KB, MB or GB")),
    };
    number.checked_mul(multiplier).ok_or_else(|| "too large".to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn tiers_accept_name_or_name_and_fallback_delay() {
        let config = SchedulerArgs::parse_from(["rebound-scheduler", "--tier", "retry-5s", "--tier", "retry-1m:1m"])
            .into_config()
            .expect("valid");
        let tiers: Vec<(&str, u64)> = config
            .policy
            .tiers()
            .iter()
            .map(|tier| (tier.topic.as_str(), tier.delay.as_secs()))
            .collect();
        assert_eq!(tiers, vec![("retry-5s", 0), ("retry-1m", 60)]);
        assert_eq!(config.group, "rebound-scheduler");
    }

    #[test]
    fn a_bad_tier_is_named() {
        let error = SchedulerArgs::parse_from(["rebound-scheduler", "--tier", "retry 5s"])
            .into_config()
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("--tier") && error.contains("retry 5s"), "{error}");
    }

    #[test]
    fn read_ahead_bytes_and_max_due_ahead_are_parsed_and_validated() {
        let config = SchedulerArgs::parse_from(["rebound-scheduler"])
            .into_config()
            .expect("defaults");
        assert_eq!(config.read_ahead.max_bytes, 64 * 1024 * 1024);
        assert_eq!(config.max_due_ahead, Duration::from_secs(30 * 24 * 60 * 60));
        let config = SchedulerArgs::parse_from([
            "rebound-scheduler",
            "--read-ahead-bytes",
            "16MB",
            "--max-due-ahead",
            "7d",
        ])
        .into_config()
        .expect("valid");
        assert_eq!(config.read_ahead.max_bytes, 16_000_000);
        assert_eq!(config.max_due_ahead, Duration::from_secs(7 * 24 * 60 * 60));
        for (flag, value) in [
            ("--read-ahead-bytes", "lots"),
            ("--read-ahead-bytes", "64XB"),
            ("--read-ahead-bytes", "1000"),
            ("--max-due-ahead", "0s"),
            ("--max-due-ahead", "soon"),
            ("--read-ahead-time", "4"),
            ("--shutdown-timeout", "a while"),
        ] {
            // A value that is no duration is refused by clap, the rest by `into_config`.
            let error = match SchedulerArgs::try_parse_from(["rebound-scheduler", flag, value]) {
                Err(error) => error.to_string(),
                Ok(args) => args.into_config().expect_err("invalid").to_string(),
            };
            assert!(error.contains(flag), "{error}");
        }
    }
}
