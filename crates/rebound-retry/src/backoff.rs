//! Exponential backoff with jitter inside a tier: a tier with several attempts waits its base
//! delay, then `factor` times longer each time, up to a cap, and each due time is spread by a
//! random fraction so records that failed together do not all come back together. A delay is
//! never below the tier's base delay, so nothing is early against what the operator configured.
//!
//! Pure: the caller passes the random sample in, so the sequence is reproducible in tests.

use std::time::Duration;

use crate::RetryError;

/// How delays grow inside a tier, and how much they are spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    factor: f64,
    max: Duration,
    jitter: f64,
}

// The fields are checked finite at construction, so equality is total.
impl Eq for Backoff {}

impl Default for Backoff {
    /// Factor 2, capped at 10 minutes, spread by ±20%.
    fn default() -> Self {
        Self {
            factor: 2.0,
            max: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// A backoff growing by `factor` (at least 1) per attempt inside a tier, capped at `max`
    /// (a cap below a tier's base delay leaves that tier at its base delay), each delay spread
    /// by up to `±jitter` of itself (`0` to below `1`).
    pub fn new(factor: f64, max: Duration, jitter: f64) -> Result<Self, RetryError> {
        let fail = |reason: String| RetryError::BuildBackoff { reason };
        if !factor.is_finite() || factor < 1.0 {
            return Err(fail(format!(
                "factor {factor} must be a number of at least 1 (1 keeps every attempt at the tier's delay)"
            )));
        }
        if !jitter.is_finite() || !(0.0..1.0).contains(&jitter) {
            return Err(fail(format!(
                "jitter {jitter} must be at least 0 and below 1 (0.2 spreads each delay by ±20%)"
            )));
        }
        Ok(Self { factor, max, jitter })
    }

    /// No growth and no spread: every attempt waits exactly the tier's delay.
    pub fn fixed() -> Self {
        Self {
            factor: 1.0,
            max: Duration::ZERO,
            jitter: 0.0,
        }
    }

    /// The growth factor per attempt inside a tier.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The cap of a grown delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The spread, as a fraction of the delay.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The delay before a record is due again in a tier of delay `base`, after its
    /// `attempt_in_tier`-th failure in that tier (0 for the first), before the spread:
    /// `base × factor^attempt_in_tier`, capped at `max`, never below `base`.
    pub fn grown_delay(&self, base: Duration, attempt_in_tier: u32) -> Duration {
        let cap = self.max.max(base);
        let exponent = i32::try_from(attempt_in_tier).unwrap_or(i32::MAX);
        let grown = base.as_secs_f64() * self.factor.powi(exponent);
        if !grown.is_finite() || grown >= cap.as_secs_f64() {
            return cap;
        }
        Duration::try_from_secs_f64(grown).map_or(cap, |grown| grown.max(base))
    }

    /// The delay with the spread applied: `sample` is a uniform random number in `[-1, 1]`
    /// (clamped to it), which moves the delay by up to `±jitter` of itself. Never below `base`.
    pub fn delay(&self, base: Duration, attempt_in_tier: u32, sample: f64) -> Duration {
        let grown = self.grown_delay(base, attempt_in_tier);
        let sample = if sample.is_finite() {
            sample.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let spread = 1.0 + self.jitter * sample;
        Duration::try_from_secs_f64(grown.as_secs_f64() * spread)
            .unwrap_or(grown)
            .max(base)
    }

    /// The shortest and longest delay the spread allows after the `attempt_in_tier`-th
    /// failure in a tier of delay `base`: what the README's schedule shows.
    pub fn delay_bounds(&self, base: Duration, attempt_in_tier: u32) -> (Duration, Duration) {
        (
            self.delay(base, attempt_in_tier, -1.0),
            self.delay(base, attempt_in_tier, 1.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn delays_grow_by_the_factor_up_to_the_cap() {
        let backoff = Backoff::new(2.0, Duration::from_secs(600), 0.0).expect("valid");
        let sequence: Vec<u64> = (0..6).map(|n| backoff.delay(MINUTE, n, 0.0).as_secs()).collect();
        assert_eq!(sequence, vec![60, 120, 240, 480, 600, 600]);
        // Huge attempt counts stay at the cap instead of overflowing.
        assert_eq!(backoff.delay(MINUTE, u32::MAX, 1.0), Duration::from_secs(600));
    }

    #[test]
    fn a_cap_below_the_base_delay_keeps_the_base_delay() {
        let backoff = Backoff::new(3.0, Duration::from_secs(1), 0.5).expect("valid");
        for attempt in 0..4 {
            assert_eq!(backoff.grown_delay(MINUTE, attempt), MINUTE);
            // Spread upwards only, since below would be early.
            assert_eq!(backoff.delay_bounds(MINUTE, attempt), (MINUTE, Duration::from_secs(90)));
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_never_below_the_base_delay() {
        let backoff = Backoff::default();
        for attempt in 0..8 {
            let grown = backoff.grown_delay(MINUTE, attempt).as_secs_f64();
            for step in 0..=40 {
                let sample = -1.0 + f64::from(step) / 20.0;
                let delay = backoff.delay(MINUTE, attempt, sample);
                assert!(delay >= MINUTE, "attempt {attempt} sample {sample}: {delay:?}");
                let seconds = delay.as_secs_f64();
                assert!(
                    seconds >= (grown * 0.8).max(60.0) - 1e-9 && seconds <= grown * 1.2 + 1e-9,
                    "attempt {attempt} sample {sample}: {seconds}"
                );
            }
        }
        // The first attempt can only be spread upwards: below would be early.
        assert_eq!(backoff.delay_bounds(MINUTE, 0), (MINUTE, Duration::from_secs(72)));
        assert_eq!(
            backoff.delay_bounds(MINUTE, 1),
            (Duration::from_secs(96), Duration::from_secs(144))
        );
        // The cap is spread too, so records at the cap still come back apart.
        assert_eq!(
            backoff.delay_bounds(MINUTE, 9),
            (Duration::from_secs(480), Duration::from_secs(720))
        );
        // Out-of-range samples are clamped, not trusted.
        assert_eq!(backoff.delay(MINUTE, 1, 7.0), Duration::from_secs(144));
        assert_eq!(backoff.delay(MINUTE, 1, f64::NAN), Duration::from_secs(120));
    }

    #[test]
    fn fixed_backoff_is_the_tier_delay_every_time() {
        let backoff = Backoff::fixed();
        for attempt in 0..5 {
            assert_eq!(
                backoff.delay(Duration::from_secs(5), attempt, 1.0),
                Duration::from_secs(5)
            );
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_value() {
        for (factor, jitter, expected) in [
            (0.5, 0.2, "factor 0.5"),
            (f64::NAN, 0.2, "factor NaN"),
            (2.0, 1.0, "jitter 1"),
            (2.0, -0.1, "jitter -0.1"),
        ] {
            let error = Backoff::new(factor, MINUTE, jitter).expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
