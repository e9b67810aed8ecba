//! The built-in sinks (SQLite, PostgreSQL, HTTP, null, failure injection), each an
//! implementation of `rebound_sink_store`'s [`Sink`] trait, and [`open_sink`], which opens the
//! one `--sink` names. Every sink answers per note with success or a classified failure, so one
//! bad note never fails its whole batch. A user's own sink implements the same trait and runs
//! through [`crate::run_with_sink`].

mod http;
mod http_options;
mod inject;
mod postgres;
mod signature;
mod sqlite;

pub use http::HttpSink;
pub use http_options::{DEFAULT_CONCURRENCY, HeaderText, HttpSinkSettings, SecretHeader, TrustedCa, signer_from_file};
pub use inject::{FailureInjectingSink, FailureInjection};
pub use postgres::{PostgresSink, PostgresSinkSettings};
pub use rebound_sink_store::{ApplyBatchFuture, ApplyItem, ApplyOutcome, NullSink, Sink, SinkFailure};
pub use signature::{MIN_SECRET_BYTES, SIGNATURE_HEADER, WebhookSigner};
pub use sqlite::SqliteSink;

use rebound_sink_store::SinkSpec;

use crate::{ConsumerConfig, ConsumerError};

/// Opens the built-in sink `config.sink` names, with its options (the SQLite or PostgreSQL
/// delivery journal, the HTTP timeouts, the PostgreSQL pool and TLS). Failure injection is not
/// added here: [`crate::run_with_sink`] adds it to any sink.
pub async fn open_sink(config: &ConsumerConfig) -> Result<Box<dyn Sink>, ConsumerError> {
    Ok(match &config.sink {
        SinkSpec::Sqlite(path) => {
            let mut sink = SqliteSink::open(path)?;
            if config.sink_journal {
                sink.enable_delivery_journal()?;
            }
            Box::new(sink)
        }
        SinkSpec::Postgres(spec) => {
            let settings = PostgresSinkSettings {
                spec: spec.clone(),
                tls: config.postgres_tls.clone(),
                pool_size: config.postgres_pool_size,
                timeout: config.postgres_timeout,
                journal: config.sink_journal,
            };
            Box::new(PostgresSink::open(settings).await?)
        }
        SinkSpec::Http(url) => Box::new(HttpSink::new(url, &config.http)?),
        SinkSpec::Null => Box::new(NullSink),
    })
}
