#!/usr/bin/env bash
# The project's test command: formatting, lints, alert-rule tests, the Helm chart's checks, and
# every unit and integration test, the integration tests against a real Apache Kafka broker.
#
# Usage: scripts/test.sh [extra cargo test arguments]
#
# Installs what it needs first (scripts/lib/prereqs.sh --for test: a C toolchain and headers,
# Java 17 and Maven for the local broker, kcat, Python 3, a Go toolchain for helm and
# kubeconform, PostgreSQL's server binaries for the PostgreSQL sink's tests, promtool/amtool, openssl for the broker's throwaway TLS certificates, curl and unzip for the schema registry,
# python3 with venv for Confluent's Python client), with apt-get or Homebrew, saying what and why. Outside CI,
# missing promtool/amtool that cannot be installed skip the alert checks with a warning;
# everything else missing stops it, naming the piece.
# Its last stage needs a Docker engine (scripts/docker-local.sh engine; .ci/run starts one).
#
# Starts the local broker with scripts/kafka-local.sh unless one already runs (then it is used
# and left running), points the tests at it through REBOUND_TEST_BROKERS, and stops the broker it
# started when done, whether the checks passed or not. Likewise a throwaway PostgreSQL cluster
# with scripts/postgres-local.sh, unless REBOUND_TEST_POSTGRES_URL names one already, exported
# as REBOUND_TEST_POSTGRES_URL; the schema registry (scripts/registry-local.sh,
# REBOUND_TEST_REGISTRY_URL), and the Python virtualenv with Confluent's client is built under
# target/ (scripts/python-venv.sh, REBOUND_TEST_PYTHON). Integration tests fail loudly when the
# broker, the database or the registry is unreachable; none is skipped.
set -euo pipefail

readonly PROG=test.sh SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/prereqs.sh
source "$SCRIPT_DIR/lib/prereqs.sh"
cd "$REPO"

# Each stage's wall time, printed when the next begins and as a table at the end (also when a
# stage fails), so a slow machine shows where the time went.
stage_names=()
stage_seconds=()
stage_started=$SECONDS
stage() { # name
  finish_stage
  stage_names+=("$1")
  stage_started=$SECONDS
  say "$1"
}
finish_stage() {
  ((${#stage_names[@]} > ${#stage_seconds[@]})) || return 0
  local took=$((SECONDS - stage_started))
  stage_seconds+=("$took")
  say "  ($((took / 60))m$((took % 60))s)"
}
stage_table() {
  finish_stage
  local index
  say "stage times (total $((SECONDS / 60))m$((SECONDS % 60))s):"
  for index in "${!stage_seconds[@]}"; do
    say "$(printf '%5dm%02ds  %s' $((stage_seconds[index] / 60)) $((stage_seconds[index] % 60)) "${stage_names[index]}")"
  done
}

stage "prerequisites (scripts/lib/prereqs.sh --for test)"
# shellcheck disable=SC2046 # the list is words
prereqs_ensure $(prereqs_for test)

started_broker=0
started_postgres=0
started_registry=0
stop_broker() {
  local status=$?
  stage_table
  if [[ $started_registry == 1 ]]; then
    say "stopping the schema registry this run started"
    scripts/registry-local.sh stop 2>/dev/null || say "warning: stopping the schema registry failed"
  fi
  if [[ $started_broker == 1 ]]; then
    say "stopping the broker this run started"
    scripts/kafka-local.sh stop >/dev/null || say "warning: stopping the broker failed"
  fi
  if [[ $started_postgres == 1 ]]; then
    say "stopping the PostgreSQL cluster this run started"
    scripts/postgres-local.sh stop 2>/dev/null || say "warning: stopping PostgreSQL failed"
  fi
  exit "$status"
}
trap stop_broker EXIT

stage "cargo fmt --check"
cargo fmt --all --check

stage "cargo clippy (all targets, warnings are errors)"
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
stage "minimum supported Rust: cargo +$msrv check"
cargo +"$msrv" check --workspace --all-targets --locked --target-dir target/msrv

if prereqs_skipped promtool || prereqs_skipped amtool; then
  warn "SKIPPED: alert rules and alertmanager config (promtool/amtool missing; CI runs them)"
else
  stage "alert rules and alertmanager config (promtool, amtool)"
  scripts/check-alerts.sh
fi

stage "man pages and shell completions (scripts/man.sh)"
scripts/man.sh >/dev/null

stage "Helm chart (helm lint, helm template | kubeconform -strict, PrometheusRule = alerts.yml)"
scripts/check-chart.sh

# Build everything before the broker starts, so its start-up wait does not include compiling.
stage "building tests"
cargo test --workspace --locked --no-run

stage "services: broker, PostgreSQL, schema registry, Python client"
if scripts/kafka-local.sh status >/dev/null 2>&1; then
  say "using the local broker that is already running"
else
  say "starting the local Kafka broker"
  started_broker=1
  scripts/kafka-local.sh start >/dev/null
fi
export REBOUND_TEST_BROKERS="127.0.0.1:${REBOUND_KAFKA_PORT:-9092}"
# The broker's further listeners (scripts/kafka-local.sh: client port + 2 SASL_PLAINTEXT with
# SCRAM-SHA-512, + 3 SSL, + 4 SASL_SSL, + 5 SSL requiring a client certificate) and the folder of
# its CA and client certificate. A broker started without them fails the TLS tests loudly.
client_port=${REBOUND_KAFKA_PORT:-9092}
export REBOUND_TEST_SASL_BROKERS="127.0.0.1:$((client_port + 2))"
export REBOUND_TEST_SSL_BROKERS="127.0.0.1:$((client_port + 3))"
export REBOUND_TEST_SASL_SSL_BROKERS="127.0.0.1:$((client_port + 4))"
export REBOUND_TEST_MTLS_BROKERS="127.0.0.1:$((client_port + 5))"
REBOUND_TEST_KAFKA_TLS_DIR=$(scripts/kafka-local.sh tls-dir) ||
  die "the running broker has no TLS files; stop it and let this script start it (scripts/kafka-local.sh stop)"
export REBOUND_TEST_KAFKA_TLS_DIR

if [[ -z ${REBOUND_TEST_POSTGRES_URL:-} ]]; then
  say "starting a throwaway PostgreSQL cluster"
  started_postgres=1
  REBOUND_TEST_POSTGRES_URL=$(scripts/postgres-local.sh start)
fi
export REBOUND_TEST_POSTGRES_URL

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

stage "cargo test (broker $REBOUND_TEST_BROKERS, registry $REBOUND_TEST_REGISTRY_URL)"
cargo test --workspace --locked --no-fail-fast "$@"

# Last, as it restarts the broker: the small chaos soak (about 2 minutes), lost = 0 or it fails.
stage "small chaos soak (scripts/soak.sh --small, broker $REBOUND_TEST_BROKERS)"
scripts/soak.sh --small

# A subset of the integration tests, the small soak and the demo once more against a broker in a
# container, the demo's services in containers of the rebound image (about 7 minutes with the
# images there; a fresh machine spends about 4 more making the base and Kafka images, which later
# runs reuse). REBOUND_TEST_DOCKER=0 leaves it out, saying so.
if [[ ${REBOUND_TEST_DOCKER:-1} == 0 ]]; then
  say "REBOUND_TEST_DOCKER=0: the dockerized stage (scripts/test-docker.sh) is NOT run"
else
  stage "dockerized stage (scripts/test-docker.sh)"
  scripts/test-docker.sh
fi
finish_stage
say "all checks passed"
