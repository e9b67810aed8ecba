//! The consumer's circuit breaker, as a pure state machine: it watches the sink's answers over
//! a sliding window and says when to stop feeding the sink (open), when to try one record
//! (probe), when to try a few (half-open) and when to go back to normal (closed).
//!
//! Why: during a sink outage every record fails transiently, walks the tiers and lands in the
//! DLQ, so an hour of downtime becomes an hour of dead letters. With the breaker open the
//! consumer instead pauses its source partitions and holds what it has in hand, so records wait
//! in Kafka and nothing reaches the DLQ because of the outage.
//!
//! Only transient failures count against the sink. A permanent failure is an answer (the sink
//! is up and refused one record) and counts as healthy; poison records never reach the sink and
//! are not reported at all. Time is passed in as the time elapsed since any fixed origin, and
//! randomness as a sample, so every rule is tested without a clock.

use std::collections::VecDeque;
use std::time::Duration;

use crate::RetryError;

/// The thresholds and timings of the breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Opens when at least this share of the attempts in the window failed transiently...
    pub failure_ratio: f64,
    /// ...and the window holds at least this many attempts.
    pub min_attempts: u32,
    /// Opens after this many transient failures in a row, whatever the window says.
    pub consecutive: u32,
    /// The window: at most this many of the latest attempts...
    pub window_attempts: usize,
    /// ...none older than this.
    pub window_time: Duration,
    /// Wait before the first probe once open.
    pub probe_interval: Duration,
    /// Longest wait between probes; each failed probe doubles the wait up to it.
    pub max_probe_interval: Duration,
    /// Spread of each probe wait, as a fraction of it.
    pub probe_jitter: f64,
    /// Records tried together while half-open.
    pub half_open_batch: usize,
}

// Checked finite by `validate`, so equality is total.
impl Eq for BreakerSettings {}

impl Default for BreakerSettings {
    /// 50% of at least 20 attempts, or 10 in a row, over the last 200 attempts or 30 s; probes
    /// every 5 s, backing off to 60 s, spread by ±20%; 10 records while half-open.
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_attempts: 20,
            consecutive: 10,
            window_attempts: 200,
            window_time: Duration::from_secs(30),
            probe_interval: Duration::from_secs(5),
            max_probe_interval: Duration::from_secs(60),
            probe_jitter: 0.2,
            half_open_batch: 10,
        }
    }
}

impl BreakerSettings {
    /// Checks the settings; the error names the setting and what is wrong with it.
    pub fn validate(self) -> Result<Self, RetryError> {
        let fail = |reason: String| Err(RetryError::BuildBreaker { reason });
        if !self.failure_ratio.is_finite() || self.failure_ratio <= 0.0 || self.failure_ratio > 1.0 {
            return fail(format!(
                "failure ratio {} must be above 0 and at most 1 (0.5 opens at half the attempts failing)",
                self.failure_ratio
            ));
        }
        if self.min_attempts == 0 {
            return fail("minimum attempts must be at least 1".to_owned());
        }
        if self.consecutive == 0 {
            return fail("consecutive failures must be at least 1".to_owned());
        }
        if self.window_attempts < self.min_attempts as usize {
            return fail(format!(
                "the window of {} attempts cannot hold the minimum of {} attempts",
                self.window_attempts, self.min_attempts
            ));
        }
        if self.probe_interval.is_zero() {
            return fail("probe interval must be above 0".to_owned());
        }
        if self.max_probe_interval < self.probe_interval {
            return fail(format!(
                "the longest probe interval {:?} is below the probe interval {:?}",
                self.max_probe_interval, self.probe_interval
            ));
        }
        if !self.probe_jitter.is_finite() || !(0.0..1.0).contains(&self.probe_jitter) {
            return fail(format!(
                "probe jitter {} must be at least 0 and below 1",
                self.probe_jitter
            ));
        }
        if self.half_open_batch == 0 {
            return fail("the half-open batch must hold at least 1 record".to_owned());
        }
        Ok(self)
    }
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Records flow to the sink; failures are routed to the tiers.
    Closed,
    /// A probe succeeded; a small batch decides whether to close.
    HalfOpen,
    /// The sink is down: source partitions paused, records in hand held, one probe at a time.
    Open,
}

impl BreakerState {
    /// The value of the `rebound_consumer_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    /// The state's name in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// What the sink made of one record, as far as its health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkAttempt {
    /// The sink answered: applied, or refused for good (permanent).
    Answered,
    /// A transient failure: down, overloaded, timed out.
    FailedTransiently,
}

/// A change of state, with why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTransition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why, for the log line.
    pub reason: String,
    /// For a transition to open: how long until the next probe.
    pub next_probe_in: Option<Duration>,
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// The window's attempts, oldest first: when, and whether it failed transiently.
    window: VecDeque<(Duration, bool)>,
    failures_in_window: usize,
    consecutive_failures: u32,
    /// Failed probes (and half-open batches) since the breaker opened; sets the probe backoff.
    failed_probes: u32,
    next_probe_at: Duration,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: BreakerState::Closed,
            window: VecDeque::new(),
            failures_in_window: 0,
            consecutive_failures: 0,
            failed_probes: 0,
            next_probe_at: Duration::ZERO,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the next probe is due, while open.
    pub fn next_probe_at(&self) -> Option<Duration> {
        (self.state == BreakerState::Open).then_some(self.next_probe_at)
    }

    /// True when open and the next probe is due at `now`.
    pub fn probe_due(&self, now: Duration) -> bool {
        self.state == BreakerState::Open && now >= self.next_probe_at
    }

    /// How many held records to try together while half-open.
    pub fn half_open_batch(&self) -> usize {
        self.settings.half_open_batch
    }

    /// The answers of a batch applied while closed. Opens the breaker when the window crosses
    /// a threshold; `sample` (uniform in `[-1, 1]`) spreads the first probe. Ignored unless
    /// closed: probes and half-open batches report through their own calls.
    pub fn record(
        &mut self,
        now: Duration,
        attempts: impl IntoIterator<Item = SinkAttempt>,
        sample: f64,
    ) -> Option<BreakerTransition> {
        if self.state != BreakerState::Closed {
            return None;
        }
        for attempt in attempts {
            let failed = attempt == SinkAttempt::FailedTransiently;
            self.window.push_back((now, failed));
            if failed {
                self.failures_in_window += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            } else {
                self.consecutive_failures = 0;
            }
            while self.window.len() > self.settings.window_attempts {
                self.drop_oldest();
            }
        }
        let oldest_kept = now.saturating_sub(self.settings.window_time);
        while self.window.front().is_some_and(|(at, _)| *at < oldest_kept) {
            self.drop_oldest();
        }
        let attempts = self.window.len();
        let reason = if self.consecutive_failures >= self.settings.consecutive {
            format!("{} transient failures in a row", self.consecutive_failures)
        } else if attempts >= self.settings.min_attempts as usize
            && self.failures_in_window as f64 >= self.settings.failure_ratio * attempts as f64
        {
            format!(
                "{} of the last {attempts} attempts failed transiently (threshold {:.0}% of at least {})",
                self.failures_in_window,
                self.settings.failure_ratio * 100.0,
                self.settings.min_attempts
            )
        } else {
            return None;
        };
        self.failed_probes = 0;
        let wait = self.probe_wait(sample);
        Some(self.open(now, wait, reason))
    }

    /// Opens the breaker because the sink asked for a pause (`Retry-After`): no probe before
    /// `not_before` from `now`, nor before the probe interval. Already open, it only moves the
    /// next probe later.
    pub fn hold_for(&mut self, now: Duration, not_before: Duration, reason: String) -> Option<BreakerTransition> {
        let wait = not_before.max(self.settings.probe_interval);
        if self.state == BreakerState::Open {
            self.next_probe_at = self.next_probe_at.max(now.saturating_add(wait));
            return None;
        }
        self.failed_probes = 0;
        Some(self.open(now, wait, reason))
    }

    /// The outcome of a probe (one held record tried while open). Answered: half-open.
    /// Failed: stays open, and the next probe waits twice as long, up to the longest interval.
    pub fn record_probe(&mut self, now: Duration, attempt: SinkAttempt, sample: f64) -> Option<BreakerTransition> {
        if self.state != BreakerState::Open {
            return None;
        }
        match attempt {
            SinkAttempt::Answered => {
                Some(self.transition(BreakerState::HalfOpen, "a probe reached the sink".to_owned(), None))
            }
            SinkAttempt::FailedTransiently => {
                self.failed_probes = self.failed_probes.saturating_add(1);
                let wait = self.probe_wait(sample);
                self.next_probe_at = now.saturating_add(wait);
                None
            }
        }
    }

    /// The outcome of the half-open batch. Fewer transient failures than the failure ratio
    /// (none of one record, say, or 1 of 10 at the default 50%): closed, with a fresh window; a
    /// record that fails on its own is then routed to its tier as usual rather than keep the
    /// breaker open. Otherwise: open again, probing with the backoff of a failed probe.
    pub fn record_half_open(
        &mut self,
        now: Duration,
        attempts: impl IntoIterator<Item = SinkAttempt>,
        sample: f64,
    ) -> Option<BreakerTransition> {
        if self.state != BreakerState::HalfOpen {
            return None;
        }
        let mut tried = 0_usize;
        let mut failed = 0_usize;
        for attempt in attempts {
            tried += 1;
            if attempt == SinkAttempt::FailedTransiently {
                failed += 1;
            }
        }
        if (failed as f64) < self.settings.failure_ratio * tried as f64 || tried == 0 {
            return Some(self.close(format!(
                "{} of {tried} records of the half-open batch reached the sink",
                tried - failed
            )));
        }
        self.failed_probes = self.failed_probes.saturating_add(1);
        let wait = self.probe_wait(sample);
        Some(self.open(
            now,
            wait,
            format!("{failed} of {tried} records of the half-open batch failed transiently"),
        ))
    }

    /// Closes the breaker whatever its state, with a fresh window: when nothing is left to probe
    /// with (every held record was settled), or the half-open batch went well.
    pub fn close(&mut self, reason: String) -> BreakerTransition {
        self.window.clear();
        self.failures_in_window = 0;
        self.consecutive_failures = 0;
        self.failed_probes = 0;
        self.transition(BreakerState::Closed, reason, None)
    }

    /// The wait before the next probe after `failed_probes` failures: the interval doubled per
    /// failure, capped, then spread by the jitter (never beyond the cap's spread).
    fn probe_wait(&self, sample: f64) -> Duration {
        let exponent = i32::try_from(self.failed_probes).unwrap_or(i32::MAX);
        let grown = self.settings.probe_interval.as_secs_f64() * 2_f64.powi(exponent);
        let capped = grown.min(self.settings.max_probe_interval.as_secs_f64());
        let sample = if sample.is_finite() {
            sample.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        Duration::try_from_secs_f64(capped * (1.0 + self.settings.probe_jitter * sample))
            .unwrap_or(self.settings.max_probe_interval)
    }

    fn open(&mut self, now: Duration, wait: Duration, reason: String) -> BreakerTransition {
        self.next_probe_at = now.saturating_add(wait);
        self.transition(BreakerState::Open, reason, Some(wait))
    }

    fn transition(&mut self, to: BreakerState, reason: String, next_probe_in: Option<Duration>) -> BreakerTransition {
        let from = self.state;
        self.state = to;
        BreakerTransition {
            from,
            to,
            reason,
            next_probe_in,
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((_, failed)) = self.window.pop_front()
            && failed
        {
            self.failures_in_window -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SinkAttempt::{Answered, FailedTransiently};

    fn seconds(value: u64) -> Duration {
        Duration::from_secs(value)
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings::default())
    }

    fn opened_at(now: Duration) -> CircuitBreaker {
        let mut breaker = breaker();
        let transition = breaker
            .record(now, [FailedTransiently; 10], 0.0)
            .expect("ten in a row open it");
        assert_eq!(transition.to, BreakerState::Open);
        breaker
    }

    #[test]
    fn default_settings_are_valid_and_the_documented_ones() {
        let settings = BreakerSettings::default().validate().expect("valid");
        assert_eq!(
            (settings.failure_ratio, settings.min_attempts, settings.consecutive),
            (0.5, 20, 10)
        );
        assert_eq!(settings.probe_interval, seconds(5));
        assert_eq!(settings.max_probe_interval, seconds(60));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_setting() {
        let default = BreakerSettings::default();
        let cases = [
            (
                BreakerSettings {
                    failure_ratio: 0.0,
                    ..default
                },
                "failure ratio 0",
            ),
            (
                BreakerSettings {
                    failure_ratio: 1.5,
                    ..default
                },
                "failure ratio 1.5",
            ),
            (
                BreakerSettings {
                    min_attempts: 0,
                    ..default
                },
                "minimum attempts",
            ),
            (
                BreakerSettings {
                    consecutive: 0,
                    ..default
                },
                "consecutive",
            ),
            (
                BreakerSettings {
                    min_attempts: 500,
                    ..default
                },
                "cannot hold the minimum of 500",
            ),
            (
                BreakerSettings {
                    probe_interval: Duration::ZERO,
                    ..default
                },
                "probe interval must be above 0",
            ),
            (
                BreakerSettings {
                    probe_interval: seconds(120),
                    ..default
                },
                "below the probe interval",
            ),
        ];
        for (settings, expected) in cases {
            let error = settings.validate().expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn ten_transient_failures_in_a_row_open_it() {
        let mut breaker = breaker();
        assert_eq!(breaker.record(seconds(1), [FailedTransiently; 9], 0.0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
        let transition = breaker.record(seconds(1), [FailedTransiently], 0.0).expect("opens");
        assert_eq!(
            (transition.from, transition.to),
            (BreakerState::Closed, BreakerState::Open)
        );
        assert!(
            transition.reason.contains("10 transient failures in a row"),
            "{}",
            transition.reason
        );
        assert_eq!(transition.next_probe_in, Some(seconds(5)));
        assert_eq!(breaker.next_probe_at(), Some(seconds(6)));
    }

    #[test]
    fn an_answer_breaks_the_run_of_failures() {
        let mut breaker = breaker();
        let mut attempts = vec![FailedTransiently; 9];
        attempts.push(Answered);
        attempts.extend([FailedTransiently; 9]);
        assert_eq!(breaker.record(seconds(1), attempts, 0.0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn half_of_at_least_twenty_attempts_open_it() {
        let mut breaker = breaker();
        // 9 failures among 18 attempts: below the minimum of attempts.
        let alternating: Vec<SinkAttempt> = (0..18)
            .map(|index| if index % 2 == 0 { FailedTransiently } else { Answered })
            .collect();
        assert_eq!(breaker.record(seconds(1), alternating, 0.0), None);
        // 19 attempts, 9 failed: below half.
        assert_eq!(breaker.record(seconds(1), [Answered], 0.0), None);
        // 20 attempts, 10 failed: exactly half opens it.
        let transition = breaker.record(seconds(1), [FailedTransiently], 0.0).expect("opens");
        assert!(
            transition.reason.contains("10 of the last 20 attempts"),
            "{}",
            transition.reason
        );
    }

    #[test]
    fn the_window_forgets_attempts_older_than_its_time_and_beyond_its_count() {
        let mut breaker = breaker();
        // Nine failures long ago, then answers: the old failures leave the 30 s window.
        assert_eq!(breaker.record(seconds(0), [FailedTransiently; 9], 0.0), None);
        assert_eq!(breaker.record(seconds(31), [Answered; 11], 0.0), None);
        // 9 failures now among 20 attempts in the window: not half.
        assert_eq!(breaker.record(seconds(31), [FailedTransiently; 9], 0.0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
        // The count bound: 200 answers push earlier failures out.
        let mut breaker = breaker_with_ratio(0.05);
        assert_eq!(breaker.record(seconds(0), [FailedTransiently; 9], 0.0), None);
        assert_eq!(breaker.record(seconds(1), [Answered; 200], 0.0), None);
        let mut nine = vec![FailedTransiently; 5];
        nine.push(Answered);
        nine.extend([FailedTransiently; 4]);
        assert_eq!(breaker.record(seconds(1), nine, 0.0), None, "9 of 200");
        let transition = breaker.record(seconds(1), [FailedTransiently], 0.0).expect("10 of 200");
        assert!(
            transition.reason.contains("10 of the last 200"),
            "{}",
            transition.reason
        );
    }

    fn breaker_with_ratio(failure_ratio: f64) -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            failure_ratio,
            ..BreakerSettings::default()
        })
    }

    #[test]
    fn thirty_percent_random_failures_never_open_it() {
        // A fixed pseudo-random sequence: 30% transient failures, 10,000 attempts in batches.
        let mut breaker = breaker();
        let mut state: u64 = 42;
        let mut failed = 0;
        for batch in 0..100_u64 {
            let attempts: Vec<SinkAttempt> = (0..100)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    if (state >> 33) % 100 < 30 {
                        failed += 1;
                        FailedTransiently
                    } else {
                        Answered
                    }
                })
                .collect();
            assert_eq!(breaker.record(Duration::from_millis(batch * 100), attempts, 0.0), None);
        }
        assert!((2_700..3_300).contains(&failed), "{failed}");
    }

    #[test]
    fn permanent_answers_never_open_it() {
        let mut breaker = breaker();
        assert_eq!(breaker.record(seconds(1), [Answered; 1000], 0.0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn no_probe_before_the_interval_and_failed_probes_back_off_to_a_minute() {
        let mut breaker = opened_at(seconds(100));
        assert!(!breaker.probe_due(seconds(104)));
        assert!(breaker.probe_due(seconds(105)));
        let mut now = seconds(105);
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert_eq!(breaker.record_probe(now, FailedTransiently, 0.0), None);
            let next = breaker.next_probe_at().expect("open");
            waits.push((next - now).as_secs());
            assert!(!breaker.probe_due(next - Duration::from_millis(1)));
            now = next;
        }
        assert_eq!(waits, vec![10, 20, 40, 60, 60, 60]);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn probe_waits_are_spread_within_the_jitter() {
        for sample in [-1.0, -0.5, 0.0, 0.5, 1.0] {
            let mut breaker = breaker();
            let transition = breaker
                .record(seconds(0), [FailedTransiently; 10], sample)
                .expect("opens");
            let first = transition.next_probe_in.expect("probe").as_secs_f64();
            assert!((4.0..=6.0).contains(&first), "{first}");
            let mut now = breaker.next_probe_at().expect("open");
            for _ in 0..8 {
                breaker.record_probe(now, FailedTransiently, sample);
                let next = breaker.next_probe_at().expect("open");
                let wait = (next - now).as_secs_f64();
                assert!((3.99..=72.0).contains(&wait), "{wait}");
                now = next;
            }
            // At the cap, the wait is 60 s spread by ±20%.
            let expected = 60.0 * (1.0 + 0.2 * sample);
            breaker.record_probe(now, FailedTransiently, sample);
            let wait = (breaker.next_probe_at().expect("open") - now).as_secs_f64();
            assert!((wait - expected).abs() < 1e-6, "{wait} vs {expected}");
        }
    }

    #[test]
    fn a_successful_probe_half_opens_and_a_good_batch_closes_with_a_fresh_window() {
        let mut breaker = opened_at(seconds(0));
        let half_open = breaker.record_probe(seconds(5), Answered, 0.0).expect("half-opens");
        assert_eq!(
            (half_open.from, half_open.to),
            (BreakerState::Open, BreakerState::HalfOpen)
        );
        assert_eq!(breaker.half_open_batch(), 10);
        // Batches applied while half-open are not the window's business.
        assert_eq!(breaker.record(seconds(5), [FailedTransiently; 50], 0.0), None);
        let closed = breaker
            .record_half_open(seconds(6), [Answered; 10], 0.0)
            .expect("closes");
        assert_eq!((closed.from, closed.to), (BreakerState::HalfOpen, BreakerState::Closed));
        assert_eq!(breaker.next_probe_at(), None);
        // The failures before the outage ended are forgotten: nine more do not reopen it.
        assert_eq!(breaker.record(seconds(7), [FailedTransiently; 9], 0.0), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failing_half_open_batch_reopens_with_the_probe_backoff() {
        let mut breaker = opened_at(seconds(0));
        breaker.record_probe(seconds(5), Answered, 0.0).expect("half-opens");
        let reopened = breaker
            .record_half_open(seconds(6), [Answered, FailedTransiently, FailedTransiently], 0.0)
            .expect("reopens");
        assert_eq!(
            (reopened.from, reopened.to),
            (BreakerState::HalfOpen, BreakerState::Open)
        );
        assert!(reopened.reason.contains("2 of 3"), "{}", reopened.reason);
        assert_eq!(reopened.next_probe_in, Some(seconds(10)));
        assert!(breaker.probe_due(seconds(16)));
        // A probe outcome while closed or half-open, or a half-open outcome while open, is no
        // transition.
        assert_eq!(breaker.record_half_open(seconds(16), [Answered], 0.0), None);
        assert_eq!(
            CircuitBreaker::new(BreakerSettings::default()).record_probe(seconds(1), Answered, 0.0),
            None
        );
    }

    #[test]
    fn one_record_failing_on_its_own_does_not_keep_the_breaker_open() {
        let mut breaker = opened_at(seconds(0));
        breaker.record_probe(seconds(5), Answered, 0.0).expect("half-opens");
        let mut batch = vec![Answered; 9];
        batch.push(FailedTransiently);
        let closed = breaker.record_half_open(seconds(6), batch, 0.0).expect("closes");
        assert_eq!(closed.to, BreakerState::Closed);
        assert!(closed.reason.contains("9 of 10"), "{}", closed.reason);
        // Nothing left to try: closing is the only way on.
        let mut breaker = opened_at(seconds(0));
        let closed = breaker.close("nothing held".to_owned());
        assert_eq!((closed.from, closed.to), (BreakerState::Open, BreakerState::Closed));
        assert!(!breaker.probe_due(seconds(100)));
    }

    #[test]
    fn retry_after_holds_the_breaker_open_at_least_that_long() {
        let mut breaker = breaker();
        let transition = breaker
            .hold_for(seconds(10), seconds(120), "sink asked to retry after 120s".to_owned())
            .expect("opens");
        assert_eq!(transition.to, BreakerState::Open);
        assert_eq!(transition.next_probe_in, Some(seconds(120)));
        assert!(!breaker.probe_due(seconds(129)));
        assert!(breaker.probe_due(seconds(130)));
        // A shorter Retry-After still waits the probe interval; while open it only delays.
        let mut breaker = self::breaker();
        breaker
            .hold_for(seconds(0), seconds(1), "short".to_owned())
            .expect("opens");
        assert_eq!(breaker.next_probe_at(), Some(seconds(5)));
        assert_eq!(breaker.hold_for(seconds(1), seconds(30), "longer".to_owned()), None);
        assert_eq!(breaker.next_probe_at(), Some(seconds(31)));
    }

    #[test]
    fn the_gauge_values_are_the_documented_ones() {
        assert_eq!(BreakerState::Closed.gauge_value(), 0);
        assert_eq!(BreakerState::HalfOpen.gauge_value(), 1);
        assert_eq!(BreakerState::Open.gauge_value(), 2);
    }
}
