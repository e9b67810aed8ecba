//! Sinks: where decoded notes are applied. Every sink answers per note with success or a
//! classified failure, so one bad note never fails its whole batch.

mod http;
mod inject;
mod sqlite;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use http::HttpSink;
pub use inject::{FailureInjectingSink, FailureInjection};
pub use sqlite::{AppliedNoteRow, DeliveryJournalSummary, SqliteSink};

use rebound_retry::ErrorKind;
use rebound_schema::Note;

use crate::ConsumerError;

/// One note to apply, with where it stands in its retry history.
#[derive(Debug, Clone)]
pub struct ApplyItem {
    /// The decoded note.
    pub note: Note,
    /// Failed attempts before this one (0 on the first try).
    pub previous_attempts: u32,
    /// The tier the record last went through, if it was retried.
    pub last_tier: Option<String>,
}

/// Why a sink could not apply one note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    /// Transient (retry later) or permanent (dead-letter now).
    pub kind: ErrorKind,
    /// What went wrong, for the `retry.error.message` header.
    pub message: String,
}

impl SinkFailure {
    /// A failure that may succeed when tried again later.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
        }
    }

    /// A failure that will not succeed however often it is tried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
        }
    }
}

/// Which sink to use, parsed from `--sink URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `sqlite:///absolute/path.db` or `sqlite://relative/path.db`.
    Sqlite(PathBuf),
    /// `http://…` or `https://…`: POST each note as JSON.
    Http(String),
    /// `null://`: accept everything and keep nothing (benchmarks).
    Null,
}

/// Shows an HTTP sink's URL without credentials, query or fragment, since the configuration is
/// logged at start-up.
impl std::fmt::Debug for SinkSpec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Sqlite(path) => formatter.debug_tuple("Sqlite").field(path).finish(),
            SinkSpec::Http(url) => formatter
                .debug_tuple("Http")
                .field(&rebound_service::redact::redact_url(url))
                .finish(),
            SinkSpec::Null => formatter.write_str("Null"),
        }
    }
}

impl FromStr for SinkSpec {
    type Err = ConsumerError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ConsumerError::ParseSinkUrl {
            url: rebound_service::redact::redact_url(url),
            reason: reason.to_owned(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(fail("missing database path, as in sqlite:///var/lib/rebound/notes.db"));
            }
            return Ok(SinkSpec::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return reqwest::Url::parse(url)
                .map(|_| SinkSpec::Http(url.to_owned()))
                .map_err(|error| fail(&error.to_string()));
        }
        if url == "null://" || url == "null:" {
            return Ok(SinkSpec::Null);
        }
        Err(fail("expected sqlite://PATH, http(s)://URL or null://"))
    }
}

/// A sink ready to apply notes.
#[derive(Debug)]
pub enum Sink {
    /// Embedded SQLite database.
    Sqlite(SqliteSink),
    /// HTTP webhook.
    Http(HttpSink),
    /// Accepts everything.
    Null,
    /// Another sink behind random injected failures.
    FailureInjecting(Box<FailureInjectingSink>),
}

impl Sink {
    /// Opens the sink a spec names; an HTTP sink bounds each request by `http_timeout` and each
    /// batch by `http_batch_timeout`.
    pub fn open(spec: &SinkSpec, http_timeout: Duration, http_batch_timeout: Duration) -> Result<Self, ConsumerError> {
        Ok(match spec {
            SinkSpec::Sqlite(path) => Sink::Sqlite(SqliteSink::open(path)?),
            SinkSpec::Http(url) => Sink::Http(HttpSink::new(url, http_timeout, http_batch_timeout)?),
            SinkSpec::Null => Sink::Null,
        })
    }

    /// Applies a batch; the result has one entry per item, in order.
    pub async fn apply_batch(&self, items: Vec<ApplyItem>) -> Vec<Result<(), SinkFailure>> {
        match self {
            Sink::Sqlite(sink) => sink.apply_batch(items).await,
            Sink::Http(sink) => sink.apply_batch(&items).await,
            Sink::Null => items.iter().map(|_| Ok(())).collect(),
            Sink::FailureInjecting(sink) => Box::pin(sink.apply_batch(items)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_urls_parse() {
        assert_eq!(
            "sqlite:///var/lib/notes.db".parse::<SinkSpec>().expect("valid"),
            SinkSpec::Sqlite(PathBuf::from("/var/lib/notes.db"))
        );
        assert_eq!(
            "sqlite://notes.db".parse::<SinkSpec>().expect("valid"),
            SinkSpec::Sqlite(PathBuf::from("notes.db"))
        );
        assert_eq!(
            "http://127.0.0.1:8080/notes".parse::<SinkSpec>().expect("valid"),
            SinkSpec::Http("http://127.0.0.1:8080/notes".to_owned())
        );
        assert_eq!("null://".parse::<SinkSpec>().expect("valid"), SinkSpec::Null);
    }

    #[test]
    fn bad_sink_urls_name_the_problem() {
        for (url, expected) in [
            ("sqlite://", "missing database path"),
            ("postgres://db", "expected sqlite://PATH"),
            ("http://", "empty host"),
        ] {
            let error = url.parse::<SinkSpec>().expect_err(url).to_string();
            assert!(error.contains(expected) && error.contains(url), "{error}");
        }
    }
}
