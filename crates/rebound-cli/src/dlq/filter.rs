//! The record filters shared by `rebound dlq stats`, `inspect` and `replay`: their flags, how
//! each flag's text is parsed (bad syntax is a usage error naming the flag, exit 2), and the
//! match of one dead letter against all of them.

use rebound_retry::{ErrorKind, TimeBound, apply_topic_prefix};
use regex::Regex;

use super::letter::DeadLetter;

/// Filter flags. Every given filter must match (AND); a repeated flag matches any of its values
/// (OR). No filter selects every dead letter.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DlqFilterArgs {
    /// Only dead letters of this error kind: transient, permanent, poison or blocked-by-key
    /// (repeatable or comma-separated).
    #[arg(long = "kind", env = "REBOUND_DLQ_KIND", value_delimiter = ',', value_parser = parse_kind)]
    pub kinds: Vec<ErrorKind>,

    /// Only dead letters first consumed from this topic (`retry.original.topic`; the topic prefix
    /// is applied; repeatable or comma-separated).
    #[arg(long = "original-topic", env = "REBOUND_DLQ_ORIGINAL_TOPIC", value_delimiter = ',')]
    pub original_topics: Vec<String>,

    /// Only dead letters that reached the DLQ at or after this time: RFC 3339
    /// (`2025-11-28T10:00:00Z`, `2025-11-28T11:00:00+01:00`, `2025-11-28`) or a duration before
    /// now (`2h`, `30m`, `1d`).
    #[arg(long, env = "REBOUND_DLQ_SINCE", value_name = "TIME", value_parser = parse_time_bound)]
    pub since: Option<TimeBound>,

    /// Only dead letters that reached the DLQ before this time; same forms as --since.
    #[arg(long, env = "REBOUND_DLQ_UNTIL", value_name = "TIME", value_parser = parse_time_bound)]
    pub until: Option<TimeBound>,

    /// Only dead letters with exactly this key (UTF-8; repeatable).
    #[arg(long = "key", env = "REBOUND_DLQ_KEY")]
    pub keys: Vec<String>,

    /// Only dead letters whose error message (`retry.error.message`) matches this regular
    /// expression; `(?i)` makes it case-insensitive.
    #[arg(long, env = "REBOUND_DLQ_GREP", value_name = "REGEX", value_parser = parse_regex)]
    pub grep: Option<Regex>,

    /// Only dead letters with this error fingerprint, the 8-hex-digit id `stats` shows
    /// (repeatable or comma-separated).
    #[arg(
        long = "fingerprint",
        env = "REBOUND_DLQ_FINGERPRINT",
        value_delimiter = ',',
        value_parser = parse_fingerprint_id
    )]
    pub fingerprints: Vec<String>,
}

fn parse_kind(text: &str) -> Result<ErrorKind, String> {
    text.trim().parse::<ErrorKind>().map_err(|error| error.to_string())
}

fn parse_time_bound(text: &str) -> Result<TimeBound, String> {
    text.parse::<TimeBound>().map_err(|error| error.to_string())
}

fn parse_regex(text: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|error| format!("not a valid regular expression: {error}"))
}

fn parse_fingerprint_id(text: &str) -> Result<String, String> {
    let id = text.trim().to_ascii_lowercase();
    if id.len() == 8 && id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(format!(
            "{text:?} is not a fingerprint id: expected 8 hex digits, as `rebound dlq stats` shows"
        ))
    }
}

/// The filters with topic prefix applied and time bounds resolved against one clock reading.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    kinds: Vec<ErrorKind>,
    original_topics: Vec<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    keys: Vec<Vec<u8>>,
    grep: Option<Regex>,
    fingerprints: Vec<String>,
}

impl DlqFilter {
    /// Resolves the flags; `now_ms` anchors durations such as `--since 2h`. Fails, naming the
    /// flags, when the time range is empty.
    pub fn new(args: &DlqFilterArgs, topic_prefix: &str, now_ms: i64) -> Result<Self, String> {
        let since_ms = args.since.map(|bound| bound.resolve(now_ms));
        let until_ms = args.until.map(|bound| bound.resolve(now_ms));
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since >= until
        {
            return Err(format!(
                "invalid --since/--until: the range from {} to {} is empty",
                super::letter::format_time(since),
                super::letter::format_time(until)
            ));
        }
        Ok(Self {
            kinds: args.kinds.clone(),
            original_topics: args
                .original_topics
                .iter()
                .map(|topic| apply_topic_prefix(topic_prefix, topic))
                .collect(),
            since_ms,
            until_ms,
            keys: args.keys.iter().map(|key| key.as_bytes().to_vec()).collect(),
            grep: args.grep.clone(),
            fingerprints: args.fingerprints.clone(),
        })
    }

    /// True when the dead letter passes every given filter.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        let kind_ok = self.kinds.is_empty() || letter.kind.is_some_and(|kind| self.kinds.contains(&kind));
        let topic_ok = self.original_topics.is_empty()
            || letter
                .original_topic
                .as_ref()
                .is_some_and(|topic| self.original_topics.contains(topic));
        // A record without a timestamp cannot be placed in a time range: it only passes when
        // no range is asked for.
        let timestamp = letter.record.timestamp_ms;
        let since_ok = self
            .since_ms
            .is_none_or(|since| timestamp.is_some_and(|at| at >= since));
        let until_ok = self.until_ms.is_none_or(|until| timestamp.is_some_and(|at| at < until));
        let key_ok = self.keys.is_empty() || letter.record.key.as_ref().is_some_and(|key| self.keys.contains(key));
        let grep_ok = self.grep.as_ref().is_none_or(|pattern| {
            letter
                .error_message
                .as_deref()
                .is_some_and(|message| pattern.is_match(message))
        });
        let fingerprint_ok = self.fingerprints.is_empty() || self.fingerprints.contains(&letter.fingerprint.id);
        kind_ok && topic_ok && since_ok && until_ok && key_ok && grep_ok && fingerprint_ok
    }
}

#[cfg(test)]
mod tests {
    use rebound_kafka::ConsumedRecord;
    use rebound_retry::{RecordHeaders, contract, error_fingerprint};

    use super::*;

    fn letter(key: &str, kind: &str, topic: &str, message: &str, timestamp_ms: i64) -> DeadLetter {
        let mut headers = RecordHeaders::new();
        headers.set(contract::ERROR_KIND, kind);
        headers.set(contract::ORIGINAL_TOPIC, topic);
        headers.set(contract::ERROR_MESSAGE, message);
        DeadLetter::new(
            ConsumedRecord {
                topic: "dlq".to_owned(),
                partition: 0,
                offset: 0,
                timestamp_ms: Some(timestamp_ms),
                key: Some(key.as_bytes().to_vec()),
                value: None,
                headers,
            },
            false,
        )
    }

    fn filter(args: DlqFilterArgs) -> DlqFilter {
        DlqFilter::new(&args, "p.", 10_000_000).expect("valid")
    }

    #[test]
    fn no_filter_matches_everything() {
        assert!(filter(DlqFilterArgs::default()).matches(&letter("a", "poison", "p.notes", "x", 1)));
    }

    #[test]
    fn each_filter_narrows_and_repeats_widen() {
        let permanent = letter("note-1", "permanent", "p.notes", "http sink answered 422", 9_000_000);
        let poison = letter("note-2", "poison", "p.other", "failed to decode record", 2_000_000);
        let kinds = filter(DlqFilterArgs {
            kinds: vec![ErrorKind::Permanent],
            ..DlqFilterArgs::default()
        });
        assert!(kinds.matches(&permanent) && !kinds.matches(&poison));
        let both_kinds = filter(DlqFilterArgs {
            kinds: vec![ErrorKind::Permanent, ErrorKind::Poison],
            ..DlqFilterArgs::default()
        });
        assert!(both_kinds.matches(&permanent) && both_kinds.matches(&poison));
        let topics = filter(DlqFilterArgs {
            original_topics: vec!["notes".to_owned()],
            ..DlqFilterArgs::default()
        });
        assert!(topics.matches(&permanent) && !topics.matches(&poison), "prefix applied");
        let since = filter(DlqFilterArgs {
            since: Some(parse_time_bound("1h").expect("valid")),
            ..DlqFilterArgs::default()
        });
        assert!(since.matches(&permanent) && !since.matches(&poison));
        let until = filter(DlqFilterArgs {
            until: Some(parse_time_bound("1h").expect("valid")),
            ..DlqFilterArgs::default()
        });
        assert!(!until.matches(&permanent) && until.matches(&poison));
        let keys = filter(DlqFilterArgs {
            keys: vec!["note-2".to_owned()],
            ..DlqFilterArgs::default()
        });
        assert!(!keys.matches(&permanent) && keys.matches(&poison));
        let grep = filter(DlqFilterArgs {
            grep: Some(parse_regex("(?i)ANSWERED 4\\d\\d").expect("valid")),
            ..DlqFilterArgs::default()
        });
        assert!(grep.matches(&permanent) && !grep.matches(&poison));
        let fingerprint = filter(DlqFilterArgs {
            fingerprints: vec![error_fingerprint("http sink answered 500").id],
            ..DlqFilterArgs::default()
        });
        assert!(fingerprint.matches(&permanent) && !fingerprint.matches(&poison));
        let all = filter(DlqFilterArgs {
            kinds: vec![ErrorKind::Permanent],
            keys: vec!["note-2".to_owned()],
            ..DlqFilterArgs::default()
        });
        assert!(
            !all.matches(&permanent) && !all.matches(&poison),
            "filters combine with AND"
        );
    }

    #[test]
    fn since_is_inclusive_and_until_exclusive() {
        let at = letter("k", "permanent", "p.notes", "m", 5_000);
        let bounds = |since: i64, until: i64| DlqFilter {
            since_ms: Some(since),
            until_ms: Some(until),
            ..DlqFilter::default()
        };
        assert!(bounds(5_000, 5_001).matches(&at));
        assert!(!bounds(4_000, 5_000).matches(&at));
    }

    #[test]
    fn bad_syntax_names_what_is_expected() {
        assert!(
            parse_kind("fatal")
                .expect_err("kind")
                .contains("transient, permanent, poison or blocked-by-key")
        );
        assert!(parse_time_bound("yesterday").expect_err("time").contains("RFC 3339"));
        assert!(
            parse_regex("(unclosed")
                .expect_err("regex")
                .contains("regular expression")
        );
        assert!(parse_fingerprint_id("xyz").expect_err("id").contains("8 hex digits"));
        assert_eq!(parse_fingerprint_id("301A2DE9"), Ok("301a2de9".to_owned()));
        let empty = DlqFilter::new(
            &DlqFilterArgs {
                since: Some(parse_time_bound("1h").expect("valid")),
                until: Some(parse_time_bound("2h").expect("valid")),
                ..DlqFilterArgs::default()
            },
            "",
            10_000_000,
        )
        .expect_err("empty range");
        assert!(empty.contains("--since/--until"), "{empty}");
    }
}
