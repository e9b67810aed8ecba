//! The retry header contract: the `retry.*` headers that carry a record's retry history from
//! topic to topic, and the KIP-1191 `__dlq.errors.*` headers on dead letters.
//!
//! Values are UTF-8, numbers are decimal strings, and each key appears at most once: writers
//! replace a key, never append a second copy, so headers cannot grow with every hop.

use crate::{ErrorKind, RetryError};

/// The header keys of the contract, in one place.
pub mod contract {
    /// Failed processing attempts so far (1 after the first failure).
    pub const ATTEMPT: &str = "retry.attempt";
    /// The tier topic the record last went through.
    pub const TIER: &str = "retry.tier";
    /// Epoch milliseconds before which the record must not be redelivered.
    pub const DUE_TIMESTAMP: &str = "retry.due.timestamp";
    /// Topic the record was first consumed from (set once).
    pub const ORIGINAL_TOPIC: &str = "retry.original.topic";
    /// Partition the record was first consumed from (set once).
    pub const ORIGINAL_PARTITION: &str = "retry.original.partition";
    /// Offset the record was first consumed at (set once).
    pub const ORIGINAL_OFFSET: &str = "retry.original.offset";
    /// Kafka timestamp of the record when first consumed, epoch milliseconds (set once).
    pub const ORIGINAL_TIMESTAMP: &str = "retry.original.timestamp";
    /// Epoch milliseconds of the first failure (set once).
    pub const FIRST_FAILURE_TIMESTAMP: &str = "retry.first.failure.timestamp";
    /// `transient`, `permanent`, `poison` or `blocked-by-key`.
    pub const ERROR_KIND: &str = "retry.error.kind";
    /// The last error, truncated to 1024 bytes.
    pub const ERROR_MESSAGE: &str = "retry.error.message";
    /// How many times the record was replayed from the DLQ (kept across every hop).
    pub const REPLAY_COUNT: &str = "retry.replay.count";

    /// KIP-1191: topic the failed record came from.
    pub const DLQ_ERRORS_TOPIC: &str = "__dlq.errors.topic";
    /// KIP-1191: partition the failed record came from.
    pub const DLQ_ERRORS_PARTITION: &str = "__dlq.errors.partition";
    /// KIP-1191: offset of the failed record.
    pub const DLQ_ERRORS_OFFSET: &str = "__dlq.errors.offset";
    /// KIP-1191: consumer group that gave up on the record.
    pub const DLQ_ERRORS_GROUP: &str = "__dlq.errors.group";
    /// KIP-1191: how many times the record was delivered and failed.
    pub const DLQ_ERRORS_DELIVERY_COUNT: &str = "__dlq.errors.delivery.count";
    /// KIP-1191: the last error.
    pub const DLQ_ERRORS_MESSAGE: &str = "__dlq.errors.message";

    /// Every key that describes one failure history. Replay count is not among them: it counts
    /// redrives from the DLQ and must survive a new failure history.
    pub const FAILURE_HISTORY_KEYS: [&str; 10] = [
        ATTEMPT,
        TIER,
        DUE_TIMESTAMP,
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        FIRST_FAILURE_TIMESTAMP,
        ERROR_KIND,
        ERROR_MESSAGE,
    ];

    /// On a dead-letter stub: size in bytes of the value the stub does not carry.
    pub const DROPPED_VALUE_BYTES: &str = "retry.dropped.value.bytes";
    /// On a dead-letter stub: size in bytes of the key the stub does not carry.
    pub const DROPPED_KEY_BYTES: &str = "retry.dropped.key.bytes";
    /// On a dead-letter stub: how many other headers the stub does not carry.
    pub const DROPPED_HEADERS: &str = "retry.dropped.headers";

    /// On a `blocked-by-key` dead letter: topic of the key's record that was dead-lettered
    /// first (its original topic), which this record was parked behind.
    pub const BLOCKED_BY_TOPIC: &str = "retry.blocked.by.topic";
    /// On a `blocked-by-key` dead letter: that record's original partition.
    pub const BLOCKED_BY_PARTITION: &str = "retry.blocked.by.partition";
    /// On a `blocked-by-key` dead letter: that record's original offset.
    pub const BLOCKED_BY_OFFSET: &str = "retry.blocked.by.offset";

    /// On an entry of the per-key order state topic for a parked record: the record's own key
    /// (the entry's Kafka key names the entry).
    pub const PARKED_KEY: &str = "retry.parked.key";
    /// On a parked record's state entry: the record's Kafka timestamp, epoch milliseconds.
    pub const PARKED_TIMESTAMP: &str = "retry.parked.timestamp";

    /// Stands in, in its place, for a foreign header whose key is not valid UTF-8: the Kafka
    /// client cannot read such a key, so neither it nor its value can be carried over.
    pub const UNREADABLE_HEADER: &str = "retry.unreadable.header";

    /// The keys written only on dead letters: KIP-1191's, and the stub's account of what it
    /// dropped. Every copy of a record rewrites them from scratch, and a replay removes them.
    pub const DLQ_KEYS: [&str; 12] = [
        DLQ_ERRORS_TOPIC,
        DLQ_ERRORS_PARTITION,
        DLQ_ERRORS_OFFSET,
        DLQ_ERRORS_GROUP,
        DLQ_ERRORS_DELIVERY_COUNT,
        DLQ_ERRORS_MESSAGE,
        DROPPED_VALUE_BYTES,
        DROPPED_KEY_BYTES,
        DROPPED_HEADERS,
        BLOCKED_BY_TOPIC,
        BLOCKED_BY_PARTITION,
        BLOCKED_BY_OFFSET,
    ];
}

/// One record header. Kafka allows a header without a value, hence the `Option`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value bytes, or `None` for a null value.
    pub value: Option<Vec<u8>>,
}

/// A record's headers, in order, independent of any Kafka client library.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeaders {
    headers: Vec<Header>,
}

impl RecordHeaders {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header at the end, keeping any existing header of the same key. Used only to
    /// mirror what arrived from Kafka; contract keys are written with [`RecordHeaders::set`].
    pub fn push(&mut self, key: impl Into<String>, value: Option<Vec<u8>>) {
        self.headers.push(Header { key: key.into(), value });
    }

    /// Sets `key` to `value`, replacing every earlier header of that key.
    pub fn set(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        self.remove(key);
        self.headers.push(Header {
            key: key.to_owned(),
            value: Some(value.into()),
        });
    }

    /// Removes every header of that key.
    pub fn remove(&mut self, key: &str) {
        self.headers.retain(|header| header.key != key);
    }

    /// The value of the first header with that key.
    pub fn get(&self, key: &str) -> Option<&Header> {
        self.headers.iter().find(|header| header.key == key)
    }

    /// How many headers carry that key.
    pub fn count(&self, key: &str) -> usize {
        self.headers.iter().filter(|header| header.key == key).count()
    }

    /// All headers in order.
    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.headers.iter()
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The value of a header as UTF-8 text, if it is present, single and valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|header| header.value.as_deref())
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

impl FromIterator<Header> for RecordHeaders {
    fn from_iter<T: IntoIterator<Item = Header>>(iter: T) -> Self {
        Self {
            headers: iter.into_iter().collect(),
        }
    }
}

/// The retry history a record carries, parsed from its `retry.*` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryContext {
    /// Failed attempts so far.
    pub attempt: u32,
    /// The tier topic the record last went through.
    pub tier: Option<String>,
    /// Epoch milliseconds before which the record must not be redelivered.
    pub due_timestamp_ms: Option<i64>,
    /// Topic the record was first consumed from.
    pub original_topic: Option<String>,
    /// Partition the record was first consumed from.
    pub original_partition: Option<i32>,
    /// Offset the record was first consumed at.
    pub original_offset: Option<i64>,
    /// Kafka timestamp of the record when first consumed.
    pub original_timestamp_ms: Option<i64>,
    /// Epoch milliseconds of the first failure.
    pub first_failure_timestamp_ms: Option<i64>,
    /// Kind of the last failure.
    pub error_kind: Option<ErrorKind>,
    /// Message of the last failure.
    pub error_message: Option<String>,
    /// Redrives from the DLQ so far.
    pub replay_count: u32,
}

/// Reads the retry history from a record's headers.
///
/// Returns `Ok(None)` for a record that has never failed (no failure-history header present),
/// and an error naming the header when a `retry.*` header is duplicated, null, not UTF-8 or not
/// a number where a number is due: such a record is poison, since no rule can route it safely.
pub fn parse_retry_context(headers: &RecordHeaders) -> Result<Option<RetryContext>, RetryError> {
    let replay_count = parse_number::<u32>(headers, contract::REPLAY_COUNT)?.unwrap_or(0);
    if !contract::FAILURE_HISTORY_KEYS.iter().any(|key| headers.count(key) > 0) {
        return Ok(if replay_count > 0 {
            Some(RetryContext {
                replay_count,
                ..RetryContext::default()
            })
        } else {
            None
        });
    }
    let attempt = parse_number::<u32>(headers, contract::ATTEMPT)?.unwrap_or(0);
    let error_kind = match parse_text(headers, contract::ERROR_KIND)? {
        None => None,
        Some(text) => Some(
            text.parse::<ErrorKind>()
                .map_err(|error| RetryError::ParseRetryHeader {
                    key: contract::ERROR_KIND.to_owned(),
                    reason: error.to_string(),
                })?,
        ),
    };
    Ok(Some(RetryContext {
        attempt,
        tier: parse_text(headers, contract::TIER)?.map(str::to_owned),
        due_timestamp_ms: parse_number::<i64>(headers, contract::DUE_TIMESTAMP)?,
        original_topic: parse_text(headers, contract::ORIGINAL_TOPIC)?.map(str::to_owned),
        original_partition: parse_number::<i32>(headers, contract::ORIGINAL_PARTITION)?,
        original_offset: parse_number::<i64>(headers, contract::ORIGINAL_OFFSET)?,
        original_timestamp_ms: parse_number::<i64>(headers, contract::ORIGINAL_TIMESTAMP)?,
        first_failure_timestamp_ms: parse_number::<i64>(headers, contract::FIRST_FAILURE_TIMESTAMP)?,
        error_kind,
        error_message: parse_text(headers, contract::ERROR_MESSAGE)?.map(str::to_owned),
        replay_count,
    }))
}

fn parse_text<'headers>(headers: &'headers RecordHeaders, key: &str) -> Result<Option<&'headers str>, RetryError> {
    let fail = |reason: &str| RetryError::ParseRetryHeader {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    match headers.count(key) {
        0 => return Ok(None),
        1 => {}
        count => return Err(fail(&format!("appears {count} times; the contract allows one"))),
    }
    let value = headers
        .get(key)
        .and_then(|header| header.value.as_deref())
        .ok_or_else(|| fail("has a null value"))?;
    std::str::from_utf8(value)
        .map(Some)
        .map_err(|_| fail(&format!("is not valid UTF-8 ({} bytes)", value.len())))
}

fn parse_number<T: std::str::FromStr>(headers: &RecordHeaders, key: &str) -> Result<Option<T>, RetryError> {
    match parse_text(headers, key)? {
        None => Ok(None),
        Some(text) => text.parse::<T>().map(Some).map_err(|_| RetryError::ParseRetryHeader {
            key: key.to_owned(),
            reason: format!(
                "{:?} is not a valid {}",
                truncate_for_message(text),
                std::any::type_name::<T>()
            ),
        }),
    }
}

/// Keeps error messages about garbled headers short even when the header is huge.
fn truncate_for_message(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> RecordHeaders {
        pairs
            .iter()
            .map(|(key, value)| Header {
                key: (*key).to_owned(),
                value: Some(value.as_bytes().to_vec()),
            })
            .collect()
    }

    #[test]
    fn record_without_retry_headers_has_no_context() {
        let plain = headers(&[("traceparent", "00-abc"), ("user", "x")]);
        assert_eq!(parse_retry_context(&plain), Ok(None));
    }

    #[test]
    fn full_context_parses() {
        let parsed = parse_retry_context(&headers(&[
            (contract::ATTEMPT, "2"),
            (contract::TIER, "retry-1m"),
            (contract::DUE_TIMESTAMP, "1700000060000"),
            (contract::ORIGINAL_TOPIC, "notes"),
            (contract::ORIGINAL_PARTITION, "3"),
            (contract::ORIGINAL_OFFSET, "42"),
            (contract::ORIGINAL_TIMESTAMP, "1699999999000"),
            (contract::FIRST_FAILURE_TIMESTAMP, "1700000000000"),
            (contract::ERROR_KIND, "transient"),
            (contract::ERROR_MESSAGE, "sink timed out"),
        ]))
        .expect("valid")
        .expect("present");
        assert_eq!(parsed.attempt, 2);
        assert_eq!(parsed.original_topic.as_deref(), Some("notes"));
        assert_eq!(parsed.original_partition, Some(3));
        assert_eq!(parsed.original_offset, Some(42));
        assert_eq!(parsed.error_kind, Some(ErrorKind::Transient));
        assert_eq!(parsed.due_timestamp_ms, Some(1_700_000_060_000));
    }

    #[test]
    fn garbled_headers_are_errors_naming_the_key() {
        let cases: Vec<(RecordHeaders, &str)> = vec![
            (headers(&[(contract::ATTEMPT, "abc")]), "retry.attempt"),
            (headers(&[(contract::ATTEMPT, "-1")]), "retry.attempt"),
            (
                headers(&[(contract::ATTEMPT, "1"), (contract::ATTEMPT, "2")]),
                "appears 2 times",
            ),
            (headers(&[(contract::ERROR_KIND, "fatal")]), "retry.error.kind"),
            (headers(&[(contract::DUE_TIMESTAMP, "soon")]), "retry.due.timestamp"),
            (headers(&[(contract::REPLAY_COUNT, "many")]), "retry.replay.count"),
        ];
        for (input, expected) in cases {
            let error = parse_retry_context(&input).expect_err(expected).to_string();
            assert!(error.contains(expected), "{error}");
        }
        let mut not_utf8 = RecordHeaders::new();
        not_utf8.push(contract::TIER, Some(vec![0xFF, 0xFE]));
        assert!(
            parse_retry_context(&not_utf8)
                .expect_err("utf8")
                .to_string()
                .contains("UTF-8")
        );
        let mut null_value = RecordHeaders::new();
        null_value.push(contract::ORIGINAL_TOPIC, None);
        assert!(
            parse_retry_context(&null_value)
                .expect_err("null")
                .to_string()
                .contains("null")
        );
    }

    #[test]
    fn set_replaces_every_copy_of_a_key() {
        let mut record_headers = headers(&[("a", "1"), ("b", "2"), ("a", "3")]);
        record_headers.set("a", "4");
        assert_eq!(record_headers.count("a"), 1);
        assert_eq!(record_headers.get_str("a"), Some("4"));
        assert_eq!(record_headers.get_str("b"), Some("2"));
    }

    #[test]
    fn huge_garbled_value_yields_a_short_message() {
        let long = "9".repeat(100_000);
        let error = parse_retry_context(&headers(&[(contract::ATTEMPT, &long)]))
            .expect_err("overflow")
            .to_string();
        assert!(error.len() < 200, "{error}");
    }
}
