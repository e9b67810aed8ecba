//! Per-key order during retries, as a pure state machine: which keys of a source partition are
//! blocked by a record waiting in a tier, the records parked behind each blocker, what to do with
//! each incoming record, and what follows when a blocker is applied or dead-lettered.
//!
//! No I/O: the consumer feeds it records and outcomes and turns the [`StateWrite`]s it returns
//! into entries of the compacted state topic (their keys are [`blocked_entry_key`] and
//! [`parked_entry_key`]), written with the batch's copies. The parked payload `P` is whatever the
//! caller keeps of a record (the consumer keeps the whole record). See ARCHITECTURE.md,
//! "Per-key order", for the rules and the crash cases this implements.

use std::collections::{BTreeMap, HashMap};

use crate::RetryError;

/// A source key: the unit of order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// The record's key bytes.
    pub key: Vec<u8>,
}

/// What happens to the records parked behind a blocker that is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDeadKey {
    /// They follow it to the DLQ, marked `blocked-by-key`.
    DeadLetter,
    /// They are released and applied, in order.
    Continue,
}

/// What to do with a record of a source partition under per-key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Its key is not blocked (or the record comes from before the key's blocker, a replay):
    /// apply it as usual.
    Flow,
    /// It is the key's blocker, back from its tier: apply it, then report the outcome with
    /// [`KeyOrder::blocker_applied`], [`KeyOrder::routed_to_tier`] or
    /// [`KeyOrder::dead_lettered`].
    BlockerBack,
    /// It is the blocker's own source record, read again after a crash: its tier copy exists,
    /// so it is safe as it is.
    AlreadyInTier,
    /// Its key is blocked: park it with [`KeyOrder::park`].
    Park,
    /// It is parked already (read again after a crash): safe as it is.
    AlreadyParked,
}

/// A change to the durable state, to be written as an entry of the state topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// The key is blocked by the record first consumed at `blocker_offset`.
    Block {
        /// The key.
        key: SourceKey,
        /// The blocker's original offset.
        blocker_offset: i64,
    },
    /// The key's blocker is gone (applied or dead-lettered): a tombstone.
    Unblock {
        /// The key.
        key: SourceKey,
    },
    /// The record consumed at `offset` is parked (the entry carries the record itself).
    Park {
        /// The key.
        key: SourceKey,
        /// Its source offset.
        offset: i64,
    },
    /// The record consumed at `offset` is no longer parked: a tombstone.
    Unpark {
        /// The key.
        key: SourceKey,
        /// Its source offset.
        offset: i64,
    },
}

/// A record taken out of a key's parked queue, with the entry that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released<P> {
    /// Its source offset.
    pub offset: i64,
    /// What the caller parked.
    pub payload: P,
    /// The tombstone of its parked entry.
    pub write: StateWrite,
}

/// What follows a dead-lettered blocker (or a released record dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadKey<P> {
    /// The records that follow it to the DLQ, in order (empty with [`OnDeadKey::Continue`]).
    pub follow: Vec<Released<P>>,
    /// Entries to write besides the followers' tombstones.
    pub writes: Vec<StateWrite>,
}

/// A live entry read back from the state topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoredEntry<P> {
    /// A block entry.
    Blocked {
        /// The record key.
        key: Vec<u8>,
        /// The blocker's original offset.
        blocker_offset: i64,
    },
    /// A parked record.
    Parked {
        /// The record key.
        key: Vec<u8>,
        /// Its source offset.
        offset: i64,
        /// What the caller keeps of it.
        payload: P,
    },
}

#[derive(Debug, Clone)]
struct KeyState<P> {
    /// The original offset of the record waiting in a tier, if one is.
    blocker: Option<i64>,
    /// Parked records by source offset, so they leave in order and a replay finds its own.
    parked: BTreeMap<i64, P>,
}

impl<P> KeyState<P> {
    fn is_empty(&self) -> bool {
        self.blocker.is_none() && self.parked.is_empty()
    }

    /// The position below which records come from before the block: a replay.
    fn head(&self) -> Option<i64> {
        self.blocker.or_else(|| self.parked.keys().next().copied())
    }
}

#[derive(Debug, Clone)]
struct PartitionState<P> {
    keys: HashMap<Vec<u8>, KeyState<P>>,
    parked: usize,
}

impl<P> Default for PartitionState<P> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
            parked: 0,
        }
    }
}

/// The per-key order state of the partitions a consumer owns.
#[derive(Debug, Clone)]
pub struct KeyOrder<P> {
    max_parked_per_partition: usize,
    on_dead_key: OnDeadKey,
    partitions: BTreeMap<(String, i32), PartitionState<P>>,
}

impl<P> KeyOrder<P> {
    /// No partition tracked yet. `max_parked_per_partition` is where [`KeyOrder::at_cap`] says
    /// to pause a partition (parking itself never refuses: the caller pauses instead).
    pub fn new(max_parked_per_partition: usize, on_dead_key: OnDeadKey) -> Self {
        Self {
            max_parked_per_partition: max_parked_per_partition.max(1),
            on_dead_key,
            partitions: BTreeMap::new(),
        }
    }

    /// What happens to records behind a dead-lettered blocker.
    pub fn on_dead_key(&self) -> OnDeadKey {
        self.on_dead_key
    }

    /// Whether the state of this partition was restored (it is assigned).
    pub fn is_tracked(&self, topic: &str, partition: i32) -> bool {
        self.partitions.contains_key(&(topic.to_owned(), partition))
    }

    /// Starts tracking a partition with the live entries read back from the state topic,
    /// replacing whatever was known of it.
    pub fn restore_partition(
        &mut self,
        topic: &str,
        partition: i32,
        entries: impl IntoIterator<Item = RestoredEntry<P>>,
    ) {
        let mut state = PartitionState::default();
        for entry in entries {
            match entry {
                RestoredEntry::Blocked { key, blocker_offset } => {
                    state
                        .keys
                        .entry(key)
                        .or_insert_with(|| KeyState {
                            blocker: None,
                            parked: BTreeMap::new(),
                        })
                        .blocker = Some(blocker_offset);
                }
                RestoredEntry::Parked { key, offset, payload } => {
                    let key_state = state.keys.entry(key).or_insert_with(|| KeyState {
                        blocker: None,
                        parked: BTreeMap::new(),
                    });
                    if key_state.parked.insert(offset, payload).is_none() {
                        state.parked += 1;
                    }
                }
            }
        }
        self.partitions.insert((topic.to_owned(), partition), state);
    }

    /// Stops tracking a partition (revoked): its new owner reads the state topic.
    pub fn forget_partition(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// Keys of a tracked partition that have parked records and no blocker: their blocker was
    /// settled before a crash or a rebalance, and they are to be released now.
    pub fn keys_to_release(&self, topic: &str, partition: i32) -> Vec<SourceKey> {
        let Some(state) = self.partitions.get(&(topic.to_owned(), partition)) else {
            return Vec::new();
        };
        let mut keys: Vec<SourceKey> = state
            .keys
            .iter()
            .filter(|(_, key_state)| key_state.blocker.is_none() && !key_state.parked.is_empty())
            .map(|(key, _)| SourceKey {
                topic: topic.to_owned(),
                partition,
                key: key.clone(),
            })
            .collect();
        keys.sort();
        keys
    }

    /// Decides what to do with a record of `key` consumed at `offset`. `original` is the
    /// record's first location when it is a copy back from a tier (`retry.original.*`), `None`
    /// for a record read from the source for the first time. An untracked partition is not
    /// ordered (the caller restores every partition before its records).
    pub fn admit(&self, key: &SourceKey, offset: i64, original: Option<(&str, i32, i64)>) -> Admission {
        let Some(key_state) = self
            .partitions
            .get(&(key.topic.clone(), key.partition))
            .and_then(|state| state.keys.get(&key.key))
        else {
            return Admission::Flow;
        };
        // Where the record stands in its key's order: its first location, if that was this
        // partition (a copy from elsewhere is ordered where it arrives).
        let (position, is_copy) = match original {
            Some((topic, partition, original_offset))
                if topic == key.topic && partition == key.partition && original_offset != offset =>
            {
                (original_offset, true)
            }
            _ => (offset, false),
        };
        let Some(head) = key_state.head() else {
            return Admission::Flow;
        };
        if position < head {
            // From before the block: a replay after a crash, or an old duplicate; applying it
            // now keeps it ahead of the blocker, where it belongs.
            return Admission::Flow;
        }
        if key_state.blocker == Some(position) {
            return if is_copy {
                Admission::BlockerBack
            } else {
                Admission::AlreadyInTier
            };
        }
        if !is_copy && key_state.parked.contains_key(&position) {
            return Admission::AlreadyParked;
        }
        Admission::Park
    }

    /// Parks a record [`KeyOrder::admit`] said to park. Returns the entry to write.
    pub fn park(&mut self, key: &SourceKey, offset: i64, payload: P) -> StateWrite {
        let state = self.partition_mut(key);
        let key_state = state.keys.entry(key.key.clone()).or_insert_with(|| KeyState {
            blocker: None,
            parked: BTreeMap::new(),
        });
        if key_state.parked.insert(offset, payload).is_none() {
            state.parked += 1;
        }
        StateWrite::Park {
            key: key.clone(),
            offset,
        }
    }

    /// A record of `key` first consumed at `original_offset` went to a tier: it blocks its key
    /// unless it already does. A record from before the key's block (admitted as
    /// [`Admission::Flow`] while the key is blocked: a replay, or a duplicate copy of a record
    /// already settled) never takes the blocker's place, or the records parked behind the real
    /// blocker would be released while it still waits; it is only a duplicate in a tier.
    /// `released` says the record was just taken from the key's queue with
    /// [`KeyOrder::next_released`]: it then becomes the blocker of the records left behind it.
    /// Returns the entries to write.
    pub fn routed_to_tier(&mut self, key: &SourceKey, original_offset: i64, released: bool) -> Vec<StateWrite> {
        let state = self.partition_mut(key);
        let key_state = state.keys.entry(key.key.clone()).or_insert_with(|| KeyState {
            blocker: None,
            parked: BTreeMap::new(),
        });
        if key_state.blocker == Some(original_offset) {
            return Vec::new();
        }
        if !released && key_state.head().is_some_and(|head| original_offset < head) {
            return Vec::new();
        }
        key_state.blocker = Some(original_offset);
        vec![StateWrite::Block {
            key: key.clone(),
            blocker_offset: original_offset,
        }]
    }

    /// The key's blocker was applied: its parked records are to be released, one by one with
    /// [`KeyOrder::next_released`]. Returns the entries to write.
    pub fn blocker_applied(&mut self, key: &SourceKey) -> Vec<StateWrite> {
        self.clear_blocker(key)
    }

    /// Takes the next parked record of a key whose blocker is gone, in source order; `None`
    /// while the key has a blocker or nothing parked. The key stays blocked for new records
    /// until its last parked record is taken.
    pub fn next_released(&mut self, key: &SourceKey) -> Option<Released<P>> {
        let state = self.partitions.get_mut(&(key.topic.clone(), key.partition))?;
        let key_state = state.keys.get_mut(&key.key)?;
        if key_state.blocker.is_some() {
            return None;
        }
        let (offset, payload) = key_state.parked.pop_first()?;
        state.parked -= 1;
        if key_state.is_empty() {
            state.keys.remove(&key.key);
        }
        Some(Released {
            offset,
            payload,
            write: StateWrite::Unpark {
                key: key.clone(),
                offset,
            },
        })
    }

    /// The key's blocker, or a record released from its queue, was dead-lettered. With
    /// [`OnDeadKey::DeadLetter`] every parked record follows it; with [`OnDeadKey::Continue`]
    /// they stay, to be released.
    pub fn dead_lettered(&mut self, key: &SourceKey) -> DeadKey<P> {
        let writes = self.clear_blocker(key);
        let mut follow = Vec::new();
        if self.on_dead_key == OnDeadKey::DeadLetter {
            while let Some(released) = self.next_released(key) {
                follow.push(released);
            }
        }
        DeadKey { follow, writes }
    }

    /// Parked records of a partition.
    pub fn parked_count(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map_or(0, |state| state.parked)
    }

    /// Parked records of every tracked partition.
    pub fn parked_total(&self) -> usize {
        self.partitions.values().map(|state| state.parked).sum()
    }

    /// Whether a partition has reached the cap and is to be paused.
    pub fn at_cap(&self, topic: &str, partition: i32) -> bool {
        self.parked_count(topic, partition) >= self.max_parked_per_partition
    }

    /// Whether the key is blocked (a blocker, or parked records not yet released).
    pub fn is_blocked(&self, key: &SourceKey) -> bool {
        self.partitions
            .get(&(key.topic.clone(), key.partition))
            .is_some_and(|state| state.keys.contains_key(&key.key))
    }

    /// The blocker's original offset, if the key has one.
    pub fn blocker_of(&self, key: &SourceKey) -> Option<i64> {
        self.partitions
            .get(&(key.topic.clone(), key.partition))
            .and_then(|state| state.keys.get(&key.key))
            .and_then(|key_state| key_state.blocker)
    }

    fn clear_blocker(&mut self, key: &SourceKey) -> Vec<StateWrite> {
        let Some(state) = self.partitions.get_mut(&(key.topic.clone(), key.partition)) else {
            return Vec::new();
        };
        let Some(key_state) = state.keys.get_mut(&key.key) else {
            return Vec::new();
        };
        let Some(_) = key_state.blocker.take() else {
            return Vec::new();
        };
        if key_state.is_empty() {
            state.keys.remove(&key.key);
        }
        vec![StateWrite::Unblock { key: key.clone() }]
    }

    fn partition_mut(&mut self, key: &SourceKey) -> &mut PartitionState<P> {
        self.partitions.entry((key.topic.clone(), key.partition)).or_default()
    }
}

/// What a state topic entry's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateEntryKey {
    /// `blocked/TOPIC/PARTITION/KEYHEX`.
    Blocked(SourceKey),
    /// `parked/TOPIC/PARTITION/OFFSET`.
    Parked {
        /// Source topic.
        topic: String,
        /// Source partition.
        partition: i32,
        /// Source offset.
        offset: i64,
    },
}

impl StateEntryKey {
    /// The source partition the entry belongs to.
    pub fn source_partition(&self) -> (&str, i32) {
        match self {
            StateEntryKey::Blocked(key) => (&key.topic, key.partition),
            StateEntryKey::Parked { topic, partition, .. } => (topic, *partition),
        }
    }
}

/// The state topic key of a key's block entry. Topic names cannot hold `/`; the record key is
/// written in hex, since it may be any bytes.
pub fn blocked_entry_key(key: &SourceKey) -> String {
    use std::fmt::Write as _;
    let mut text = format!("blocked/{}/{}/", key.topic, key.partition);
    for byte in &key.key {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The state topic key of a parked record's entry.
pub fn parked_entry_key(topic: &str, partition: i32, offset: i64) -> String {
    format!("parked/{topic}/{partition}/{offset}")
}

/// Reads a state topic entry's key back. Anything else is an error naming the problem (the
/// caller skips such an entry with an event: it was not written by rebound).
pub fn parse_state_entry_key(bytes: &[u8]) -> Result<StateEntryKey, RetryError> {
    let fail = |reason: &str| RetryError::ParseStateEntryKey {
        key: String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned(),
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| fail("not UTF-8"))?;
    let mut parts = text.splitn(4, '/');
    let (Some(kind), Some(topic), Some(partition), Some(last)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail("expected KIND/TOPIC/PARTITION/..."));
    };
    if topic.is_empty() {
        return Err(fail("empty topic"));
    }
    let partition: i32 = partition
        .parse()
        .ok()
        .filter(|partition| *partition >= 0)
        .ok_or_else(|| fail("partition is not a number"))?;
    match kind {
        "blocked" => {
            if last.len() % 2 != 0 {
                return Err(fail("key hex has an odd length"));
            }
            let key = (0..last.len())
                .step_by(2)
                .map(|index| u8::from_str_radix(&last[index..index + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| fail("key is not hex"))?;
            Ok(StateEntryKey::Blocked(SourceKey {
                topic: topic.to_owned(),
                partition,
                key,
            }))
        }
        "parked" => {
            let offset: i64 = last
                .parse()
                .ok()
                .filter(|offset| *offset >= 0)
                .ok_or_else(|| fail("offset is not a number"))?;
            Ok(StateEntryKey::Parked {
                topic: topic.to_owned(),
                partition,
                offset,
            })
        }
        _ => Err(fail("kind is neither blocked nor parked")),
    }
}

/// Reads a block entry's value: the blocker's original offset as decimal text.
pub fn parse_blocker_offset(value: &[u8]) -> Result<i64, RetryError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .filter(|offset| *offset >= 0)
        .ok_or_else(|| RetryError::ParseStateEntryKey {
            key: "blocked entry value".to_owned(),
            reason: format!(
                "{:?} is not an offset",
                String::from_utf8_lossy(&value[..value.len().min(64)])
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> SourceKey {
        SourceKey {
            topic: "notes".to_owned(),
            partition: 0,
            key: name.as_bytes().to_vec(),
        }
    }

    fn tracked(on_dead_key: OnDeadKey, cap: usize) -> KeyOrder<&'static str> {
        let mut order = KeyOrder::new(cap, on_dead_key);
        order.restore_partition("notes", 0, []);
        order
    }

    #[test]
    fn an_unblocked_key_flows_and_untracked_partitions_are_not_ordered() {
        let order = tracked(OnDeadKey::DeadLetter, 10);
        assert_eq!(order.admit(&key("a"), 5, None), Admission::Flow);
        let elsewhere = SourceKey {
            partition: 3,
            ..key("a")
        };
        assert_eq!(order.admit(&elsewhere, 5, None), Admission::Flow);
        assert!(!order.is_tracked("notes", 3));
    }

    #[test]
    fn a_transient_failure_blocks_its_key_and_later_records_are_parked_in_order() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        assert_eq!(
            order.routed_to_tier(&a, 5, false),
            vec![StateWrite::Block {
                key: a.clone(),
                blocker_offset: 5
            }]
        );
        assert_eq!(order.admit(&a, 9, None), Admission::Park);
        assert_eq!(
            order.park(&a, 9, "v3"),
            StateWrite::Park {
                key: a.clone(),
                offset: 9
            }
        );
        assert_eq!(order.admit(&a, 7, None), Admission::Park);
        order.park(&a, 7, "v2");
        // Other keys of the partition keep flowing.
        assert_eq!(order.admit(&key("b"), 8, None), Admission::Flow);
        assert_eq!(order.parked_count("notes", 0), 2);
        // Nothing is released while the blocker waits.
        assert_eq!(order.next_released(&a), None);
        // The blocker back from its tier, then applied: parked records leave in source order.
        assert_eq!(order.admit(&a, 20, Some(("notes", 0, 5))), Admission::BlockerBack);
        assert_eq!(order.blocker_applied(&a), vec![StateWrite::Unblock { key: a.clone() }]);
        // Still blocked for new records until the queue is empty.
        assert_eq!(order.admit(&a, 21, None), Admission::Park);
        let first = order.next_released(&a).expect("v2");
        assert_eq!((first.offset, first.payload), (7, "v2"));
        assert_eq!(
            first.write,
            StateWrite::Unpark {
                key: a.clone(),
                offset: 7
            }
        );
        let second = order.next_released(&a).expect("v3");
        assert_eq!((second.offset, second.payload), (9, "v3"));
        assert_eq!(order.next_released(&a), None);
        assert!(!order.is_blocked(&a));
        assert_eq!(order.parked_count("notes", 0), 0);
        assert_eq!(order.admit(&a, 22, None), Admission::Flow);
    }

    #[test]
    fn a_blocker_failing_again_stays_the_blocker_without_a_new_entry() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        order.park(&a, 6, "v2");
        assert_eq!(order.admit(&a, 30, Some(("notes", 0, 5))), Admission::BlockerBack);
        assert_eq!(order.routed_to_tier(&a, 5, false), Vec::new());
        assert_eq!(order.blocker_of(&a), Some(5));
        assert_eq!(order.next_released(&a), None);
    }

    #[test]
    fn replays_after_a_crash_are_recognised_and_never_parked_twice() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        order.park(&a, 7, "v2");
        // The blocker's own source record, read again: its tier copy exists.
        assert_eq!(order.admit(&a, 5, None), Admission::AlreadyInTier);
        // A parked record read again.
        assert_eq!(order.admit(&a, 7, None), Admission::AlreadyParked);
        // A record from before the blocker, read again: applied, ahead of the blocker.
        assert_eq!(order.admit(&a, 3, None), Admission::Flow);
        // An old duplicate of an earlier record's tier copy: also ahead of the blocker.
        assert_eq!(order.admit(&a, 40, Some(("notes", 0, 2))), Admission::Flow);
        // A copy of a later record (a tier copy from before ordering was on): parked.
        assert_eq!(order.admit(&a, 41, Some(("notes", 0, 8))), Admission::Park);
        // Parking the same offset twice counts it once.
        order.park(&a, 7, "v2");
        assert_eq!(order.parked_count("notes", 0), 1);
    }

    #[test]
    fn an_older_record_failing_again_never_takes_the_blockers_place() {
        // A duplicate tier copy of v1 (already applied) fails while v2 blocks the key with v3
        // parked behind it: v2 stays the blocker, so v3 is not released before v2.
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 226, false);
        order.park(&a, 300, "v3");
        assert_eq!(order.admit(&a, 871, Some(("notes", 0, 39))), Admission::Flow);
        assert_eq!(order.routed_to_tier(&a, 39, false), Vec::new());
        assert_eq!(order.blocker_of(&a), Some(226));
        // The duplicate back again and applied changes nothing either.
        assert_eq!(order.admit(&a, 900, Some(("notes", 0, 39))), Admission::Flow);
        assert_eq!(order.next_released(&a), None);
        assert_eq!(order.admit(&a, 950, Some(("notes", 0, 226))), Admission::BlockerBack);
        order.blocker_applied(&a);
        assert_eq!(order.next_released(&a).map(|released| released.payload), Some("v3"));
    }

    #[test]
    fn a_copy_from_another_partition_is_ordered_where_it_arrives() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        assert_eq!(order.admit(&a, 40, Some(("notes", 3, 5))), Admission::Park);
        assert_eq!(order.admit(&a, 40, Some(("other", 0, 5))), Admission::Park);
    }

    #[test]
    fn a_dead_lettered_blocker_takes_its_parked_records_to_the_dlq() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        order.park(&a, 6, "v2");
        order.park(&a, 8, "v3");
        let dead = order.dead_lettered(&a);
        assert_eq!(dead.writes, vec![StateWrite::Unblock { key: a.clone() }]);
        let followers: Vec<(i64, &str)> = dead
            .follow
            .iter()
            .map(|released| (released.offset, released.payload))
            .collect();
        assert_eq!(followers, vec![(6, "v2"), (8, "v3")]);
        assert_eq!(
            dead.follow[1].write,
            StateWrite::Unpark {
                key: a.clone(),
                offset: 8
            }
        );
        assert!(!order.is_blocked(&a));
        assert_eq!(order.parked_count("notes", 0), 0);
        assert_eq!(order.admit(&a, 9, None), Admission::Flow);
    }

    #[test]
    fn with_continue_a_dead_lettered_blocker_releases_its_parked_records() {
        let mut order = tracked(OnDeadKey::Continue, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        order.park(&a, 6, "v2");
        let dead = order.dead_lettered(&a);
        assert!(dead.follow.is_empty());
        assert_eq!(dead.writes, vec![StateWrite::Unblock { key: a.clone() }]);
        assert_eq!(order.next_released(&a).map(|released| released.payload), Some("v2"));
    }

    #[test]
    fn a_released_record_that_fails_transiently_becomes_the_blocker_of_the_rest() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        order.park(&a, 6, "v2");
        order.park(&a, 8, "v3");
        order.blocker_applied(&a);
        let v2 = order.next_released(&a).expect("v2");
        assert_eq!(
            order.routed_to_tier(&a, v2.offset, true),
            vec![StateWrite::Block {
                key: a.clone(),
                blocker_offset: 6
            }]
        );
        assert_eq!(order.next_released(&a), None, "v3 waits behind v2 now");
        assert_eq!(order.admit(&a, 50, Some(("notes", 0, 6))), Admission::BlockerBack);
        // A released record dead-lettered at once takes the rest with it too.
        let dead = order.dead_lettered(&a);
        assert_eq!(dead.follow.len(), 1);
    }

    #[test]
    fn a_released_last_record_that_fails_transiently_blocks_the_key_again() {
        let mut order = tracked(OnDeadKey::DeadLetter, 10);
        let a = key("a");
        order.routed_to_tier(&a, 5, false);
        order.park(&a, 6, "v2");
        order.blocker_applied(&a);
        let v2 = order.next_released(&a).expect("v2");
        assert!(!order.is_blocked(&a));
        order.routed_to_tier(&a, v2.offset, true);
        assert!(order.is_blocked(&a));
        assert_eq!(order.admit(&a, 7, None), Admission::Park);
    }

    #[test]
    fn the_cap_is_reported_per_partition_and_parking_never_refuses() {
        let mut order = tracked(OnDeadKey::DeadLetter, 2);
        order.restore_partition("notes", 1, []);
        let a = key("a");
        order.routed_to_tier(&a, 1, false);
        order.park(&a, 2, "x");
        assert!(!order.at_cap("notes", 0));
        order.park(&a, 3, "y");
        assert!(order.at_cap("notes", 0));
        order.park(&a, 4, "z");
        assert_eq!(order.parked_count("notes", 0), 3);
        assert!(!order.at_cap("notes", 1));
        assert_eq!(order.parked_total(), 3);
        order.dead_lettered(&a);
        assert!(!order.at_cap("notes", 0));
    }

    #[test]
    fn restoring_rebuilds_blocks_and_queues_and_forgetting_drops_them() {
        let mut order: KeyOrder<&str> = KeyOrder::new(10, OnDeadKey::DeadLetter);
        order.restore_partition(
            "notes",
            0,
            [
                RestoredEntry::Parked {
                    key: b"a".to_vec(),
                    offset: 9,
                    payload: "v3",
                },
                RestoredEntry::Blocked {
                    key: b"a".to_vec(),
                    blocker_offset: 5,
                },
                RestoredEntry::Parked {
                    key: b"a".to_vec(),
                    offset: 7,
                    payload: "v2",
                },
                // A key whose blocker was settled before the crash, its release unfinished.
                RestoredEntry::Parked {
                    key: b"b".to_vec(),
                    offset: 4,
                    payload: "b2",
                },
            ],
        );
        let a = key("a");
        assert_eq!(order.blocker_of(&a), Some(5));
        assert_eq!(order.parked_count("notes", 0), 3);
        assert_eq!(order.keys_to_release("notes", 0), vec![key("b")]);
        assert_eq!(order.admit(&key("b"), 6, None), Admission::Park);
        assert_eq!(
            order.next_released(&key("b")).map(|released| released.payload),
            Some("b2")
        );
        order.blocker_applied(&a);
        assert_eq!(order.next_released(&a).map(|released| released.payload), Some("v2"));
        order.forget_partition("notes", 0);
        assert!(!order.is_tracked("notes", 0));
        assert_eq!(order.admit(&a, 100, None), Admission::Flow);
        assert_eq!(order.parked_total(), 0);
    }

    #[test]
    fn entry_keys_round_trip_whatever_the_record_key_bytes() {
        let binary = SourceKey {
            topic: "staging.notes".to_owned(),
            partition: 12,
            key: vec![0x00, 0xFF, b'/', 0x7F],
        };
        let text = blocked_entry_key(&binary);
        assert_eq!(text, "blocked/staging.notes/12/00ff2f7f");
        assert_eq!(
            parse_state_entry_key(text.as_bytes()),
            Ok(StateEntryKey::Blocked(binary))
        );
        let parked = parked_entry_key("notes", 3, 42);
        assert_eq!(
            parse_state_entry_key(parked.as_bytes()),
            Ok(StateEntryKey::Parked {
                topic: "notes".to_owned(),
                partition: 3,
                offset: 42
            })
        );
        let empty_key = SourceKey {
            topic: "notes".to_owned(),
            partition: 0,
            key: Vec::new(),
        };
        assert_eq!(
            parse_state_entry_key(blocked_entry_key(&empty_key).as_bytes()),
            Ok(StateEntryKey::Blocked(empty_key))
        );
    }

    #[test]
    fn foreign_entry_keys_and_values_are_errors_naming_the_problem() {
        for (bytes, reason) in [
            (b"nonsense".as_slice(), "expected KIND/TOPIC/PARTITION/..."),
            (b"blocked/notes/x/00", "partition is not a number"),
            (b"blocked/notes/-1/00", "partition is not a number"),
            (b"blocked/notes/0/0", "key hex has an odd length"),
            (b"blocked/notes/0/zz", "key is not hex"),
            (b"parked/notes/0/-4", "offset is not a number"),
            (b"other/notes/0/4", "kind is neither blocked nor parked"),
            (b"parked//0/4", "empty topic"),
            (&[0xFF, 0xFE], "not UTF-8"),
        ] {
            match parse_state_entry_key(bytes) {
                Err(RetryError::ParseStateEntryKey { reason: found, .. }) => assert_eq!(found, reason),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        assert_eq!(parse_blocker_offset(b"17"), Ok(17));
        assert!(parse_blocker_offset(b"-1").is_err());
        assert!(parse_blocker_offset(b"x").is_err());
    }
}
