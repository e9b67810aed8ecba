//! Builds the outgoing copy of a failed record: which topic it goes to and the exact headers it
//! carries there. Consumer and scheduler both route through here, so the header contract is
//! written in exactly one place.

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
}

/// Routes a record that failed processing in the consumer, following the tier policy.
///
/// `previous` is the record's parsed retry history (`None` for a first failure, or when its
/// headers were garbled and the failure is therefore poison).
pub fn failure_dispatch(
    policy: &TierPolicy,
    incoming_headers: &RecordHeaders,
    previous: Option<&RetryContext>,
    location: &RecordLocation,
    failure: &Failure,
    consumer_group: &str,
) -> Dispatch {
    let attempt = previous.map_or(0, |context| context.attempt).saturating_add(1);
    let route = policy.route_after_failure(attempt, failure.kind);
    build_dispatch(
        policy,
        incoming_headers,
        previous,
        location,
        failure,
        consumer_group,
        attempt,
        route,
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
    )
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
            let delay_ms = i64::try_from(tier.delay.as_millis()).unwrap_or(i64::MAX);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_retry_context;

    fn policy() -> TierPolicy {
        TierPolicy::new(TierPolicy::default_tiers(), "dlq", "").expect("valid")
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

    #[test]
    fn permanent_failure_goes_straight_to_dlq() {
        let failure = Failure {
            kind: ErrorKind::Permanent,
            message: "rejected".to_owned(),
            failed_at_ms: 5,
        };
        let dispatch = failure_dispatch(&policy(), &user_headers(), None, &location("notes", 1), &failure, "g");
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
