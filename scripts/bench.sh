#!/usr/bin/env bash
# bench.sh - rebound's performance benchmark: producer, consumer, failure path, scheduler timing
# and peak memory, measured against a real local Kafka with kcat as the baseline, and against
# Spring for Apache Kafka's @RetryableTopic as the peer, in one run.
#
# Usage: scripts/bench.sh
#
# Builds the release binaries, starts the local broker of scripts/kafka-local.sh unless one is
# already running (and stops it at the end only if it started it), installs kcat and wrk with
# apt-get when they are missing, then runs scripts/bench/harness.py, which does the measuring. Every figure
# is the median of BENCH_RUNS repetitions, and every comparison is a ratio of two figures taken
# in the same repetition, because the machines are shared and noisy. docs/performance.md
# explains each measurement and the latest results.
#
# Output: target/bench/<run>/results.md (the table), results.json (every repetition, raw),
# history-row.md (the run's row for the history table of docs/performance.md),
# scheduler-*.csv (lateness of every record), logs/ (one log per process started; files over
# 1 MiB are gzipped at the end); target/bench/latest.md and latest.json are copies of the last
# complete run. The run's topics are deleted at the end; its processes are stopped on any exit,
# also on failure or Ctrl-C.
#
# Environment (the defaults measure for about 4 minutes on 2 cores, plus the delivery phase's two
# failure-path runs and two scheduler drains of 30,000 notes, plus about 7 minutes per
# repetition for the peer phase; a cold release build adds about 9):
#   BENCH_RUNS               repetitions of every measurement (default 3)
#   BENCH_SMALL_COUNT        ~300 B notes per producer and consumer run (default 100000)
#   BENCH_LARGE_COUNT        ~4 KiB notes per producer and consumer run (default 20000)
#   BENCH_FAILURE_COUNT      notes per failure-path run (default 100000)
#   BENCH_DELIVERY_COUNT     notes per failure-path run and due records per scheduler drain of
#                            the delivery phase (default 30000)
#   BENCH_SCHEDULER_RATES    tier records per second, comma-separated (default 1000,10000,50000)
#   BENCH_SCHEDULER_SECONDS  seconds of tier records written at each rate (default 4)
#   BENCH_PHASES             subset of producer,intake,consumer,failure,scheduler,retry,delivery,
#                            peer (default all); intake: rebound-producer serve loaded by wrk,
#                            one note per request over 64 and 16 connections, 10 s each;
#                            delivery: the failure path (10% transient) and the scheduler
#                            draining a backlog, each with --delivery exactly-once and
#                            at-least-once side by side in every repetition;
#                            retry: notes failing once at a webhook, re-applied after a 1 s tier
#                            (a trickle) and a 500 ms tier (a burst of 100), lateness measured
#                            at the webhook; peer: rebound beside a Spring Boot application with
#                            Spring Kafka's @RetryableTopic (scripts/bench/spring/, built with
#                            Maven by scripts/bench/spring-peer.sh into a cache outside the
#                            repository): happy path, 10% failure path and retry timing
#   BENCH_PEER_COUNT         small notes per happy-path run of the peer phase (default 50000)
#   BENCH_PEER_FAILURE_COUNT small notes per failure-path run of the peer phase (default 5000:
#                            Spring's failure path runs at tens to hundreds of notes/s)
#   BENCH_SPRING_JAVA_OPTS   JVM options of the Spring peer (default -Xmx256m)
#   BENCH_SKIP_BUILD         1: use the binaries in target/release as they are
#   BENCH_POSTGRES           0: leave the PostgreSQL sink out of the consumer phase (default 1:
#                            measured on REBOUND_TEST_POSTGRES_URL's server, else on
#                            scripts/postgres-local.sh's, started and stopped by the run if need be)
#   REBOUND_KAFKA_PORT and the other REBOUND_KAFKA_* variables are passed to kafka-local.sh.
set -euo pipefail

readonly PROG=bench
# Progress goes to stderr; stdout carries only the results table at the end.
readonly SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
readonly BROKERS=127.0.0.1:${REBOUND_KAFKA_PORT:-9092}

case ${1:-} in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) warn "error: unexpected argument: $1 (settings are BENCH_* variables, see the header)"; usage; exit 2 ;;
esac

for var in BENCH_RUNS BENCH_SMALL_COUNT BENCH_LARGE_COUNT BENCH_FAILURE_COUNT BENCH_DELIVERY_COUNT \
  BENCH_PEER_COUNT BENCH_PEER_FAILURE_COUNT; do
  value=${!var:-1}
  [[ $value =~ ^[1-9][0-9]*$ ]] || die "$var must be a whole number of at least 1, not '$value'"
done
[[ ${BENCH_SCHEDULER_RATES:-1} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] \
  || die "BENCH_SCHEDULER_RATES must be comma-separated whole numbers, not '$BENCH_SCHEDULER_RATES'"

# The benchmark names its topics, groups and tiers itself (see common.sh).
unset_rebound_env

# The run's name (bench-<epoch>) is also the harness's topic prefix (its --out folder's name).
make_run_dir bench

KAFKA_STARTED=0
POSTGRES_STARTED=0
POSTGRES_URL=${REBOUND_TEST_POSTGRES_URL:-}
HARNESS_PID=""
# shellcheck disable=SC2317 # invoked by the EXIT trap (install_traps)
cleanup() {
  if [[ -n $HARNESS_PID ]] && kill -0 "$HARNESS_PID" 2>/dev/null; then
    # The harness stops its own children and deletes its topics when it gets SIGTERM.
    kill -TERM "$HARNESS_PID" 2>/dev/null || true
    wait "$HARNESS_PID" 2>/dev/null || true
  fi
  if ((KAFKA_STARTED)); then
    say "stopping the broker this run started"
    # A failed stop does not turn a finished benchmark into a failure; its log says why.
    stop_started_kafka --nodes 1 || true
  fi
  if ((POSTGRES_STARTED)); then
    say "stopping the PostgreSQL cluster this run started"
    "$SCRIPT_DIR/postgres-local.sh" stop 2>>"$RUN_DIR/postgres.log" || true
  fi
}
install_traps cleanup

missing_tools=()
command -v kcat >/dev/null 2>&1 || missing_tools+=(kcat)
command -v wrk >/dev/null 2>&1 || missing_tools+=(wrk)
if ((${#missing_tools[@]})); then
  say "${missing_tools[*]} missing; installing with apt-get"
  command -v apt-get >/dev/null 2>&1 || die "${missing_tools[*]} missing and apt-get is not available; install them"
  sudo_cmd=()
  ((EUID == 0)) || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update
  "${sudo_cmd[@]}" apt-get install -y "${missing_tools[@]}"
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to run scripts/bench/harness.py"

readonly PHASES=${BENCH_PHASES:-producer,intake,consumer,failure,scheduler,retry,delivery,peer}
SPRING_JAR=""
if [[ ,$PHASES, == *,peer,* ]]; then
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    say "Java or Maven is missing (the Spring peer needs both); installing them with apt-get"
    command -v apt-get >/dev/null 2>&1 || die "java and mvn are missing and apt-get is not available; install Java 17+ and Maven"
    sudo_cmd=()
    ((EUID == 0)) || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update
    "${sudo_cmd[@]}" apt-get install -y openjdk-17-jdk-headless maven
  fi
  SPRING_JAR=$("$SCRIPT_DIR/bench/spring-peer.sh") || die "the Spring peer did not build"
fi

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  say "building release binaries (log: target/bench/$RUN/build.log)"
  cargo build --release --workspace --bins >"$RUN_DIR/build.log" 2>&1 \
    || die "cargo build failed; see target/bench/$RUN/build.log"
fi

if local_broker_running; then
  say "using the running broker at $BROKERS"
else
  say "starting a local broker"
  "$KAFKA_LOCAL" start >/dev/null
  KAFKA_STARTED=1
fi

if [[ ${BENCH_POSTGRES:-1} == 1 && -z $POSTGRES_URL && ,$PHASES, == *,consumer,* ]]; then
  if POSTGRES_URL=$("$SCRIPT_DIR/postgres-local.sh" status 2>/dev/null); then
    POSTGRES_URL=${POSTGRES_URL#running }
  else
    say "starting a PostgreSQL cluster for the PostgreSQL sink (scripts/postgres-local.sh)"
    POSTGRES_STARTED=1
    POSTGRES_URL=$("$SCRIPT_DIR/postgres-local.sh" start 2>>"$RUN_DIR/postgres.log") ||
      die "PostgreSQL did not start; see target/bench/$RUN/postgres.log"
  fi
fi
[[ ${BENCH_POSTGRES:-1} == 1 ]] || POSTGRES_URL=""

started=$SECONDS
# --spring-java-opts=VALUE, in one word: the value starts with a dash, which argparse would
# otherwise take for a flag of its own.
python3 "$SCRIPT_DIR/bench/harness.py" \
  --postgres-url "$POSTGRES_URL" \
  --repo "$REPO" \
  --bin-dir "$REPO/target/release" \
  --out "$RUN_DIR" \
  --brokers "$BROKERS" \
  --runs "${BENCH_RUNS:-3}" \
  --small-count "${BENCH_SMALL_COUNT:-100000}" \
  --large-count "${BENCH_LARGE_COUNT:-20000}" \
  --failure-count "${BENCH_FAILURE_COUNT:-100000}" \
  --delivery-count "${BENCH_DELIVERY_COUNT:-30000}" \
  --scheduler-rates "${BENCH_SCHEDULER_RATES:-1000,10000,50000}" \
  --scheduler-seconds "${BENCH_SCHEDULER_SECONDS:-4}" \
  --phases "$PHASES" \
  --peer-count "${BENCH_PEER_COUNT:-50000}" \
  --peer-failure-count "${BENCH_PEER_FAILURE_COUNT:-5000}" \
  --spring-jar "$SPRING_JAR" \
  --spring-java-opts="${BENCH_SPRING_JAVA_OPTS:--Xmx256m}" \
  --command "scripts/bench.sh" &
HARNESS_PID=$!
rc=0
wait "$HARNESS_PID" || rc=$?
HARNESS_PID=""
((rc == 0)) || die "the benchmark failed (exit $rc); logs are in target/bench/$RUN/logs"

cp "$RUN_DIR/results.md" "$REPO/target/bench/latest.md"
cp "$RUN_DIR/results.json" "$REPO/target/bench/latest.json"
say "done in $((SECONDS - started)) s after the build"
say "the run's row for the history table of docs/performance.md: $(<"$RUN_DIR/history-row.md")"
cat "$RUN_DIR/results.md"
