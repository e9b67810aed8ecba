//! The pipeline's topology flags, defined once for every binary: the retry tiers in order, the
//! dead-letter topic and the prefix of every topic name. The consumer, the scheduler and the
//! admin CLI read the same flags with the same defaults, so a deployment names its topics once
//! (in `REBOUND_TIERS`, `REBOUND_DLQ_TOPIC`, `REBOUND_TOPIC_PREFIX`) for all of them.

use std::time::Duration;

use rebound_retry::{Backoff, Tier, TierPolicy, apply_topic_prefix, parse_tier_spec};

use crate::parse_duration_flag;

/// The tiers every binary uses unless told otherwise.
pub const DEFAULT_TIERS: [&str; 2] = ["retry-5s:5s", "retry-1m:1m"];

/// The dead-letter topic and the prefix of every topic name.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicNamingArgs {
    /// Dead-letter topic.
    #[arg(long, env = "REBOUND_DLQ_TOPIC", default_value = "dlq")]
    pub dlq_topic: String,

    /// Prefix applied to every topic name (sources, tiers, the DLQ and its ledger), e.g.
    /// `staging.`.
    #[arg(long, env = "REBOUND_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
}

impl TopicNamingArgs {
    /// A topic's full name, with the prefix.
    pub fn prefixed(&self, topic: &str) -> String {
        apply_topic_prefix(&self.topic_prefix, topic)
    }

    /// The dead-letter topic's full name.
    pub fn dlq(&self) -> String {
        self.prefixed(&self.dlq_topic)
    }
}

/// The pipeline's source topics: the consumer reads them, the scheduler's records go back to
/// them, `rebound topics create` creates them and `rebound audit` measures them.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceTopicArgs {
    /// Source topic of the pipeline (repeatable; the topic prefix applies).
    #[arg(
        long = "source-topic",
        env = "REBOUND_SOURCE_TOPICS",
        value_delimiter = ',',
        default_value = "notes"
    )]
    pub source_topics: Vec<String>,
}

impl SourceTopicArgs {
    /// The source topics' full names, with the prefix; at least one, and none that is also a
    /// tier or the DLQ of `policy` (its records would loop).
    pub fn prefixed(&self, naming: &TopicNamingArgs, policy: &TierPolicy) -> Result<Vec<String>, InvalidFlag> {
        let invalid = |reason: String| InvalidFlag {
            flag: "--source-topic",
            reason,
        };
        if self.source_topics.is_empty() {
            return Err(invalid("at least one source topic is needed".to_owned()));
        }
        let topics: Vec<String> = self.source_topics.iter().map(|topic| naming.prefixed(topic)).collect();
        if let Some(topic) = topics
            .iter()
            .find(|topic| policy.tier_by_topic(topic).is_some() || topic.as_str() == policy.dead_letter_topic())
        {
            return Err(invalid(format!(
                "{topic:?} is also a tier or the DLQ; records would loop"
            )));
        }
        Ok(topics)
    }
}

/// The retry tiers and the topic naming.
#[derive(Debug, Clone, clap::Args)]
pub struct TopologyArgs {
    /// Retry tier `NAME:DELAY[:ATTEMPTS]`, in order (repeatable; durations like `250ms`, `5s`,
    /// `1m`; attempts per tier default to 1). The consumer routes failures by it; the scheduler
    /// takes `NAME` alone too and uses `DELAY` only for records without `retry.due.timestamp`;
    /// `rebound topics create` uses the names.
    #[arg(
        long = "tier",
        env = "REBOUND_TIERS",
        value_delimiter = ',',
        default_values_t = DEFAULT_TIERS.map(str::to_owned)
    )]
    pub tiers: Vec<String>,

    /// Growth of the delay per attempt inside a tier: a tier `retry-1m:1m:4` waits 1m, 2m, 4m,
    /// 8m with the default of 2 (1 keeps every attempt at the tier's delay). Used by the
    /// consumer, which writes each copy's due time.
    #[arg(long, env = "REBOUND_BACKOFF_FACTOR", default_value_t = 2.0)]
    pub backoff_factor: f64,

    /// Cap of a grown delay inside a tier (a tier whose own delay is longer keeps its delay).
    #[arg(long, env = "REBOUND_BACKOFF_MAX", default_value = "10m", value_parser = parse_duration_flag)]
    pub backoff_max: Duration,

    /// Spread of each due time, as a fraction of the delay (0.2: ±20%), so records that failed
    /// together do not come back together; never below the tier's delay.
    #[arg(long, env = "REBOUND_BACKOFF_JITTER", default_value_t = 0.2)]
    pub backoff_jitter: f64,

    /// The DLQ and the prefix.
    #[command(flatten)]
    pub naming: TopicNamingArgs,
}

/// Whether a tier given by its name alone is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierDelays {
    /// Every tier needs its delay (the consumer computes due times from it).
    Required,
    /// A tier may be named alone: its delay is then 0, a fallback that only records without
    /// `retry.due.timestamp` use (the scheduler).
    FallbackOnly,
}

/// A flag whose value does not make a pipeline: which flag, and what is wrong. Each service maps
/// it into its own error enum with one `map_err`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag}: {reason}")]
pub struct InvalidFlag {
    /// The flag, or flags, at fault.
    pub flag: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl TopologyArgs {
    /// The validated tier policy: tiers in order, distinct from each other and from the DLQ,
    /// every name prefixed.
    pub fn tier_policy(&self, delays: TierDelays) -> Result<TierPolicy, InvalidFlag> {
        let invalid = |flag: &'static str, reason: String| InvalidFlag { flag, reason };
        let tiers: Vec<Tier> = self
            .tiers
            .iter()
            .map(|spec| match delays {
                TierDelays::FallbackOnly if !spec.contains(':') => parse_tier_spec(&format!("{spec}:0s")),
                _ => parse_tier_spec(spec),
            })
            .collect::<Result<_, _>>()
            .map_err(|error| invalid("--tier", error.to_string()))?;
        if tiers.is_empty() {
            return Err(invalid("--tier", "at least one tier is needed".to_owned()));
        }
        let backoff = self.backoff()?;
        TierPolicy::new(tiers, &self.naming.dlq_topic, &self.naming.topic_prefix)
            .map(|policy| policy.with_backoff(backoff))
            .map_err(|error| invalid("--tier/--dlq-topic", error.to_string()))
    }

    /// The validated backoff inside a tier, the error naming the flag at fault.
    pub fn backoff(&self) -> Result<Backoff, InvalidFlag> {
        Backoff::new(self.backoff_factor, self.backoff_max, self.backoff_jitter).map_err(|error| {
            let flag = if Backoff::new(self.backoff_factor, self.backoff_max, 0.0).is_err() {
                "--backoff-factor"
            } else {
                "--backoff-jitter"
            };
            InvalidFlag {
                flag,
                reason: error.to_string(),
            }
        })
    }

    /// The tiers' names, without delays or prefix, in order.
    pub fn tier_names(&self) -> Vec<String> {
        self.tiers
            .iter()
            .map(|spec| spec.split(':').next().unwrap_or_default().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        topology: TopologyArgs,
    }

    fn parse(argv: &[&str]) -> TopologyArgs {
        let mut full = vec!["test"];
        full.extend_from_slice(argv);
        Flags::parse_from(full).topology
    }

    #[test]
    fn the_defaults_are_the_documented_tiers_and_dlq() {
        let policy = parse(&[]).tier_policy(TierDelays::Required).expect("valid");
        let tiers: Vec<(&str, u64)> = policy
            .tiers()
            .iter()
            .map(|tier| (tier.topic.as_str(), tier.delay.as_secs()))
            .collect();
        assert_eq!(tiers, vec![("retry-5s", 5), ("retry-1m", 60)]);
        assert_eq!(policy.dead_letter_topic(), "dlq");
    }

    #[test]
    fn a_tier_named_alone_is_a_fallback_for_the_scheduler_and_an_error_for_the_consumer() {
        let topology = parse(&["--tier", "retry-5s", "--tier", "retry-1m:1m"]);
        let policy = topology.tier_policy(TierDelays::FallbackOnly).expect("valid");
        assert_eq!(policy.tiers()[0].delay.as_secs(), 0);
        let error = topology.tier_policy(TierDelays::Required).expect_err("needs a delay");
        assert!(error.flag == "--tier", "{error}");
        assert_eq!(topology.tier_names(), vec!["retry-5s", "retry-1m"]);
    }

    #[test]
    fn the_backoff_defaults_to_doubling_up_to_ten_minutes_spread_by_a_fifth() {
        let policy = parse(&[]).tier_policy(TierDelays::Required).expect("valid");
        assert_eq!(policy.backoff(), Backoff::default());
        let policy = parse(&["--backoff-factor", "3", "--backoff-max", "1h", "--backoff-jitter", "0"])
            .tier_policy(TierDelays::Required)
            .expect("valid");
        let expected = Backoff::new(3.0, Duration::from_secs(3600), 0.0).expect("valid");
        assert_eq!(policy.backoff(), expected);
    }

    #[test]
    fn a_bad_backoff_is_refused_naming_its_flag() {
        for (argv, flag) in [
            (["--backoff-factor", "0.5"], "--backoff-factor"),
            (["--backoff-jitter", "1.5"], "--backoff-jitter"),
        ] {
            let error = parse(&argv).tier_policy(TierDelays::Required).expect_err(flag);
            assert!(
                matches!(&error, InvalidFlag { flag: named, .. } if *named == flag),
                "{error}"
            );
        }
    }

    #[test]
    fn the_prefix_applies_to_tiers_and_the_dlq() {
        let topology = parse(&["--topic-prefix", "staging.", "--dlq-topic", "dead"]);
        let policy = topology.tier_policy(TierDelays::Required).expect("valid");
        assert_eq!(policy.tiers()[0].topic, "staging.retry-5s");
        assert_eq!(policy.dead_letter_topic(), "staging.dead");
        assert_eq!(topology.naming.dlq(), "staging.dead");
    }

    #[test]
    fn a_tier_that_is_the_dlq_is_refused_naming_both_flags() {
        let error = parse(&["--tier", "dlq:5s"])
            .tier_policy(TierDelays::Required)
            .expect_err("loops");
        assert_eq!(error.flag, "--tier/--dlq-topic", "{error}");
    }
}

/// The compacted topic holding the consumer's per-key order state (blocked keys and parked
/// records), shared by the consumer, which writes and reads it, and `rebound topics create`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyOrderTopicArgs {
    /// Compacted topic of the per-key order state: which keys wait for a record in a tier, and
    /// the records parked behind it (the topic prefix applies).
    #[arg(long, env = "REBOUND_BLOCKED_KEYS_TOPIC", default_value = "rebound-blocked-keys")]
    pub blocked_keys_topic: String,
}

impl KeyOrderTopicArgs {
    /// The state topic's full name, with the prefix.
    pub fn prefixed(&self, naming: &TopicNamingArgs) -> Result<String, InvalidFlag> {
        if self.blocked_keys_topic.trim().is_empty() {
            return Err(InvalidFlag {
                flag: "--blocked-keys-topic",
                reason: "must not be empty".to_owned(),
            });
        }
        Ok(naming.prefixed(&self.blocked_keys_topic))
    }
}
