//! The delivery guarantee of the consumer's and the scheduler's hops (`--delivery`), defined once:
//! exactly-once commits a hop's copies and the source offsets they settle in one Kafka
//! transaction; at-least-once acknowledges the copies, then stores the offsets.

use std::time::Duration;

/// How a hop's copies and its source offsets reach Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeliveryMode {
    /// The copies a hop writes (to the tiers, the DLQ, or back to the source) and the source
    /// offsets they settle are committed in one Kafka transaction: a `read_committed` reader
    /// sees each copy exactly once, whatever moment the service dies at.
    ExactlyOnce,
    /// Copies are acknowledged first, then the offsets stored and committed in the background:
    /// nothing is lost, but a crash between the two writes a copy again.
    AtLeastOnce,
}

impl DeliveryMode {
    /// The flag's spelling, for log lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// The delivery flags of the consumer and the scheduler.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliveryArgs {
    /// `exactly-once` commits each hop's copies (tiers, DLQ, republished records) and its source
    /// offsets in one Kafka transaction; `at-least-once` acknowledges copies and then stores
    /// offsets, so a crash in between writes a copy twice. Readers must be `read_committed`.
    #[arg(long, env = "REBOUND_DELIVERY", value_enum, default_value_t = DeliveryMode::ExactlyOnce)]
    pub delivery: DeliveryMode,

    /// With `--delivery exactly-once`: how long a transaction may stay open before the broker
    /// aborts it. After a crash, `read_committed` readers of the written partitions wait up to
    /// this long for the dead instance's open transaction.
    #[arg(long, env = "REBOUND_TRANSACTION_TIMEOUT", default_value = "10s", value_parser = crate::parse_duration_flag)]
    pub transaction_timeout: Duration,
}

impl DeliveryArgs {
    /// The validated delivery settings; the transaction timeout must be between 1 s and 15 min
    /// (the broker's default `transaction.max.timeout.ms`).
    pub fn validate(&self) -> Result<DeliveryConfig, crate::InvalidFlag> {
        if self.transaction_timeout < Duration::from_secs(1) || self.transaction_timeout > Duration::from_secs(900) {
            return Err(crate::InvalidFlag {
                flag: "--transaction-timeout",
                reason: format!(
                    "{} ms is out of range; give between 1s and 15m",
                    self.transaction_timeout.as_millis()
                ),
            });
        }
        Ok(DeliveryConfig {
            mode: self.delivery,
            transaction_timeout: self.transaction_timeout,
        })
    }
}

/// The delivery settings a service runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Exactly-once or at-least-once.
    pub mode: DeliveryMode,
    /// The transactions' timeout, with exactly-once.
    pub transaction_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::ExactlyOnce,
            transaction_timeout: Duration::from_secs(10),
        }
    }
}

/// The transactional id of one service instance: the service, its group, and the instance's
/// static group membership id (`-X group.instance.id=...`) when it has one, else a random part.
///
/// Zombie fencing does not rest on this id but on the consumer group's metadata sent with the
/// offsets (KIP-447): the broker refuses the offsets of a member that is no longer in the
/// group's current generation, so its transaction aborts. A random part lets any number of
/// instances share a group without fencing each other, with no instance number to configure;
/// the cost is that a crashed instance's open transaction stays open until the transaction
/// timeout. A static member already names a single instance, so its id is stable: the
/// restarted instance fences its predecessor and aborts its open transaction at once.
pub fn transactional_id(service: &str, group: &str, group_instance_id: Option<&str>) -> String {
    match group_instance_id {
        Some(instance) => format!("rebound-{service}-{group}-{instance}"),
        None => format!("rebound-{service}-{group}-{:016x}", rand::random::<u64>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_timeouts_outside_the_brokers_bounds_are_refused_by_name() {
        let args = |timeout| DeliveryArgs {
            delivery: DeliveryMode::ExactlyOnce,
            transaction_timeout: timeout,
        };
        assert!(args(Duration::from_secs(10)).validate().is_ok());
        for bad in [Duration::from_millis(999), Duration::from_secs(901)] {
            let error = args(bad).validate().expect_err("out of range");
            assert_eq!(error.flag, "--transaction-timeout");
        }
    }

    #[test]
    fn transactional_ids_of_two_instances_differ_and_name_service_and_group() {
        let first = transactional_id("consumer", "notes-sink", None);
        let second = transactional_id("consumer", "notes-sink", None);
        assert_ne!(first, second);
        assert!(first.starts_with("rebound-consumer-notes-sink-"), "{first}");
        // A static member keeps its id across restarts, so a restart fences its predecessor.
        assert_eq!(
            transactional_id("scheduler", "tiers", Some("pod-0")),
            transactional_id("scheduler", "tiers", Some("pod-0"))
        );
    }
}
