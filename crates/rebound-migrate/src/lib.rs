//! Versioned schema migrations, run at start-up by whoever owns a schema: the SQLite sink's file,
//! the producer's SQLite outbox and the PostgreSQL sink's table.
//!
//! A schema is an ordered list of migrations numbered 1, 2, 3...; the number of the last one
//! applied is stored with the data (SQLite: `PRAGMA user_version`; PostgreSQL: a row of
//! `rebound_schema_versions`), and opening runs the pending ones in one transaction, so a crash
//! during a migration leaves the schema as it was. A schema newer than the code knows is refused
//! with an error naming both versions, rather than written to by code that does not know it.
//!
//! Why not refinery or sqlx's migrator: the schemas are a handful of statements, and files made
//! before versioning began (`user_version` 0, tables present) must be adopted, which needs a
//! migration written in Rust (a column that may or may not exist); refinery's SQLite driver
//! also pins its own range of rusqlite versions, which would hold the workspace's back. The
//! runner is small enough to read in one sitting.

mod postgres;
mod sqlite;

pub use postgres::{PostgresMigration, migrate_postgres};
pub use sqlite::{SqliteMigration, migrate_sqlite};

/// What a migration run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The schema version found (0: a new store, or one made before versioning).
    pub from: u32,
    /// The schema version now (the latest migration's).
    pub to: u32,
}

/// Everything that can go wrong while migrating a schema.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The list of migrations is not numbered 1, 2, 3... (a programming error, caught by tests).
    #[error("the migrations of {schema} are not numbered 1, 2, 3...: found {found} at position {position}")]
    CheckMigrations {
        /// The schema.
        schema: String,
        /// The number found.
        found: u32,
        /// Where it was found (1-based).
        position: usize,
    },
    /// The store was migrated by a newer version of rebound.
    #[error(
        "{schema} has schema version {found}, newer than the {known} this build knows; run a \
         rebound at least as new as the one that last opened it"
    )]
    NewerSchema {
        /// The schema.
        schema: String,
        /// The version in the store.
        found: u32,
        /// The latest version this build knows.
        known: u32,
    },
    /// Reading or writing the SQLite schema version failed, or a SQLite migration failed.
    #[error("failed to migrate {schema} (sqlite) to version {version}: {source}")]
    MigrateSqlite {
        /// The schema.
        schema: String,
        /// The version being applied (0 while reading the current one).
        version: u32,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading or writing the PostgreSQL schema version failed, or a PostgreSQL migration failed.
    #[error("failed to migrate {schema} (postgresql) to version {version}: {source}")]
    MigratePostgres {
        /// The schema.
        schema: String,
        /// The version being applied (0 while reading the current one).
        version: u32,
        /// The PostgreSQL error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Checks that the versions are 1, 2, 3... in order.
fn check_numbering(schema: &str, versions: impl Iterator<Item = u32>) -> Result<u32, MigrateError> {
    let mut latest = 0;
    for (index, version) in versions.enumerate() {
        if version != latest + 1 {
            return Err(MigrateError::CheckMigrations {
                schema: schema.to_owned(),
                found: version,
                position: index + 1,
            });
        }
        latest = version;
    }
    Ok(latest)
}
