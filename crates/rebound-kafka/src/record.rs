//! A consumed record copied out of librdkafka, and the adapters between Kafka headers and the
//! client-independent [`RecordHeaders`] of the retry contract.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rebound_retry::{RecordHeaders, RecordLocation};

/// A record as consumed, owned so it can outlive the consumer's poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its Kafka timestamp in epoch milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: RecordHeaders,
}

impl ConsumedRecord {
    /// Copies a record out of librdkafka's buffer.
    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message.headers().map(headers_from_kafka).unwrap_or_default(),
        }
    }

    /// Where the record was read, as the retry contract describes it.
    pub fn location(&self) -> RecordLocation {
        RecordLocation {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
        }
    }

    /// The key as lossy UTF-8, for log lines.
    pub fn key_for_display(&self) -> String {
        self.key
            .as_deref()
            .map(|key| String::from_utf8_lossy(key).into_owned())
            .unwrap_or_default()
    }
}

/// Copies Kafka headers into the contract's header list, keeping order and duplicates.
///
/// rdkafka panics on a header key that is not valid UTF-8 (it unwraps the conversion, with no
/// fallible accessor), and a record from the network must never crash a service. Each header is
/// therefore read under `catch_unwind`; one that cannot be read is replaced, in its place, by
/// [`rebound_retry::contract::UNREADABLE_HEADER`] with no value, and the record goes on. Contract keys are ASCII,
/// so only a foreign header can be affected; copies of the record carry the stand-in.
pub(crate) fn headers_from_kafka<H: Headers>(headers: &H) -> RecordHeaders {
    (0..headers.count())
        .filter_map(|index| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                headers.try_get(index).map(|header| rebound_retry::Header {
                    key: header.key.to_owned(),
                    value: header.value.map(<[u8]>::to_vec),
                })
            })) {
                Ok(header) => header,
                Err(_) => {
                    tracing::warn!(
                        index,
                        stand_in = rebound_retry::contract::UNREADABLE_HEADER,
                        "header key is not valid UTF-8; replaced by a stand-in"
                    );
                    Some(rebound_retry::Header {
                        key: rebound_retry::contract::UNREADABLE_HEADER.to_owned(),
                        value: None,
                    })
                }
            }
        })
        .collect()
}

/// Builds Kafka headers from the contract's header list. `OwnedHeaders` only appends, which is
/// why replacement happens in [`RecordHeaders`] before this conversion.
pub(crate) fn headers_to_kafka(headers: &RecordHeaders) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |kafka_headers, header| {
            kafka_headers.insert(Header {
                key: &header.key,
                value: header.value.as_deref(),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_a_round_trip_with_nulls_and_duplicates() {
        let mut headers = RecordHeaders::new();
        headers.push("a", Some(b"1".to_vec()));
        headers.push("null", None);
        headers.push("a", Some(vec![0xFF]));
        let kafka = headers_to_kafka(&headers);
        assert_eq!(headers_from_kafka(&kafka), headers);
    }
}
