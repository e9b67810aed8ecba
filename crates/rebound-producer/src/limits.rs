//! The intake's limits and every refusal they lead to, in one place: request body and note-count
//! limits and notes too large for Kafka (413), bodies sent too slowly (408), the per-client rate
//! limit (429 with `Retry-After`), the bound on requests in flight (503) and missing credentials
//! (401). Each refusal is one operational event, counted by reason, and leaves the outbox as it
//! was.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{AuthFailure, Client};
use crate::record_limit::RecordSizeLimit;

/// The validated limits of the intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeLimits {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most notes in one request.
    pub max_notes_per_request: usize,
    /// The largest note Kafka will take from this producer.
    pub record_limit: RecordSizeLimit,
    /// How long a client has to send its whole body once its headers are in.
    pub body_timeout: Duration,
    /// How long a client has to complete the TLS handshake and then to send each request's
    /// headers (also the longest an idle kept-alive connection stays open).
    pub header_timeout: Duration,
    /// Most requests to `/v1/` handled at once.
    pub max_requests_in_flight: usize,
    /// Requests per second allowed to each client, and the burst above it; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

/// A per-client rate: `per_second` requests on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once after a quiet spell.
    pub burst: NonZeroU32,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No valid credentials.
    Unauthenticated(AuthFailure),
    /// The client is over its rate; it may try again after this long.
    RateLimited(Duration),
    /// `--max-requests-in-flight` requests are being handled already.
    Overloaded(usize),
    /// The body is over `--max-body-bytes`.
    BodyTooLarge(usize),
    /// The request holds more notes than `--max-notes-per-request`.
    TooManyNotes {
        /// Notes in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Notes too large for Kafka: a summary and one problem per note.
    NotesTooLarge {
        /// The first note's problem, for the `error` field.
        summary: String,
        /// Every such note, by index.
        problems: Vec<serde_json::Value>,
    },
    /// The body did not arrive within the body timeout.
    SlowBody(Duration),
}

impl Refusal {
    /// The `reason` label of `rebound_producer_requests_rejected_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::RateLimited(_) => "rate_limited",
            Self::Overloaded(_) => "overloaded",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::TooManyNotes { .. } => "too_many_notes",
            Self::NotesTooLarge { .. } => "note_too_large",
            Self::SlowBody(_) => "slow_body",
        }
    }

    /// Emits the event and builds the answer. `client` names who asked (never a credential).
    pub(crate) fn respond(self, client: &str, path: &str) -> Response {
        rebound_service::events::producer_request_rejected(self.reason(), client, path);
        let (status, message, problems) = match &self {
            Self::Unauthenticated(AuthFailure::Missing) => (
                StatusCode::UNAUTHORIZED,
                "a bearer token (Authorization: Bearer TOKEN) or a client certificate is required; nothing was accepted"
                    .to_owned(),
                json!([]),
            ),
            Self::Unauthenticated(AuthFailure::InvalidToken) => (
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid; nothing was accepted".to_owned(),
                json!([]),
            ),
            Self::RateLimited(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "over this client's rate limit; retry after {} s; nothing was accepted",
                    retry_after_seconds(*wait)
                ),
                json!([]),
            ),
            Self::Overloaded(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{limit} requests are in flight already; retry later; nothing was accepted"),
                json!([]),
            ),
            Self::BodyTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes; nothing was accepted"),
                json!([]),
            ),
            Self::TooManyNotes { count, limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request holds {count} notes, more than the {limit} allowed per request; nothing was accepted"),
                json!([]),
            ),
            Self::NotesTooLarge { summary, problems } => {
                (StatusCode::PAYLOAD_TOO_LARGE, summary.clone(), json!(problems))
            }
            Self::SlowBody(timeout) => (
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}; nothing was accepted",
                    humantime::format_duration(*timeout)
                ),
                json!([]),
            ),
        };
        let mut response = (status, Json(json!({ "error": message, "problems": problems }))).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthenticated(failure) => {
                let challenge = match failure {
                    AuthFailure::Missing => r#"Bearer realm="rebound""#,
                    AuthFailure::InvalidToken => r#"Bearer realm="rebound", error="invalid_token""#,
                };
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            }
            Self::RateLimited(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(*wait)));
            }
            Self::Overloaded(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1_u64));
            }
            Self::SlowBody(_) => {
                // The rest of the body may still be on its way; the connection is not reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// Whole seconds to wait, rounded up and at least 1 (`Retry-After` has no fractions).
fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The limits checked on every `/v1/` request before its handler runs: the client's rate and
/// the requests in flight.
#[derive(Debug)]
pub(crate) struct RequestGate {
    rate_limiter: Option<DefaultKeyedRateLimiter<Client>>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

impl RequestGate {
    pub(crate) fn new(limits: &IntakeLimits) -> Self {
        Self {
            rate_limiter: limits
                .rate_limit
                .map(|rate| RateLimiter::keyed(Quota::per_second(rate.per_second).allow_burst(rate.burst))),
            in_flight: Arc::new(Semaphore::new(limits.max_requests_in_flight)),
            max_in_flight: limits.max_requests_in_flight,
        }
    }

    /// Charges the client's rate, then takes a place among the requests in flight, held until
    /// the permit is dropped. A rate-limited request takes no place.
    pub(crate) fn admit(&self, client: &Client) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Some(limiter) = &self.rate_limiter
            && let Err(not_until) = limiter.check_key(client)
        {
            return Err(Refusal::RateLimited(
                not_until.wait_time_from(DefaultClock::default().now()),
            ));
        }
        Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| Refusal::Overloaded(self.max_in_flight))
    }

    /// Forgets clients whose rate has fully recovered, so that the limiter's memory stays
    /// bounded by the clients of the last moments.
    pub(crate) fn forget_idle_clients(&self) {
        if let Some(limiter) = &self.rate_limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate_limit: Option<RateLimit>, max_requests_in_flight: usize) -> IntakeLimits {
        IntakeLimits {
            max_body_bytes: 1024,
            max_notes_per_request: 10,
            record_limit: RecordSizeLimit::from_message_max_bytes(None).expect("default"),
            body_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            max_requests_in_flight,
            rate_limit,
        }
    }

    #[test]
    fn a_client_over_its_burst_waits_while_another_client_goes_on() {
        let gate = RequestGate::new(&limits(
            Some(RateLimit {
                per_second: NonZeroU32::MIN,
                burst: NonZeroU32::new(2).expect("2"),
            }),
            10,
        ));
        let first = Client::Token("first".to_owned());
        let second = Client::Token("second".to_owned());
        assert!(gate.admit(&first).is_ok());
        assert!(gate.admit(&first).is_ok());
        let Err(Refusal::RateLimited(wait)) = gate.admit(&first) else {
            panic!("the third request in a second is over the burst")
        };
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(retry_after_seconds(wait).max(1), 1);
        assert!(gate.admit(&second).is_ok(), "the rate is per client");
    }

    #[test]
    fn the_bound_on_requests_in_flight_frees_a_place_when_a_request_ends() {
        let gate = RequestGate::new(&limits(None, 1));
        let client = Client::Token("a".to_owned());
        let permit = gate.admit(&client).expect("a place");
        assert_eq!(gate.admit(&client).expect_err("full"), Refusal::Overloaded(1));
        drop(permit);
        assert!(gate.admit(&client).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }
}
