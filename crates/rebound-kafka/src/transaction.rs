//! A transactional producer that makes a group of records visible all together or not at all.
//!
//! `rebound dlq replay` sends each batch of copies together with the ledger markers saying
//! "this dead letter was replayed" in one transaction, so a copy exists for a `read_committed`
//! reader exactly when its marker does, whatever moment the process dies at.
//!
//! The consumer and the scheduler in exactly-once mode use the same producer step by step
//! ([`TransactionalProducer::begin`], [`TransactionalProducer::send_records`],
//! [`TransactionalProducer::send_offsets`], [`TransactionalProducer::commit`]): a hop's copies
//! and the source offsets they settle are committed together, the offsets with the consumer
//! group's metadata (KIP-447), so a member that lost its partitions in a rebalance can commit
//! neither.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::GroupMetadata;
use crate::scan::blocking;
use crate::{AckedRecord, KafkaArgs, KafkaError, OutgoingRecord};

/// The offset a consumer group commits for a source partition: the next record to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceOffset {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// The offset of the next record to read (last settled + 1).
    pub next_offset: i64,
}

/// The positions as librdkafka commits them, for a transaction or a plain offset commit.
pub(crate) fn offsets_to_commit(offsets: &[SourceOffset]) -> Result<TopicPartitionList, KafkaError> {
    let mut list = TopicPartitionList::with_capacity(offsets.len());
    for offset in offsets {
        list.add_partition_offset(&offset.topic, offset.partition, Offset::Offset(offset.next_offset))
            .map_err(|source| KafkaError::CommitOffsets { source })?;
    }
    Ok(list)
}

/// Records of an open transaction that the broker did not acknowledge: the transaction can
/// only be aborted now. `refused` names each refused record by its index, with its error, so the
/// caller can tell a record that can never be sent (too large) from a passing refusal.
#[derive(Debug)]
pub struct RecordsRefused {
    /// The first error, which the transaction failed with.
    pub error: KafkaError,
    /// Every refused record: its index in the records given, and why.
    pub refused: Vec<(usize, KafkaError)>,
}

/// How many times a retriable commit failure is retried before giving up.
const COMMIT_ATTEMPTS: u32 = 5;

/// The transactional producer. One instance per transactional id may work at a time: starting a
/// second one fences the first.
pub struct TransactionalProducer {
    inner: FutureProducer,
    timeout: Duration,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("TransactionalProducer").finish_non_exhaustive()
    }
}

/// How long librdkafka waits before asking the transaction coordinator again. Right after a
/// commit the coordinator is still writing that transaction's markers and answers the next
/// transaction's first request with `CONCURRENT_TRANSACTIONS`, which it clears in a millisecond
/// or two; librdkafka's default of 100 ms made every other hop wait that long (measured: the
/// consumer's happy path at 11,000 notes/s with transactions against 198,000/s without; 57,000
/// with 10 ms). Other retries back off exponentially from it, up to `retry.backoff.max.ms`.
const TRANSACTION_RETRY_BACKOFF_MS: &str = "10";

/// The transactional producer's librdkafka configuration: ours where we chose, the user's
/// (`-X`, file) over it, and the properties transactions need over everything.
fn transactional_client_config(
    resolved: &crate::config::ResolvedKafkaConfig,
    transactional_id: &str,
    transaction_timeout: Duration,
) -> rdkafka::ClientConfig {
    let transaction_timeout_ms = transaction_timeout.as_millis().to_string();
    let mut config = resolved.client_config(&[
        ("transaction.timeout.ms", &transaction_timeout_ms),
        ("linger.ms", "5"),
        ("compression.type", "lz4"),
        ("retry.backoff.ms", TRANSACTION_RETRY_BACKOFF_MS),
    ]);
    config.set("transactional.id", transactional_id);
    config.set("enable.idempotence", "true");
    config.set("acks", "all");
    config
}

impl TransactionalProducer {
    /// Creates the producer and initialises transactions for `transactional_id`. The broker
    /// then aborts any transaction an earlier producer with this id left open (it crashed) and
    /// fences that producer, so it can commit nothing more.
    ///
    /// `transaction_timeout` bounds how long an abandoned transaction stays open, and with it how
    /// long `read_committed` consumers of the written partitions wait after a crash.
    pub async fn start(
        args: &KafkaArgs,
        transactional_id: &str,
        transaction_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let config = transactional_client_config(&args.resolve()?, transactional_id, transaction_timeout);
        let inner: FutureProducer = config.create().map_err(|source| KafkaError::CreateClient {
            client: "transactional producer",
            source,
        })?;
        let producer = inner.clone();
        blocking("transaction initialisation", timeout, move || {
            producer
                .init_transactions(Timeout::After(timeout))
                .map_err(|source| KafkaError::Transaction {
                    operation: "initialise",
                    source,
                })
        })
        .await?;
        Ok(Self { inner, timeout })
    }

    /// Sends `records` in one transaction and commits it; resolves once the commit is durable.
    ///
    /// On any failure the transaction is aborted (when it still can be), so none of the records
    /// becomes visible to `read_committed` readers, and the error is returned.
    pub async fn send_atomically(&self, records: &[OutgoingRecord]) -> Result<Vec<AckedRecord>, KafkaError> {
        self.inner
            .begin_transaction()
            .map_err(|source| KafkaError::Transaction {
                operation: "begin",
                source,
            })?;
        let outcome = match self.send_all(records).await {
            Ok(acked) => self.commit().await.map(|()| acked),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(acked) => Ok(acked),
            Err(error) => {
                // After a fatal error (fenced, above all) the per-record errors only say
                // "purged"; the producer's fatal error says why.
                if let Some((code, reason)) = self.inner.client().fatal_error() {
                    return Err(KafkaError::TransactionFatal { code, reason });
                }
                self.abort_after(&error).await;
                // A commit that races a newer producer with the same id can fail with an
                // unknown broker error; the fencing shows only in the answer to the abort, as
                // the producer's fatal error. Report that, so the caller knows it was taken over.
                if let Some((code, reason)) = self.inner.client().fatal_error() {
                    return Err(KafkaError::TransactionFatal { code, reason });
                }
                Err(error)
            }
        }
    }

    /// Opens a transaction. Every record sent and offset given until [`Self::commit`] or
    /// [`Self::abort_after`] belongs to it.
    pub fn begin(&self) -> Result<(), KafkaError> {
        self.inner.begin_transaction().map_err(|source| {
            self.fatal_error().unwrap_or(KafkaError::Transaction {
                operation: "begin",
                source,
            })
        })
    }

    /// Sends `records` in the open transaction and waits for every acknowledgement. The records
    /// whose indexes are in `alone` are sent first, one at a time, each awaited before the next
    /// is sent (Kafka refuses a whole produce request for one record that is too large, so a
    /// record refused as too large must be tried alone before it is given up); the others then
    /// go all in flight together, in order. On any refusal the transaction must be aborted.
    pub async fn send_records(
        &self,
        records: &[OutgoingRecord],
        alone: &BTreeSet<usize>,
    ) -> Result<Vec<AckedRecord>, RecordsRefused> {
        let mut acked: Vec<Option<AckedRecord>> = vec![None; records.len()];
        let mut refused = Vec::new();
        for &index in alone {
            let Some(record) = records.get(index) else { continue };
            let sent = match self.enqueue(record) {
                Ok(delivery) => settle_delivery(&record.topic, delivery.await),
                Err(error) => Err(error),
            };
            match sent {
                Ok(ack) => acked[index] = Some(ack),
                Err(error) => {
                    // The transaction must abort now; what would be sent after this record
                    // could only fail for that reason, hiding which record was at fault.
                    refused.push((index, error));
                    break;
                }
            }
        }
        if refused.is_empty() {
            let mut deliveries = Vec::new();
            for (index, record) in records.iter().enumerate() {
                if alone.contains(&index) {
                    continue;
                }
                match self.enqueue(record) {
                    Ok(delivery) => deliveries.push((index, delivery)),
                    Err(error) => {
                        refused.push((index, error));
                        break;
                    }
                }
            }
            let (indexes, futures): (Vec<usize>, Vec<DeliveryFuture>) = deliveries.into_iter().unzip();
            for (index, outcome) in indexes.into_iter().zip(join_all(futures).await) {
                match settle_delivery(&records[index].topic, outcome) {
                    Ok(ack) => acked[index] = Some(ack),
                    Err(error) => refused.push((index, error)),
                }
            }
        }
        if refused.is_empty() {
            return Ok(acked.into_iter().flatten().collect());
        }
        refused.sort_by_key(|(index, _)| *index);
        // After a fatal error (fenced, above all) the per-record errors only say "purged"; the
        // producer's fatal error says why.
        let error = match self.fatal_error() {
            Some(fatal) => fatal,
            None => clone_error(&refused[0].1),
        };
        Err(RecordsRefused { error, refused })
    }

    /// Adds the consumer group's `offsets` to the open transaction, with the group's metadata as
    /// the consumer has it now: the broker refuses them if the member has since left the group
    /// or a rebalance gave it a new generation (KIP-447), and the transaction must then abort.
    pub async fn send_offsets(&self, offsets: &[SourceOffset], group: GroupMetadata) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let list = offsets_to_commit(offsets)?;
        let producer = self.inner.clone();
        let timeout = self.timeout;
        let sent = blocking("transaction offsets", timeout, move || {
            producer
                .send_offsets_to_transaction(&list, group.native(), Timeout::After(timeout))
                .map_err(|source| KafkaError::Transaction {
                    operation: "send offsets to",
                    source,
                })
        })
        .await;
        sent.map_err(|error| self.fatal_error().unwrap_or(error))
    }

    /// The producer's fatal error (fenced by a newer producer with its transactional id, above
    /// all), if it has one: it can do nothing more.
    pub fn fatal_error(&self) -> Option<KafkaError> {
        self.inner
            .client()
            .fatal_error()
            .map(|(code, reason)| KafkaError::TransactionFatal { code, reason })
    }

    fn enqueue(&self, record: &OutgoingRecord) -> Result<DeliveryFuture, KafkaError> {
        let future_record = record.to_future_record();
        self.inner
            .send_result(future_record)
            .map_err(|(source, _)| KafkaError::Produce {
                topic: record.topic.clone(),
                source,
            })
    }

    async fn send_all(&self, records: &[OutgoingRecord]) -> Result<Vec<AckedRecord>, KafkaError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let future_record = record.to_future_record();
            // Enqueued in order now, so the partition keeps the order of `records`.
            let delivery = self
                .inner
                .send_result(future_record)
                .map_err(|(source, _)| KafkaError::Produce {
                    topic: record.topic.clone(),
                    source,
                })?;
            deliveries.push((record.topic.clone(), delivery));
        }
        let mut acked = Vec::with_capacity(deliveries.len());
        let (topics, futures): (Vec<String>, Vec<_>) = deliveries.into_iter().unzip();
        for (topic, outcome) in topics.into_iter().zip(join_all(futures).await) {
            match outcome {
                Ok(Ok(delivery)) => acked.push(AckedRecord {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((source, _))) => return Err(KafkaError::Produce { topic, source }),
                Err(_) => {
                    return Err(KafkaError::Produce {
                        topic,
                        source: RdKafkaError::Canceled,
                    });
                }
            }
        }
        Ok(acked)
    }

    /// Commits the open transaction; resolves once it is durable. A retriable failure is retried
    /// a few times; any other failure leaves the transaction to [`Self::abort_after`].
    pub async fn commit(&self) -> Result<(), KafkaError> {
        let mut attempt = 1;
        loop {
            let producer = self.inner.clone();
            let timeout = self.timeout;
            let outcome = blocking("transaction commit", timeout, move || {
                producer
                    .commit_transaction(Timeout::After(timeout))
                    .map_err(|source| KafkaError::Transaction {
                        operation: "commit",
                        source,
                    })
            })
            .await;
            match outcome {
                // librdkafka documents a retriable commit error as safe to retry: the commit is
                // idempotent until it succeeded or the transaction needs an abort.
                Err(KafkaError::Transaction {
                    source: RdKafkaError::Transaction(ref error),
                    ..
                }) if error.is_retriable() && attempt < COMMIT_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    /// Aborts the open transaction after `error`, unless the producer is fenced or otherwise
    /// fatally failed: then the broker aborts it, and the abort call could only fail again.
    pub async fn abort_after(&self, error: &KafkaError) {
        if error.is_fatal_transaction_error() {
            return;
        }
        let producer = self.inner.clone();
        let timeout = self.timeout;
        let aborted = blocking("transaction abort", timeout, move || {
            producer
                .abort_transaction(Timeout::After(timeout))
                .map_err(|source| KafkaError::Transaction {
                    operation: "abort",
                    source,
                })
        })
        .await;
        if let Err(abort_error) = aborted {
            // Not fatal to correctness: an open transaction is aborted by the broker after the
            // transaction timeout, or at once when the next producer with this id starts.
            tracing::warn!(error = %abort_error, "failed to abort the transaction");
        }
    }
}

/// One record's delivery outcome as the acknowledgement or the broker's refusal.
fn settle_delivery(
    topic: &str,
    outcome: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Result<AckedRecord, KafkaError> {
    match outcome {
        Ok(Ok(delivery)) => Ok(AckedRecord {
            partition: delivery.partition,
            offset: delivery.offset,
        }),
        Ok(Err((source, _))) => Err(KafkaError::Produce {
            topic: topic.to_owned(),
            source,
        }),
        Err(_) => Err(KafkaError::Produce {
            topic: topic.to_owned(),
            source: RdKafkaError::Canceled,
        }),
    }
}

/// A copy of a produce error, for the one that names a failed transaction while the list of
/// refused records keeps the originals.
fn clone_error(error: &KafkaError) -> KafkaError {
    match error {
        KafkaError::Produce { topic, source } => KafkaError::Produce {
            topic: topic.clone(),
            source: source.clone(),
        },
        // Refusals are produce errors; anything else is named by the list of refused records.
        _ => KafkaError::Produce {
            topic: "(transaction)".to_owned(),
            source: RdKafkaError::Canceled,
        },
    }
}

impl KafkaError {
    /// True for a transaction error after which this producer can do nothing more: it was
    /// fenced by a newer producer with the same transactional id, or failed fatally.
    pub fn is_fatal_transaction_error(&self) -> bool {
        match self {
            KafkaError::Transaction {
                source: RdKafkaError::Transaction(error),
                ..
            } => error.is_fatal(),
            KafkaError::TransactionFatal { .. } => true,
            _ => false,
        }
    }

    /// True when librdkafka purged the record from its queue or from a request in flight (a
    /// transaction that had to abort takes its records with it): nothing about the record.
    pub fn is_purged(&self) -> bool {
        matches!(
            self,
            KafkaError::Produce { source, .. }
                if matches!(
                    source.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                )
        )
    }

    /// True when a newer producer with the same transactional id took over.
    pub fn is_fenced(&self) -> bool {
        let code = match self {
            KafkaError::Transaction { source, .. } | KafkaError::Produce { source, .. } => source.rdkafka_error_code(),
            KafkaError::TransactionFatal { code, .. } => Some(*code),
            _ => None,
        };
        matches!(
            code,
            Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(extra: &[&str]) -> crate::config::ResolvedKafkaConfig {
        let mut args = KafkaArgs::for_brokers("127.0.0.1:9092");
        args.kafka_config = extra
            .iter()
            .map(|property| property.parse().expect("KEY=VALUE"))
            .collect();
        args.resolve().expect("valid")
    }

    #[test]
    fn transactions_ask_the_coordinator_again_within_milliseconds_unless_told_otherwise() {
        let config = transactional_client_config(&resolved(&[]), "id", Duration::from_secs(10));
        assert_eq!(config.get("retry.backoff.ms"), Some(TRANSACTION_RETRY_BACKOFF_MS));
        assert_eq!(config.get("transactional.id"), Some("id"));
        assert_eq!(config.get("transaction.timeout.ms"), Some("10000"));
        let overridden = transactional_client_config(
            &resolved(&["retry.backoff.ms=250", "enable.idempotence=false"]),
            "id",
            Duration::from_secs(10),
        );
        assert_eq!(
            overridden.get("retry.backoff.ms"),
            Some("250"),
            "-X wins over our default"
        );
        assert_eq!(
            overridden.get("enable.idempotence"),
            Some("true"),
            "transactions need it"
        );
    }
}
