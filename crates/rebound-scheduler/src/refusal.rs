//! What the scheduler does with a copy the broker refused, decided from the refusal and, for a
//! refusal that names a missing topic or partition, from what the cluster's metadata says.
//!
//! Pure: the caller classifies the Kafka error and fetches the metadata; this only decides, so
//! the rule is unit-tested without a broker.

/// Why a copy was refused, as far as the decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `UnknownTopic`, `UnknownTopicOrPartition` or `UnknownPartition`. Brokers also answer this
    /// for a topic that exists, while a partition moves or metadata is refreshed.
    UnknownTopicOrPartition,
    /// Anything else (timeouts, too few in-sync replicas, a broker going away).
    Other,
}

/// What the target topic's metadata says, fetched after an unknown-topic refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicPresence {
    /// The topic is in the metadata with its partitions.
    Exists,
    /// The cluster answered, and the topic is not there.
    Missing,
    /// The metadata could not be fetched: nothing is known.
    Unknown,
}

/// What to do with the refused record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalAction {
    /// Send it to the DLQ as poison: it can never be delivered.
    DeadLetter,
    /// Keep it at the head of its partition and send it again after the backoff.
    Retry,
}

/// Decides. Only a refusal for a missing topic that the metadata confirms is missing makes a
/// record poison; a record dead-lettered is out of the retry flow for good, so any doubt means
/// retry.
pub fn refusal_action(refusal: Refusal, presence: TopicPresence) -> RefusalAction {
    match (refusal, presence) {
        (Refusal::UnknownTopicOrPartition, TopicPresence::Missing) => RefusalAction::DeadLetter,
        _ => RefusalAction::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_topic_confirmed_missing_by_metadata_makes_a_record_poison() {
        assert_eq!(
            refusal_action(Refusal::UnknownTopicOrPartition, TopicPresence::Missing),
            RefusalAction::DeadLetter
        );
        assert_eq!(
            refusal_action(Refusal::UnknownTopicOrPartition, TopicPresence::Exists),
            RefusalAction::Retry,
            "a partition moving or a metadata refresh: transient"
        );
        assert_eq!(
            refusal_action(Refusal::UnknownTopicOrPartition, TopicPresence::Unknown),
            RefusalAction::Retry,
            "metadata not fetched: no confirmation"
        );
        for presence in [TopicPresence::Exists, TopicPresence::Missing, TopicPresence::Unknown] {
            assert_eq!(refusal_action(Refusal::Other, presence), RefusalAction::Retry);
        }
    }
}
