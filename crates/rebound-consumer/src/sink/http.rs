//! The HTTP webhook sink: POSTs each note as JSON with an `Idempotency-Key: <id>:<version>`
//! header, so the receiver can drop the duplicates that at-least-once delivery implies.
//!
//! Classification: 2xx and 409 (already applied) are done; 408, 425, 429, 5xx, timeouts and
//! connection errors are transient; every other status is permanent.

use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;

use super::{ApplyItem, SinkFailure};
use crate::ConsumerError;

/// How many POSTs of one batch run at once.
const CONCURRENT_REQUESTS: usize = 16;

/// The HTTP sink.
#[derive(Clone)]
pub struct HttpSink {
    url: String,
    client: reqwest::Client,
}

/// The URL may carry credentials or a token: show it redacted.
impl std::fmt::Debug for HttpSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpSink")
            .field("url", &rebound_service::redact::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// A sink posting to `url`, each request bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, ConsumerError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|error| ConsumerError::OpenSink {
                sink: rebound_service::redact::redact_url(url),
                reason: error.to_string(),
            })?;
        Ok(Self {
            url: url.to_owned(),
            client,
        })
    }

    /// POSTs every note, a bounded number at a time; one result per item, in order.
    pub async fn apply_batch(&self, items: &[ApplyItem]) -> Vec<Result<(), SinkFailure>> {
        // Collecting the futures first keeps the returned future `Send` (a lazily mapped
        // iterator of borrowing closures trips the compiler's higher-ranked lifetime check).
        let posts: Vec<_> = items.iter().map(|item| self.post(item)).collect();
        futures::stream::iter(posts)
            .buffered(CONCURRENT_REQUESTS)
            .collect()
            .await
    }

    async fn post(&self, item: &ApplyItem) -> Result<(), SinkFailure> {
        let idempotency_key = format!("{}:{}", item.note.note_id, item.note.version);
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", idempotency_key)
            .json(&item.note)
            .send()
            .await
            .map_err(|error| SinkFailure::transient(format!("http request failed: {}", describe(&error))))?;
        classify_status(response.status())
    }
}

/// The classification rule for a response status.
pub(crate) fn classify_status(status: StatusCode) -> Result<(), SinkFailure> {
    if status.is_success() || status == StatusCode::CONFLICT {
        return Ok(());
    }
    let message = format!("http sink answered {status}");
    let transient = status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
    if transient {
        Err(SinkFailure::transient(message))
    } else {
        Err(SinkFailure::permanent(message))
    }
}

/// reqwest's Display hides the cause (timeout, refused); name it, without the URL's query,
/// which may carry a token.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use rebound_retry::ErrorKind;

    use super::*;

    fn kind_of(code: u16) -> Option<ErrorKind> {
        classify_status(StatusCode::from_u16(code).expect("valid status"))
            .err()
            .map(|failure| failure.kind)
    }

    #[test]
    fn statuses_are_classified_as_documented() {
        for code in [200, 201, 202, 204, 409] {
            assert_eq!(kind_of(code), None, "{code}");
        }
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert_eq!(kind_of(code), Some(ErrorKind::Transient), "{code}");
        }
        for code in [400, 401, 403, 404, 410, 413, 422, 301] {
            assert_eq!(kind_of(code), Some(ErrorKind::Permanent), "{code}");
        }
    }
}
