//! Fuzzes the retry header contract end to end: a structured header set (contract keys with
//! plausible, garbled, duplicated or non-UTF-8 values, mixed with foreign headers) is parsed and
//! routed the way the consumer and the scheduler route it, with any failure kind, clock and
//! location. The routed copy must carry each contract key once, keep every foreign header byte
//! for byte and in order, never go back to an earlier attempt, and parse again unless the
//! incoming record's replay count was already unreadable (which the copy keeps, as documented).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use rebound_retry::{
    ErrorKind, Failure, MAX_ERROR_MESSAGE_BYTES, RecordHeaders, RecordLocation, Route, TierPolicy, contract,
    dead_letter_dispatch, failure_dispatch, parse_retry_context,
};

/// Keys the fuzzer picks from most of the time, so that it reaches the dispatch logic instead of
/// spending its time on keys nobody reads.
const KNOWN_KEYS: [&str; 19] = [
    contract::ATTEMPT,
    contract::TIER,
    contract::DUE_TIMESTAMP,
    contract::ORIGINAL_TOPIC,
    contract::ORIGINAL_PARTITION,
    contract::ORIGINAL_OFFSET,
    contract::ORIGINAL_TIMESTAMP,
    contract::FIRST_FAILURE_TIMESTAMP,
    contract::ERROR_KIND,
    contract::ERROR_MESSAGE,
    contract::REPLAY_COUNT,
    contract::DLQ_ERRORS_TOPIC,
    contract::DLQ_ERRORS_PARTITION,
    contract::DLQ_ERRORS_OFFSET,
    contract::DLQ_ERRORS_GROUP,
    contract::DLQ_ERRORS_DELIVERY_COUNT,
    contract::DLQ_ERRORS_MESSAGE,
    "traceparent",
    "user",
];

const TOPICS: [&str; 5] = ["notes", "retry-5s", "retry-1m", "dlq", ""];

/// One fuzz case: the incoming headers, where the record was read, and how it failed.
#[derive(Debug)]
struct Case {
    headers: RecordHeaders,
    location: RecordLocation,
    failure: Failure,
    /// True: the scheduler's straight-to-DLQ path; false: the consumer's failure routing.
    scheduler: bool,
}

fn value(input: &mut Unstructured<'_>) -> arbitrary::Result<Option<Vec<u8>>> {
    Ok(match input.int_in_range(0..=7u8)? {
        0 => None,
        1 => Some(i64::arbitrary(input)?.to_string().into_bytes()),
        2 => Some(u32::arbitrary(input)?.to_string().into_bytes()),
        3 => Some(i32::arbitrary(input)?.to_string().into_bytes()),
        4 => Some(
            input
                .choose(&["transient", "permanent", "poison", "fatal", ""])?
                .as_bytes()
                .to_vec(),
        ),
        5 => Some(input.choose(&TOPICS)?.as_bytes().to_vec()),
        6 => Some(String::arbitrary(input)?.into_bytes()),
        _ => Some(Vec::<u8>::arbitrary(input)?),
    })
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(input: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut headers = RecordHeaders::new();
        let count = input.int_in_range(0..=24u8)?;
        for _ in 0..count {
            let key = if input.ratio(7u8, 8u8)? {
                (*input.choose(&KNOWN_KEYS)?).to_owned()
            } else {
                String::arbitrary(input)?
            };
            headers.push(key, value(input)?);
        }
        let location = RecordLocation {
            topic: (*input.choose(&TOPICS)?).to_owned(),
            partition: i32::arbitrary(input)?,
            offset: i64::arbitrary(input)?,
            timestamp_ms: Option::<i64>::arbitrary(input)?,
        };
        let kind = *input.choose(&[ErrorKind::Transient, ErrorKind::Permanent, ErrorKind::Poison])?;
        let failure = Failure {
            kind,
            message: String::arbitrary(input)?,
            failed_at_ms: i64::arbitrary(input)?,
        };
        Ok(Self {
            headers,
            location,
            failure,
            scheduler: bool::arbitrary(input)?,
        })
    }
}

fn is_contract_key(key: &str) -> bool {
    contract::FAILURE_HISTORY_KEYS.contains(&key) || contract::DLQ_KEYS.contains(&key)
}

/// The headers a copy must carry over untouched: everything that is not a failure-history or
/// dead-letter key (the replay count and user headers alike).
fn foreign(headers: &RecordHeaders) -> Vec<(String, Option<Vec<u8>>)> {
    headers
        .iter()
        .filter(|header| !is_contract_key(&header.key))
        .map(|header| (header.key.clone(), header.value.clone()))
        .collect()
}

fn replay_count_readable(headers: &RecordHeaders) -> bool {
    let only_replay_count: RecordHeaders = headers
        .iter()
        .filter(|header| header.key == contract::REPLAY_COUNT)
        .cloned()
        .collect();
    parse_retry_context(&only_replay_count).is_ok()
}

fuzz_target!(|case: Case| {
    let policy = TierPolicy::new(TierPolicy::default_tiers(), "dlq", "").expect("default policy");
    let parsed = parse_retry_context(&case.headers);
    // As in the services: garbled history makes the record poison with no trusted history.
    let (previous, failure) = match parsed {
        Ok(previous) => (previous, case.failure.clone()),
        Err(error) => (
            None,
            Failure {
                kind: ErrorKind::Poison,
                message: error.to_string(),
                failed_at_ms: case.failure.failed_at_ms,
            },
        ),
    };
    let dispatch = if case.scheduler {
        dead_letter_dispatch(
            &policy,
            &case.headers,
            previous.as_ref(),
            &case.location,
            &failure,
            "group",
        )
    } else {
        failure_dispatch(
            &policy,
            &case.headers,
            previous.as_ref(),
            &case.location,
            &failure,
            "group",
        )
    };
    let previous_attempt = previous.as_ref().map_or(0, |context| context.attempt);

    for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
        assert!(dispatch.headers.count(key) <= 1, "{key} appears once at most");
    }
    assert_eq!(
        foreign(&dispatch.headers),
        foreign(&case.headers),
        "foreign headers kept"
    );
    assert!(dispatch.attempt >= 1 && dispatch.attempt >= previous_attempt);
    assert!(
        dispatch
            .headers
            .get_str(contract::ERROR_MESSAGE)
            .is_some_and(|message| message.len() <= MAX_ERROR_MESSAGE_BYTES)
    );
    match dispatch.route {
        Route::Tier { index } => {
            assert!(!case.scheduler && failure.kind == ErrorKind::Transient);
            assert_eq!(dispatch.topic, policy.tiers()[index].topic);
            assert!(dispatch.due_timestamp_ms.is_some());
            assert!(dispatch.headers.get(contract::DLQ_ERRORS_TOPIC).is_none());
        }
        Route::DeadLetter => {
            assert_eq!(dispatch.topic, "dlq");
            assert!(dispatch.due_timestamp_ms.is_none());
            assert!(dispatch.headers.get(contract::DUE_TIMESTAMP).is_none());
            assert_eq!(
                dispatch.headers.get_str(contract::DLQ_ERRORS_DELIVERY_COUNT),
                Some(dispatch.attempt.to_string().as_str())
            );
        }
    }
    if replay_count_readable(&case.headers) {
        let reparsed = parse_retry_context(&dispatch.headers)
            .expect("a routed copy's headers parse")
            .expect("a routed copy has a history");
        assert_eq!(reparsed.attempt, dispatch.attempt);
        assert_eq!(reparsed.error_kind, Some(failure.kind));
        assert!(reparsed.original_topic.is_some());
    } else {
        assert_eq!(dispatch.route, Route::DeadLetter, "unreadable replay count is poison");
    }
});
