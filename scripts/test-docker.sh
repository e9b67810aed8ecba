#!/usr/bin/env bash
# test-docker.sh - the dockerized stage of the test command: a named subset of the integration
# tests, the small chaos soak and the demo against a Kafka broker in a container, the demo's four
# services in containers of the rebound image. Everything on the host network.
#
# Usage: scripts/test-docker.sh
#
# Needs a Docker engine (scripts/docker-local.sh engine starts one; .ci/run does) and the dev
# binaries in target/debug (test.sh has built them). Builds or reuses the images
# (scripts/docker-local.sh: the Debian base, the Kafka image, rebound:local from those binaries,
# stripped), starts the dockerized broker on its own
# port (REBOUND_DOCKER_KAFKA_PORT, default 28092, SASL on +2), runs the stages below and stops the
# broker, whatever happened. Prints each stage's time at the end.
#
#   soak    scripts/soak.sh --small (restarts the containerized broker twice), lost = 0
#   tests   cargo test of DOCKER_TESTS: every crate's broker-facing basics (topics, SASL/SCRAM,
#           DLQ, routing, scheduling, intake, metrics across services)
#   demo    scripts/demo.sh with DEMO_IMAGE=rebound:local, lost = 0
#
# Environment:
#   REBOUND_DOCKER_KAFKA_PORT  client port of the dockerized broker (default 28092)
#   REBOUND_KAFKA_IMAGE        the Kafka image (default: what docker-local.sh kafka-image picks)
set -euo pipefail

readonly PROG=test-docker SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$REPO"

case ${1:-} in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) warn "error: unexpected argument: $1"; usage; exit 2 ;;
esac

readonly PORT=${REBOUND_DOCKER_KAFKA_PORT:-28092}
# The subset: one or two integration test files per crate that talk to the broker, chosen to
# cover what differs between a JVM and a containerized broker (listeners, SASL, restarts are the
# soak's), in about two minutes.
readonly DOCKER_TESTS=(
  -p rebound-cli --test topics --test sasl_scram_listener --test dlq
  -p rebound-consumer --test routing
  -p rebound-scheduler --test scheduling
  -p rebound-producer --test intake
  -p rebound-e2e --test metrics
)

docker info >/dev/null 2>&1 ||
  die "no Docker engine answers; start one with scripts/docker-local.sh engine (as root)"

TIMES=()
FAILED=()
stage_done() { TIMES+=("$1 $(($(date +%s) - $2))s"); }
# The three checks run whatever the others gave, so one run shows all of them.
check() { # name command...
  local name=$1 started
  started=$(date +%s)
  shift
  if "$@"; then stage_done "$name" "$started"; else
    stage_done "$name(FAILED)" "$started"
    FAILED+=("$name")
  fi
}

broker_started=0
# shellcheck disable=SC2317 # invoked by the EXIT trap (install_traps)
cleanup() {
  if ((broker_started)); then
    say "stopping the dockerized broker"
    REBOUND_KAFKA_MODE=docker REBOUND_KAFKA_PORT=$PORT scripts/kafka-local.sh stop >/dev/null 2>&1 ||
      { warn "stopping the dockerized broker failed"; EXIT_STATUS=1; }
  fi
  ((${#TIMES[@]} == 0)) || say "stage times: ${TIMES[*]}"
}
install_traps cleanup

t=$(date +%s)
scripts/docker-local.sh base-image >/dev/null
stage_done base-image "$t"

t=$(date +%s)
kafka_image=$(scripts/docker-local.sh kafka-image)
stage_done kafka-image "$t"

# The dev binaries as the test build left them (`cargo build --bin` alone would rebuild much,
# as it unifies features without the dev-dependencies); a release build would not fit the test
# command's time. The image is the same apart from the binaries' profile.
t=$(date +%s)
runtime_image=$(scripts/docker-local.sh runtime-image --profile dev --no-cargo)
stage_done runtime-image "$t"

export REBOUND_KAFKA_MODE=docker REBOUND_KAFKA_PORT=$PORT REBOUND_KAFKA_IMAGE=$kafka_image
export REBOUND_KAFKA_STATE=$REPO/target/kafka-docker
t=$(date +%s)
say "starting the dockerized broker ($kafka_image, 127.0.0.1:$PORT)"
broker_started=1
scripts/kafka-local.sh start >/dev/null
stage_done broker "$t"

# The soak first: it restarts the broker, and a fresh broker without the tests' hundreds of
# partitions restarts in seconds rather than minutes (after an unclean stop every log is checked).
say "small chaos soak against the dockerized broker"
check soak scripts/soak.sh --small

say "integration tests against the dockerized broker: ${DOCKER_TESTS[*]}"
check tests env REBOUND_TEST_BROKERS="127.0.0.1:$PORT" REBOUND_TEST_SASL_BROKERS="127.0.0.1:$((PORT + 2))" \
  cargo test --locked --no-fail-fast "${DOCKER_TESTS[@]}"

say "demo, its four services in containers of $runtime_image"
check demo env DEMO_IMAGE="$runtime_image" scripts/demo.sh

((${#FAILED[@]} == 0)) || die "the dockerized stage failed: ${FAILED[*]}"
say "dockerized stage passed"
