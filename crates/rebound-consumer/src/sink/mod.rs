//! Sinks: where decoded notes are applied. Every sink answers per note with success or a
//! classified failure, so one bad note never fails its whole batch.

mod http;
mod http_options;
mod inject;
mod signature;
mod sqlite;

pub use http::HttpSink;
pub use http_options::{DEFAULT_CONCURRENCY, HeaderText, HttpSinkSettings, SecretHeader, TrustedCa, signer_from_file};
pub use inject::{FailureInjectingSink, FailureInjection};
pub use signature::{MIN_SECRET_BYTES, SIGNATURE_HEADER, WebhookSigner};
pub use sqlite::SqliteSink;

use rebound_retry::ErrorKind;
use rebound_schema::Note;
use rebound_sink_store::SinkSpec;

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
    /// Opens the sink a spec names; an HTTP sink sends as `http` says.
    pub fn open(spec: &SinkSpec, http: &HttpSinkSettings) -> Result<Self, ConsumerError> {
        Ok(match spec {
            SinkSpec::Sqlite(path) => Sink::Sqlite(SqliteSink::open(path)?),
            SinkSpec::Http(url) => Sink::Http(HttpSink::new(url, http)?),
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
