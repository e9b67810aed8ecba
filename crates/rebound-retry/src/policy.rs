//! The tier policy: an ordered list of retry topics, each with a delay and a number of attempts,
//! and the dead-letter topic that takes what the last tier gives up on.

use std::time::Duration;

use crate::{Backoff, ErrorKind, RetryError};

/// One retry tier: records wait in `topic` for `delay` before they are tried again, and the tier
/// takes up to `attempts` consecutive failures before the next tier (or the DLQ) takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// Topic name, with any topic prefix already applied.
    pub topic: String,
    /// How long a record waits in this tier before it is redelivered.
    pub delay: Duration,
    /// How many failed attempts this tier absorbs (at least 1).
    pub attempts: u32,
}

/// Where a failed record goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// To the retry tier at this index of the policy.
    Tier {
        /// Index into [`TierPolicy::tiers`].
        index: usize,
    },
    /// To the dead-letter topic.
    DeadLetter,
}

/// The ordered tiers and the dead-letter topic, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPolicy {
    tiers: Vec<Tier>,
    dead_letter_topic: String,
    backoff: Backoff,
}

impl TierPolicy {
    /// Builds a policy, applying `topic_prefix` to every tier topic and to the DLQ topic.
    ///
    /// Rejects duplicate topics and a DLQ that is also a tier, since either would make records
    /// loop or be counted twice.
    pub fn new(tiers: Vec<Tier>, dead_letter_topic: &str, topic_prefix: &str) -> Result<Self, RetryError> {
        let tiers: Vec<Tier> = tiers
            .into_iter()
            .map(|tier| Tier {
                topic: apply_topic_prefix(topic_prefix, &tier.topic),
                ..tier
            })
            .collect();
        let dead_letter_topic = apply_topic_prefix(topic_prefix, dead_letter_topic);
        validate_topic_name(&dead_letter_topic).map_err(|reason| RetryError::BuildPolicy {
            reason: format!("dead-letter topic {dead_letter_topic:?}: {reason}"),
        })?;
        for (index, tier) in tiers.iter().enumerate() {
            validate_topic_name(&tier.topic).map_err(|reason| RetryError::BuildPolicy {
                reason: format!("tier topic {:?}: {reason}", tier.topic),
            })?;
            if tier.attempts == 0 {
                return Err(RetryError::BuildPolicy {
                    reason: format!("tier {:?} has 0 attempts; every tier needs at least 1", tier.topic),
                });
            }
            if tier.topic == dead_letter_topic {
                return Err(RetryError::BuildPolicy {
                    reason: format!("tier {:?} is also the dead-letter topic", tier.topic),
                });
            }
            if tiers[..index].iter().any(|earlier| earlier.topic == tier.topic) {
                return Err(RetryError::BuildPolicy {
                    reason: format!("tier {:?} is listed twice", tier.topic),
                });
            }
        }
        Ok(Self {
            tiers,
            dead_letter_topic,
            backoff: Backoff::fixed(),
        })
    }

    /// The policy with delays growing inside each tier as `backoff` says (a new policy has
    /// [`Backoff::fixed`]: every attempt waits the tier's delay).
    #[must_use]
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How delays grow inside a tier.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The attempt count of a record's first failure in the tier at `index` (1 for the first
    /// tier): the failures every earlier tier absorbs, plus one.
    pub fn first_attempt_of_tier(&self, index: usize) -> u32 {
        let before: u64 = self.tiers[..index.min(self.tiers.len())]
            .iter()
            .map(|tier| u64::from(tier.attempts))
            .sum();
        u32::try_from(before.saturating_add(1)).unwrap_or(u32::MAX)
    }

    /// Which of its tier's attempts the `failed_attempts`-th failure is, from 0, when it is
    /// routed to the tier at `index`: what the backoff grows with.
    pub fn attempt_within_tier(&self, failed_attempts: u32, index: usize) -> u32 {
        failed_attempts.saturating_sub(self.first_attempt_of_tier(index))
    }

    /// The default policy: `retry-5s` (5 s), then `retry-1m` (1 min), then `dlq`.
    pub fn default_tiers() -> Vec<Tier> {
        vec![
            Tier {
                topic: "retry-5s".to_owned(),
                delay: Duration::from_secs(5),
                attempts: 1,
            },
            Tier {
                topic: "retry-1m".to_owned(),
                delay: Duration::from_secs(60),
                attempts: 1,
            },
        ]
    }

    /// The tiers, in order.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &str {
        &self.dead_letter_topic
    }

    /// Finds a tier by its (prefixed) topic name.
    pub fn tier_by_topic(&self, topic: &str) -> Option<&Tier> {
        self.tiers.iter().find(|tier| tier.topic == topic)
    }

    /// Where a record goes after its `failed_attempts`-th failure (1 after the first failure).
    ///
    /// Transient failures walk the tiers in order, each tier taking as many failures as its
    /// `attempts`; once all are used up, and for every permanent or poison failure, the record
    /// goes to the DLQ. Because the attempt count only grows, a record can never loop.
    pub fn route_after_failure(&self, failed_attempts: u32, kind: ErrorKind) -> Route {
        if kind != ErrorKind::Transient || failed_attempts == 0 {
            return Route::DeadLetter;
        }
        let mut attempts_covered: u64 = 0;
        for (index, tier) in self.tiers.iter().enumerate() {
            attempts_covered += u64::from(tier.attempts);
            if u64::from(failed_attempts) <= attempts_covered {
                return Route::Tier { index };
            }
        }
        Route::DeadLetter
    }
}

/// Prepends the deployment's topic prefix (possibly empty) to a topic name.
pub fn apply_topic_prefix(topic_prefix: &str, topic: &str) -> String {
    format!("{topic_prefix}{topic}")
}

/// Parses a duration such as `250ms`, `5s`, `1m` or `1h 30m`; a unit is required.
pub fn parse_duration(input: &str) -> Result<Duration, RetryError> {
    humantime::parse_duration(input.trim()).map_err(|error| RetryError::ParseDuration {
        input: input.to_owned(),
        reason: error.to_string(),
    })
}

/// Parses a tier specification `NAME:DELAY[:ATTEMPTS]`, such as `retry-5s:5s` or `retry-1m:1m:3`.
pub fn parse_tier_spec(spec: &str) -> Result<Tier, RetryError> {
    let fail = |reason: String| RetryError::ParseTierSpec {
        spec: spec.to_owned(),
        reason,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (name, delay, attempts) = match parts.as_slice() {
        [name, delay] => (*name, *delay, None),
        [name, delay, attempts] => (*name, *delay, Some(*attempts)),
        _ => return Err(fail("expected NAME:DELAY or NAME:DELAY:ATTEMPTS".to_owned())),
    };
    validate_topic_name(name).map_err(|reason| fail(format!("topic name: {reason}")))?;
    let delay = parse_duration(delay).map_err(|error| fail(error.to_string()))?;
    let attempts = match attempts {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(0) | Err(_) => return Err(fail(format!("attempts {text:?} is not a whole number of at least 1"))),
            Ok(count) => count,
        },
    };
    Ok(Tier {
        topic: name.to_owned(),
        delay,
        attempts,
    })
}

/// Checks Kafka's rules for topic names: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > 249 {
        return Err(format!("is {} characters long; Kafka allows at most 249", name.len()));
    }
    if name == "." || name == ".." {
        return Err("cannot be '.' or '..'".to_owned());
    }
    if let Some(bad) = name
        .chars()
        .find(|character| !(character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-')))
    {
        return Err(format!(
            "contains {bad:?}; Kafka allows only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(topic: &str, seconds: u64, attempts: u32) -> Tier {
        Tier {
            topic: topic.to_owned(),
            delay: Duration::from_secs(seconds),
            attempts,
        }
    }

    #[test]
    fn tier_spec_parses_name_delay_and_optional_attempts() {
        assert_eq!(parse_tier_spec("retry-5s:5s"), Ok(tier("retry-5s", 5, 1)));
        assert_eq!(parse_tier_spec("retry-1m:1m:3"), Ok(tier("retry-1m", 60, 3)));
        assert_eq!(
            parse_tier_spec("fast:250ms").map(|tier| tier.delay),
            Ok(Duration::from_millis(250))
        );
    }

    #[test]
    fn tier_spec_errors_name_the_problem() {
        let cases = [
            ("retry-5s", "expected NAME:DELAY"),
            ("retry 5s:5s", "contains ' '"),
            (":5s", "is empty"),
            ("retry-5s:5", "time unit needed"),
            ("retry-5s:5s:0", "at least 1"),
            ("retry-5s:5s:x", "at least 1"),
            ("a:1s:1:1", "expected NAME:DELAY"),
        ];
        for (spec, expected) in cases {
            let error = parse_tier_spec(spec).expect_err(spec).to_string();
            assert!(error.contains(expected), "{spec}: {error}");
            assert!(error.contains(spec), "the error names the spec: {error}");
        }
    }

    #[test]
    fn default_policy_walks_both_tiers_then_dead_letters() {
        let policy = TierPolicy::new(TierPolicy::default_tiers(), "dlq", "").expect("valid");
        assert_eq!(
            policy.route_after_failure(1, ErrorKind::Transient),
            Route::Tier { index: 0 }
        );
        assert_eq!(
            policy.route_after_failure(2, ErrorKind::Transient),
            Route::Tier { index: 1 }
        );
        assert_eq!(policy.route_after_failure(3, ErrorKind::Transient), Route::DeadLetter);
        assert_eq!(
            policy.route_after_failure(u32::MAX, ErrorKind::Transient),
            Route::DeadLetter
        );
    }

    #[test]
    fn permanent_and_poison_failures_skip_the_tiers() {
        let policy = TierPolicy::new(TierPolicy::default_tiers(), "dlq", "").expect("valid");
        assert_eq!(policy.route_after_failure(1, ErrorKind::Permanent), Route::DeadLetter);
        assert_eq!(policy.route_after_failure(1, ErrorKind::Poison), Route::DeadLetter);
    }

    #[test]
    fn tier_attempts_are_cumulative() {
        let policy = TierPolicy::new(vec![tier("a", 1, 2), tier("b", 1, 3)], "dlq", "").expect("valid");
        let routes: Vec<Route> = (1..=6)
            .map(|attempt| policy.route_after_failure(attempt, ErrorKind::Transient))
            .collect();
        assert_eq!(
            routes,
            vec![
                Route::Tier { index: 0 },
                Route::Tier { index: 0 },
                Route::Tier { index: 1 },
                Route::Tier { index: 1 },
                Route::Tier { index: 1 },
                Route::DeadLetter
            ]
        );
    }

    #[test]
    fn attempts_are_counted_within_their_tier() {
        let policy = TierPolicy::new(vec![tier("a", 1, 2), tier("b", 1, 3)], "dlq", "").expect("valid");
        assert_eq!(policy.first_attempt_of_tier(0), 1);
        assert_eq!(policy.first_attempt_of_tier(1), 3);
        let within: Vec<u32> = (1..=5)
            .map(
                |attempt| match policy.route_after_failure(attempt, ErrorKind::Transient) {
                    Route::Tier { index } => policy.attempt_within_tier(attempt, index),
                    Route::DeadLetter => u32::MAX,
                },
            )
            .collect();
        assert_eq!(within, vec![0, 1, 0, 1, 2]);
    }

    #[test]
    fn no_tiers_means_every_failure_is_dead_lettered() {
        let policy = TierPolicy::new(Vec::new(), "dlq", "").expect("valid");
        assert_eq!(policy.route_after_failure(1, ErrorKind::Transient), Route::DeadLetter);
    }

    #[test]
    fn prefix_applies_to_tiers_and_dead_letter_topic() {
        let policy = TierPolicy::new(TierPolicy::default_tiers(), "dlq", "prod.").expect("valid");
        assert_eq!(policy.tiers()[0].topic, "prod.retry-5s");
        assert_eq!(policy.dead_letter_topic(), "prod.dlq");
        assert!(policy.tier_by_topic("prod.retry-1m").is_some());
    }

    #[test]
    fn policies_that_would_loop_are_rejected() {
        let duplicate = TierPolicy::new(vec![tier("a", 1, 1), tier("a", 2, 1)], "dlq", "");
        assert!(duplicate.expect_err("duplicate").to_string().contains("listed twice"));
        let tier_is_dlq = TierPolicy::new(vec![tier("dlq", 1, 1)], "dlq", "");
        assert!(
            tier_is_dlq
                .expect_err("dlq tier")
                .to_string()
                .contains("also the dead-letter topic")
        );
        let bad_prefix = TierPolicy::new(TierPolicy::default_tiers(), "dlq", "bad prefix/");
        assert!(bad_prefix.is_err());
    }
}
