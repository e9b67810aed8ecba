//! The database sinks under test, SQLite and PostgreSQL, behind one type, so that every test
//! body of a database sink runs against both ([`for_each_database!`]). Included as the module
//! `database` by the test files that use it (not through `common`, which other crates' tests
//! include without these dependencies).

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::PathBuf;

use rebound_sink_store::{
    AppliedNoteRow, PostgresSinkSpec, PostgresTlsArgs, SinkReader, connect_postgres, migrate_notes_table,
    migrate_postgres_notes,
};

/// A fresh, empty database of one kind.
#[derive(Debug)]
pub enum Database {
    /// A SQLite file in a folder removed with the value.
    Sqlite {
        /// Keeps the folder alive.
        directory: tempfile::TempDir,
        /// The database file.
        path: PathBuf,
    },
    /// A database of its own on the test PostgreSQL server.
    Postgres {
        /// Its URL.
        url: String,
    },
}

impl Database {
    /// A SQLite file.
    pub fn sqlite() -> Self {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("notes.db");
        Self::Sqlite { directory, path }
    }

    /// A database on the test PostgreSQL server (`REBOUND_TEST_POSTGRES_URL`).
    pub async fn postgres(test_name: &str) -> Self {
        Self::Postgres {
            url: rebound_testkit::fresh_postgres_database(test_name).await,
        }
    }

    /// The consumer's `--sink`.
    pub fn sink_url(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Self::Postgres { url } => url.clone(),
        }
    }

    /// What `rebound audit` would read.
    pub fn reader(&self) -> SinkReader {
        match self {
            Self::Sqlite { path, .. } => SinkReader::Sqlite(path.clone()),
            Self::Postgres { url } => SinkReader::Postgres(
                PostgresSinkSpec::parse(url).expect("test url"),
                PostgresTlsArgs::default(),
            ),
        }
    }

    /// The stored notes; none while the consumer has not created the table yet.
    pub async fn rows(&self) -> Vec<AppliedNoteRow> {
        self.reader().read_all_notes().await.unwrap_or_default()
    }

    /// Creates the notes table as the sink would, and adds a rule of the operator's that
    /// refuses any note titled `title` (SQLite: a trigger raising a constraint error;
    /// PostgreSQL: a CHECK constraint), so one note of a batch fails for its own data.
    pub async fn refuse_title(&self, title: &str) {
        match self {
            Self::Sqlite { path, .. } => {
                let mut connection = rusqlite::Connection::open(path).expect("opens");
                migrate_notes_table(&mut connection).expect("migrates");
                connection
                    .execute_batch(&format!(
                        "CREATE TRIGGER refuse_insert BEFORE INSERT ON notes WHEN NEW.title = '{title}'
                         BEGIN SELECT RAISE(ABORT, 'title refused by the operator''s rule'); END;
                         CREATE TRIGGER refuse_update BEFORE UPDATE ON notes WHEN NEW.title = '{title}'
                         BEGIN SELECT RAISE(ABORT, 'title refused by the operator''s rule'); END;"
                    ))
                    .expect("adds the rule");
            }
            Self::Postgres { url } => {
                let spec = PostgresSinkSpec::parse(url).expect("test url");
                let mut client = connect_postgres(&spec, &PostgresTlsArgs::default())
                    .await
                    .expect("connects");
                migrate_postgres_notes(&mut client, &spec).await.expect("migrates");
                client
                    .batch_execute(&format!(
                        "ALTER TABLE notes ADD CONSTRAINT title_not_refused CHECK (title <> '{title}')"
                    ))
                    .await
                    .expect("adds the rule");
            }
        }
    }
}

/// Runs the async test body `$body(Database)` once per database sink, as the tests
/// `$body::sqlite` and `$body::postgres`.
#[macro_export]
macro_rules! for_each_database {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::database::Database::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::database::Database::postgres(stringify!($body)).await).await;
            }
        }
    };
}
