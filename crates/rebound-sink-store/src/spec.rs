//! `--sink URL`: which built-in sink the consumer applies notes to, and where `rebound audit`
//! reads them.

use std::path::PathBuf;
use std::str::FromStr;

use crate::{PostgresSinkSpec, SinkStoreError};

/// Which sink to use, parsed from `--sink URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// `sqlite:///absolute/path.db` or `sqlite://relative/path.db`.
    Sqlite(PathBuf),
    /// `http://…` or `https://…`: POST each note as JSON.
    Http(String),
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` or `postgresql://…`: one row per note.
    Postgres(PostgresSinkSpec),
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
            SinkSpec::Postgres(spec) => formatter.debug_tuple("Postgres").field(&spec.redacted()).finish(),
            SinkSpec::Null => formatter.write_str("Null"),
        }
    }
}

impl FromStr for SinkSpec {
    type Err = SinkStoreError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| SinkStoreError::ParseSinkUrl {
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
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PostgresSinkSpec::parse(url).map(SinkSpec::Postgres);
        }
        if url == "null://" || url == "null:" {
            return Ok(SinkSpec::Null);
        }
        Err(fail("expected sqlite://PATH, postgres://URL, http(s)://URL or null://"))
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
            ("mysql://db", "expected sqlite://PATH"),
            ("postgres://db", "missing database name"),
            ("http://", "empty host"),
        ] {
            let error = url.parse::<SinkSpec>().expect_err(url).to_string();
            assert!(error.contains(expected) && error.contains(url), "{error}");
        }
    }
}
