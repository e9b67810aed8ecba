//! `rebound dlq stats`: how deep the DLQ is, how old its records are, and why they failed,
//! grouped by original topic, error kind and error fingerprint.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rebound_kafka::KafkaArgs;
use serde::Serialize;

use super::letter::{DeadLetter, format_age, format_time};
use super::{DlqFilterArgs, DlqTopicArgs, OutputFormat, open_dlq, resolve_filter};

/// Flags of `rebound dlq stats`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqStatsArgs {
    /// Topics and broker timeout.
    #[command(flatten)]
    pub topics: DlqTopicArgs,

    /// Count only the dead letters these filters select.
    #[command(flatten)]
    pub filter: DlqFilterArgs,

    /// `text` (a table) or `json` (one object).
    #[arg(long, env = "REBOUND_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The figures of `rebound dlq stats`. Times are epoch milliseconds, ages milliseconds before
/// the moment the command ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DlqStats {
    /// The dead-letter topic.
    pub topic: String,
    /// Its replay ledger.
    pub ledger_topic: String,
    /// Records the topic holds (before filters).
    pub records_in_topic: u64,
    /// Dead letters the filters selected: the depth.
    pub depth: u64,
    /// Of those, the ones not replayed yet.
    pub not_replayed: u64,
    /// Timestamp of the oldest selected dead letter.
    pub oldest_timestamp_ms: Option<i64>,
    /// Its age.
    pub oldest_age_ms: Option<i64>,
    /// Timestamp of the newest selected dead letter.
    pub newest_timestamp_ms: Option<i64>,
    /// Its age.
    pub newest_age_ms: Option<i64>,
    /// Timestamp of the oldest selected dead letter not replayed yet.
    pub oldest_not_replayed_timestamp_ms: Option<i64>,
    /// Its age: how long the oldest unhandled failure has waited.
    pub oldest_not_replayed_age_ms: Option<i64>,
    /// Selected dead letters by `retry.original.topic`.
    pub by_original_topic: BTreeMap<String, u64>,
    /// Selected dead letters by `retry.error.kind`.
    pub by_kind: BTreeMap<String, u64>,
    /// Selected dead letters by (original topic, kind, fingerprint), largest group first.
    pub groups: Vec<StatsGroup>,
}

/// Dead letters sharing original topic, error kind and error fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsGroup {
    /// `retry.original.topic`.
    pub original_topic: String,
    /// `retry.error.kind`.
    pub kind: String,
    /// Fingerprint id, for `--fingerprint`.
    pub fingerprint: String,
    /// The masked error message.
    pub pattern: String,
    /// One real message of the group.
    pub example_message: String,
    /// Dead letters in the group.
    pub count: u64,
    /// Of those, not replayed yet.
    pub not_replayed: u64,
    /// Timestamp of the group's oldest dead letter.
    pub oldest_timestamp_ms: Option<i64>,
    /// Timestamp of the group's newest dead letter.
    pub newest_timestamp_ms: Option<i64>,
}

/// Computes the statistics of the dead letters the filters select.
pub async fn dlq_stats(kafka: &KafkaArgs, args: &DlqStatsArgs, now_ms: i64) -> anyhow::Result<DlqStats> {
    let filter = resolve_filter(&args.filter, &args.topics, now_ms)?;
    let (mut scan, ledger) = open_dlq(kafka, &args.topics).await?;
    let mut stats = DlqStats {
        topic: args.topics.dlq(),
        ledger_topic: args.topics.ledger(),
        ..DlqStats::default()
    };
    let mut groups: BTreeMap<(String, String, String), StatsGroup> = BTreeMap::new();
    while let Some(batch) = scan.next_batch().await? {
        for record in batch {
            // Counted as read: the topic's offsets include transaction markers.
            stats.records_in_topic += 1;
            let replayed = ledger.contains(record.partition, record.offset);
            let letter = DeadLetter::new(record, replayed);
            if filter.matches(&letter) {
                stats.add(&letter, &mut groups);
            }
        }
    }
    let age = |timestamp: Option<i64>| timestamp.map(|at| (now_ms - at).max(0));
    stats.oldest_age_ms = age(stats.oldest_timestamp_ms);
    stats.newest_age_ms = age(stats.newest_timestamp_ms);
    stats.oldest_not_replayed_age_ms = age(stats.oldest_not_replayed_timestamp_ms);
    stats.groups = groups.into_values().collect();
    stats.groups.sort_by(|left, right| {
        right
            .count
            .cmp(&left.count)
            .then_with(|| left.original_topic.cmp(&right.original_topic))
            .then_with(|| left.kind.cmp(&right.kind))
            .then_with(|| left.pattern.cmp(&right.pattern))
    });
    Ok(stats)
}

fn earliest(current: Option<i64>, candidate: Option<i64>) -> Option<i64> {
    match (current, candidate) {
        (Some(current), Some(candidate)) => Some(current.min(candidate)),
        (current, candidate) => current.or(candidate),
    }
}

fn latest(current: Option<i64>, candidate: Option<i64>) -> Option<i64> {
    match (current, candidate) {
        (Some(current), Some(candidate)) => Some(current.max(candidate)),
        (current, candidate) => current.or(candidate),
    }
}

impl DlqStats {
    fn add(&mut self, letter: &DeadLetter, groups: &mut BTreeMap<(String, String, String), StatsGroup>) {
        let timestamp = letter.record.timestamp_ms;
        self.depth += 1;
        self.oldest_timestamp_ms = earliest(self.oldest_timestamp_ms, timestamp);
        self.newest_timestamp_ms = latest(self.newest_timestamp_ms, timestamp);
        if !letter.replayed {
            self.not_replayed += 1;
            self.oldest_not_replayed_timestamp_ms = earliest(self.oldest_not_replayed_timestamp_ms, timestamp);
        }
        *self
            .by_original_topic
            .entry(letter.original_topic_label().to_owned())
            .or_default() += 1;
        *self.by_kind.entry(letter.kind_label().to_owned()).or_default() += 1;
        let group = groups
            .entry((
                letter.original_topic_label().to_owned(),
                letter.kind_label().to_owned(),
                letter.fingerprint.id.clone(),
            ))
            .or_insert_with(|| StatsGroup {
                original_topic: letter.original_topic_label().to_owned(),
                kind: letter.kind_label().to_owned(),
                fingerprint: letter.fingerprint.id.clone(),
                pattern: letter.fingerprint.pattern.clone(),
                example_message: letter.error_message.clone().unwrap_or_default(),
                ..StatsGroup::default()
            });
        group.count += 1;
        if !letter.replayed {
            group.not_replayed += 1;
        }
        group.oldest_timestamp_ms = earliest(group.oldest_timestamp_ms, timestamp);
        group.newest_timestamp_ms = latest(group.newest_timestamp_ms, timestamp);
    }

    /// The statistics as aligned text: a summary, then the groups as a table.
    pub fn render_table(&self) -> String {
        let mut text = String::new();
        let when = |timestamp: Option<i64>, age: Option<i64>| match (timestamp, age) {
            (Some(timestamp), Some(age)) => format!("{} ago ({})", format_age(age), format_time(timestamp)),
            _ => "-".to_owned(),
        };
        let summary = [
            ("dead-letter topic", self.topic.clone()),
            ("records in topic", self.records_in_topic.to_string()),
            ("depth (selected)", self.depth.to_string()),
            ("not yet replayed", self.not_replayed.to_string()),
            ("oldest", when(self.oldest_timestamp_ms, self.oldest_age_ms)),
            ("newest", when(self.newest_timestamp_ms, self.newest_age_ms)),
            (
                "oldest not replayed",
                when(self.oldest_not_replayed_timestamp_ms, self.oldest_not_replayed_age_ms),
            ),
        ];
        for (label, value) in summary {
            let _ = writeln!(text, "{label:<20} {value}");
        }
        for (title, counts) in [
            ("by original topic", &self.by_original_topic),
            ("by error kind", &self.by_kind),
        ] {
            let _ = writeln!(text, "\n{title}");
            let width = counts.keys().map(|key| key.chars().count()).max().unwrap_or(0);
            for (key, count) in counts {
                let _ = writeln!(text, "  {key:<width$}  {count:>9}");
            }
        }
        if !self.groups.is_empty() {
            let _ = writeln!(text, "\nby original topic, kind and fingerprint");
            let header = ["COUNT", "NOT REPLAYED", "TOPIC", "KIND", "FINGERPRINT", "ERROR PATTERN"];
            let topic_width = self
                .groups
                .iter()
                .map(|group| group.original_topic.chars().count())
                .chain([header[2].len()])
                .max()
                .unwrap_or(0);
            let _ = writeln!(
                text,
                "  {:>7}  {:>12}  {:<topic_width$}  {:<9}  {:<11}  {}",
                header[0], header[1], header[2], header[3], header[4], header[5]
            );
            for group in &self.groups {
                let pattern: String = group.pattern.chars().take(100).collect();
                let _ = writeln!(
                    text,
                    "  {:>7}  {:>12}  {:<topic_width$}  {:<9}  {:<11}  {}",
                    group.count, group.not_replayed, group.original_topic, group.kind, group.fingerprint, pattern
                );
            }
        }
        text
    }
}
