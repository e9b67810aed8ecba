//! The I/O side of per-key order during retries: the records of the state topic (block
//! entries, parked records, their tombstones), reading the state of assigned partitions back,
//! and the bookkeeping the pipeline keeps around `rebound-retry`'s pure [`KeyOrder`] (partitions
//! paused at the cap, keys to release, partitions revoked since the last batch).
//!
//! Entries go out with the batch's tier and DLQ copies and are acknowledged before its offsets
//! are stored; see ARCHITECTURE.md, "Per-key order".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rebound_kafka::{
    ConsumedRecord, KafkaArgs, KafkaError, OutgoingRecord, TopicCreation, TopicScan, create_topics,
    key_order_state_topic_spec,
};
use rebound_retry::{
    KeyOrder, RestoredEntry, SourceKey, StateEntryKey, StateWrite, blocked_entry_key, contract, parked_entry_key,
    parse_blocker_offset, parse_retry_context, parse_state_entry_key,
};
use rebound_service::events;

use crate::KeyOrderConfig;

/// How long reading the state topic back may go without a record while some are due.
const STATE_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer's per-key order state and what it keeps around it.
#[derive(Debug)]
pub(crate) struct KeyOrderState {
    /// The pure state: blocked keys and parked records of the tracked partitions.
    pub order: KeyOrder<ConsumedRecord>,
    /// The settings.
    pub config: KeyOrderConfig,
    /// Partitions paused because they reached the cap.
    pub paused_at_cap: BTreeSet<(String, i32)>,
    /// Keys whose blocker is gone and whose parked records are still to be released.
    pub pending_release: BTreeSet<SourceKey>,
}

impl KeyOrderState {
    pub fn new(config: KeyOrderConfig) -> Self {
        Self {
            order: KeyOrder::new(config.max_parked, config.on_dead_key),
            config,
            paused_at_cap: BTreeSet::new(),
            pending_release: BTreeSet::new(),
        }
    }

    /// Forgets a revoked partition: its new owner reads the state topic.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.order.forget_partition(topic, partition);
        self.paused_at_cap.remove(&(topic.to_owned(), partition));
        self.pending_release
            .retain(|key| !(key.topic == topic && key.partition == partition));
    }

    /// Tracks partitions with the entries read back, and queues the release of keys whose
    /// blocker was settled before the state was written last.
    pub fn restore(&mut self, partitions: &BTreeSet<(String, i32)>, mut entries: RestoredState) {
        for (topic, partition) in partitions {
            let restored = entries.remove(&(topic.clone(), *partition)).unwrap_or_default();
            self.order.restore_partition(topic, *partition, restored);
            self.pending_release
                .extend(self.order.keys_to_release(topic, *partition));
        }
    }
}

/// The source key of a record; `None` for a record without a key, which has no order to keep.
pub(crate) fn source_key(record: &ConsumedRecord) -> Option<SourceKey> {
    record.key.as_ref().map(|key| SourceKey {
        topic: record.topic.clone(),
        partition: record.partition,
        key: key.clone(),
    })
}

/// Where a copy back from a tier was first consumed (`retry.original.*`); `None` for a record
/// read for the first time, or one whose history is incomplete or garbled.
pub(crate) fn original_location(record: &ConsumedRecord) -> Option<(String, i32, i64)> {
    let context = parse_retry_context(&record.headers).ok().flatten()?;
    Some((
        context.original_topic?,
        context.original_partition?,
        context.original_offset?,
    ))
}

/// The state topic record of one write. A parked entry carries the parked record itself: its
/// value, its headers, and its key and timestamp in two more headers.
pub(crate) fn entry_record(state_topic: &str, write: &StateWrite, parked: Option<&ConsumedRecord>) -> OutgoingRecord {
    let (key, value, headers) = match write {
        StateWrite::Block { key, blocker_offset } => (
            blocked_entry_key(key),
            Some(blocker_offset.to_string().into_bytes()),
            rebound_retry::RecordHeaders::new(),
        ),
        StateWrite::Unblock { key } => (blocked_entry_key(key), None, rebound_retry::RecordHeaders::new()),
        StateWrite::Park { key, offset } => {
            let mut headers = parked.map(|record| record.headers.clone()).unwrap_or_default();
            headers.set(contract::PARKED_KEY, key.key.clone());
            if let Some(timestamp_ms) = parked.and_then(|record| record.timestamp_ms) {
                headers.set(contract::PARKED_TIMESTAMP, timestamp_ms.to_string());
            }
            (
                parked_entry_key(&key.topic, key.partition, *offset),
                // An empty value stands for a record without one: null is the tombstone.
                Some(parked.and_then(|record| record.value.clone()).unwrap_or_default()),
                headers,
            )
        }
        StateWrite::Unpark { key, offset } => (
            parked_entry_key(&key.topic, key.partition, *offset),
            None,
            rebound_retry::RecordHeaders::new(),
        ),
    };
    OutgoingRecord {
        topic: state_topic.to_owned(),
        partition: None,
        key: Some(key.into_bytes()),
        value,
        headers,
    }
}

/// Live entries per source partition.
pub(crate) type RestoredState = BTreeMap<(String, i32), Vec<RestoredEntry<ConsumedRecord>>>;

/// Reads the state topic to its end (committed records only) and keeps the live entries of
/// `partitions`. An entry rebound did not write is skipped with an event.
pub(crate) async fn read_state(
    kafka: &KafkaArgs,
    state_topic: &str,
    partitions: &BTreeSet<(String, i32)>,
) -> Result<RestoredState, KafkaError> {
    let mut latest: BTreeMap<Vec<u8>, ConsumedRecord> = BTreeMap::new();
    if let Some(mut scan) = TopicScan::open_if_exists(kafka, state_topic, STATE_READ_TIMEOUT).await? {
        while let Some(batch) = scan.next_batch().await? {
            for record in batch {
                let Some(key) = record.key.clone() else { continue };
                if record.value.is_none() {
                    latest.remove(&key);
                } else {
                    latest.insert(key, record);
                }
            }
        }
    }
    let mut restored = RestoredState::new();
    for (entry_key, record) in latest {
        let entry = match parse_state_entry_key(&entry_key) {
            Ok(entry) => entry,
            Err(error) => {
                events::key_order_state_error("entry", state_topic, &error);
                continue;
            }
        };
        let (topic, partition) = entry.source_partition();
        let wanted = (topic.to_owned(), partition);
        if !partitions.contains(&wanted) {
            continue;
        }
        let restored_entry = match entry {
            StateEntryKey::Blocked(key) => match parse_blocker_offset(record.value.as_deref().unwrap_or_default()) {
                Ok(blocker_offset) => RestoredEntry::Blocked {
                    key: key.key,
                    blocker_offset,
                },
                Err(error) => {
                    events::key_order_state_error("entry", state_topic, &error);
                    continue;
                }
            },
            StateEntryKey::Parked {
                topic,
                partition,
                offset,
            } => {
                let mut headers = record.headers.clone();
                let Some(key) = headers
                    .get(contract::PARKED_KEY)
                    .and_then(|header| header.value.clone())
                else {
                    events::key_order_state_error(
                        "entry",
                        state_topic,
                        &rebound_retry::RetryError::ParseStateEntryKey {
                            key: String::from_utf8_lossy(&entry_key).into_owned(),
                            reason: format!("a parked entry without {}", contract::PARKED_KEY),
                        },
                    );
                    continue;
                };
                let timestamp_ms = headers
                    .get_str(contract::PARKED_TIMESTAMP)
                    .and_then(|text| text.parse::<i64>().ok());
                headers.remove(contract::PARKED_KEY);
                headers.remove(contract::PARKED_TIMESTAMP);
                let value = record.value.filter(|value| !value.is_empty());
                RestoredEntry::Parked {
                    key: key.clone(),
                    offset,
                    payload: ConsumedRecord {
                        topic,
                        partition,
                        offset,
                        timestamp_ms,
                        key: Some(key),
                        value,
                        headers,
                    },
                }
            }
        };
        restored.entry(wanted).or_default().push(restored_entry);
    }
    Ok(restored)
}

/// Creates the state topic unless it exists, so a consumer with `--ordering key` starts on a
/// cluster set up before the topic existed.
pub(crate) async fn ensure_state_topic(kafka: &KafkaArgs, state_topic: &str) -> Result<TopicCreation, KafkaError> {
    let mut outcomes = create_topics(
        kafka,
        &[key_order_state_topic_spec(state_topic, -1, None)],
        Duration::from_secs(15),
    )
    .await?;
    Ok(outcomes
        .pop()
        .unwrap_or_else(|| TopicCreation::AlreadyExisted(state_topic.to_owned())))
}
