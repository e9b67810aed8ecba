//! The real schema registry and Confluent's own Python client, for the interoperability tests.
//!
//! `scripts/test.sh` starts the registry (`scripts/registry-local.sh`) and builds the Python
//! virtualenv (`scripts/python-venv.sh`), and exports where they are. A test that needs either
//! and finds it missing fails with instructions: none is skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The environment variable naming the test registry's Confluent-compatible base URL.
pub const REGISTRY_URL_ENV: &str = "REBOUND_TEST_REGISTRY_URL";

/// The environment variable naming the Python interpreter with `confluent-kafka` installed.
pub const PYTHON_ENV: &str = "REBOUND_TEST_PYTHON";

/// The test registry's base URL, checked to answer. Panics loudly when it does not.
pub fn registry_url() -> String {
    let url = std::env::var(REGISTRY_URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{REGISTRY_URL_ENV} is not set. The schema registry tests need a real registry: run \
             `export {REGISTRY_URL_ENV}=$(scripts/registry-local.sh start)`, or run everything \
             with `scripts/test.sh`."
        )
    });
    let answered = std::net::TcpStream::connect_timeout(
        &registry_socket(&url).unwrap_or_else(|| panic!("{REGISTRY_URL_ENV}={url} has no host:port")),
        Duration::from_secs(5),
    )
    .is_ok();
    assert!(
        answered,
        "no schema registry answers at {url} ({REGISTRY_URL_ENV}); start one with `scripts/registry-local.sh start`"
    );
    url
}

fn registry_socket(url: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs as _;
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}

/// A command running `scripts/python/confluent_avro.py` with the test virtualenv's Python.
/// Panics loudly when the interpreter is not configured.
pub fn confluent_python() -> Command {
    let python = std::env::var(PYTHON_ENV).unwrap_or_else(|_| {
        panic!(
            "{PYTHON_ENV} is not set. The interoperability tests run Confluent's Python client: \
             run `export {PYTHON_ENV}=$(scripts/python-venv.sh)`, or run everything with `scripts/test.sh`."
        )
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python/confluent_avro.py");
    let mut command = Command::new(python);
    command.arg(script).env("PYTHONWARNINGS", "ignore");
    command
}

/// Runs a prepared `confluent_python()` command on a blocking thread; returns its stdout, and
/// panics with its stderr when it fails.
pub async fn run_confluent_python(mut command: Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the python task ran")
        .expect("the python client starts");
    assert!(
        output.status.success(),
        "confluent_avro.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the python client prints UTF-8")
}
