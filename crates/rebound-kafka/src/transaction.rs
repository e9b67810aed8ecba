//! A transactional producer that makes a group of records visible all together or not at all.
//!
//! `rebound dlq replay` sends each batch of copies together with the ledger markers saying
//! "this dead letter was replayed" in one transaction, so a copy exists for a `read_committed`
//! reader exactly when its marker does, whatever moment the process dies at.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::record::headers_to_kafka;
use crate::scan::blocking;
use crate::{AckedRecord, KafkaArgs, KafkaError, OutgoingRecord};

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
        let transaction_timeout_ms = transaction_timeout.as_millis().to_string();
        let mut config = args.resolve()?.client_config(&[
            ("transaction.timeout.ms", &transaction_timeout_ms),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
        ]);
        config.set("transactional.id", transactional_id);
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
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

    async fn send_all(&self, records: &[OutgoingRecord]) -> Result<Vec<AckedRecord>, KafkaError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in records {
            let mut future_record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record.topic).headers(headers_to_kafka(&record.headers));
            if let Some(key) = record.key.as_deref() {
                future_record = future_record.key(key);
            }
            if let Some(value) = record.value.as_deref() {
                future_record = future_record.payload(value);
            }
            if let Some(partition) = record.partition {
                future_record = future_record.partition(partition);
            }
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

    async fn commit(&self) -> Result<(), KafkaError> {
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
    async fn abort_after(&self, error: &KafkaError) {
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
