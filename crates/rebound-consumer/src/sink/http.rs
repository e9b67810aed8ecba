//! The HTTP webhook sink: POSTs each note as JSON with an `Idempotency-Key: <id>:<version>`
//! header, so the receiver can drop the duplicates that at-least-once delivery implies.
//!
//! Classification: 2xx and 409 (already applied) are done; 408, 425, 429, 5xx, timeouts and
//! connection errors are transient; every other status is permanent, redirects included.
//!
//! Redirects: a client that follows 301, 302 or 303 turns the POST into a GET without a body,
//! and the page it lands on answering 200 would count a note the receiver never saw as
//! applied. So only 307 and 308 are followed, which keep the method and the body, and only to
//! the same origin (a note is not sent to a host the operator did not name). Any other 3xx is a
//! permanent failure naming the status and the `Location`.
//!
//! `Retry-After`: a 429 or 503 may say how long to leave the receiver alone, in seconds or as
//! an HTTP date. The wait (capped at [`MAX_RETRY_AFTER`]) travels with the transient failure:
//! the consumer's circuit breaker holds the records at least that long, or, with the breaker
//! off, the record skips to the first tier whose delay covers it.
//!
//! Order: the versions of one note id in a batch are posted one after the other, in version
//! order, never two at once; different notes stay concurrent. A batch as a whole is bounded in
//! time (`batch_deadline`), so a receiver that accepts connections and never answers cannot hold
//! the consumer past its poll interval: what has not answered by then is a transient failure.
//!
//! Options (`http_options.rs`): how many requests run at once, a secret header sent with every
//! request, CA certificates trusted on top of the bundled and system roots, and a signature
//! (`signature.rs`) over the exact bytes of every body.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};

use rebound_retry::ErrorKind;

use super::http_options::HttpSinkSettings;
use super::signature::{SIGNATURE_HEADER, WebhookSigner};
use super::{ApplyBatchFuture, ApplyItem, Sink, SinkFailure};
use crate::ConsumerError;

/// Longest `Retry-After` honoured: a receiver asking for days would otherwise park records past
/// what the scheduler accepts as a due time, or keep the breaker from ever probing.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Most same-origin 307/308 redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// The HTTP sink.
#[derive(Clone)]
pub struct HttpSink {
    url: String,
    client: reqwest::Client,
    batch_deadline: Duration,
    concurrency: usize,
    signer: Option<WebhookSigner>,
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
    /// A sink posting to `url` as `settings` say.
    pub fn new(url: &str, settings: &HttpSinkSettings) -> Result<Self, ConsumerError> {
        Ok(Self {
            url: url.to_owned(),
            client: build_client(url, settings)?,
            batch_deadline: settings.batch_deadline,
            concurrency: settings.concurrency.max(1),
            signer: settings.signer.clone(),
        })
    }

    /// POSTs every note, a bounded number of notes at a time and the versions of one note one
    /// after the other; one result per item, in order. Items with no answer when the batch
    /// deadline passes are transient failures.
    pub async fn apply_batch(&self, items: &[ApplyItem]) -> Vec<Result<(), SinkFailure>> {
        let mut results: Vec<Option<Result<(), SinkFailure>>> = vec![None; items.len()];
        // Collecting the futures first keeps the returned future `Send` (a lazily mapped
        // iterator of borrowing closures trips the compiler's higher-ranked lifetime check).
        let chains: Vec<_> = versions_in_order_per_note(items)
            .into_iter()
            .map(|indexes| self.post_in_order(items, indexes))
            .collect();
        let mut finished = futures::stream::iter(chains).buffer_unordered(self.concurrency);
        let deadline = tokio::time::sleep(self.batch_deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                chain = finished.next() => match chain {
                    Some(chain) => {
                        for (index, result) in chain {
                            results[index] = Some(result);
                        }
                    }
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        let unanswered = format!(
            "http sink did not answer within the batch deadline of {}",
            humantime::format_duration(self.batch_deadline)
        );
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(SinkFailure::transient(unanswered.clone()))))
            .collect()
    }

    /// Posts the items at `indexes` (versions of one note, in order) one after the other.
    async fn post_in_order(&self, items: &[ApplyItem], indexes: Vec<usize>) -> Vec<(usize, Result<(), SinkFailure>)> {
        let mut results = Vec::with_capacity(indexes.len());
        for index in indexes {
            results.push((index, self.post(&items[index]).await));
        }
        results
    }

    async fn post(&self, item: &ApplyItem) -> Result<(), SinkFailure> {
        let response = self
            .request(item)?
            .send()
            .await
            .map_err(|error| SinkFailure::transient(format!("http request failed: {}", describe(&error))))?;
        classify_response(response.status(), response.headers())
    }
}

impl Sink for HttpSink {
    fn apply_batch(&self, items: Vec<ApplyItem>) -> ApplyBatchFuture<'_> {
        Box::pin(async move { HttpSink::apply_batch(self, &items).await })
    }
}

impl HttpSink {
    /// The POST of one note: its JSON body, its idempotency key, and the signature of exactly
    /// the bytes sent.
    fn request(&self, item: &ApplyItem) -> Result<reqwest::RequestBuilder, SinkFailure> {
        let body = serde_json::to_vec(&item.note)
            .map_err(|error| SinkFailure::permanent(format!("cannot encode the note as JSON: {error}")))?;
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                "Idempotency-Key",
                format!("{}:{}", item.note.note_id, item.note.version),
            );
        if let Some(signer) = &self.signer {
            // A clock before 1970 signs with t=0, which every receiver's replay window refuses:
            // a visible failure rather than a guess.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            request = request.header(SIGNATURE_HEADER, signer.signature(now, &body));
        }
        Ok(request.body(body))
    }
}

/// The sink's HTTP client: timeouts, the redirect rule, the configured header on every request,
/// and the extra trusted CA certificates.
fn build_client(url: &str, settings: &HttpSinkSettings) -> Result<reqwest::Client, ConsumerError> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::custom(
            follow_only_method_keeping_same_origin,
        ));
    if let Some(header) = &settings.header {
        let mut headers = HeaderMap::new();
        headers.insert(header.name().clone(), header.value().clone());
        builder = builder.default_headers(headers);
    }
    if let Some(trusted) = &settings.trusted_ca {
        for certificate in trusted.certificates() {
            builder = builder.add_root_certificate(certificate.clone());
        }
    }
    builder.build().map_err(|error| ConsumerError::OpenSink {
        sink: rebound_service::redact::redact_url(url),
        reason: error.to_string(),
    })
}

/// The items' indexes grouped by note id, each group in version order (then batch order).
fn versions_in_order_per_note(items: &[ApplyItem]) -> Vec<Vec<usize>> {
    let mut by_note: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        by_note.entry(item.note.note_id.as_str()).or_default().push(index);
    }
    let mut groups: Vec<Vec<usize>> = by_note
        .into_values()
        .map(|mut indexes| {
            indexes.sort_by_key(|index| (items[*index].note.version, *index));
            indexes
        })
        .collect();
    // Notes start in the order the batch first names them.
    groups.sort_by_key(|indexes| indexes.iter().min().copied());
    groups
}

/// The redirect rule: follow 307 and 308 (method and body kept) within the first URL's origin;
/// stop at anything else, so the 3xx itself is classified.
fn follow_only_method_keeping_same_origin(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let keeps_method = matches!(
        attempt.status(),
        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
    );
    let same_origin = attempt
        .previous()
        .first()
        .is_some_and(|first| first.origin() == attempt.url().origin());
    if keeps_method && same_origin && attempt.previous().len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

/// The classification rule for a response: its status, and for a redirect not followed, where
/// it pointed.
pub(crate) fn classify_response(status: StatusCode, headers: &HeaderMap) -> Result<(), SinkFailure> {
    if status.is_redirection() {
        let location = headers
            .get(LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_else(|| "(none)".to_owned());
        let location = rebound_service::redact::redact_url(&location);
        return Err(SinkFailure::permanent(format!(
            "http sink answered {status} with Location {location}; only same-origin 307 and 308 \
             redirects are followed, since others would turn the POST into a GET without the note"
        )));
    }
    classify_status(status).map_err(|failure| {
        let asked_wait = matches!(status.as_u16(), 429 | 503)
            .then(|| retry_after(headers, SystemTime::now()))
            .flatten();
        match asked_wait {
            Some(wait) if failure.kind == ErrorKind::Transient => {
                SinkFailure::transient_retry_after(failure.message, wait)
            }
            _ => failure,
        }
    })
}

/// The wait a `Retry-After` header asks for at `now`: a whole number of seconds, or an HTTP
/// date (the time left until it; a date in the past means no wait). Capped at
/// [`MAX_RETRY_AFTER`]; absent or unreadable, `None` (the tiers' own delays apply).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        // Too many digits for a u64 is far beyond the cap anyway.
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let date = httpdate::parse_http_date(text).ok()?;
        date.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
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
/// which may carry a token. The whole chain of causes is shown: a TLS failure ("invalid peer
/// certificate: UnknownIssuer") sits two levels below the connect error.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "transport error"
    };
    let mut described = kind.to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        described.push_str(": ");
        described.push_str(&cause.to_string());
        source = cause.source();
    }
    described
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

    fn headers_with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_an_http_date_and_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let read = |value: &str| retry_after(&headers_with_retry_after(value), now);
        assert_eq!(read("120"), Some(Duration::from_secs(120)));
        assert_eq!(read(" 0 "), Some(Duration::ZERO));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(read("Tue, 14 Nov 2023 22:14:50 GMT"), Some(Duration::from_secs(90)));
        assert_eq!(
            read("Tue, 14 Nov 2023 22:00:00 GMT"),
            Some(Duration::ZERO),
            "in the past"
        );
        assert_eq!(read("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(read("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        for unreadable in ["soon", "-5", "1.5", ""] {
            assert_eq!(read(unreadable), None, "{unreadable:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn only_429_and_503_carry_their_retry_after() {
        let headers = headers_with_retry_after("30");
        for (code, expected) in [
            (429, Some(Duration::from_secs(30))),
            (503, Some(Duration::from_secs(30))),
            (500, None),
            (502, None),
        ] {
            let status = StatusCode::from_u16(code).expect("valid status");
            let failure = classify_response(status, &headers).expect_err("fails");
            assert_eq!(failure.kind, ErrorKind::Transient);
            assert_eq!(failure.retry_after, expected, "{code}");
        }
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
