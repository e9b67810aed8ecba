//! The test PostgreSQL server: `REBOUND_TEST_POSTGRES_URL` (set by `scripts/test.sh`, which
//! starts one with `scripts/postgres-local.sh`), and a fresh database per test, so tests share
//! the server and run in parallel without seeing each other's tables.

use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the test server.
pub const POSTGRES_ENV: &str = "REBOUND_TEST_POSTGRES_URL";

/// The test server's URL. Panics loudly when it is not set: a PostgreSQL test without a server
/// must fail, not pass vacuously.
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
        panic!(
            "{POSTGRES_ENV} is not set. PostgreSQL sink tests need a real server: run \
             `export {POSTGRES_ENV}=$(scripts/postgres-local.sh start)`, or everything with \
             `scripts/test.sh`."
        )
    })
}

/// Creates a database no other test (or earlier run) uses on the test server and returns its URL.
pub async fn fresh_postgres_database(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = postgres_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    let name: String = format!(
        "t_{test_name}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
    .chars()
    .map(|character| {
        if character.is_ascii_alphanumeric() {
            character.to_ascii_lowercase()
        } else {
            '_'
        }
    })
    .take(63)
    .collect();
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("no PostgreSQL server answers at {POSTGRES_ENV}: {error:?}"));
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|error| panic!("cannot create test database {name}: {error:?}"));
    drop(client);
    let _ = driver.await;
    with_database(&base, &name)
}

/// `url` with its database replaced by `database` (query kept).
fn with_database(url: &str, database: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let scheme_end = before_query.find("://").map_or(0, |index| index + 3);
    let authority_end = before_query[scheme_end..]
        .find('/')
        .map_or(before_query.len(), |index| scheme_end + index);
    let mut replaced = format!("{}/{database}", &before_query[..authority_end]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/rebound", "t_1"),
            "postgres://u:p@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/rebound?sslmode=disable", "t_1"),
            "postgres://u:p@127.0.0.1:5432/t_1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:1", "t_1"), "postgres://u@h:1/t_1");
    }
}
