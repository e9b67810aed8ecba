//! Fuzzes the retry header contract: arbitrary header sets are parsed, and whatever parses is
//! routed; the routed copy must itself parse, carry each contract key once, and never go back
//! to an earlier attempt.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rebound_retry::{
    ErrorKind, Failure, RecordHeaders, RecordLocation, TierPolicy, contract, failure_dispatch, parse_retry_context,
};

/// Splits the input into headers: each is `key \0 value \n`, a missing value is a null header.
fn headers_from(data: &[u8]) -> RecordHeaders {
    let mut headers = RecordHeaders::new();
    for entry in data.split(|byte| *byte == b'\n').take(64) {
        let mut parts = entry.splitn(2, |byte| *byte == 0);
        let key = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        headers.push(key, parts.next().map(<[u8]>::to_vec));
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let headers = headers_from(data);
    let Ok(previous) = parse_retry_context(&headers) else {
        return;
    };
    let policy = TierPolicy::new(TierPolicy::default_tiers(), "dlq", "").expect("default policy");
    let location = RecordLocation {
        topic: "notes".to_owned(),
        partition: 0,
        offset: 1,
        timestamp_ms: Some(1),
    };
    let failure = Failure {
        kind: ErrorKind::Transient,
        message: "fuzz".to_owned(),
        failed_at_ms: 1_000,
    };
    let dispatch = failure_dispatch(&policy, &headers, previous.as_ref(), &location, &failure, "group");
    let reparsed = parse_retry_context(&dispatch.headers)
        .expect("a routed copy's headers parse")
        .expect("a routed copy has a history");
    assert!(reparsed.attempt >= previous.map_or(0, |context| context.attempt));
    for key in contract::FAILURE_HISTORY_KEYS {
        assert!(dispatch.headers.count(key) <= 1, "{key} appears once at most");
    }
});
