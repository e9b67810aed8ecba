#!/usr/bin/env bash
# The project's test command: formatting, lints, alert-rule tests, and every unit and
# integration test, the integration tests against a real Apache Kafka broker.
#
# Usage: scripts/test.sh [extra cargo test arguments]
#
# Needs Java 17 and Maven (the local broker), promtool/amtool (installed by check-alerts.sh),
# kcat (one bad-input test writes a record the Rust client cannot), curl and unzip (the schema
# registry) and python3 with venv (Confluent's Python client); .ci/run installs them.
#
# Starts the local broker with scripts/kafka-local.sh unless one already runs (then it is used
# and left running), points the tests at it through REBOUND_TEST_BROKERS, and stops the broker it
# started when done, whether the checks passed or not. Likewise the schema registry
# (scripts/registry-local.sh, REBOUND_TEST_REGISTRY_URL), and the Python virtualenv with
# Confluent's client is built under target/ (scripts/python-venv.sh, REBOUND_TEST_PYTHON).
# Integration tests fail loudly when the broker or the registry is unreachable; none is skipped.
set -euo pipefail

readonly PROG=test.sh SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO"

started_broker=0
started_registry=0
stop_broker() {
  local status=$?
  if [[ $started_registry == 1 ]]; then
    say "stopping the schema registry this run started"
    scripts/registry-local.sh stop 2>/dev/null || say "warning: stopping the schema registry failed"
  fi
  if [[ $started_broker == 1 ]]; then
    say "stopping the broker this run started"
    scripts/kafka-local.sh stop >/dev/null || say "warning: stopping the broker failed"
  fi
  exit "$status"
}
trap stop_broker EXIT

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The minimum supported Rust version is the workspace's rust-version; checking with that very
# toolchain is the only way to know it is true (language features such as let-chains are not
# caught by clippy's MSRV lints). Its own target folder keeps the main build's artifacts.
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
[[ -n $msrv ]] || die "no rust-version in Cargo.toml"
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  say "installing Rust $msrv (the minimum supported version) with rustup"
  rustup toolchain install "$msrv" --profile minimal
fi
say "minimum supported Rust: cargo +$msrv check"
cargo +"$msrv" check --workspace --all-targets --locked --target-dir target/msrv

say "alert rules and alertmanager config (promtool, amtool)"
scripts/check-alerts.sh

# Build everything before the broker starts, so its start-up wait does not include compiling.
say "building tests"
cargo test --workspace --locked --no-run

if scripts/kafka-local.sh status >/dev/null 2>&1; then
  say "using the local broker that is already running"
else
  say "starting the local Kafka broker"
  started_broker=1
  scripts/kafka-local.sh start >/dev/null
fi
export REBOUND_TEST_BROKERS="127.0.0.1:${REBOUND_KAFKA_PORT:-9092}"
# The broker's SASL_PLAINTEXT/SCRAM-SHA-512 listener (scripts/kafka-local.sh: client port + 2).
export REBOUND_TEST_SASL_BROKERS="127.0.0.1:$((${REBOUND_KAFKA_PORT:-9092} + 2))"

# The schema registry interoperability tests: a real registry (about 10 s to start) and
# Confluent's own Python client (installed once into target/python-venv).
if registry_status=$(scripts/registry-local.sh status 2>/dev/null); then
  say "using the schema registry that is already running"
  REBOUND_TEST_REGISTRY_URL=${registry_status#running }
else
  say "starting the schema registry"
  started_registry=1
  REBOUND_TEST_REGISTRY_URL=$(scripts/registry-local.sh start)
fi
export REBOUND_TEST_REGISTRY_URL
REBOUND_TEST_PYTHON=$(scripts/python-venv.sh)
export REBOUND_TEST_PYTHON

say "cargo test (broker $REBOUND_TEST_BROKERS, registry $REBOUND_TEST_REGISTRY_URL)"
cargo test --workspace --locked --no-fail-fast "$@"

# Last, as it restarts the broker: the small chaos soak (about 2 minutes), lost = 0 or it fails.
say "small chaos soak (scripts/soak.sh --small, broker $REBOUND_TEST_BROKERS)"
scripts/soak.sh --small
say "all checks passed"
