//! The SQLite runner: the schema version is the file's `PRAGMA user_version`, and the pending
//! migrations run in one `BEGIN IMMEDIATE` transaction, so two processes opening one file at
//! once migrate it once.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{MigrateError, Migrated, check_numbering};

/// One step of a SQLite schema. A step written in Rust can look at the file first, which is how
/// files made before versioning began are adopted.
#[derive(Debug, Clone, Copy)]
pub struct SqliteMigration {
    /// 1 for the first migration, then 2, 3...
    pub version: u32,
    /// What it does, for logs.
    pub name: &'static str,
    /// The step, run inside the migration transaction.
    pub apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// Brings the file's schema named `schema` (for messages) up to the last of `migrations`.
pub fn migrate_sqlite(
    connection: &mut Connection,
    schema: &str,
    migrations: &[SqliteMigration],
) -> Result<Migrated, MigrateError> {
    let known = check_numbering(schema, migrations.iter().map(|migration| migration.version))?;
    let fail = |version: u32| {
        move |source: rusqlite::Error| MigrateError::MigrateSqlite {
            schema: schema.to_owned(),
            version,
            source,
        }
    };
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail(0))?;
    let found: u32 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail(0))?;
    if found > known {
        return Err(MigrateError::NewerSchema {
            schema: schema.to_owned(),
            found,
            known,
        });
    }
    for migration in migrations.iter().filter(|migration| migration.version > found) {
        (migration.apply)(&transaction).map_err(fail(migration.version))?;
    }
    if known > found {
        // A pragma takes no bound parameter; the value is a number this code chose.
        transaction
            .execute_batch(&format!("PRAGMA user_version = {known}"))
            .map_err(fail(known))?;
    }
    transaction.commit().map_err(fail(known))?;
    Ok(Migrated { from: found, to: known })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: SqliteMigration = SqliteMigration {
        version: 1,
        name: "items",
        apply: |transaction| transaction.execute_batch("CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY)"),
    };
    const SECOND: SqliteMigration = SqliteMigration {
        version: 2,
        name: "items.size",
        apply: |transaction| transaction.execute_batch("ALTER TABLE items ADD COLUMN size INTEGER NOT NULL DEFAULT 0"),
    };

    #[test]
    fn only_pending_migrations_run_and_the_version_is_stored() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("store.db");
        let mut connection = Connection::open(&path).expect("opens");
        assert_eq!(
            migrate_sqlite(&mut connection, "test", &[FIRST]).expect("migrates"),
            Migrated { from: 0, to: 1 }
        );
        connection
            .execute("INSERT INTO items (id) VALUES ('kept')", [])
            .expect("inserts");
        assert_eq!(
            migrate_sqlite(&mut connection, "test", &[FIRST, SECOND]).expect("migrates"),
            Migrated { from: 1, to: 2 }
        );
        assert_eq!(
            migrate_sqlite(&mut connection, "test", &[FIRST, SECOND]).expect("migrates"),
            Migrated { from: 2, to: 2 }
        );
        let size: i64 = connection
            .query_row("SELECT size FROM items WHERE id = 'kept'", [], |row| row.get(0))
            .expect("reads");
        assert_eq!(size, 0);
    }

    #[test]
    fn a_failed_migration_leaves_the_schema_as_it_was() {
        let mut connection = Connection::open_in_memory().expect("opens");
        let broken = SqliteMigration {
            version: 2,
            name: "broken",
            apply: |transaction| transaction.execute_batch("CREATE TABLE more (x); SELECT * FROM absent"),
        };
        let error = migrate_sqlite(&mut connection, "test", &[FIRST, broken]).expect_err("fails");
        assert!(error.to_string().contains("to version 2"), "{error}");
        let tables: i64 = connection
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |row| {
                row.get(0)
            })
            .expect("reads");
        let version: u32 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("reads");
        assert_eq!((tables, version), (0, 0), "nothing of either migration stays");
    }

    #[test]
    fn a_newer_schema_and_bad_numbering_are_refused_by_name() {
        let mut connection = Connection::open_in_memory().expect("opens");
        migrate_sqlite(&mut connection, "test", &[FIRST, SECOND]).expect("migrates");
        let error = migrate_sqlite(&mut connection, "the sink", &[FIRST]).expect_err("newer");
        assert!(
            error
                .to_string()
                .contains("the sink has schema version 2, newer than the 1"),
            "{error}"
        );
        let error = migrate_sqlite(&mut connection, "test", &[SECOND]).expect_err("numbering");
        assert!(error.to_string().contains("not numbered 1, 2, 3"), "{error}");
    }
}
