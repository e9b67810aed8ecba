//! The only rebound crate that touches `rdkafka`: client builders with the shared connection
//! flags and librdkafka passthrough, adapters between Kafka headers and the retry contract's
//! [`RecordHeaders`], an at-least-once consumer, an acknowledging producer and topic admin.
//!
//! Every other crate talks to Kafka through the types here, so the at-least-once rules (offsets
//! stored only after a record is safe, pauses reconciled after rebalances) live in one place.

mod admin;
mod auth;
mod config;
mod consumer;
mod producer;
mod reader;
mod record;
mod replay_ledger;
mod scan;
mod transaction;

pub use admin::{
    TopicCreation, TopicSpec, alter_topic_config, create_topics, delete_topics, fetch_partition_counts,
    key_order_state_topic_spec, list_topics,
};
pub use config::{
    ISOLATION_LEVEL, KafkaArgs, KafkaConfigPair, READ_COMMITTED, REDACTED, is_secret_config_key, redact_config_value,
};
pub use consumer::{
    ConsumerSettings, GroupMetadata, LagPerTopic, OffsetCommits, PartitionAssignmentEvent, RecordConsumer,
    TopicPartition,
};
pub use producer::{AckedRecord, OutgoingRecord, PendingAck, ProducerSettings, RecordProducer};
pub use reader::{TopicWatermarks, fetch_committed_offsets, fetch_topic_watermarks, read_topic_to_end};
pub use record::ConsumedRecord;
pub use replay_ledger::{ensure_replay_ledger_topic, fetch_dlq_backlog, read_replay_ledger, topic_exists};
pub use scan::TopicScan;
pub use transaction::{RecordsRefused, SourceOffset, TransactionalProducer};

impl KafkaError {
    /// True when the broker said the target topic or partition does not exist: retrying the
    /// same produce cannot succeed.
    pub fn is_unknown_topic(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode;
        matches!(
            self,
            KafkaError::Produce {
                source: rdkafka::error::KafkaError::MessageProduction(
                    RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownPartition
                ),
                ..
            }
        )
    }
}

impl KafkaError {
    /// True when the producer failed for good: an idempotent producer that hit a fatal error
    /// (its sequence numbers no longer line up with the broker's, say) refuses every later send,
    /// so retrying cannot help. The service must stop and be restarted with a new producer.
    pub fn is_fatal(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode;
        match self {
            KafkaError::ProducerFatal { .. } | KafkaError::TransactionFatal { .. } => true,
            KafkaError::Produce { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(RDKafkaErrorCode::Fatal | RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
            ),
            _ => false,
        }
    }
}

impl KafkaError {
    /// True when the record was refused as too large, by this client's `message.max.bytes` or by
    /// the target topic's `max.message.bytes`: retrying the same produce cannot succeed.
    pub fn is_message_too_large(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode;
        matches!(
            self,
            KafkaError::Produce {
                source: rdkafka::error::KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge
                ),
                ..
            }
        )
    }
}

impl KafkaError {
    /// True when Kafka refused the record for what it is (too large for this client's
    /// `message.max.bytes` or the topic's `max.message.bytes`, or invalid for the topic): sending
    /// the same bytes again cannot succeed. Refusals that depend on the client or the cluster
    /// (authorization, unknown topic, timeouts) are not among them. Kafka refuses a whole batch
    /// for one such record, so a caller should send a record alone before giving it up.
    pub fn is_refusal_of_the_record(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode;
        matches!(
            self,
            KafkaError::Produce {
                source: rdkafka::error::KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::MessageBatchTooLarge
                        | RDKafkaErrorCode::InvalidRecord
                ),
                ..
            }
        )
    }
}

/// Everything that can go wrong while talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A `-X key=value` pair is malformed.
    #[error("failed to parse kafka config {input:?}: expected key=value")]
    ParseConfigPair {
        /// The argument as given.
        input: String,
    },
    /// The `--kafka-config-file` could not be read or parsed.
    #[error("failed to read kafka config file {path}: {reason}")]
    ReadConfigFile {
        /// The file's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The brokers refused the SASL credentials.
    #[error("failed to authenticate with kafka: {reason}")]
    Authenticate {
        /// librdkafka's report, which names the mechanism and never the secret.
        reason: String,
    },
    /// The TLS handshake with a broker failed: its certificate is not signed by a CA in
    /// `ssl.ca.location` (or the system store), does not name the host, or the broker refused
    /// the client certificate or its absence.
    #[error(
        "TLS handshake with kafka failed (check ssl.ca.location, and ssl.certificate.location / \
         ssl.key.location if the listener requires a client certificate): {reason}"
    )]
    TlsHandshake {
        /// librdkafka's report, which names the TLS failure.
        reason: String,
    },
    /// librdkafka rejected the client configuration.
    #[error("failed to create kafka {client}: {source}")]
    CreateClient {
        /// Which client: producer, consumer, admin.
        client: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Subscribing to topics failed.
    #[error("failed to subscribe to {topics:?}: {source}")]
    Subscribe {
        /// The topics.
        topics: Vec<String>,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Receiving a record failed.
    #[error("failed to receive a record: {source}")]
    Receive {
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A record was not acknowledged by the broker.
    #[error("failed to produce to {topic}: {source}")]
    Produce {
        /// Target topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Storing or committing offsets failed.
    #[error("failed to commit offsets: {source}")]
    CommitOffsets {
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Pausing or resuming partitions failed.
    #[error("failed to {action} {topic}[{partition}]: {source}")]
    PauseResume {
        /// `pause`, `resume` or `seek`.
        action: &'static str,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Creating topics failed.
    #[error("failed to create topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// Deleting topics failed.
    #[error("failed to delete topic {topic}: {reason}")]
    DeleteTopic {
        /// The topic (or the topics, comma-separated, when the request as a whole failed).
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// Fetching cluster metadata or watermarks failed.
    #[error("failed to fetch metadata of {what}: {reason}")]
    FetchMetadata {
        /// Topic or cluster.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A blocking Kafka call did not finish in time or its task failed.
    #[error("failed to finish {operation} within {timeout_ms} ms")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The deadline in milliseconds.
        timeout_ms: u128,
    },
    /// A step of a Kafka transaction failed.
    #[error("failed to {operation} a kafka transaction: {source}")]
    Transaction {
        /// `initialise`, `begin`, `commit` or `abort`.
        operation: &'static str,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The idempotent producer failed for good: librdkafka raised a fatal error, after which
    /// every send fails. Only a new producer (a restart of the service) can send again.
    #[error("failed for good: the kafka producer raised a fatal error ({code:?}): {reason}")]
    ProducerFatal {
        /// librdkafka's error code of the underlying failure.
        code: rdkafka::types::RDKafkaErrorCode,
        /// librdkafka's explanation.
        reason: String,
    },
    /// The transactional producer failed for good (it was fenced by a newer instance with the
    /// same transactional id, or the broker refused it): nothing more can be sent with it.
    #[error("failed the kafka transaction for good ({code:?}): {reason}")]
    TransactionFatal {
        /// librdkafka's error code, `Fenced` when a newer producer took over.
        code: rdkafka::types::RDKafkaErrorCode,
        /// librdkafka's explanation.
        reason: String,
    },
    /// Changing a topic's configuration failed.
    #[error("failed to alter the configuration of topic {topic}: {reason}")]
    AlterTopicConfig {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
}

#[cfg(test)]
mod error_classification_tests {
    use rdkafka::error::KafkaError as RdKafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    use super::KafkaError;

    fn produce_error(code: RDKafkaErrorCode) -> KafkaError {
        KafkaError::Produce {
            topic: "notes".to_owned(),
            source: RdKafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn a_fatal_producer_error_is_fatal_and_a_passing_one_is_not() {
        assert!(
            KafkaError::ProducerFatal {
                code: RDKafkaErrorCode::OutOfOrderSequenceNumber,
                reason: "sequence desynchronised".to_owned(),
            }
            .is_fatal()
        );
        assert!(produce_error(RDKafkaErrorCode::Fatal).is_fatal());
        assert!(produce_error(RDKafkaErrorCode::ProducerFenced).is_fatal());
        for passing in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(!produce_error(passing).is_fatal(), "{passing:?} is not fatal");
        }
    }
}
