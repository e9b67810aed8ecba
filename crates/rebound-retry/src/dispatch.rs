//! Builds the outgoing copy of a failed record: which topic it goes to and the exact headers it
//! carries there. Consumer and scheduler both route through here, so the header contract is
//! written in exactly one place.

use std::time::Duration;

use crate::headers::contract;
use crate::{ErrorKind, Failure, RecordHeaders, RetryContext, Route, TierPolicy, truncate_error_message};

/// Where a record was consumed: topic, partition, offset and Kafka timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLocation {
    /// Topic the record was read from.
    pub topic: String,
    /// Partition the record was read from.
    pub partition: i32,
    /// Offset of the record.
    pub offset: i64,
    /// The record's Kafka timestamp in epoch milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
}

/// The copy of a failed record to produce: target topic and headers. Key and value are the
/// original record's, byte for byte, and are not repeated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// Topic to produce the copy to.
    pub topic: String,
    /// Full header set of the copy: the original user headers plus the contract's.
    pub headers: RecordHeaders,
    /// Whether the copy goes to a tier or to the DLQ.
    pub route: Route,
    /// Failed attempts including this one.
    pub attempt: u32,
    /// For a tier, the epoch milliseconds at which the record is due again.
    pub due_timestamp_ms: Option<i64>,
    /// Kind of this failure.
    pub kind: ErrorKind,
    /// What the copy carries of the original record: all of it, except for a stub.
    pub carries: Carries,
}

/// What a copy carries of the original record's key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// Key and value, byte for byte: every ordinary copy.
    KeyAndValue,
    /// The key only: a dead-letter stub whose record did not fit in the DLQ.
    KeyOnly,
    /// Neither: a stub whose key was too large to keep as well.
    Nothing,
}

impl Dispatch {
    /// The key the copy is produced with.
    pub fn copy_key(&self, key: Option<&[u8]>) -> Option<Vec<u8>> {
        match self.carries {
            Carries::KeyAndValue | Carries::KeyOnly => key.map(<[u8]>::to_vec),
            Carries::Nothing => None,
        }
    }

    /// The value the copy is produced with.
    pub fn copy_value(&self, value: Option<&[u8]>) -> Option<Vec<u8>> {
        match self.carries {
            Carries::KeyAndValue => value.map(<[u8]>::to_vec),
            Carries::KeyOnly | Carries::Nothing => None,
        }
    }

    /// True for a dead-letter stub, which cannot be cut down any further.
    pub fn is_stub(&self) -> bool {
        self.carries != Carries::KeyAndValue
    }
}

/// What decides a tier copy's due time besides its tier: the random sample that spreads it,
/// and how long the sink asked to wait.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DueTiming {
    /// A uniform random number in `[-1, 1]`, spreading the delay by the policy's jitter.
    pub jitter_sample: f64,
    /// The sink's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

/// Longest key a dead-letter stub keeps; a longer one is dropped and its size recorded.
pub const STUB_MAX_KEY_BYTES: usize = 1024;
/// Most bytes (keys plus values) of other headers a stub keeps, in order; the rest are dropped
/// and counted. With the contract's own values capped, a stub stays well under 32 KiB.
pub const STUB_MAX_OTHER_HEADER_BYTES: usize = 16 * 1024;
/// Longest contract value a stub copies; only a garbled history has longer ones.
const STUB_MAX_CONTRACT_VALUE_BYTES: usize = 1024;

/// Routes a record that failed processing in the consumer, following the tier policy.
///
/// `previous` is the record's parsed retry history (`None` for a first failure, or when its
/// headers were garbled and the failure is therefore poison).
///
/// A tier copy is due after the tier's delay grown by the policy's backoff for the record's
/// attempt within the tier and spread by `timing.jitter_sample`, never before the tier's delay.
/// A `Retry-After` longer than the tier's delay skips to the first later tier whose delay
/// covers it (the last tier if none does), and the copy is never due before it.
pub fn failure_dispatch(
    policy: &TierPolicy,
    incoming_headers: &RecordHeaders,
    previous: Option<&RetryContext>,
    location: &RecordLocation,
    failure: &Failure,
    consumer_group: &str,
    timing: DueTiming,
) -> Dispatch {
    let mut attempt = previous.map_or(0, |context| context.attempt).saturating_add(1);
    let mut route = policy.route_after_failure(attempt, failure.kind);
    if let (Route::Tier { index }, Some(wait)) = (&route, timing.retry_after) {
        let index = *index;
        if wait > policy.tiers()[index].delay {
            let covering = policy.tiers()[index..]
                .iter()
                .position(|tier| tier.delay >= wait)
                .map_or(policy.tiers().len() - 1, |offset| index + offset);
            if covering > index {
                // Attempt counts only grow: the skipped tiers' attempts count as spent.
                attempt = attempt.max(policy.first_attempt_of_tier(covering));
                route = Route::Tier { index: covering };
            }
        }
    }
    build_dispatch(
        policy,
        incoming_headers,
        previous,
        location,
        failure,
        consumer_group,
        attempt,
        route,
        timing,
    )
}

/// Sends a record straight to the DLQ whatever its history, as the scheduler does with a tier
/// record it cannot route back (garbled or missing retry headers).
pub fn dead_letter_dispatch(
    policy: &TierPolicy,
    incoming_headers: &RecordHeaders,
    previous: Option<&RetryContext>,
    location: &RecordLocation,
    failure: &Failure,
    consumer_group: &str,
) -> Dispatch {
    let attempt = previous.map_or(0, |context| context.attempt).max(1);
    build_dispatch(
        policy,
        incoming_headers,
        previous,
        location,
        failure,
        consumer_group,
        attempt,
        Route::DeadLetter,
        DueTiming::default(),
    )
}

/// Sends a record that was parked behind `blocker` (its key's record that was dead-lettered,
/// named by its original location) to the DLQ after it, untried, so the key's order holds
/// (`--on-dead-key dlq`): kind `blocked-by-key`, and `retry.blocked.by.*` naming the blocker.
pub fn blocked_by_key_dispatch(
    policy: &TierPolicy,
    incoming_headers: &RecordHeaders,
    previous: Option<&RetryContext>,
    location: &RecordLocation,
    blocker: (&str, i32, i64),
    consumer_group: &str,
    failed_at_ms: i64,
) -> Dispatch {
    let (blocker_topic, blocker_partition, blocker_offset) = blocker;
    let failure = Failure {
        kind: ErrorKind::BlockedByKey,
        message: format!(
            "not tried: an earlier record of its key ({blocker_topic}/{blocker_partition}@{blocker_offset}) was dead-lettered"
        ),
        failed_at_ms,
    };
    let mut dispatch = build_dispatch(
        policy,
        incoming_headers,
        previous,
        location,
        &failure,
        consumer_group,
        previous.map_or(0, |context| context.attempt),
        Route::DeadLetter,
        DueTiming::default(),
    );
    dispatch.headers.set(contract::BLOCKED_BY_TOPIC, blocker_topic);
    dispatch
        .headers
        .set(contract::BLOCKED_BY_PARTITION, blocker_partition.to_string());
    dispatch
        .headers
        .set(contract::BLOCKED_BY_OFFSET, blocker_offset.to_string());
    dispatch
}

#[expect(
    clippy::too_many_arguments,
    reason = "private helper shared by the two public entry points"
)]
fn build_dispatch(
    policy: &TierPolicy,
    incoming_headers: &RecordHeaders,
    previous: Option<&RetryContext>,
    location: &RecordLocation,
    failure: &Failure,
    consumer_group: &str,
    attempt: u32,
    route: Route,
    timing: DueTiming,
) -> Dispatch {
    // The first failure fixes where the record came from; later hops keep it. A history
    // without an original topic is not trusted for the rest of its location either.
    let trusted_original = previous.filter(|context| context.original_topic.is_some());
    let original_topic = trusted_original
        .and_then(|context| context.original_topic.clone())
        .unwrap_or_else(|| location.topic.clone());
    let (original_partition, original_offset, original_timestamp_ms) = match trusted_original {
        Some(context) => (
            context.original_partition.unwrap_or(location.partition),
            context.original_offset.unwrap_or(location.offset),
            context.original_timestamp_ms.or(location.timestamp_ms),
        ),
        None => (location.partition, location.offset, location.timestamp_ms),
    };
    let first_failure_timestamp_ms = previous
        .and_then(|context| context.first_failure_timestamp_ms)
        .unwrap_or(failure.failed_at_ms);
    let message = truncate_error_message(&failure.message);

    let mut headers = incoming_headers.clone();
    // Every failure-history key is rewritten from scratch, which also drops garbled copies and
    // duplicates; user headers and the replay count are left as they are.
    for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
        headers.remove(key);
    }
    headers.set(contract::ATTEMPT, attempt.to_string());
    headers.set(contract::ORIGINAL_TOPIC, original_topic.as_str());
    headers.set(contract::ORIGINAL_PARTITION, original_partition.to_string());
    headers.set(contract::ORIGINAL_OFFSET, original_offset.to_string());
    if let Some(timestamp_ms) = original_timestamp_ms {
        headers.set(contract::ORIGINAL_TIMESTAMP, timestamp_ms.to_string());
    }
    headers.set(
        contract::FIRST_FAILURE_TIMESTAMP,
        first_failure_timestamp_ms.to_string(),
    );
    headers.set(contract::ERROR_KIND, failure.kind.as_str());
    headers.set(contract::ERROR_MESSAGE, message);

    let (topic, due_timestamp_ms) = match route {
        Route::Tier { index } => {
            let tier = &policy.tiers()[index];
            let delay = policy
                .backoff()
                .delay(
                    tier.delay,
                    policy.attempt_within_tier(attempt, index),
                    timing.jitter_sample,
                )
                .max(timing.retry_after.unwrap_or_default());
            let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            let due = failure.failed_at_ms.saturating_add(delay_ms);
            headers.set(contract::TIER, tier.topic.as_str());
            headers.set(contract::DUE_TIMESTAMP, due.to_string());
            (tier.topic.clone(), Some(due))
        }
        Route::DeadLetter => {
            if let Some(last_tier) = previous.and_then(|context| context.tier.as_deref()) {
                headers.set(contract::TIER, last_tier);
            }
            headers.set(contract::DLQ_ERRORS_TOPIC, original_topic.as_str());
            headers.set(contract::DLQ_ERRORS_PARTITION, original_partition.to_string());
            headers.set(contract::DLQ_ERRORS_OFFSET, original_offset.to_string());
            headers.set(contract::DLQ_ERRORS_GROUP, consumer_group);
            headers.set(contract::DLQ_ERRORS_DELIVERY_COUNT, attempt.to_string());
            headers.set(contract::DLQ_ERRORS_MESSAGE, message);
            (policy.dead_letter_topic().to_owned(), None)
        }
    };
    Dispatch {
        topic,
        headers,
        route,
        attempt,
        due_timestamp_ms,
        kind: failure.kind,
        carries: Carries::KeyAndValue,
    }
}

/// The dead letter to send instead of a copy that Kafka refused as too large: a bounded *stub*.
///
/// A copy adds headers to a record, so a record close to the message size limit can fit in its
/// source topic and still not fit in a tier or the DLQ (or a DLQ configured with a smaller limit
/// refuses it). Retrying such a copy can never succeed and would hold its partition forever, so
/// it goes to the DLQ as a stub instead: the contract history of `refused` (kind `poison`, the
/// message saying why), without the value, with the key only if it is at most
/// [`STUB_MAX_KEY_BYTES`], and with other headers in order up to [`STUB_MAX_OTHER_HEADER_BYTES`].
/// `retry.dropped.value.bytes`, `retry.dropped.key.bytes` and `retry.dropped.headers` say what
/// was left out; the original record is still at its `retry.original.*` location.
///
/// `incoming_headers` are the headers of the record as consumed: when `refused` was a tier copy,
/// the tier the record last went through is read from them.
pub fn oversized_stub(
    policy: &TierPolicy,
    refused: &Dispatch,
    incoming_headers: &RecordHeaders,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    refusal: &str,
    consumer_group: &str,
) -> Dispatch {
    let contract_value = |headers: &RecordHeaders, contract_key: &str| {
        headers
            .get_str(contract_key)
            .map(|text| cut_at_char_boundary(text, STUB_MAX_CONTRACT_VALUE_BYTES).to_owned())
    };
    let is_contract_key = |header_key: &str| {
        contract::FAILURE_HISTORY_KEYS.contains(&header_key) || contract::DLQ_KEYS.contains(&header_key)
    };

    let mut headers = RecordHeaders::new();
    let mut other_bytes = 0usize;
    let mut dropped_headers = 0usize;
    for header in refused.headers.iter().filter(|header| !is_contract_key(&header.key)) {
        let size = header.key.len() + header.value.as_ref().map_or(0, Vec::len);
        if other_bytes.saturating_add(size) <= STUB_MAX_OTHER_HEADER_BYTES {
            other_bytes += size;
            headers.push(header.key.clone(), header.value.clone());
        } else {
            dropped_headers += 1;
        }
    }
    for contract_key in [
        contract::ATTEMPT,
        contract::ORIGINAL_TOPIC,
        contract::ORIGINAL_PARTITION,
        contract::ORIGINAL_OFFSET,
        contract::ORIGINAL_TIMESTAMP,
        contract::FIRST_FAILURE_TIMESTAMP,
    ] {
        if let Some(text) = contract_value(&refused.headers, contract_key) {
            headers.set(contract_key, text);
        }
    }
    let last_tier = match refused.route {
        Route::DeadLetter => contract_value(&refused.headers, contract::TIER),
        Route::Tier { .. } => contract_value(incoming_headers, contract::TIER),
    };
    if let Some(tier) = last_tier {
        headers.set(contract::TIER, tier);
    }
    let original_topic = contract_value(&refused.headers, contract::ORIGINAL_TOPIC).unwrap_or_default();
    let original_partition = contract_value(&refused.headers, contract::ORIGINAL_PARTITION).unwrap_or_default();
    let original_offset = contract_value(&refused.headers, contract::ORIGINAL_OFFSET).unwrap_or_default();
    let keeps_key = key.is_none_or(|key| key.len() <= STUB_MAX_KEY_BYTES);
    let message = format!(
        "copy refused as too large by {}: {refusal}; dead-lettered as a stub without its value{}, \
         the record is at {original_topic}[{original_partition}]@{original_offset}; it failed with: {}",
        refused.topic,
        if keeps_key { "" } else { " and key" },
        refused.headers.get_str(contract::ERROR_MESSAGE).unwrap_or_default(),
    );
    let message = truncate_error_message(&message);
    headers.set(contract::ERROR_KIND, ErrorKind::Poison.as_str());
    headers.set(contract::ERROR_MESSAGE, message);
    headers.set(contract::DLQ_ERRORS_TOPIC, original_topic.as_str());
    headers.set(contract::DLQ_ERRORS_PARTITION, original_partition.as_str());
    headers.set(contract::DLQ_ERRORS_OFFSET, original_offset.as_str());
    headers.set(contract::DLQ_ERRORS_GROUP, consumer_group);
    headers.set(contract::DLQ_ERRORS_DELIVERY_COUNT, refused.attempt.to_string());
    headers.set(contract::DLQ_ERRORS_MESSAGE, message);
    if let Some(value) = value {
        headers.set(contract::DROPPED_VALUE_BYTES, value.len().to_string());
    }
    if let Some(key) = key.filter(|_| !keeps_key) {
        headers.set(contract::DROPPED_KEY_BYTES, key.len().to_string());
    }
    if dropped_headers > 0 {
        headers.set(contract::DROPPED_HEADERS, dropped_headers.to_string());
    }
    Dispatch {
        topic: policy.dead_letter_topic().to_owned(),
        headers,
        route: Route::DeadLetter,
        attempt: refused.attempt,
        due_timestamp_ms: None,
        kind: ErrorKind::Poison,
        carries: if keeps_key { Carries::KeyOnly } else { Carries::Nothing },
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_retry_context;

    fn policy() -> TierPolicy {
        TierPolicy::new(TierPolicy::default_tiers(), "dlq", "").expect("valid")
    }

    #[test]
    fn a_record_parked_behind_a_dead_letter_follows_it_naming_it() {
        let mut headers = RecordHeaders::new();
        headers.push("traceparent", Some(b"00-abc".to_vec()));
        let dispatch = blocked_by_key_dispatch(
            &policy(),
            &headers,
            None,
            &location("notes", 9),
            ("notes", 2, 5),
            "rebound-consumer",
            1_000,
        );
        assert_eq!(dispatch.topic, "dlq");
        assert_eq!(dispatch.route, Route::DeadLetter);
        assert_eq!(dispatch.kind, ErrorKind::BlockedByKey);
        assert_eq!(dispatch.headers.get_str(contract::ERROR_KIND), Some("blocked-by-key"));
        assert_eq!(dispatch.headers.get_str(contract::BLOCKED_BY_TOPIC), Some("notes"));
        assert_eq!(dispatch.headers.get_str(contract::BLOCKED_BY_PARTITION), Some("2"));
        assert_eq!(dispatch.headers.get_str(contract::BLOCKED_BY_OFFSET), Some("5"));
        assert_eq!(dispatch.headers.get_str(contract::ORIGINAL_OFFSET), Some("9"));
        assert_eq!(dispatch.headers.get_str(contract::DLQ_ERRORS_OFFSET), Some("9"));
        assert_eq!(dispatch.headers.get_str(contract::ATTEMPT), Some("0"));
        assert_eq!(dispatch.headers.get_str("traceparent"), Some("00-abc"));
        // The DLQ tooling reads it back.
        let context = parse_retry_context(&dispatch.headers)
            .expect("parses")
            .expect("history");
        assert_eq!(context.error_kind, Some(ErrorKind::BlockedByKey));
        // Dead-letter-only keys: a later copy rewrites them from scratch.
        assert!(contract::DLQ_KEYS.contains(&contract::BLOCKED_BY_OFFSET));
    }

    fn location(topic: &str, offset: i64) -> RecordLocation {
        RecordLocation {
            topic: topic.to_owned(),
            partition: 2,
            offset,
            timestamp_ms: Some(1_000),
        }
    }

    fn transient(at: i64) -> Failure {
        Failure {
            kind: ErrorKind::Transient,
            message: "sink timed out".to_owned(),
            failed_at_ms: at,
        }
    }

    fn user_headers() -> RecordHeaders {
        let mut headers = RecordHeaders::new();
        headers.push("traceparent", Some(b"00-trace".to_vec()));
        headers.push("null-header", None);
        headers
    }

    #[test]
    fn first_transient_failure_goes_to_first_tier_with_full_history() {
        let dispatch = failure_dispatch(
            &policy(),
            &user_headers(),
            None,
            &location("notes", 7),
            &transient(10_000),
            "g",
            DueTiming::default(),
        );
        assert_eq!(dispatch.topic, "retry-5s");
        assert_eq!(dispatch.attempt, 1);
        assert_eq!(dispatch.due_timestamp_ms, Some(15_000));
        let headers = &dispatch.headers;
        assert_eq!(headers.get_str(contract::ATTEMPT), Some("1"));
        assert_eq!(headers.get_str(contract::TIER), Some("retry-5s"));
        assert_eq!(headers.get_str(contract::DUE_TIMESTAMP), Some("15000"));
        assert_eq!(headers.get_str(contract::ORIGINAL_TOPIC), Some("notes"));
        assert_eq!(headers.get_str(contract::ORIGINAL_PARTITION), Some("2"));
        assert_eq!(headers.get_str(contract::ORIGINAL_OFFSET), Some("7"));
        assert_eq!(headers.get_str(contract::ORIGINAL_TIMESTAMP), Some("1000"));
        assert_eq!(headers.get_str(contract::FIRST_FAILURE_TIMESTAMP), Some("10000"));
        assert_eq!(headers.get_str(contract::ERROR_KIND), Some("transient"));
        assert_eq!(headers.get_str("traceparent"), Some("00-trace"));
        assert!(headers.get("null-header").is_some_and(|header| header.value.is_none()));
        assert!(headers.get(contract::DLQ_ERRORS_TOPIC).is_none());
    }

    #[test]
    fn later_hops_keep_the_original_location_and_first_failure() {
        let policy = policy();
        let first = failure_dispatch(
            &policy,
            &user_headers(),
            None,
            &location("notes", 7),
            &transient(10_000),
            "g",
            DueTiming::default(),
        );
        let history = parse_retry_context(&first.headers).expect("valid").expect("present");
        // The scheduler republished it to `notes` at a new offset; it fails again.
        let second = failure_dispatch(
            &policy,
            &first.headers,
            Some(&history),
            &location("notes", 99),
            &transient(16_000),
            "g",
            DueTiming::default(),
        );
        assert_eq!(second.topic, "retry-1m");
        assert_eq!(second.headers.get_str(contract::ORIGINAL_OFFSET), Some("7"));
        assert_eq!(second.headers.get_str(contract::FIRST_FAILURE_TIMESTAMP), Some("10000"));
        assert_eq!(second.headers.get_str(contract::DUE_TIMESTAMP), Some("76000"));
        let history = parse_retry_context(&second.headers).expect("valid").expect("present");
        let third = failure_dispatch(
            &policy,
            &second.headers,
            Some(&history),
            &location("notes", 150),
            &transient(77_000),
            "group-a",
            DueTiming::default(),
        );
        assert_eq!(third.topic, "dlq");
        assert_eq!(third.route, Route::DeadLetter);
        let headers = &third.headers;
        assert_eq!(headers.get_str(contract::ATTEMPT), Some("3"));
        assert_eq!(headers.get_str(contract::TIER), Some("retry-1m"));
        assert!(headers.get(contract::DUE_TIMESTAMP).is_none());
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_TOPIC), Some("notes"));
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_OFFSET), Some("7"));
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_GROUP), Some("group-a"));
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_DELIVERY_COUNT), Some("3"));
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_MESSAGE), Some("sink timed out"));
        // Headers do not grow with hops: every contract key appears exactly once.
        for key in contract::FAILURE_HISTORY_KEYS
            .iter()
            .filter(|key| **key != contract::DUE_TIMESTAMP)
        {
            assert_eq!(headers.count(key), 1, "{key}");
        }
        assert_eq!(headers.len(), first.headers.len() + 6 - 1 /* due timestamp */);
    }

    fn three_tiers() -> TierPolicy {
        let tier = |topic: &str, seconds: u64, attempts: u32| crate::Tier {
            topic: topic.to_owned(),
            delay: Duration::from_secs(seconds),
            attempts,
        };
        TierPolicy::new(
            vec![
                tier("retry-5s", 5, 1),
                tier("retry-1m", 60, 3),
                tier("retry-10m", 600, 1),
            ],
            "dlq",
            "",
        )
        .expect("valid")
    }

    fn dispatch_after(policy: &TierPolicy, previous_attempt: u32, timing: DueTiming) -> Dispatch {
        let mut headers = user_headers();
        let history = (previous_attempt > 0).then(|| {
            headers.set(contract::ATTEMPT, previous_attempt.to_string());
            headers.set(contract::ORIGINAL_TOPIC, "notes");
            parse_retry_context(&headers).expect("valid").expect("present")
        });
        failure_dispatch(
            policy,
            &headers,
            history.as_ref(),
            &location("notes", 7),
            &transient(0),
            "g",
            timing,
        )
    }

    #[test]
    fn due_times_grow_inside_a_tier_and_are_spread_never_below_its_delay() {
        let policy =
            three_tiers().with_backoff(crate::Backoff::new(2.0, Duration::from_secs(150), 0.2).expect("valid"));
        let due = |previous_attempt: u32, sample: f64| {
            let timing = DueTiming {
                jitter_sample: sample,
                retry_after: None,
            };
            let dispatch = dispatch_after(&policy, previous_attempt, timing);
            (dispatch.topic, dispatch.due_timestamp_ms.expect("tier"))
        };
        // retry-1m takes attempts 2, 3 and 4: 60 s, 120 s, then capped at 150 s.
        assert_eq!(due(1, 0.0), ("retry-1m".to_owned(), 60_000));
        assert_eq!(due(2, 0.0), ("retry-1m".to_owned(), 120_000));
        assert_eq!(due(3, 0.0), ("retry-1m".to_owned(), 150_000));
        // The next tier starts again from its own delay.
        assert_eq!(due(4, 0.0), ("retry-10m".to_owned(), 600_000));
        // Spread: never below the tier's delay, up to +20%; later attempts also below.
        assert_eq!(due(1, -1.0).1, 60_000);
        assert_eq!(due(1, 1.0).1, 72_000);
        assert_eq!(due(2, -1.0).1, 96_000);
        assert_eq!(due(3, 1.0).1, 180_000);
    }

    #[test]
    fn a_long_retry_after_skips_to_the_first_tier_that_covers_it() {
        let policy = three_tiers();
        let with_retry_after = |previous_attempt: u32, seconds: u64| {
            let timing = DueTiming {
                jitter_sample: 0.0,
                retry_after: Some(Duration::from_secs(seconds)),
            };
            let dispatch = dispatch_after(&policy, previous_attempt, timing);
            (
                dispatch.topic,
                dispatch.attempt,
                dispatch.due_timestamp_ms.expect("tier"),
            )
        };
        // Shorter than the tier's delay: the tier as usual.
        assert_eq!(with_retry_after(0, 3), ("retry-5s".to_owned(), 1, 5_000));
        // 30 s: retry-5s is too short, retry-1m covers it; the skipped attempts count as spent.
        assert_eq!(with_retry_after(0, 30), ("retry-1m".to_owned(), 2, 60_000));
        // 5 min: only retry-10m covers it.
        assert_eq!(with_retry_after(0, 300), ("retry-10m".to_owned(), 5, 600_000));
        // An hour: nothing covers it; the last tier, due no earlier than asked.
        assert_eq!(with_retry_after(2, 3600), ("retry-10m".to_owned(), 5, 3_600_000));
        // Already in the last tier, the attempt count stays (it never goes back).
        let last = dispatch_after(
            &policy,
            5,
            DueTiming {
                jitter_sample: 0.0,
                retry_after: Some(Duration::from_secs(3600)),
            },
        );
        assert_eq!(
            last.route,
            Route::DeadLetter,
            "attempts used up: the DLQ, as without it"
        );
        assert_eq!(last.attempt, 6);
    }

    #[test]
    fn permanent_failure_goes_straight_to_dlq() {
        let failure = Failure {
            kind: ErrorKind::Permanent,
            message: "rejected".to_owned(),
            failed_at_ms: 5,
        };
        let dispatch = failure_dispatch(
            &policy(),
            &user_headers(),
            None,
            &location("notes", 1),
            &failure,
            "g",
            DueTiming::default(),
        );
        assert_eq!(dispatch.topic, "dlq");
        assert_eq!(dispatch.headers.get_str(contract::ERROR_KIND), Some("permanent"));
        assert!(dispatch.headers.get(contract::TIER).is_none());
    }

    #[test]
    fn poison_with_garbled_headers_replaces_them_with_a_fresh_history() {
        let mut garbled = user_headers();
        garbled.push(contract::ATTEMPT, Some(b"abc".to_vec()));
        garbled.push(contract::ATTEMPT, Some(b"-1".to_vec()));
        garbled.push(contract::REPLAY_COUNT, Some(b"2".to_vec()));
        let failure = Failure {
            kind: ErrorKind::Poison,
            message: "failed to parse retry header retry.attempt".to_owned(),
            failed_at_ms: 5,
        };
        let dispatch = dead_letter_dispatch(&policy(), &garbled, None, &location("retry-5s", 3), &failure, "s");
        assert_eq!(dispatch.topic, "dlq");
        assert_eq!(dispatch.headers.count(contract::ATTEMPT), 1);
        assert_eq!(dispatch.headers.get_str(contract::ATTEMPT), Some("1"));
        assert_eq!(
            dispatch.headers.get_str(contract::REPLAY_COUNT),
            Some("2"),
            "replay count survives"
        );
        assert_eq!(dispatch.headers.get_str(contract::ORIGINAL_TOPIC), Some("retry-5s"));
    }

    fn header_bytes(headers: &RecordHeaders) -> usize {
        headers
            .iter()
            .map(|header| header.key.len() + header.value.as_ref().map_or(0, Vec::len))
            .sum()
    }

    #[test]
    fn a_refused_tier_copy_becomes_a_bounded_dead_letter_stub() {
        let policy = policy();
        let mut incoming = user_headers();
        incoming.push("big", Some(vec![0xAB; STUB_MAX_OTHER_HEADER_BYTES]));
        incoming.push("after-big", Some(b"small".to_vec()));
        let tier_copy = failure_dispatch(
            &policy,
            &incoming,
            None,
            &location("notes", 7),
            &transient(10_000),
            "g",
            DueTiming::default(),
        );
        assert_eq!(tier_copy.topic, "retry-5s");
        let value = vec![0u8; 1_000_000];
        let stub = oversized_stub(
            &policy,
            &tier_copy,
            &incoming,
            Some(b"note-1"),
            Some(&value),
            "Broker: Message size too large",
            "g",
        );
        assert_eq!(stub.topic, "dlq");
        assert_eq!(stub.route, Route::DeadLetter);
        assert_eq!(stub.kind, ErrorKind::Poison);
        assert!(stub.is_stub());
        assert_eq!(stub.copy_key(Some(b"note-1")), Some(b"note-1".to_vec()));
        assert_eq!(stub.copy_value(Some(&value)), None);
        let headers = &stub.headers;
        assert_eq!(headers.get_str(contract::DROPPED_VALUE_BYTES), Some("1000000"));
        assert_eq!(
            headers.get_str(contract::DROPPED_HEADERS),
            Some("1"),
            "only the big header"
        );
        assert!(headers.get(contract::DROPPED_KEY_BYTES).is_none());
        assert_eq!(headers.get_str("traceparent"), Some("00-trace"));
        assert_eq!(
            headers.get_str("after-big"),
            Some("small"),
            "later small headers still fit"
        );
        assert!(headers.get("big").is_none());
        assert!(headers.get(contract::TIER).is_none(), "it never went through a tier");
        assert!(headers.get(contract::DUE_TIMESTAMP).is_none());
        assert_eq!(headers.get_str(contract::ERROR_KIND), Some("poison"));
        let message = headers.get_str(contract::ERROR_MESSAGE).expect("message");
        assert!(
            message.starts_with("copy refused as too large by retry-5s"),
            "{message}"
        );
        assert!(
            message.contains("notes[2]@7") && message.contains("sink timed out"),
            "{message}"
        );
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_OFFSET), Some("7"));
        assert_eq!(headers.get_str(contract::DLQ_ERRORS_DELIVERY_COUNT), Some("1"));
        let history = parse_retry_context(headers).expect("valid").expect("present");
        assert_eq!(history.attempt, 1);
        assert_eq!(history.original_topic.as_deref(), Some("notes"));
        assert_eq!(history.first_failure_timestamp_ms, Some(10_000));
        for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
            assert!(headers.count(key) <= 1, "{key}");
        }
    }

    #[test]
    fn a_stub_drops_a_huge_key_and_caps_garbled_contract_values() {
        let policy = policy();
        let mut incoming = RecordHeaders::new();
        incoming.set(contract::ATTEMPT, "1");
        incoming.set(contract::TIER, "retry-5s");
        incoming.set(contract::ORIGINAL_TOPIC, "t".repeat(300_000));
        for index in 0..5000 {
            incoming.push(format!("h{index}"), Some(vec![0xFF; 8]));
        }
        let history = parse_retry_context(&incoming).expect("valid").expect("present");
        let failure = Failure {
            kind: ErrorKind::Poison,
            message: "republish refused".to_owned(),
            failed_at_ms: 5,
        };
        let dead_letter = dead_letter_dispatch(
            &policy,
            &incoming,
            Some(&history),
            &location("retry-5s", 3),
            &failure,
            "s",
        );
        let key = vec![b'k'; STUB_MAX_KEY_BYTES + 1];
        let stub = oversized_stub(&policy, &dead_letter, &incoming, Some(&key), None, "too large", "s");
        assert_eq!(stub.carries, Carries::Nothing);
        assert_eq!(stub.copy_key(Some(&key)), None);
        let headers = &stub.headers;
        assert_eq!(headers.get_str(contract::DROPPED_KEY_BYTES), Some("1025"));
        assert!(
            headers.get(contract::DROPPED_VALUE_BYTES).is_none(),
            "there was no value"
        );
        assert_eq!(
            headers.get_str(contract::TIER),
            Some("retry-5s"),
            "the tier it went through"
        );
        assert!(
            headers
                .get_str(contract::DROPPED_HEADERS)
                .is_some_and(|count| count.parse::<usize>().is_ok_and(|count| count > 3000))
        );
        assert!(header_bytes(headers) < 32 * 1024, "{} bytes", header_bytes(headers));
    }

    #[test]
    fn rerouting_or_replaying_a_stub_forgets_what_it_dropped() {
        let policy = policy();
        let permanent = Failure {
            kind: ErrorKind::Permanent,
            message: "rejected".to_owned(),
            failed_at_ms: 5,
        };
        let refused = failure_dispatch(
            &policy,
            &user_headers(),
            None,
            &location("notes", 1),
            &permanent,
            "g",
            DueTiming::default(),
        );
        let stub = oversized_stub(
            &policy,
            &refused,
            &user_headers(),
            Some(b"k"),
            Some(b"v"),
            "too large",
            "g",
        );
        let again = failure_dispatch(
            &policy,
            &stub.headers,
            None,
            &location("notes", 9),
            &permanent,
            "g",
            DueTiming::default(),
        );
        assert!(again.headers.get(contract::DROPPED_VALUE_BYTES).is_none());
        assert!(!again.is_stub());
    }

    #[test]
    fn long_messages_are_truncated_in_both_message_headers() {
        let failure = Failure {
            kind: ErrorKind::Permanent,
            message: "x".repeat(5000),
            failed_at_ms: 5,
        };
        let dispatch = failure_dispatch(
            &policy(),
            &RecordHeaders::new(),
            None,
            &location("notes", 1),
            &failure,
            "g",
            DueTiming::default(),
        );
        assert_eq!(
            dispatch.headers.get_str(contract::ERROR_MESSAGE).map(str::len),
            Some(1024)
        );
        assert_eq!(
            dispatch.headers.get_str(contract::DLQ_ERRORS_MESSAGE).map(str::len),
            Some(1024)
        );
    }
}
