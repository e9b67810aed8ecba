//! The PostgreSQL runner: each schema's version is a row of `rebound_schema_versions`, and the
//! pending migrations run in one transaction (PostgreSQL's DDL is transactional) under an
//! advisory lock, so consumers starting together migrate once and never see half a schema.

use tokio_postgres::Client;

use crate::{MigrateError, Migrated, check_numbering};

/// Key of the advisory lock every migration run takes (any constant: it only has to be the same
/// for every process of every version).
const MIGRATION_LOCK_KEY: i64 = 0x0072_6562_6f75_6e64; // "rebound" in ASCII

/// One step of a PostgreSQL schema: statements run in the migration transaction.
#[derive(Debug, Clone, Copy)]
pub struct PostgresMigration {
    /// 1 for the first migration, then 2, 3...
    pub version: u32,
    /// What it does, for logs.
    pub name: &'static str,
    /// The statements (several may be separated by `;`).
    pub sql: &'static str,
}

/// Brings the schema named `schema` (its row in `rebound_schema_versions`) up to the last of
/// `migrations`, in the database and search path `client` is connected to.
pub async fn migrate_postgres(
    client: &mut Client,
    schema: &str,
    migrations: &[PostgresMigration],
) -> Result<Migrated, MigrateError> {
    let known = check_numbering(schema, migrations.iter().map(|migration| migration.version))?;
    let fail = |version: u32| {
        move |source: tokio_postgres::Error| MigrateError::MigratePostgres {
            schema: schema.to_owned(),
            version,
            source,
        }
    };
    let transaction = client.transaction().await.map_err(fail(0))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(fail(0))?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS rebound_schema_versions (
                 schema_name  TEXT PRIMARY KEY,
                 version      INTEGER NOT NULL,
                 migrated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(fail(0))?;
    let row = transaction
        .query_opt(
            "SELECT version FROM rebound_schema_versions WHERE schema_name = $1",
            &[&schema],
        )
        .await
        .map_err(fail(0))?;
    let found = row.map_or(0, |row| row.get::<_, i32>(0).max(0).unsigned_abs());
    if found > known {
        return Err(MigrateError::NewerSchema {
            schema: schema.to_owned(),
            found,
            known,
        });
    }
    for migration in migrations.iter().filter(|migration| migration.version > found) {
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(fail(migration.version))?;
    }
    if known > found {
        let version = i32::try_from(known).unwrap_or(i32::MAX);
        transaction
            .execute(
                "INSERT INTO rebound_schema_versions (schema_name, version) VALUES ($1, $2)
                 ON CONFLICT (schema_name) DO UPDATE SET version = excluded.version, migrated_at = now()",
                &[&schema, &version],
            )
            .await
            .map_err(fail(known))?;
    }
    transaction.commit().await.map_err(fail(known))?;
    Ok(Migrated { from: found, to: known })
}
