//! The PostgreSQL sink's side of the store: connecting (`postgres://` URLs, TLS through rustls),
//! the versioned schema of its `notes` table, the version-rule upsert, the opt-in delivery
//! journal, and the readers `rebound audit` and the tests use. The writer (pool, transactions,
//! error classification) is the consumer's.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use rebound_migrate::{Migrated, PostgresMigration, migrate_postgres};
use rebound_schema::Note;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config};

use crate::{AppliedNoteRow, DeliveryJournalSummary, SinkStoreError};

/// The name of the notes table's schema in `rebound_schema_versions`.
pub const POSTGRES_NOTES_SCHEMA: &str = "rebound-sink-notes";

/// The PostgreSQL sink's migrations, oldest first. Never edit one that shipped: add the next.
pub const POSTGRES_NOTES_MIGRATIONS: &[PostgresMigration] = &[PostgresMigration {
    version: 1,
    name: "notes table",
    sql: "
CREATE TABLE IF NOT EXISTS notes (
    note_id          TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    version          BIGINT NOT NULL,
    title            TEXT NOT NULL,
    body             TEXT NOT NULL,
    tags             JSONB NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    deleted          BOOLEAN NOT NULL,
    pinned           BOOLEAN NOT NULL,
    applied_attempt  BIGINT NOT NULL,
    applied_tier     TEXT
);
",
}];

/// The version rule, as in SQLite: a stale or repeated version leaves the row as it is and the
/// statement still succeeds (0 rows), because the newer state is already applied.
pub const POSTGRES_UPSERT_SQL: &str = "
INSERT INTO notes (note_id, user_id, device_id, version, title, body, tags, updated_at_ms,
                   deleted, pinned, applied_attempt, applied_tier)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, $12)
ON CONFLICT (note_id) DO UPDATE SET
    user_id = excluded.user_id, device_id = excluded.device_id, version = excluded.version,
    title = excluded.title, body = excluded.body, tags = excluded.tags,
    updated_at_ms = excluded.updated_at_ms, deleted = excluded.deleted, pinned = excluded.pinned,
    applied_attempt = excluded.applied_attempt, applied_tier = excluded.applied_tier
WHERE excluded.version > notes.version
";

/// The delivery journal (opt-in, soak tests): one row per delivery, in the batch's transaction.
pub const POSTGRES_JOURNAL_SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    note_id            TEXT NOT NULL,
    version            BIGINT NOT NULL,
    previous_attempts  BIGINT NOT NULL,
    changed            BIGINT NOT NULL
);
";

/// The journal's insert.
pub const POSTGRES_JOURNAL_INSERT_SQL: &str =
    "INSERT INTO deliveries (note_id, version, previous_attempts, changed) VALUES ($1, $2, $3, $4)";

/// The parameters of [`POSTGRES_UPSERT_SQL`] for one note.
#[derive(Debug)]
pub struct PostgresNoteParams<'note> {
    note: &'note Note,
    tags_json: String,
    applied_attempt: i64,
    applied_tier: Option<&'note str>,
}

impl<'note> PostgresNoteParams<'note> {
    /// The parameters of `note`, applied after `applied_attempt` failed attempts, last through
    /// `applied_tier`.
    pub fn new(note: &'note Note, applied_attempt: u32, applied_tier: Option<&'note str>) -> Self {
        Self {
            note,
            tags_json: serde_json::to_string(&note.tags).unwrap_or_else(|_| "[]".to_owned()),
            applied_attempt: i64::from(applied_attempt),
            applied_tier,
        }
    }

    /// In the order of the statement's placeholders.
    pub fn as_params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.note.note_id,
            &self.note.user_id,
            &self.note.device_id,
            &self.note.version,
            &self.note.title,
            &self.note.body,
            &self.tags_json,
            &self.note.updated_at,
            &self.note.deleted,
            &self.note.pinned,
            &self.applied_attempt,
            &self.applied_tier,
        ]
    }
}

/// A PostgreSQL sink, from `--sink postgres://USER:PASSWORD@HOST:PORT/DATABASE?OPTIONS` (also
/// `postgresql://`). Options are libpq's that tokio-postgres knows, e.g. `sslmode=require`.
#[derive(Clone)]
pub struct PostgresSinkSpec {
    url: String,
    // Boxed: tokio-postgres's settings are ten times the size of the other sinks' specs.
    config: Box<Config>,
}

impl PartialEq for PostgresSinkSpec {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}

impl Eq for PostgresSinkSpec {}

/// The URL carries the password: show it redacted.
impl std::fmt::Debug for PostgresSinkSpec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_tuple("PostgresSinkSpec")
            .field(&self.redacted())
            .finish()
    }
}

impl PostgresSinkSpec {
    /// Parses a `postgres://` or `postgresql://` URL; the error never shows the password.
    pub fn parse(url: &str) -> Result<Self, SinkStoreError> {
        let config = Config::from_str(url).map_err(|error| SinkStoreError::ParseSinkUrl {
            url: rebound_service::redact::redact_url(url),
            // tokio-postgres names the bad part, never echoes the URL.
            reason: error.to_string(),
        })?;
        if config.get_dbname().is_none() {
            return Err(SinkStoreError::ParseSinkUrl {
                url: rebound_service::redact::redact_url(url),
                reason: "missing database name, as in postgres://user:password@host:5432/notes".to_owned(),
            });
        }
        Ok(Self {
            url: url.to_owned(),
            config: Box::new(config),
        })
    }

    /// The connection settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The URL without credentials, query or fragment, for logs and errors.
    pub fn redacted(&self) -> String {
        rebound_service::redact::redact_url(&self.url)
    }

    /// `text` with the URL's user name and password replaced by `***`: the server names the
    /// user in its answers ("password authentication failed for user ..."), and rebound shows
    /// no part of a sink URL's credentials.
    pub fn scrub(&self, text: &str) -> String {
        let mut scrubbed = text.to_owned();
        let password = self
            .config
            .get_password()
            .map(|password| String::from_utf8_lossy(password).into_owned());
        for secret in [password, self.config.get_user().map(str::to_owned)]
            .into_iter()
            .flatten()
        {
            if !secret.is_empty() {
                scrubbed = scrubbed.replace(&secret, "***");
            }
        }
        scrubbed
    }
}

/// How PostgreSQL connections are encrypted: `sslmode` in the URL says whether (`disable`,
/// `prefer`, the default, or `require`), this says whom to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct PostgresTlsArgs {
    /// PEM file of the certificate authorities a PostgreSQL sink's server certificate must chain
    /// to, instead of the built-in web PKI roots (use it for a private CA). TLS itself is chosen
    /// by `sslmode` in the sink URL: `disable`, `prefer` (the default) or `require`.
    #[arg(long, env = "REBOUND_POSTGRES_CA_FILE")]
    pub postgres_ca_file: Option<PathBuf>,
}

/// The TLS connector for `tls`: rustls with ring, trusting the CA file's certificates or else
/// the web PKI roots.
pub fn postgres_tls_connector(
    tls: &PostgresTlsArgs,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, SinkStoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.postgres_ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certificates = read_ca_file(path)?;
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| ca_error(path, &error.to_string()))?;
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ca_error(Path::new("(built-in)"), &error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn read_ca_file(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SinkStoreError> {
    use rustls::pki_types::pem::PemObject as _;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|error| ca_error(path, &error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ca_error(path, &error.to_string()))?;
    if certificates.is_empty() {
        return Err(ca_error(path, "no PEM certificate in the file"));
    }
    Ok(certificates)
}

fn ca_error(path: &Path, reason: &str) -> SinkStoreError {
    SinkStoreError::ReadCaFile {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    }
}

/// Opens one connection and drives it on a task of the current tokio runtime.
pub async fn connect_postgres(spec: &PostgresSinkSpec, tls: &PostgresTlsArgs) -> Result<Client, SinkStoreError> {
    let connector = postgres_tls_connector(tls)?;
    let (client, connection) = spec
        .config
        .connect(connector)
        .await
        .map_err(|error| SinkStoreError::OpenSink {
            sink: spec.redacted(),
            reason: spec.scrub(&describe_postgres_error(&error)),
        })?;
    let sink = spec.redacted();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(sink = %sink, error = %error, "postgresql connection closed");
        }
    });
    Ok(client)
}

/// Creates or migrates the notes table.
pub async fn migrate_postgres_notes(client: &mut Client, spec: &PostgresSinkSpec) -> Result<Migrated, SinkStoreError> {
    migrate_postgres(client, POSTGRES_NOTES_SCHEMA, POSTGRES_NOTES_MIGRATIONS)
        .await
        .map_err(|error| SinkStoreError::MigrateSink {
            sink: spec.redacted(),
            source: error,
        })
}

/// A PostgreSQL error with its server-side detail (the Display form of tokio-postgres says only
/// "db error"). Holds no password: the server never echoes one.
pub fn describe_postgres_error(error: &tokio_postgres::Error) -> String {
    if let Some(database) = error.as_db_error() {
        let mut text = format!(
            "{}: {} ({})",
            database.severity(),
            database.message(),
            database.code().code()
        );
        if let Some(detail) = database.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

fn read_error(spec: &PostgresSinkSpec, error: &tokio_postgres::Error) -> SinkStoreError {
    SinkStoreError::ReadSink {
        sink: spec.redacted(),
        reason: spec.scrub(&describe_postgres_error(error)),
    }
}

/// Reads every stored note, ordered by id, on a connection of its own.
pub async fn read_all_notes_postgres(
    spec: &PostgresSinkSpec,
    tls: &PostgresTlsArgs,
) -> Result<Vec<AppliedNoteRow>, SinkStoreError> {
    let client = connect_postgres(spec, tls).await?;
    let rows = client
        .query(
            "SELECT note_id, version, deleted, title, applied_attempt, applied_tier FROM notes ORDER BY note_id",
            &[],
        )
        .await
        .map_err(|error| read_error(spec, &error))?;
    Ok(rows
        .iter()
        .map(|row| AppliedNoteRow {
            note_id: row.get(0),
            version: row.get(1),
            deleted: row.get(2),
            title: row.get(3),
            applied_attempt: u32::try_from(row.get::<_, i64>(4)).unwrap_or(u32::MAX),
            applied_tier: row.get(5),
        })
        .collect())
}

/// A connection to a sink database that has a delivery journal; `None` without one.
async fn connect_with_journal(
    spec: &PostgresSinkSpec,
    tls: &PostgresTlsArgs,
) -> Result<Option<Client>, SinkStoreError> {
    let client = connect_postgres(spec, tls).await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('deliveries') IS NOT NULL", &[])
        .await
        .map_err(|error| read_error(spec, &error))?
        .get(0);
    Ok(exists.then_some(client))
}

/// Every note version the delivery journal holds; `None` when the database has none.
pub async fn read_delivered_versions_postgres(
    spec: &PostgresSinkSpec,
    tls: &PostgresTlsArgs,
) -> Result<Option<HashSet<(String, i64)>>, SinkStoreError> {
    let Some(client) = connect_with_journal(spec, tls).await? else {
        return Ok(None);
    };
    let rows = client
        .query("SELECT DISTINCT note_id, version FROM deliveries", &[])
        .await
        .map_err(|error| read_error(spec, &error))?;
    Ok(Some(rows.iter().map(|row| (row.get(0), row.get(1))).collect()))
}

/// Summarises the delivery journal; `None` when the database has none.
pub async fn read_delivery_journal_postgres(
    spec: &PostgresSinkSpec,
    tls: &PostgresTlsArgs,
) -> Result<Option<DeliveryJournalSummary>, SinkStoreError> {
    let Some(client) = connect_with_journal(spec, tls).await? else {
        return Ok(None);
    };
    let rows = client
        .query(
            "SELECT count(*), sum(changed)::bigint FROM deliveries GROUP BY note_id, version",
            &[],
        )
        .await
        .map_err(|error| read_error(spec, &error))?;
    let groups = rows.iter().map(|row| {
        let deliveries: i64 = row.get(0);
        let changed: i64 = row.get(1);
        (deliveries.unsigned_abs(), changed.unsigned_abs())
    });
    Ok(Some(DeliveryJournalSummary::from_groups(groups)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_parse_and_never_show_the_password() {
        let spec =
            PostgresSinkSpec::parse("postgres://rebound:hunter2@127.0.0.1:5432/notes?sslmode=require").expect("valid");
        assert_eq!(spec.config().get_dbname(), Some("notes"));
        let shown = format!("{spec:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("127.0.0.1:5432/notes"),
            "{shown}"
        );
        for (url, expected) in [
            ("postgres://rebound:hunter2@127.0.0.1:5432", "missing database name"),
            (
                "postgres://rebound:hunter2@127.0.0.1:5432/notes?sslmode=sometimes",
                "invalid connection string",
            ),
        ] {
            let error = PostgresSinkSpec::parse(url).expect_err(url).to_string();
            assert!(error.contains(expected) && !error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("writes");
        let Err(error) = postgres_tls_connector(&PostgresTlsArgs {
            postgres_ca_file: Some(path),
        }) else {
            panic!("a file without certificates was accepted");
        };
        let error = error.to_string();
        assert!(
            error.contains("ca.pem") && error.contains("no PEM certificate"),
            "{error}"
        );
    }
}
