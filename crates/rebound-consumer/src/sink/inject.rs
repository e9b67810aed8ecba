//! Random, seeded failure injection in front of any sink, for the demo, soak tests and
//! benchmarks: `--inject-failures transient=0.1,permanent=0.01 --inject-seed 7`.

use std::str::FromStr;
use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};

use super::{ApplyBatchFuture, ApplyItem, Sink, SinkFailure};
use crate::ConsumerError;

/// Probabilities of injected failures, each between 0 and 1, summing to at most 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureInjection {
    /// Probability that a note fails transiently.
    pub transient: f64,
    /// Probability that a note fails permanently.
    pub permanent: f64,
}

impl FromStr for FailureInjection {
    type Err = ConsumerError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| ConsumerError::ParseFailureInjection {
            input: input.to_owned(),
            reason,
        };
        let mut injection = FailureInjection {
            transient: 0.0,
            permanent: 0.0,
        };
        for part in input.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| fail(format!("{part:?} is not NAME=PROBABILITY")))?;
            let probability: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|probability: &f64| (0.0..=1.0).contains(probability))
                .ok_or_else(|| fail(format!("{value:?} is not a probability between 0 and 1")))?;
            match name.trim() {
                "transient" => injection.transient = probability,
                "permanent" => injection.permanent = probability,
                other => {
                    return Err(fail(format!(
                        "unknown failure kind {other:?}; expected transient or permanent"
                    )));
                }
            }
        }
        if injection.transient + injection.permanent > 1.0 {
            return Err(fail("probabilities add up to more than 1".to_owned()));
        }
        Ok(injection)
    }
}

/// A sink that fails notes at random before they reach the inner sink.
#[derive(Debug)]
pub struct FailureInjectingSink {
    inner: Box<dyn Sink>,
    injection: FailureInjection,
    random: Mutex<SmallRng>,
}

impl FailureInjectingSink {
    /// Wraps `inner`; the same seed gives the same sequence of draws.
    pub fn new(inner: Box<dyn Sink>, injection: FailureInjection, seed: u64) -> Self {
        Self {
            inner,
            injection,
            random: Mutex::new(SmallRng::seed_from_u64(seed)),
        }
    }

    /// Draws a fate for every note, passes the survivors to the inner sink, and merges the results.
    pub async fn apply_batch(&self, items: Vec<ApplyItem>) -> Vec<Result<(), SinkFailure>> {
        let fates: Vec<Option<SinkFailure>> = {
            let Ok(mut random) = self.random.lock() else {
                return vec![Err(SinkFailure::transient("failure injector lock poisoned")); items.len()];
            };
            items
                .iter()
                .map(|item| {
                    let draw: f64 = random.random();
                    if draw < self.injection.transient {
                        Some(SinkFailure::transient(format!(
                            "injected transient failure for note {} version {}",
                            item.note.note_id, item.note.version
                        )))
                    } else if draw < self.injection.transient + self.injection.permanent {
                        Some(SinkFailure::permanent(format!(
                            "injected permanent failure for note {} version {}",
                            item.note.note_id, item.note.version
                        )))
                    } else {
                        None
                    }
                })
                .collect()
        };
        let survivors: Vec<ApplyItem> = items
            .into_iter()
            .zip(&fates)
            .filter(|(_, fate)| fate.is_none())
            .map(|(item, _)| item)
            .collect();
        let mut inner_results = self.inner.apply_batch(survivors).await.into_iter();
        fates
            .into_iter()
            .map(|fate| match fate {
                Some(failure) => Err(failure),
                None => inner_results
                    .next()
                    .unwrap_or_else(|| Err(SinkFailure::transient("sink returned too few results"))),
            })
            .collect()
    }
}

impl Sink for FailureInjectingSink {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        Box::pin(FailureInjectingSink::apply_batch(self, items))
    }
}

#[cfg(test)]
mod tests {
    use rebound_retry::ErrorKind;
    use rebound_schema::Note;

    use super::*;

    #[test]
    fn injection_spec_parses_and_rejects_nonsense() {
        let parsed: FailureInjection = "transient=0.1,permanent=0.01".parse().expect("valid");
        assert_eq!(
            parsed,
            FailureInjection {
                transient: 0.1,
                permanent: 0.01
            }
        );
        for (bad, expected) in [
            ("transient=2", "between 0 and 1"),
            ("fatal=0.1", "unknown failure kind"),
            ("transient", "NAME=PROBABILITY"),
            ("transient=0.6,permanent=0.6", "more than 1"),
        ] {
            let error = bad.parse::<FailureInjection>().expect_err(bad).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[tokio::test]
    async fn injected_rates_are_close_to_the_configured_ones_and_seeded() {
        let items: Vec<ApplyItem> = (0..10_000)
            .map(|index| ApplyItem {
                note: Note {
                    note_id: format!("n{index}"),
                    user_id: String::new(),
                    device_id: String::new(),
                    version: 1,
                    title: String::new(),
                    body: String::new(),
                    tags: Vec::new(),
                    updated_at: 0,
                    deleted: false,
                    pinned: false,
                },
                previous_attempts: 0,
                last_tier: None,
            })
            .collect();
        let injection = FailureInjection {
            transient: 0.1,
            permanent: 0.01,
        };
        let run = |seed| {
            let items = items.clone();
            async move {
                FailureInjectingSink::new(Box::new(crate::sink::NullSink), injection, seed)
                    .apply_batch(items)
                    .await
                    .into_iter()
                    .map(|result| result.err().map(|failure| failure.kind))
                    .collect::<Vec<_>>()
            }
        };
        let first = run(7).await;
        assert_eq!(first, run(7).await, "same seed, same fates");
        let transient = first.iter().filter(|kind| **kind == Some(ErrorKind::Transient)).count();
        let permanent = first.iter().filter(|kind| **kind == Some(ErrorKind::Permanent)).count();
        assert!((800..1200).contains(&transient), "{transient}");
        assert!((50..150).contains(&permanent), "{permanent}");
    }
}
