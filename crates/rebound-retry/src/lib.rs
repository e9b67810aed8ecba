//! The pure retry logic of rebound: which tier a failed record goes to next, the header contract
//! that carries a record's retry history between topics, and the classification of failures.
//!
//! Nothing in this crate does I/O, reads a clock or knows about Kafka clients: callers pass the
//! current time and the record's headers in, and get topics and headers out. That keeps every
//! routing rule unit-testable and identical in the consumer, the scheduler and the admin CLI.

mod backoff;
mod breaker;
mod classification;
mod dispatch;
mod dlq;
mod headers;
mod key_order;
mod policy;
mod replay_ledger;

pub use backoff::Backoff;
pub use breaker::{BreakerSettings, BreakerState, BreakerTransition, CircuitBreaker, SinkAttempt};
pub use classification::{ErrorKind, Failure, MAX_ERROR_MESSAGE_BYTES, truncate_error_message};
pub use dispatch::{
    Carries, Dispatch, DueTiming, RecordLocation, STUB_MAX_KEY_BYTES, STUB_MAX_OTHER_HEADER_BYTES,
    blocked_by_key_dispatch, dead_letter_dispatch, failure_dispatch, oversized_stub,
};
pub use dlq::{ErrorFingerprint, ReplayPlan, ReplayRefusal, TimeBound, error_fingerprint, plan_replay};
pub use headers::{Header, RecordHeaders, RetryContext, contract, parse_retry_context};
pub use key_order::{
    Admission, DeadKey, KeyOrder, OnDeadKey, Released, RestoredEntry, SourceKey, StateEntryKey, StateWrite,
    blocked_entry_key, parked_entry_key, parse_blocker_offset, parse_state_entry_key,
};
pub use policy::{Route, Tier, TierPolicy, apply_topic_prefix, parse_duration, parse_tier_spec};
pub use replay_ledger::{DlqBacklog, ReplayLedger, ReplayMarker, parse_replay_marker_key, replay_marker_key};

/// Everything that can go wrong in the pure retry logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// A `NAME:DELAY[:ATTEMPTS]` tier specification could not be parsed.
    #[error("failed to parse tier {spec:?}: {reason}")]
    ParseTierSpec {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration such as `250ms`, `5s` or `1m` could not be parsed.
    #[error("failed to parse duration {input:?}: {reason}")]
    ParseDuration {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backoff inside a tier (`--backoff-factor`, `--backoff-max`, `--backoff-jitter`) is
    /// not usable.
    #[error("failed to build backoff: {reason}")]
    BuildBackoff {
        /// What is wrong with it.
        reason: String,
    },
    /// The circuit breaker's thresholds or timings are not usable.
    #[error("failed to build circuit breaker: {reason}")]
    BuildBreaker {
        /// What is wrong with them.
        reason: String,
    },
    /// The tiers and DLQ topic do not form a usable policy.
    #[error("failed to build retry policy: {reason}")]
    BuildPolicy {
        /// What is wrong with the policy.
        reason: String,
    },
    /// A record carries `retry.*` headers that break the header contract.
    #[error("failed to parse retry header {key}: {reason}")]
    ParseRetryHeader {
        /// The header key at fault.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An error kind name is not one of `transient`, `permanent`, `poison`, `blocked-by-key`.
    #[error("failed to parse error kind {input:?}: expected transient, permanent, poison or blocked-by-key")]
    ParseErrorKind {
        /// The text as given.
        input: String,
    },
    /// An entry of the per-key order state topic has a key (or value) rebound does not write.
    #[error("failed to parse state entry {key:?}: {reason}")]
    ParseStateEntryKey {
        /// The entry's key (or what was read), lossily decoded and cut to 256 bytes.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A time bound such as `2h` (ago) or `2025-11-28T10:00:00Z` could not be parsed.
    #[error("failed to parse time {input:?}: {reason}")]
    ParseTimeBound {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}
