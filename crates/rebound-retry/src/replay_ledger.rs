//! The replay ledger of a dead-letter topic, as data: what a marker is (one record per replayed
//! dead letter, keyed `DLQ/PARTITION/OFFSET`, its value naming the target), the set of replayed
//! dead letters read back from the markers, and the backlog arithmetic (how many dead letters
//! still wait for a replay, and where the oldest of them is).
//!
//! Reading the ledger topic, writing markers in the replay's transaction and fetching the DLQ's
//! watermarks are `rebound-kafka`'s and the CLI's; everything here is pure.

use std::collections::{BTreeMap, BTreeSet};

/// The key of the replay ledger's marker for one dead letter: `TOPIC/PARTITION/OFFSET`.
///
/// Kafka topic names cannot hold `/`, so the key splits back unambiguously.
pub fn replay_marker_key(dead_letter_topic: &str, partition: i32, offset: i64) -> String {
    format!("{dead_letter_topic}/{partition}/{offset}")
}

/// Reads a marker key back into topic, partition and offset; `None` when it is not one.
pub fn parse_replay_marker_key(key: &str) -> Option<(&str, i32, i64)> {
    let mut parts = key.rsplitn(3, '/');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next().filter(|topic| !topic.is_empty())?;
    Some((topic, partition, offset))
}

/// The marker saying that one dead letter was replayed: the key and value of the record written
/// to the ledger topic in the same transaction as the replayed copy. Its value names the target,
/// for people reading the ledger; only the key is read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayMarker {
    /// [`replay_marker_key`] of the dead letter.
    pub key: Vec<u8>,
    /// The topic the copy was sent to.
    pub value: Vec<u8>,
}

impl ReplayMarker {
    /// The marker of the dead letter at `partition`/`offset` of `dead_letter_topic`, replayed to
    /// `target_topic`.
    pub fn new(dead_letter_topic: &str, partition: i32, offset: i64, target_topic: &str) -> Self {
        Self {
            key: replay_marker_key(dead_letter_topic, partition, offset).into_bytes(),
            value: target_topic.as_bytes().to_vec(),
        }
    }
}

/// The dead letters of one DLQ topic that were replayed, by partition and offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayLedger {
    replayed: BTreeMap<i32, BTreeSet<i64>>,
}

impl ReplayLedger {
    /// True when the dead letter at that partition and offset was replayed.
    pub fn contains(&self, partition: i32, offset: i64) -> bool {
        self.replayed
            .get(&partition)
            .is_some_and(|offsets| offsets.contains(&offset))
    }

    /// Records a replay.
    pub fn insert(&mut self, partition: i32, offset: i64) {
        self.replayed.entry(partition).or_default().insert(offset);
    }

    /// Records the replay a ledger record's key names, if it is a marker of `dead_letter_topic`;
    /// returns whether it was. Any other key (a marker of another DLQ sharing the ledger topic,
    /// or no marker at all) is ignored.
    pub fn insert_marker(&mut self, dead_letter_topic: &str, key: &[u8]) -> bool {
        let Some((topic, partition, offset)) = std::str::from_utf8(key).ok().and_then(parse_replay_marker_key) else {
            return false;
        };
        if topic != dead_letter_topic {
            return false;
        }
        self.insert(partition, offset);
        true
    }

    /// Number of replayed dead letters recorded.
    pub fn len(&self) -> usize {
        self.replayed.values().map(BTreeSet::len).sum()
    }

    /// True when nothing was replayed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Per partition whose live range (`low..high` in `watermarks`) holds a dead letter without
    /// a marker, the offset of the first such one: where to read the oldest dead letter not yet
    /// replayed.
    pub fn first_not_replayed_offsets(&self, watermarks: &BTreeMap<i32, (i64, i64)>) -> BTreeMap<i32, i64> {
        watermarks
            .iter()
            .filter_map(|(partition, (low, high))| {
                self.first_not_replayed(*partition, *low, *high)
                    .map(|offset| (*partition, offset))
            })
            .collect()
    }

    /// The first offset in `[low, high)` without a marker.
    fn first_not_replayed(&self, partition: i32, low: i64, high: i64) -> Option<i64> {
        // Walk the markers in order until the first gap: linear in markers, not in offsets.
        let mut expected = low;
        if let Some(offsets) = self.replayed.get(&partition) {
            for offset in offsets.range(low..high) {
                if *offset != expected {
                    break;
                }
                expected += 1;
            }
        }
        (expected < high).then_some(expected)
    }
}

/// How much of a dead-letter topic still waits for a replay: the figures a DLQ alert and the
/// runbook start from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqBacklog {
    /// Records the DLQ holds now (within retention).
    pub records: i64,
    /// Of those, the ones without a replay marker.
    pub not_replayed: i64,
    /// Kafka timestamp of the oldest record without a replay marker, epoch milliseconds.
    pub oldest_not_replayed_timestamp_ms: Option<i64>,
    /// Per partition: (records, not replayed).
    pub partitions: BTreeMap<i32, (i64, i64)>,
}

impl DlqBacklog {
    /// Counts one dead letter read from the DLQ: partition, offset and Kafka timestamp.
    ///
    /// The backlog is counted from the records read, never from the watermarks: with
    /// exactly-once delivery every transaction that wrote to a DLQ partition leaves a commit
    /// marker there, which takes an offset but is no dead letter, so `high - low` overcounts.
    pub fn add(&mut self, partition: i32, offset: i64, timestamp_ms: Option<i64>, ledger: &ReplayLedger) {
        let replayed = ledger.contains(partition, offset);
        let counts = self.partitions.entry(partition).or_default();
        counts.0 += 1;
        self.records += 1;
        if !replayed {
            counts.1 += 1;
            self.not_replayed += 1;
            self.oldest_not_replayed_timestamp_ms = match (self.oldest_not_replayed_timestamp_ms, timestamp_ms) {
                (Some(oldest), Some(timestamp)) => Some(oldest.min(timestamp)),
                (oldest, timestamp) => oldest.or(timestamp),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_keys_round_trip() {
        let key = replay_marker_key("staging.dlq", 3, 1_234);
        assert_eq!(key, "staging.dlq/3/1234");
        assert_eq!(parse_replay_marker_key(&key), Some(("staging.dlq", 3, 1_234)));
        for bad in ["", "dlq", "dlq/1", "/1/2", "dlq/x/2", "dlq/1/y"] {
            assert_eq!(parse_replay_marker_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn markers_are_keyed_by_dead_letter_and_name_the_target() {
        let marker = ReplayMarker::new("dlq", 2, 40, "notes");
        assert_eq!(marker.key, b"dlq/2/40");
        assert_eq!(marker.value, b"notes");
    }

    #[test]
    fn only_markers_of_the_dead_letter_topic_enter_its_ledger() {
        let mut ledger = ReplayLedger::default();
        assert!(ledger.insert_marker("dlq", &ReplayMarker::new("dlq", 1, 7, "notes").key));
        assert!(!ledger.insert_marker("dlq", &ReplayMarker::new("other.dlq", 1, 8, "notes").key));
        for not_a_marker in [b"dlq/1".as_slice(), b"", b"\xff/1/9"] {
            assert!(!ledger.insert_marker("dlq", not_a_marker));
        }
        assert_eq!(ledger.len(), 1);
        assert!(ledger.contains(1, 7));
    }

    /// Partition 0 replayed at offsets 0, 1, 2, 5 and 9; partition 1 at offset 0.
    fn sample_ledger() -> ReplayLedger {
        let mut ledger = ReplayLedger::default();
        for offset in [0, 1, 2, 5, 9] {
            ledger.insert(0, offset);
        }
        ledger.insert(1, 0);
        ledger
    }

    #[test]
    fn ledger_counts_and_finds_gaps_within_the_live_range() {
        let ledger = sample_ledger();
        assert_eq!(ledger.len(), 6);
        assert!(ledger.contains(0, 5) && !ledger.contains(0, 3) && !ledger.contains(2, 0));
        // Offsets 0 and 1 fell out of retention: their markers no longer count.
        assert_eq!(ledger.first_not_replayed(0, 0, 10), Some(3));
        assert_eq!(ledger.first_not_replayed(0, 0, 3), None);
        assert_eq!(ledger.first_not_replayed(1, 0, 1), None);
        assert_eq!(ledger.first_not_replayed(2, 4, 6), Some(4));
    }

    #[test]
    fn the_backlog_counts_the_dead_letters_read_not_the_offsets_between_them() {
        let ledger = sample_ledger();
        let mut backlog = DlqBacklog::default();
        // Partition 0 holds dead letters at offsets 2..10 with a transaction marker at 6 (no
        // record is read there); of those read, 2, 5 and 9 are replayed.
        for offset in [2, 3, 4, 5, 7, 8, 9] {
            backlog.add(0, offset, Some(1_000 + offset), &ledger);
        }
        backlog.add(1, 0, Some(5), &ledger);
        backlog.add(2, 4, None, &ledger);
        assert_eq!(backlog.records, 9, "markers take offsets, not records");
        assert_eq!(backlog.partitions[&0], (7, 4));
        assert_eq!(backlog.partitions[&1], (1, 0), "offset 0 of partition 1 was replayed");
        assert_eq!(backlog.partitions[&2], (1, 1));
        assert_eq!(backlog.not_replayed, 5);
        assert_eq!(backlog.oldest_not_replayed_timestamp_ms, Some(1_003), "offset 3's");
    }
}
