//! The largest note this producer can ever send, derived from the effective
//! `message.max.bytes`, so that intake refuses with a clear answer what the relay could never
//! deliver instead of acknowledging it and retrying it forever.

use std::fmt;

/// librdkafka's `message.max.bytes` when neither `-X` nor the config file sets it.
pub const LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES: u64 = 1_000_000;
/// The range librdkafka accepts for `message.max.bytes`.
const MESSAGE_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1000..=1_000_000_000;
/// Room kept for what a record holds besides its key and value. librdkafka counts the record's
/// framing (at most 36 bytes in format v2) and headers (the relay adds `traceparent`, about 70
/// bytes) against `message.max.bytes`, and the batch header (61 bytes) travels with it. Rounded
/// up generously: a note refused at intake gets a clear 413, one refused by Kafka is lost to
/// the topic.
pub const RECORD_OVERHEAD_ALLOWANCE: u64 = 512;

/// The size limit of one note's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSizeLimit {
    message_max_bytes: u64,
}

impl Default for RecordSizeLimit {
    fn default() -> Self {
        Self {
            message_max_bytes: LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES,
        }
    }
}

/// A note whose record would exceed the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTooLarge {
    /// Key plus encoded value, in bytes.
    pub record_bytes: u64,
    /// The most key plus value may hold.
    pub limit_bytes: u64,
    /// The effective `message.max.bytes` the limit comes from.
    pub message_max_bytes: u64,
}

impl fmt::Display for RecordTooLarge {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "its record would be {} bytes (note id and encoded note), over the {}-byte limit that message.max.bytes={} leaves",
            self.record_bytes, self.limit_bytes, self.message_max_bytes
        )
    }
}

impl RecordSizeLimit {
    /// The limit for the `message.max.bytes` the Kafka configuration sets, or librdkafka's
    /// default when it sets none. The error says what is wrong with the value.
    pub fn from_message_max_bytes(configured: Option<&str>) -> Result<Self, String> {
        let Some(text) = configured else {
            return Ok(Self::default());
        };
        let message_max_bytes = text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|bytes| MESSAGE_MAX_BYTES_RANGE.contains(bytes))
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a whole number of bytes from {} to {}",
                    MESSAGE_MAX_BYTES_RANGE.start(),
                    MESSAGE_MAX_BYTES_RANGE.end()
                )
            })?;
        Ok(Self { message_max_bytes })
    }

    /// The effective `message.max.bytes`.
    pub fn message_max_bytes(&self) -> u64 {
        self.message_max_bytes
    }

    /// The most a note's id and encoded value may hold together.
    pub fn max_key_and_value_bytes(&self) -> u64 {
        self.message_max_bytes.saturating_sub(RECORD_OVERHEAD_ALLOWANCE)
    }

    /// Refuses a note whose record (keyed by `note_id`, `value_bytes` long) cannot be sent.
    pub fn check(&self, note_id: &str, value_bytes: usize) -> Result<(), RecordTooLarge> {
        let record_bytes = (note_id.len() as u64).saturating_add(value_bytes as u64);
        if record_bytes > self.max_key_and_value_bytes() {
            return Err(RecordTooLarge {
                record_bytes,
                limit_bytes: self.max_key_and_value_bytes(),
                message_max_bytes: self.message_max_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_default_applies_when_nothing_is_configured() {
        let limit = RecordSizeLimit::from_message_max_bytes(None).expect("default");
        assert_eq!(limit.message_max_bytes(), 1_000_000);
        assert_eq!(limit.max_key_and_value_bytes(), 1_000_000 - RECORD_OVERHEAD_ALLOWANCE);
    }

    #[test]
    fn a_configured_value_sets_the_limit_and_a_bad_one_is_refused_with_the_range() {
        let limit = RecordSizeLimit::from_message_max_bytes(Some("4000000")).expect("valid");
        assert_eq!(limit.message_max_bytes(), 4_000_000);
        for bad in ["lots", "999", "-1", "1000000001", ""] {
            let reason = RecordSizeLimit::from_message_max_bytes(Some(bad)).expect_err(bad);
            assert!(reason.contains("1000 to 1000000000"), "{reason}");
        }
    }

    #[test]
    fn key_and_value_count_against_the_limit_with_room_for_overhead() {
        let limit = RecordSizeLimit::from_message_max_bytes(Some("2000")).expect("valid");
        let room = usize::try_from(limit.max_key_and_value_bytes()).expect("small");
        assert!(limit.check("abcd", room - 4).is_ok());
        let refused = limit.check("abcd", room - 3).expect_err("one byte over");
        assert_eq!(refused.record_bytes, 2000 - RECORD_OVERHEAD_ALLOWANCE + 1);
        let message = refused.to_string();
        assert!(
            message.contains("message.max.bytes=2000") && message.contains("1488-byte limit"),
            "{message}"
        );
    }
}
