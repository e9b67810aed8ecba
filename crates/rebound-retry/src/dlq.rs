//! Pure rules of the dead-letter tooling (`rebound dlq`): error fingerprints that group dead
//! letters by cause, time bounds for filters and the header rewrite of a replayed (redriven)
//! copy. The replay ledger's markers and the backlog are in `replay_ledger.rs`.
//!
//! The replay rewrite lives here, next to the rest of the header contract, so the rules for
//! writing `retry.*` keys stay in one crate.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use crate::headers::contract;
use crate::{RecordHeaders, RetryError, parse_duration};

/// An error message with its variable parts masked, and a short stable id of that pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorFingerprint {
    /// 8 lowercase hex digits identifying `pattern`; stable across runs and machines.
    pub id: String,
    /// The message with numbers, hex strings and UUIDs masked, whitespace collapsed.
    pub pattern: String,
}

/// Fingerprints an error message so that failures with the same cause group together even when
/// their messages name different notes, offsets or request ids.
///
/// Masking, per word (a run of ASCII letters and digits):
/// - a UUID (`8-4-4-4-12` hex digits) becomes `<uuid>`;
/// - a word of hex digits only that holds a digit becomes `<n>`, whether it reads as decimal or
///   not (`1024`, `c3`, `9f86d081884c7d65`), as does `0x…`: a hex id that happens to be all
///   decimal digits must group with its siblings;
/// - in any other word each run of digits becomes `<n>` (`note-17` gives `note-<n>`).
///
/// Words without digits (`failed`, `beef`) are kept: a message is mostly prose, and masking
/// every hex-looking English word would merge unrelated causes.
pub fn error_fingerprint(message: &str) -> ErrorFingerprint {
    let pattern = mask_message(message);
    ErrorFingerprint {
        id: format!("{:08x}", fold_to_32_bits(fnv1a_64(pattern.as_bytes()))),
        pattern,
    }
}

fn mask_message(message: &str) -> String {
    let mut masked = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(character) = rest.chars().next() {
        if let Some(length) = uuid_length(rest) {
            masked.push_str("<uuid>");
            rest = &rest[length..];
        } else if character.is_ascii_alphanumeric() {
            let length = rest
                .find(|candidate: char| !candidate.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            mask_word(&rest[..length], &mut masked);
            rest = &rest[length..];
        } else if character.is_whitespace() {
            // Runs of whitespace (newlines from multi-line errors included) become one space.
            if !masked.is_empty() && !masked.ends_with(' ') {
                masked.push(' ');
            }
            rest = rest.trim_start();
        } else {
            masked.push(character);
            rest = &rest[character.len_utf8()..];
        }
    }
    masked.trim_end().to_owned()
}

/// Length of the UUID at the start of `text`, if one is there as a whole word.
fn uuid_length(text: &str) -> Option<usize> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let bytes = text.as_bytes();
    let mut position = 0;
    for (index, group) in GROUPS.iter().enumerate() {
        let end = position + group;
        if bytes.len() < end || !bytes[position..end].iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        position = end;
        if index + 1 < GROUPS.len() {
            if bytes.get(position) != Some(&b'-') {
                return None;
            }
            position += 1;
        }
    }
    let whole_word = bytes.get(position).is_none_or(|next| !next.is_ascii_alphanumeric());
    whole_word.then_some(position)
}

fn mask_word(word: &str, masked: &mut String) {
    let has_digit = word.bytes().any(|byte| byte.is_ascii_digit());
    if !has_digit {
        masked.push_str(word);
    } else if word.bytes().all(|byte| byte.is_ascii_hexdigit())
        || (word.len() > 2
            && (word.starts_with("0x") || word.starts_with("0X"))
            && word[2..].bytes().all(|byte| byte.is_ascii_hexdigit()))
    {
        masked.push_str("<n>");
    } else {
        let mut in_digits = false;
        for character in word.chars() {
            if character.is_ascii_digit() {
                if !in_digits {
                    masked.push_str("<n>");
                }
                in_digits = true;
            } else {
                masked.push(character);
                in_digits = false;
            }
        }
    }
}

/// FNV-1a: tiny, dependency-free and stable across Rust versions, unlike `DefaultHasher`, whose
/// output may change between releases and would change every fingerprint id with it.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn fold_to_32_bits(hash: u64) -> u32 {
    let folded = (hash >> 32) ^ (hash & 0xffff_ffff);
    u32::try_from(folded).unwrap_or(u32::MAX)
}

/// One end of a time range as a user typed it: an RFC 3339 time or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// A point in time, epoch milliseconds.
    At(i64),
    /// That long before the moment the command runs.
    Ago(Duration),
}

impl TimeBound {
    /// The bound in epoch milliseconds, durations counted back from `now_ms`.
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            TimeBound::At(epoch_ms) => epoch_ms,
            TimeBound::Ago(duration) => now_ms.saturating_sub(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl FromStr for TimeBound {
    type Err = RetryError;

    /// Accepts `2h`, `90m`, `1d 12h` (ago), `2025-11-28`, `2025-11-28T10:00:00Z`,
    /// `2025-11-28T10:00:00.250+01:00` and the same with a space instead of `T`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let fail = |reason: &str| RetryError::ParseTimeBound {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(fail("empty"));
        }
        let starts_like_a_date = text.len() >= 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
        if !starts_like_a_date {
            return parse_duration(text).map(TimeBound::Ago).map_err(|_| {
                fail("expected a duration before now such as 2h, 30m or 1d, or an RFC 3339 time such as 2025-11-28T10:00:00Z")
            });
        }
        parse_rfc3339_ms(text)
            .map(TimeBound::At)
            .map_err(|reason| fail(&reason))
    }
}

/// Parses RFC 3339 with any UTC offset (humantime only takes `Z`), or a bare date (midnight UTC).
fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let (local, offset_minutes) = split_utc_offset(text)?;
    let with_time = if local.len() == 10 {
        format!("{local}T00:00:00")
    } else {
        local.to_owned()
    };
    let time = humantime::parse_rfc3339_weak(&with_time)
        .map_err(|error| format!("not an RFC 3339 time such as 2025-11-28T10:00:00Z: {error}"))?;
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "before 1970-01-01".to_owned())?;
    let local_ms = i64::try_from(since_epoch.as_millis()).map_err(|_| "too far in the future".to_owned())?;
    Ok(local_ms - offset_minutes * 60_000)
}

/// Splits a trailing `Z`, `+HH:MM` or `-HH:MM` off a time; returns the rest and the offset.
fn split_utc_offset(text: &str) -> Result<(&str, i64), String> {
    if let Some(rest) = text.strip_suffix(['Z', 'z']) {
        return Ok((rest, 0));
    }
    let bytes = text.as_bytes();
    // A date is 10 bytes; anything longer with a sign 6 bytes from the end carries an offset.
    if bytes.len() > 16 && matches!(bytes[bytes.len() - 6], b'+' | b'-') && bytes[bytes.len() - 3] == b':' {
        let (rest, offset) = text.split_at(text.len() - 6);
        let hours: i64 = offset[1..3].parse().map_err(|_| format!("bad UTC offset {offset}"))?;
        let minutes: i64 = offset[4..6].parse().map_err(|_| format!("bad UTC offset {offset}"))?;
        if hours > 23 || minutes > 59 {
            return Err(format!("bad UTC offset {offset}"));
        }
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        return Ok((rest, sign * (hours * 60 + minutes)));
    }
    Ok((text, 0))
}

/// Why a dead letter is not replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// It was replayed `count` times already; `max` is the limit. Replaying it again would let
    /// a record that keeps failing cycle between the DLQ and its source.
    TooManyReplays {
        /// Its `retry.replay.count`.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// Its `retry.replay.count` cannot be read, so the limit cannot be enforced.
    UnreadableReplayCount {
        /// What is wrong with the header.
        reason: String,
    },
    /// It names no `retry.original.topic` and no target was given.
    NoOriginalTopic,
    /// Its target is the DLQ itself: the copy would land where it came from.
    TargetIsTheDlq {
        /// The target topic.
        topic: String,
    },
    /// It is a stub of a record too large for the DLQ: redriving it would send an empty record.
    /// The original is at its `retry.original.*` location; `--to` still parks the stub.
    StubWithoutValue {
        /// Where the original is: `TOPIC[PARTITION]@OFFSET`.
        original: String,
    },
}

impl fmt::Display for ReplayRefusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayRefusal::TooManyReplays { count, max } => {
                write!(formatter, "replayed {count} times already (--max-replays {max})")
            }
            ReplayRefusal::UnreadableReplayCount { reason } => {
                write!(formatter, "unreadable {}: {reason}", contract::REPLAY_COUNT)
            }
            ReplayRefusal::NoOriginalTopic => write!(
                formatter,
                "no {} header; name a target with --to",
                contract::ORIGINAL_TOPIC
            ),
            ReplayRefusal::TargetIsTheDlq { topic } => {
                write!(formatter, "target {topic} is the dead-letter topic itself")
            }
            ReplayRefusal::StubWithoutValue { original } => write!(
                formatter,
                "a stub without the record's value (too large for the DLQ); the original is at {original}"
            ),
        }
    }
}

/// The copy of a dead letter to send back: target topic and complete headers. Key and value are
/// the dead letter's, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Topic the copy goes to.
    pub topic: String,
    /// Headers of the copy.
    pub headers: RecordHeaders,
    /// The copy's `retry.replay.count`.
    pub replay_count: u32,
}

/// Plans the replay (redrive) of one dead letter.
///
/// The copy goes to `target`, or else to the dead letter's `retry.original.topic`. It keeps
/// every user header (a `traceparent`, say); every failure-history key and every KIP-1191
/// `__dlq.errors.*` key is removed, so the record starts a fresh history (attempt 0, no tier, no
/// error); and `retry.replay.count` is set to one more than the dead letter's. A dead letter
/// already replayed `max_replays` times or more is refused, as is one whose count is unreadable.
pub fn plan_replay(
    dead_letter_headers: &RecordHeaders,
    dead_letter_topic: &str,
    target: Option<&str>,
    max_replays: u32,
) -> Result<ReplayPlan, ReplayRefusal> {
    let count = match dead_letter_headers.count(contract::REPLAY_COUNT) {
        0 => 0,
        1 => {
            let text = dead_letter_headers.get_str(contract::REPLAY_COUNT).ok_or_else(|| {
                ReplayRefusal::UnreadableReplayCount {
                    reason: "null or not UTF-8".to_owned(),
                }
            })?;
            text.parse::<u32>().map_err(|_| ReplayRefusal::UnreadableReplayCount {
                reason: format!("{:?} is not a count", text.chars().take(32).collect::<String>()),
            })?
        }
        copies => {
            return Err(ReplayRefusal::UnreadableReplayCount {
                reason: format!("appears {copies} times"),
            });
        }
    };
    if count >= max_replays {
        return Err(ReplayRefusal::TooManyReplays {
            count,
            max: max_replays,
        });
    }
    let is_stub = [contract::DROPPED_VALUE_BYTES, contract::DROPPED_KEY_BYTES]
        .iter()
        .any(|key| dead_letter_headers.get(key).is_some());
    if is_stub && target.is_none() {
        let part = |key: &str| dead_letter_headers.get_str(key).unwrap_or("?");
        return Err(ReplayRefusal::StubWithoutValue {
            original: format!(
                "{}[{}]@{}",
                part(contract::ORIGINAL_TOPIC),
                part(contract::ORIGINAL_PARTITION),
                part(contract::ORIGINAL_OFFSET)
            ),
        });
    }
    let topic = match target {
        Some(topic) => topic.to_owned(),
        None => dead_letter_headers
            .get_str(contract::ORIGINAL_TOPIC)
            .filter(|topic| !topic.is_empty())
            .ok_or(ReplayRefusal::NoOriginalTopic)?
            .to_owned(),
    };
    if topic == dead_letter_topic {
        return Err(ReplayRefusal::TargetIsTheDlq { topic });
    }
    let mut headers = dead_letter_headers.clone();
    for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
        headers.remove(key);
    }
    let replay_count = count + 1;
    headers.set(contract::REPLAY_COUNT, replay_count.to_string());
    Ok(ReplayPlan {
        topic,
        headers,
        replay_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    #[test]
    fn fingerprints_mask_numbers_hex_and_uuids_but_keep_prose() {
        let cases = [
            (
                "http sink answered 422 Unprocessable Entity",
                "http sink answered <n> Unprocessable Entity",
            ),
            (
                "failed to decode record: unknown writer schema fingerprint 9f86d081884c7d65",
                "failed to decode record: unknown writer schema fingerprint <n>",
            ),
            (
                "failed to decode record: expected single-object marker c3 01, found 67 61",
                "failed to decode record: expected single-object marker <n> <n>, found <n> <n>",
            ),
            (
                "note note-17 rejected by request 123e4567-e89b-12d3-a456-426614174000",
                "note note-<n> rejected by request <uuid>",
            ),
            ("offset 0x1F at v2  of\n\tsha256", "offset <n> at v<n> of sha<n>"),
            ("hash 0123456789012345 or 01234567890abcde", "hash <n> or <n>"),
            (
                "deadbeef is not hex-masked without a digit",
                "deadbeef is not hex-masked without a digit",
            ),
            ("", ""),
        ];
        for (message, pattern) in cases {
            assert_eq!(error_fingerprint(message).pattern, pattern, "{message}");
        }
    }

    #[test]
    fn messages_differing_only_in_ids_share_a_fingerprint_id() {
        let first = error_fingerprint("note note-1 rejected after 35 ms (request 0a1b2c3d4e)");
        let second = error_fingerprint("note note-998 rejected after 7 ms (request ffee001122)");
        assert_eq!(first, second);
        assert_eq!(first.id.len(), 8);
        assert!(first.id.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first.id, error_fingerprint("note note-1 accepted").id);
    }

    #[test]
    fn fingerprint_ids_are_stable_across_releases() {
        // The id is typed into `--fingerprint` and kept in runbooks and tickets: it must not
        // change when the toolchain does. (FNV-1a of the pattern, checked independently.)
        assert_eq!(
            error_fingerprint("http sink answered 422 Unprocessable Entity").id,
            "301a2de9"
        );
    }

    #[test]
    fn non_ascii_messages_are_kept_intact() {
        assert_eq!(error_fingerprint("körper ✓ 12 fehlt").pattern, "körper ✓ <n> fehlt");
    }

    #[test]
    fn time_bounds_take_durations_ago_and_rfc3339() {
        let now = 1_764_324_000_000; // 2025-11-28T10:00:00Z
        let resolve = |text: &str| text.parse::<TimeBound>().expect(text).resolve(now);
        assert_eq!(resolve("2h"), now - 7_200_000);
        assert_eq!(resolve("1d 12h"), now - 129_600_000);
        assert_eq!(resolve("2025-11-28T10:00:00Z"), now);
        assert_eq!(resolve("2025-11-28 10:00:00.250"), now + 250);
        assert_eq!(resolve("2025-11-28T11:30:00+01:30"), now);
        assert_eq!(resolve("2025-11-28T08:00:00-02:00"), now);
        assert_eq!(resolve("2025-11-28"), now - 36_000_000);
    }

    #[test]
    fn bad_time_bounds_say_what_is_expected() {
        for input in [
            "",
            "yesterday",
            "2 hours ago",
            "5",
            "2025-13-01T00:00:00Z",
            "2025-11-28T10:00:00+25:00",
        ] {
            let error = input.parse::<TimeBound>().expect_err(input).to_string();
            assert!(error.contains("failed to parse time"), "{input}: {error}");
        }
        let error = "yesterday".parse::<TimeBound>().expect_err("words").to_string();
        assert!(error.contains("2h") && error.contains("RFC 3339"), "{error}");
    }

    fn dead_letter_headers(replay_count: Option<&str>) -> RecordHeaders {
        let mut headers: RecordHeaders = [
            ("traceparent", "00-abc"),
            (contract::ATTEMPT, "3"),
            (contract::TIER, "retry-1m"),
            (contract::ORIGINAL_TOPIC, "notes"),
            (contract::ORIGINAL_PARTITION, "2"),
            (contract::ORIGINAL_OFFSET, "7"),
            (contract::ORIGINAL_TIMESTAMP, "1000"),
            (contract::FIRST_FAILURE_TIMESTAMP, "2000"),
            (contract::ERROR_KIND, "permanent"),
            (contract::ERROR_MESSAGE, "http sink answered 422"),
            (contract::DLQ_ERRORS_TOPIC, "notes"),
            (contract::DLQ_ERRORS_PARTITION, "2"),
            (contract::DLQ_ERRORS_OFFSET, "7"),
            (contract::DLQ_ERRORS_GROUP, "g"),
            (contract::DLQ_ERRORS_DELIVERY_COUNT, "3"),
            (contract::DLQ_ERRORS_MESSAGE, "http sink answered 422"),
        ]
        .iter()
        .map(|(key, value)| Header {
            key: (*key).to_owned(),
            value: Some(value.as_bytes().to_vec()),
        })
        .collect();
        headers.push("null-header", None);
        if let Some(count) = replay_count {
            headers.push(contract::REPLAY_COUNT, Some(count.as_bytes().to_vec()));
        }
        headers
    }

    #[test]
    fn replay_keeps_user_headers_clears_the_history_and_counts_the_replay() {
        let plan = plan_replay(&dead_letter_headers(None), "dlq", None, 3).expect("replayable");
        assert_eq!(plan.topic, "notes");
        assert_eq!(plan.replay_count, 1);
        assert_eq!(plan.headers.get_str("traceparent"), Some("00-abc"));
        assert!(
            plan.headers
                .get("null-header")
                .is_some_and(|header| header.value.is_none())
        );
        for key in contract::FAILURE_HISTORY_KEYS.iter().chain(contract::DLQ_KEYS.iter()) {
            assert!(plan.headers.get(key).is_none(), "{key} cleared");
        }
        assert_eq!(plan.headers.get_str(contract::REPLAY_COUNT), Some("1"));
        assert_eq!(plan.headers.len(), 3);
        // The consumer reads the copy as a record that never failed but was replayed once.
        let context = crate::parse_retry_context(&plan.headers)
            .expect("valid")
            .expect("present");
        assert_eq!(context.attempt, 0);
        assert_eq!(context.replay_count, 1);

        let again = plan_replay(&dead_letter_headers(Some("2")), "dlq", Some("elsewhere"), 3).expect("replayable");
        assert_eq!(again.topic, "elsewhere");
        assert_eq!(again.headers.count(contract::REPLAY_COUNT), 1);
        assert_eq!(again.headers.get_str(contract::REPLAY_COUNT), Some("3"));
    }

    #[test]
    fn replay_refuses_what_would_cycle_or_has_nowhere_to_go() {
        assert_eq!(
            plan_replay(&dead_letter_headers(Some("3")), "dlq", None, 3),
            Err(ReplayRefusal::TooManyReplays { count: 3, max: 3 })
        );
        assert_eq!(
            plan_replay(&dead_letter_headers(None), "dlq", None, 0),
            Err(ReplayRefusal::TooManyReplays { count: 0, max: 0 })
        );
        assert!(matches!(
            plan_replay(&dead_letter_headers(Some("many")), "dlq", None, 3),
            Err(ReplayRefusal::UnreadableReplayCount { .. })
        ));
        let mut twice = dead_letter_headers(Some("1"));
        twice.push(contract::REPLAY_COUNT, Some(b"1".to_vec()));
        assert!(matches!(
            plan_replay(&twice, "dlq", None, 3),
            Err(ReplayRefusal::UnreadableReplayCount { .. })
        ));
        let mut no_origin = dead_letter_headers(None);
        no_origin.remove(contract::ORIGINAL_TOPIC);
        assert_eq!(
            plan_replay(&no_origin, "dlq", None, 3),
            Err(ReplayRefusal::NoOriginalTopic)
        );
        assert!(plan_replay(&no_origin, "dlq", Some("notes"), 3).is_ok());
        assert_eq!(
            plan_replay(&dead_letter_headers(None), "notes", None, 3),
            Err(ReplayRefusal::TargetIsTheDlq {
                topic: "notes".to_owned()
            })
        );
        let refusal = ReplayRefusal::TooManyReplays { count: 3, max: 3 }.to_string();
        assert!(refusal.contains("--max-replays 3"), "{refusal}");
    }

    #[test]
    fn a_stub_is_not_redriven_but_can_be_parked() {
        let mut stub = dead_letter_headers(None);
        stub.set(contract::DROPPED_VALUE_BYTES, "1000000");
        let refusal = plan_replay(&stub, "dlq", None, 3).expect_err("a stub has no value to redrive");
        assert!(matches!(refusal, ReplayRefusal::StubWithoutValue { .. }));
        assert!(refusal.to_string().contains("notes["), "{refusal}");
        let parked = plan_replay(&stub, "dlq", Some("notes.quarantine"), 3).expect("parking is allowed");
        assert!(parked.headers.get(contract::DROPPED_VALUE_BYTES).is_none());
    }
}
