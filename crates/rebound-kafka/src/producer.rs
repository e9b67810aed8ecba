//! An idempotent, `acks=all` producer whose sends complete only when the broker acknowledged the
//! record, so callers can store a consumed offset after the copy is safe and not before.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rebound_retry::RecordHeaders;

use crate::config::ResolvedKafkaConfig;
use crate::record::headers_to_kafka;
use crate::{KafkaArgs, KafkaError};

/// Producer tuning that is ours to choose; everything else passes through `-X`.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// How long librdkafka keeps retrying one record before reporting it failed. Kept well under
    /// the consumer's poll interval so a stuck broker surfaces as an error, not a silent hang.
    pub message_timeout: Duration,
    /// How long records linger to form batches.
    pub linger: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            message_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(5),
        }
    }
}

impl ProducerSettings {
    /// For services that wait for their copies' acknowledgements before moving on (the
    /// consumer's batches, the scheduler's releases): no linger, since every millisecond a copy
    /// lingers is a millisecond the whole loop waits. librdkafka still batches whatever queues
    /// up while a request is in flight. `-X linger.ms=...` overrides it.
    pub fn awaited_copies() -> Self {
        Self {
            linger: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// A record to produce. Key, value and headers are sent exactly as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Target topic.
    pub topic: String,
    /// Explicit partition, or `None` to let the key decide.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: RecordHeaders,
}

impl OutgoingRecord {
    /// The record as librdkafka takes it, borrowing key, value and topic; the one place a
    /// record is mapped for every producer of this crate (acknowledging and transactional).
    pub(crate) fn to_future_record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut future_record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers_to_kafka(&self.headers));
        if let Some(key) = self.key.as_deref() {
            future_record = future_record.key(key);
        }
        if let Some(value) = self.value.as_deref() {
            future_record = future_record.payload(value);
        }
        if let Some(partition) = self.partition {
            future_record = future_record.partition(partition);
        }
        future_record
    }
}

/// A record in librdkafka's queue, not yet acknowledged (see [`RecordProducer::enqueue`]).
#[must_use = "a record's acknowledgement must be awaited to know it is safe"]
pub struct PendingAck {
    delivery: rdkafka::producer::DeliveryFuture,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("PendingAck").finish_non_exhaustive()
    }
}

/// Where the broker stored an acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckedRecord {
    /// Partition written.
    pub partition: i32,
    /// Offset written.
    pub offset: i64,
}

/// The acknowledging producer. Cheap to clone; clones share one librdkafka client.
#[derive(Clone)]
pub struct RecordProducer {
    inner: FutureProducer,
    message_timeout: Duration,
}

impl std::fmt::Debug for RecordProducer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RecordProducer").finish_non_exhaustive()
    }
}

impl RecordProducer {
    /// Builds a producer from the shared flags. Idempotence (hence `acks=all` and ordered
    /// retries) is forced on: it is what makes "acknowledged" mean "safe".
    pub fn new(args: &KafkaArgs, settings: &ProducerSettings) -> Result<Self, KafkaError> {
        Self::from_resolved(&args.resolve()?, settings)
    }

    pub(crate) fn from_resolved(
        resolved: &ResolvedKafkaConfig,
        settings: &ProducerSettings,
    ) -> Result<Self, KafkaError> {
        let message_timeout_ms = settings.message_timeout.as_millis().to_string();
        let linger_ms = settings.linger.as_millis().to_string();
        let mut config = resolved.client_config(&[
            ("message.timeout.ms", &message_timeout_ms),
            ("linger.ms", &linger_ms),
            ("compression.type", "lz4"),
        ]);
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
        let inner: FutureProducer = config.create().map_err(|source| KafkaError::CreateClient {
            client: "producer",
            source,
        })?;
        Ok(Self {
            inner,
            message_timeout: settings.message_timeout,
        })
    }

    /// Sends a record and resolves once the broker acknowledged it (or finally failed).
    ///
    /// Many sends may be in flight at once: create the futures, then await them together.
    pub async fn send(&self, record: &OutgoingRecord) -> Result<AckedRecord, KafkaError> {
        let future_record = record.to_future_record();
        // While librdkafka's local queue is full, `send` waits for room up to this bound instead
        // of failing at once: that is the producer's backpressure.
        match self
            .inner
            .send(future_record, Timeout::After(self.message_timeout))
            .await
        {
            Ok(delivery) => Ok(AckedRecord {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Err((source, _)) => Err(self.fatal_error().unwrap_or_else(|| KafkaError::Produce {
                topic: record.topic.clone(),
                source,
            })),
        }
    }

    /// Puts a record into librdkafka's queue and returns at once, without waiting for the
    /// broker: the record's bytes are copied, so the caller's copy can go, and
    /// [`RecordProducer::acknowledgement`] then waits for the broker's answer. `Ok(None)` when
    /// librdkafka's queue is full: await an earlier acknowledgement, then enqueue again.
    ///
    /// For callers that keep thousands of records in flight: one small future per record rather
    /// than a `send` future holding the record's copy until the broker answers.
    pub fn enqueue(&self, record: &OutgoingRecord) -> Result<Option<PendingAck>, KafkaError> {
        match self.inner.send_result(record.to_future_record()) {
            Ok(delivery) => Ok(Some(PendingAck { delivery })),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                Ok(None)
            }
            Err((source, _)) => Err(self.fatal_error().unwrap_or_else(|| KafkaError::Produce {
                topic: record.topic.clone(),
                source,
            })),
        }
    }

    /// Waits for the broker's answer to an enqueued record.
    pub async fn acknowledgement(&self, pending: PendingAck) -> Result<AckedRecord, KafkaError> {
        match pending.delivery.await {
            Ok(Ok(delivery)) => Ok(AckedRecord {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((source, message))) => Err(self.fatal_error().unwrap_or_else(|| KafkaError::Produce {
                topic: rdkafka::Message::topic(&message).to_owned(),
                source,
            })),
            // The producer went away with the record still queued.
            Err(futures::channel::oneshot::Canceled) => Err(self.fatal_error().unwrap_or(KafkaError::Produce {
                topic: "(producer closed)".to_owned(),
                source: rdkafka::error::KafkaError::Canceled,
            })),
        }
    }

    /// The fatal error librdkafka raised on this producer, if any. After one, every send
    /// fails; a service that kept retrying would look alive and move nothing.
    pub fn fatal_error(&self) -> Option<KafkaError> {
        self.inner
            .client()
            .fatal_error()
            .map(|(code, reason)| KafkaError::ProducerFatal { code, reason })
    }

    /// Waits until every queued record is acknowledged or `timeout` passes. Blocking: runs on a
    /// blocking thread so the async runtime keeps serving other tasks.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.inner.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|_| KafkaError::Timeout {
                operation: "producer flush",
                timeout_ms: timeout.as_millis(),
            })?
            .map_err(|source| KafkaError::Produce {
                topic: "(flush)".to_owned(),
                source,
            })
    }

    /// Number of records queued in librdkafka and not yet acknowledged.
    pub fn in_flight_count(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
