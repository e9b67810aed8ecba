#!/usr/bin/env bash
# soak.sh - rebound's chaos soak: proves that no accepted note version is lost while services are
# killed, the broker restarts and a consumer freezes.
#
# Usage: scripts/soak.sh [--small] [--versions N] [--notes N] [--rate N] [--duration S]
#                        [--timeout S] [--seed N] [--sink sqlite|postgres] [--check-order]
#
#   --check-order     the ordering soak: notes get 5 versions each (unless --notes says
#                     otherwise), the injected failures are 10% transient only, a fault comes every
#                     10 s (unless SOAK_FAULT_MIN/MAX say otherwise), and at the end the sink's
#                     delivery journal must show every note's versions first applied in increasing
#                     order (per-key order during retries, the consumers' default
#                     `--ordering key`). SQLite sink only.
#   --sink postgres   the consumers share a PostgreSQL sink instead of the SQLite file: a
#                     database of its own for the run, on the cluster REBOUND_TEST_POSTGRES_URL
#                     names, else on scripts/postgres-local.sh's (started if it is not running,
#                     and then stopped at the end)
#
# Builds the binaries (SOAK_PROFILE), uses the local broker of scripts/kafka-local.sh on
# REBOUND_KAFKA_PORT if one runs there (it is left running) or starts one (stopped at the end),
# and creates the topics under a fresh per-run prefix (`soak-<epoch>.`). Then it runs:
#   - `rebound-producer serve` with a durable outbox, fed over HTTP by scripts/soak/load.py,
#     which logs every version it got a 202 for (the accepted-ids log, NOTE_ID<TAB>VERSION);
#   - two consumers in one group on one SQLite (or PostgreSQL) sink with its delivery journal on, injected
#     failures (10% transient, 1% permanent) and short tiers (retry-5s: 2 s, retry-1m: 5 s);
#   - two retry schedulers in one group;
# services run with session.timeout.ms=6000, so a dead member's partitions move quickly.
# While the versions flow, a fault is injected every 5-15 s (--small: 5-8 s): kill -9 of a
# random service instance, restarted at once (the producer on its outbox; every service type is
# killed at least once); the broker is restarted twice (kafka-local.sh restart-broker, at about
# 25% and 65% of the chaos time) and one consumer is frozen with SIGSTOP past its session
# timeout (at about 45%), then resumed; a kill always comes between two of these. Every fault is
# logged with a UTC timestamp to faults.log. Chaos lasts at least SOAK_DURATION seconds, and
# until the load client is done and every required fault was injected. Then the pipeline must
# account for every accepted version within SOAK_TIMEOUT: `rebound audit` is polled until
# lost = 0, the services are stopped with SIGTERM (each must exit 0), and a final
# `rebound audit --extended` gives the figures: duplicates in the DLQ, redeliveries to the sink
# (from the sink's delivery journal) and retry lateness (Kafka timestamp of each republished
# record on the source topic minus its retry.due.timestamp).
#
# Exits 0 only when lost = 0, with exactly-once delivery no hop was written twice (a tier, DLQ or
# republished copy of one source record at one attempt, found twice by `rebound audit
# --extended`), every accepted version reached the sink (in its delivery journal)
# or the DLQ, no transient dead letter skipped a tier, no record was republished before it was
# due, every required fault was injected, the load client succeeded and no service exited on
# its own or failed to stop cleanly; 1 otherwise, 2 on bad usage. Everything
# started is stopped on exit, failure or Ctrl-C; a SIGSTOPped consumer is resumed first.
#
# Files of a run: target/soak/<run>/ (build.log, topics.log, faults.log, ids.log, load.log,
# load.json, producer.log, consumer-{1,2}.log, scheduler-{1,2}.log, notes.db, outbox/,
# audit.out, summary.txt). The summary table is printed and written to summary.txt.
#
# Environment (flags win):
#   SOAK_VERSIONS   note versions the load client sends (default 200000; --small: 5000)
#   SOAK_NOTES      distinct notes (default 2000; --small: 250)
#   SOAK_RATE       versions per second, 0 for as fast as possible (default 1000, so the
#                   versions flow through the whole chaos time; --small: 125)
#   SOAK_DURATION   least seconds of chaos (default 240; --small: 40)
#   SOAK_TIMEOUT    seconds the whole run gets after the build, load and drain (default 1800;
#                   --small: 240)
#   SOAK_SEED       seed of the load, the failure injectors and the chaos (default 1)
#   SOAK_FAULT_MIN, SOAK_FAULT_MAX  seconds between faults (default 5 and 15; --small: 5 and 8)
#   SOAK_DELIVERY   --delivery of the consumers and schedulers: exactly-once (default; the verdict
#                   then requires 0 duplicate hops in the tiers, the DLQ and the republished
#                   records) or at-least-once (duplicate hops are only reported)
#   SOAK_PROFILE    cargo profile of the binaries: dev (default) or release
#   SOAK_BUILD      0 to use the binaries already built (default 1: cargo build first)
#   REBOUND_KAFKA_PORT  the broker's port (default 9092); the other REBOUND_KAFKA_* variables are
#                   passed to kafka-local.sh.
set -euo pipefail

readonly PROG=soak
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"


SMALL=0
# Every consumer and scheduler started below reads its --delivery from the environment.
export REBOUND_DELIVERY=${SOAK_DELIVERY:-exactly-once}
[[ $REBOUND_DELIVERY == exactly-once || $REBOUND_DELIVERY == at-least-once ]] ||
  { echo "soak: SOAK_DELIVERY must be exactly-once or at-least-once, not $REBOUND_DELIVERY" >&2; exit 2; }
SINK_KIND=sqlite
CHECK_ORDER=0
NOTES_GIVEN=${SOAK_NOTES:+1}
for arg in "$@"; do
  [[ $arg == --small ]] && SMALL=1
  [[ $arg == --check-order ]] && CHECK_ORDER=1
  [[ $arg == --notes ]] && NOTES_GIVEN=1
done
if ((SMALL)); then
  VERSIONS=${SOAK_VERSIONS:-5000} NOTES=${SOAK_NOTES:-250} RATE=${SOAK_RATE:-125}
  DURATION=${SOAK_DURATION:-40} TIMEOUT=${SOAK_TIMEOUT:-240}
else
  VERSIONS=${SOAK_VERSIONS:-200000} NOTES=${SOAK_NOTES:-2000} RATE=${SOAK_RATE:-1000}
  DURATION=${SOAK_DURATION:-240} TIMEOUT=${SOAK_TIMEOUT:-1800}
fi
SEED=${SOAK_SEED:-1}
FAULT_MIN=${SOAK_FAULT_MIN:-5}
if ((SMALL)); then FAULT_MAX=${SOAK_FAULT_MAX:-8}; else FAULT_MAX=${SOAK_FAULT_MAX:-15}; fi
if ((CHECK_ORDER)); then
  FAULT_MIN=${SOAK_FAULT_MIN:-10} FAULT_MAX=${SOAK_FAULT_MAX:-10}
fi
while (($# > 0)); do
  case $1 in
    --small | --check-order) shift ;;
    --sink)
      (($# >= 2)) || { warn "error: $1 needs a value"; usage; exit 2; }
      case $2 in
        sqlite | postgres) SINK_KIND=$2 ;;
        *) warn "error: --sink must be sqlite or postgres, not '$2'"; usage; exit 2 ;;
      esac
      shift 2 ;;
    --versions | --notes | --rate | --duration | --timeout | --seed)
      (($# >= 2)) || { warn "error: $1 needs a value"; usage; exit 2; }
      case $1 in
        --versions) VERSIONS=$2 ;; --notes) NOTES=$2 ;; --rate) RATE=$2 ;;
        --duration) DURATION=$2 ;; --timeout) TIMEOUT=$2 ;; --seed) SEED=$2 ;;
      esac
      shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) warn "error: unknown argument: $1"; usage; exit 2 ;;
  esac
done
for var in VERSIONS NOTES RATE DURATION TIMEOUT SEED FAULT_MIN FAULT_MAX; do
  [[ ${!var} =~ ^[0-9]+$ ]] || { warn "error: SOAK_$var (or its flag) must be a whole number, not '${!var}'"; exit 2; }
done
((VERSIONS > 0 && NOTES > 0)) || { warn "error: versions and notes must be at least 1"; exit 2; }
((FAULT_MIN >= 1 && FAULT_MAX >= FAULT_MIN)) || { warn "error: need 1 <= SOAK_FAULT_MIN <= SOAK_FAULT_MAX"; exit 2; }
if ((CHECK_ORDER)); then
  [[ $SINK_KIND == sqlite ]] || { warn "error: --check-order reads the SQLite sink's delivery journal; drop --sink postgres"; exit 2; }
  # Keys with 5 versions each, unless the notes were given.
  [[ -n $NOTES_GIVEN ]] || NOTES=$(((VERSIONS + 4) / 5))
fi
readonly VERSIONS NOTES RATE DURATION TIMEOUT SEED FAULT_MIN FAULT_MAX SMALL SINK_KIND CHECK_ORDER

readonly PORT=${REBOUND_KAFKA_PORT:-9092}
readonly BROKERS=127.0.0.1:$PORT
if ((CHECK_ORDER)); then
  readonly FAILURES=transient=0.1
else
  readonly FAILURES=transient=0.1,permanent=0.01
fi
# Short tiers, so records that fail twice come back within seconds. The names stay those of the
# default topics; two tiers of one attempt each make three attempts before the DLQ.
readonly TIERS=(retry-5s:2s retry-1m:5s)
readonly MAX_ATTEMPTS=3
# Members that stop heartbeating lose their partitions after 6 s (the broker's minimum).
readonly GROUP_CONFIG=(-X session.timeout.ms=6000 -X heartbeat.interval.ms=1500)
readonly FREEZE_SECONDS=10 # SIGSTOP length: well past the session timeout
readonly AUDIT_EVERY=5

# The soak names its topics, groups and files itself (see common.sh). A PostgreSQL server
# named by the test command is kept.
POSTGRES_BASE_URL=${REBOUND_TEST_POSTGRES_URL:-}
unset_rebound_env
export REBOUND_KAFKA_PORT=$PORT

# ---------------------------------------------------------------------------------------------
# Run folder and names.

make_run_dir soak
readonly DB=$RUN_DIR/notes.db
SINK="sqlite://$DB"
readonly IDS=$RUN_DIR/ids.log
readonly FAULTS=$RUN_DIR/faults.log
mkdir -p "$RUN_DIR/outbox"
: >"$FAULTS"
: >"$IDS"

# ---------------------------------------------------------------------------------------------
# Processes. Service instances are named producer, consumer-1, consumer-2, scheduler-1 and
# scheduler-2; PIDS holds the running ones.

declare -A PIDS=()
readonly INSTANCES=(producer consumer-1 consumer-2 scheduler-1 scheduler-2)
declare -A STARTS=()   # starts per instance (the first one included)
FROZEN=""              # pid of a SIGSTOPped consumer, resumed by the cleanup if need be
LOAD_PID=""
AUDIT_PID=""
KAFKA_STARTED=0
POSTGRES_STARTED=0
UNEXPECTED=0           # service exits nobody asked for
BAD_STOPS=0            # services that did not stop cleanly at the end
HTTP_PORT=""

# shellcheck disable=SC2317 # invoked by the EXIT trap (install_traps)
cleanup() {
  local name pid
  local -a services=()
  [[ -n $FROZEN ]] && kill -CONT "$FROZEN" 2>/dev/null
  for pid in "$LOAD_PID" "$AUDIT_PID"; do
    [[ -n $pid ]] && { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  done
  for name in "${!PIDS[@]}"; do services+=("$name=${PIDS[$name]}"); done
  ((${#services[@]} == 0)) || stop_services "${services[@]}"
  if ((KAFKA_STARTED)); then
    say "stopping the Kafka broker the soak started"
    stop_started_kafka --nodes 1 || EXIT_STATUS=1
  fi
  if ((POSTGRES_STARTED)); then
    say "stopping the PostgreSQL cluster the soak started"
    "$SCRIPT_DIR/postgres-local.sh" stop 2>>"$RUN_DIR/postgres.log" || EXIT_STATUS=1
  fi
}
install_traps cleanup

# The PostgreSQL sink: a database of the run's own, so the delivery journal counts this run only.
if [[ $SINK_KIND == postgres ]]; then
  if [[ -z $POSTGRES_BASE_URL ]]; then
    if POSTGRES_BASE_URL=$("$SCRIPT_DIR/postgres-local.sh" status 2>/dev/null); then
      POSTGRES_BASE_URL=${POSTGRES_BASE_URL#running }
    else
      say "starting a PostgreSQL cluster (scripts/postgres-local.sh)"
      POSTGRES_STARTED=1
      POSTGRES_BASE_URL=$("$SCRIPT_DIR/postgres-local.sh" start 2>>"$RUN_DIR/postgres.log") ||
        die "PostgreSQL did not start (log: $REL_DIR/postgres.log)"
    fi
  fi
  SOAK_DATABASE=$(tr -c 'a-z0-9\n' '_' <<<"${RUN,,}")
  psql "$POSTGRES_BASE_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$SOAK_DATABASE\"" \
    >>"$RUN_DIR/postgres.log" 2>&1 || die "cannot create database $SOAK_DATABASE (log: $REL_DIR/postgres.log)"
  SINK="${POSTGRES_BASE_URL%%\?*}"
  SINK="${SINK%/*}/$SOAK_DATABASE"
  say "PostgreSQL sink: database $SOAK_DATABASE"
fi
readonly SINK

# On Linux the services run in their own session, so Ctrl-C in the terminal reaches only this
# script, whose trap then stops them.
DETACH=()
command -v setsid >/dev/null && DETACH=(setsid)
readonly SERVICE_LOG="info"

start_instance() { # name
  local name=$1 n=${1#*-} log=$RUN_DIR/$1.log
  local starts=$((${STARTS[$1]:-0} + 1))
  STARTS[$name]=$starts
  printf '=== start %d at %s\n' "$starts" "$(date -u +%FT%TZ)" >>"$log"
  case $name in
    producer)
      RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "$BIN/rebound-producer" --brokers "$BROKERS" \
        --log-format json --topic-prefix "$PREFIX" serve --listen "127.0.0.1:$HTTP_PORT" \
        --outbox-dir "$RUN_DIR/outbox" </dev/null >>"$log" 2>&1 &
      ;;
    consumer-*)
      # Each start draws other failures: a restarted consumer must not replay the same fates.
      RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "$BIN/rebound-consumer" --brokers "$BROKERS" \
        "${GROUP_CONFIG[@]}" --log-format json --topic-prefix "$PREFIX" --group "$RUN.consumer" \
        --sink "$SINK" --sink-journal --tier "${TIERS[0]}" --tier "${TIERS[1]}" \
        --inject-failures "$FAILURES" --inject-seed "$((SEED * 1000 + n * 100 + starts))" \
        </dev/null >>"$log" 2>&1 &
      ;;
    scheduler-*)
      RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "$BIN/rebound-scheduler" --brokers "$BROKERS" \
        "${GROUP_CONFIG[@]}" --log-format json --topic-prefix "$PREFIX" --group "$RUN.scheduler" \
        --tier "${TIERS[0]}" --tier "${TIERS[1]}" </dev/null >>"$log" 2>&1 &
      ;;
  esac
  PIDS[$name]=$!
}

# Fails the run (later) for every instance that exited without being told to, and starts it
# again so the soak can still finish and show what happened.
check_instances() {
  local name pid rc
  for name in "${INSTANCES[@]}"; do
    pid=${PIDS[$name]:-}
    [[ -n $pid ]] || continue
    if ! kill -0 "$pid" 2>/dev/null; then
      rc=0
      wait "$pid" 2>/dev/null || rc=$?
      UNEXPECTED=$((UNEXPECTED + 1))
      fault "unexpected-exit" "$name pid $pid exited on its own with status $rc; restarted"
      warn "$name (pid $pid) exited on its own with status $rc; last lines of $REL_DIR/$name.log:"
      tail -n 5 "$RUN_DIR/$name.log" >&2 || true
      start_instance "$name"
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# Faults.

declare -A FAULT_COUNT=()
fault() { # type message
  FAULT_COUNT[$1]=$((${FAULT_COUNT[$1]:-0} + 1))
  printf '%s\t%s\t%s\n' "$(date -u +%FT%T.%3NZ)" "$1" "$2" >>"$FAULTS"
  say "fault: $1: $2"
}

# Kills a random instance, of a service type not killed yet while there is one.
kill_random_instance() {
  local name pid candidate
  local -a candidates=()
  for candidate in "${INSTANCES[@]}"; do
    ((${FAULT_COUNT[kill-${candidate%%-*}]:-0} > 0)) || candidates+=("$candidate")
  done
  ((${#candidates[@]} > 0)) || candidates=("${INSTANCES[@]}")
  # The producer goes first while the load client still posts, so the client meets the crash.
  [[ -n $LOAD_PID ]] && ((${FAULT_COUNT[kill-producer]:-0} == 0)) && candidates=(producer)
  name=${candidates[RANDOM % ${#candidates[@]}]}
  pid=${PIDS[$name]}
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  fault "kill-${name%%-*}" "kill -9 $name (pid $pid), restarted"
  start_instance "$name"
}

restart_broker() {
  local t=$SECONDS
  fault "broker-restart" "restarting the broker (kafka-local.sh restart-broker)"
  if ! "$KAFKA_LOCAL" restart-broker >/dev/null 2>>"$RUN_DIR/kafka-restart.log"; then
    tail -n 20 "$RUN_DIR/kafka-restart.log" >&2
    die "kafka-local.sh restart-broker failed"
  fi
  printf '%s\t%s\t%s\n' "$(date -u +%FT%T.%3NZ)" "broker-up" "broker answers again after $((SECONDS - t))s" >>"$FAULTS"
}

freeze_consumer() {
  local name=consumer-$((RANDOM % 2 + 1)) pid
  pid=${PIDS[$name]}
  FROZEN=$pid
  kill -STOP "$pid"
  fault "sigstop-consumer" "SIGSTOP $name (pid $pid) for ${FREEZE_SECONDS}s, past its 6 s session timeout"
  sleep "$FREEZE_SECONDS"
  kill -CONT "$pid"
  FROZEN=""
  printf '%s\t%s\t%s\n' "$(date -u +%FT%T.%3NZ)" "sigcont" "SIGCONT $name (pid $pid)" >>"$FAULTS"
}

# ---------------------------------------------------------------------------------------------
# 1. Build, broker, topics.

readonly T_START=$SECONDS
say "run $RUN: $VERSIONS versions over $NOTES notes, rate ${RATE}/s (0: unpaced), chaos >= ${DURATION}s," \
  "seed $SEED; files in $REL_DIR/"
command -v python3 >/dev/null || die "python3 is needed for the load client"
readonly PROFILE=${SOAK_PROFILE:-dev}
case $PROFILE in
  dev) PROFILE_DIR=debug ;;
  release) PROFILE_DIR=release ;;
  *) die "SOAK_PROFILE must be dev or release, not '$PROFILE'" ;;
esac
if [[ ${SOAK_BUILD:-1} != 0 ]]; then
  say "building the binaries, profile $PROFILE (log: $REL_DIR/build.log)"
  if ! cargo build --locked --profile "$PROFILE" -p rebound-producer -p rebound-consumer \
      -p rebound-scheduler -p rebound-cli --bins >"$RUN_DIR/build.log" 2>&1; then
    tail -n 40 "$RUN_DIR/build.log" >&2
    die "cargo build failed (full log: $REL_DIR/build.log)"
  fi
fi
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') || true
readonly BIN=${TARGET_DIR:-$REPO/target}/$PROFILE_DIR
for exe in rebound rebound-producer rebound-consumer rebound-scheduler; do
  [[ -x $BIN/$exe ]] || die "$BIN/$exe is missing (build it, or unset SOAK_BUILD)"
done
readonly T_AFTER_BUILD=$SECONDS

if "$KAFKA_LOCAL" status --nodes 1 >/dev/null 2>&1; then
  say "using the Kafka broker already running at $BROKERS (it stays running)"
else
  say "starting a local Kafka broker at $BROKERS (log: $REL_DIR/kafka-start.log)"
  KAFKA_STARTED=1
  if ! "$KAFKA_LOCAL" start --nodes 1 >/dev/null 2>"$RUN_DIR/kafka-start.log"; then
    tail -n 30 "$RUN_DIR/kafka-start.log" >&2
    die "the local Kafka broker did not start"
  fi
  grep -q 'already running' "$RUN_DIR/kafka-start.log" && KAFKA_STARTED=0
fi
if ! "$BIN/rebound" --brokers "$BROKERS" topics create --topic-prefix "$PREFIX" \
    --tier retry-5s --tier retry-1m >"$RUN_DIR/topics.log" 2>&1; then
  cat "$RUN_DIR/topics.log" >&2
  die "creating the topics failed"
fi

# ---------------------------------------------------------------------------------------------
# 2. Services and load.

HTTP_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
readonly HTTP_PORT
for name in "${INSTANCES[@]}"; do start_instance "$name"; done
say "started producer (http://127.0.0.1:$HTTP_PORT), consumer-1, consumer-2, scheduler-1, scheduler-2;" \
  "tiers ${TIERS[*]}, failures $FAILURES"

readonly T_LOAD=$SECONDS
# Unpaced, batches of 200; paced, about five requests a second per thread (two threads), so a
# producer crash meets requests in flight.
BATCH=200
((RATE > 0)) && BATCH=$((RATE / 10 < 10 ? 10 : (RATE / 10 > 200 ? 200 : RATE / 10)))
readonly BATCH
python3 "$SCRIPT_DIR/soak/load.py" --url "http://127.0.0.1:$HTTP_PORT/v1/notes" --versions "$VERSIONS" \
  --notes "$NOTES" --ids-log "$IDS" --rate "$RATE" --seed "$SEED" --deadline "$TIMEOUT" --batch "$BATCH" \
  --summary "$RUN_DIR/load.json" </dev/null >"$RUN_DIR/load.log" 2>&1 &
LOAD_PID=$!
LOAD_RC=""
LOAD_TIME=""

# Collects the load client once it has exited.
check_load() {
  [[ -n $LOAD_PID ]] || return 0
  kill -0 "$LOAD_PID" 2>/dev/null && return 0
  LOAD_RC=0
  wait "$LOAD_PID" 2>/dev/null || LOAD_RC=$?
  LOAD_PID=""
  LOAD_TIME=$((SECONDS - T_LOAD))
  if ((LOAD_RC == 0)); then
    say "load client done: $(wc -l <"$IDS" | tr -d ' ') versions accepted in ${LOAD_TIME}s"
  else
    warn "the load client failed with status $LOAD_RC:"
    tail -n 5 "$RUN_DIR/load.log" >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# 3. Chaos. The required faults fall at fixed fractions of the planned chaos time, so they are
# spread over the run whatever its length; the other slots kill a random instance.

RANDOM=$SEED
readonly T_CHAOS=$SECONDS
RESTARTS_DONE=0
FROZE=0
LAST_REQUIRED=0 # whether the last fault was a required one: a kill always comes between two
# Fails while some service type (producer, consumer, scheduler) has not been killed yet.
all_types_killed() {
  local type
  for type in producer consumer scheduler; do ((${FAULT_COUNT[kill-$type]:-0} > 0)) || return 1; done
}
while :; do
  check_load
  elapsed=$((SECONDS - T_CHAOS))
  if [[ -z $LOAD_PID ]] && ((elapsed >= DURATION && RESTARTS_DONE >= 2 && FROZE)) && all_types_killed; then
    break
  fi
  if ((SECONDS - T_START >= TIMEOUT)); then warn "deadline reached during the chaos phase"; break; fi
  pause=$((FAULT_MIN + RANDOM % (FAULT_MAX - FAULT_MIN + 1)))
  # The pause is spent checking on the services, so an unexpected exit is seen within a second.
  until_t=$((SECONDS + pause))
  while ((SECONDS < until_t)); do check_instances; check_load; sleep 1; done
  percent=$(((SECONDS - T_CHAOS) * 100 / (DURATION > 0 ? DURATION : 1)))
  overtime=0
  [[ -z $LOAD_PID ]] && ((SECONDS - T_CHAOS >= DURATION)) && overtime=1
  if ((!LAST_REQUIRED || overtime)) && ((RESTARTS_DONE == 0 && (percent >= 25 || overtime))); then
    restart_broker
    RESTARTS_DONE=1 LAST_REQUIRED=1
  elif ((!LAST_REQUIRED || overtime)) && ((RESTARTS_DONE == 1 && !FROZE && (percent >= 45 || overtime))); then
    freeze_consumer
    FROZE=1 LAST_REQUIRED=1
  elif ((!LAST_REQUIRED || overtime)) && ((RESTARTS_DONE == 1 && FROZE && (percent >= 65 || overtime))); then
    restart_broker
    RESTARTS_DONE=2 LAST_REQUIRED=1
  else
    kill_random_instance
    LAST_REQUIRED=0
  fi
  check_instances
done
readonly CHAOS_TIME=$((SECONDS - T_CHAOS))
say "chaos over after ${CHAOS_TIME}s"

# ---------------------------------------------------------------------------------------------
# 4. Drain: wait (deadline SOAK_TIMEOUT from the start) for the load client and for lost = 0.

LOST="?"

readonly DEADLINE=$((T_START + TIMEOUT))
while [[ -n $LOAD_PID ]] && ((SECONDS < DEADLINE)); do check_instances; check_load; sleep 1; done
[[ -z $LOAD_PID ]] || die "the load client did not finish within SOAK_TIMEOUT (${TIMEOUT}s)"
ACCEPTED=$(wc -l <"$IDS" | tr -d ' ')

run_audit() { # output file, extra flags...
  local out=$1 rc=0
  shift
  RUST_LOG=warn "$BIN/rebound" --brokers "$BROKERS" audit --sink "$SINK" --ids-log "$IDS" \
    --topic-prefix "$PREFIX" --max-attempts "$MAX_ATTEMPTS" "$@" </dev/null >"$out.new" 2>"$out.err" &
  AUDIT_PID=$!
  wait "$AUDIT_PID" || rc=$?
  AUDIT_PID=""
  mv -f "$out.new" "$out"
  return "$rc"
}
# The figure of an audit table row, by its label.
figure() { awk -v label="$2" '{ line = $0; sub(/^ +/, "", line) } index(line, label) == 1 {
  rest = substr(line, length(label) + 1); sub(/^ +/, "", rest); print rest; exit }' "$1"; }

readonly T_DRAIN=$SECONDS
say "waiting until all $ACCEPTED accepted versions are applied or dead-lettered (audit every ${AUDIT_EVERY}s)"
while ((SECONDS < DEADLINE)); do
  check_instances
  t=$SECONDS
  poll_rc=0
  run_audit "$RUN_DIR/audit-poll.out" || poll_rc=$?
  LOST=$(figure "$RUN_DIR/audit-poll.out" lost)
  # Exit status 0: every version applied or dead-lettered. lost = 0 alone is not enough, since
  # versions still waiting in a tier are not counted as lost.
  [[ $LOST == 0 && $poll_rc == 0 ]] && break
  say "lost ${LOST:-?} so far ($((SECONDS - T_DRAIN))s into the drain)"
  sleep $((AUDIT_EVERY - (SECONDS - t) > 0 ? AUDIT_EVERY - (SECONDS - t) : 0))
done
readonly DRAIN_TIME=$((SECONDS - T_DRAIN))

# Stop the services with SIGTERM: each must finish its work, commit and exit 0.
for name in "${INSTANCES[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
stop_deadline=$((SECONDS + STOP_TIMEOUT))
for name in "${INSTANCES[@]}"; do
  pid=${PIDS[$name]}
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < stop_deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    BAD_STOPS=$((BAD_STOPS + 1))
  fi
  rc=0
  wait "$pid" 2>/dev/null || rc=$?
  if ((rc != 0)); then warn "$name (pid $pid) exited with status $rc at the end"; BAD_STOPS=$((BAD_STOPS + 1)); fi
  unset "PIDS[$name]"
done

# The final, extended audit: with the services stopped, its figures do not move any more.
AUDIT_RC=0
run_audit "$RUN_DIR/audit.out" --extended || AUDIT_RC=$?
if [[ ! -s $RUN_DIR/audit.out ]]; then cat "$RUN_DIR/audit.out.err" >&2; die "the final audit failed"; fi
LOST=$(figure "$RUN_DIR/audit.out" lost)
EARLY=$(figure "$RUN_DIR/audit.out" "dlq transient before tiers used up")
LATENESS_MIN=$(figure "$RUN_DIR/audit.out" "retry lateness min")
NEVER=$(figure "$RUN_DIR/audit.out" "versions never delivered (only superseded)")
TIER_DUPLICATE_HOPS=$(figure "$RUN_DIR/audit.out" "tier duplicate hops")
DLQ_DUPLICATE_HOPS=$(figure "$RUN_DIR/audit.out" "dlq duplicate hops")
REPUBLISH_DUPLICATE_HOPS=$(figure "$RUN_DIR/audit.out" "republish duplicate hops")

# The ordering check: in the delivery journal (one row per note handed to the sink, in the
# order the sink was handed them), the first delivery of each version of a note must come in
# increasing version order. Repeats after a crash (at least once) are not first deliveries.
ORDER_CHECK=""
OUT_OF_ORDER=0
if ((CHECK_ORDER)); then
  ORDER_CHECK=$(python3 - "$DB" <<'PY'
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
first = {}
for note_id, version in connection.execute("SELECT note_id, version FROM deliveries ORDER BY rowid"):
    seen = first.setdefault(note_id, [])
    if version not in seen:
        seen.append(version)
out_of_order = [note_id for note_id, versions in first.items() if versions != sorted(versions)]
print(f"{len(first)} {len(out_of_order)} {' '.join(out_of_order[:5])}")
PY
  ) || die "the ordering check could not read $DB"
  read -r ORDERED_KEYS OUT_OF_ORDER OUT_OF_ORDER_EXAMPLES <<<"$ORDER_CHECK"
fi

# ---------------------------------------------------------------------------------------------
# 5. Summary.

FAILED=()
[[ $LOST == 0 ]] || FAILED+=("lost = $LOST")
((AUDIT_RC == 0)) || FAILED+=("audit exited with status $AUDIT_RC")
[[ $EARLY == 0 ]] || FAILED+=("$EARLY transient dead letters skipped a tier")
[[ $NEVER == 0 ]] || FAILED+=("$NEVER versions never reached the sink nor the DLQ")
if [[ $REBOUND_DELIVERY == exactly-once ]]; then
  [[ $TIER_DUPLICATE_HOPS == 0 ]] || FAILED+=("$TIER_DUPLICATE_HOPS duplicate tier copies")
  [[ $DLQ_DUPLICATE_HOPS == 0 ]] || FAILED+=("$DLQ_DUPLICATE_HOPS duplicate dead letters")
  [[ $REPUBLISH_DUPLICATE_HOPS == 0 ]] || FAILED+=("$REPUBLISH_DUPLICATE_HOPS duplicate republished records")
fi
[[ $LATENESS_MIN != -* ]] || FAILED+=("a retry was republished before it was due (min lateness $LATENESS_MIN)")
((LOAD_RC == 0)) || FAILED+=("load client failed")
((UNEXPECTED == 0)) || FAILED+=("$UNEXPECTED unexpected service exits")
((BAD_STOPS == 0)) || FAILED+=("$BAD_STOPS services did not stop cleanly")
((${FAULT_COUNT[broker-restart]:-0} >= 2)) || FAILED+=("fewer than 2 broker restarts")
((${FAULT_COUNT[sigstop-consumer]:-0} >= 1)) || FAILED+=("no consumer was frozen")
((OUT_OF_ORDER == 0)) || FAILED+=("$OUT_OF_ORDER notes applied out of order (e.g. ${OUT_OF_ORDER_EXAMPLES:-?})")
all_types_killed || FAILED+=("not every service type was killed")

kills=0
for type in kill-producer kill-consumer kill-scheduler; do kills=$((kills + ${FAULT_COUNT[$type]:-0})); done
row() { printf '  %-44s %s\n' "$1" "$2"; }
{
  echo "Soak $RUN ($PROFILE binaries, broker $BROKERS, seed $SEED, $REBOUND_DELIVERY)"
  row "versions sent by the load client" "$VERSIONS over $NOTES notes"
  row "versions accepted (202, in ids.log)" "$ACCEPTED"
  row "load client retries (connection/503/5xx)" \
    "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["retries"]; print("{}/{}/{}".format(r["connection"], r["503"], r["5xx"]))' "$RUN_DIR/load.json" 2>/dev/null || echo "?")"
  row "faults injected" "$((kills + ${FAULT_COUNT[broker-restart]:-0} + ${FAULT_COUNT[sigstop-consumer]:-0}))"
  row "  kill -9 producer" "${FAULT_COUNT[kill-producer]:-0}"
  row "  kill -9 consumer" "${FAULT_COUNT[kill-consumer]:-0}"
  row "  kill -9 scheduler" "${FAULT_COUNT[kill-scheduler]:-0}"
  row "  broker restart" "${FAULT_COUNT[broker-restart]:-0}"
  row "  SIGSTOP consumer (${FREEZE_SECONDS}s)" "${FAULT_COUNT[sigstop-consumer]:-0}"
  row "unexpected service exits" "$UNEXPECTED"
  row "versions applied or superseded" "$(figure "$RUN_DIR/audit.out" "versions applied or superseded")"
  for kind in permanent poison transient blocked-by-key; do
    n=$(figure "$RUN_DIR/audit.out" "versions in dlq ($kind)")
    [[ -n $n ]] && row "versions in dlq ($kind)" "$n"
  done
  row "dlq transient before tiers used up" "$EARLY"
  row "LOST" "$LOST"
  if ((CHECK_ORDER)); then
    row "notes applied in order / out of order" "$((ORDERED_KEYS - OUT_OF_ORDER)) / $OUT_OF_ORDER"
  fi
  row "versions never delivered (only superseded)" "$NEVER"
  row "dlq duplicates (versions / extra copies)" \
    "$(figure "$RUN_DIR/audit.out" "dlq duplicate versions") / $(figure "$RUN_DIR/audit.out" "dlq extra copies")"
  row "duplicate hops: tiers / dlq / republished" \
    "$TIER_DUPLICATE_HOPS / $DLQ_DUPLICATE_HOPS / $REPUBLISH_DUPLICATE_HOPS"
  row "sink deliveries" "$(figure "$RUN_DIR/audit.out" "sink deliveries")"
  row "sink redeliveries (versions / extra)" \
    "$(figure "$RUN_DIR/audit.out" "sink redelivered versions") / $(figure "$RUN_DIR/audit.out" "sink extra deliveries")"
  row "retries republished (duplicates)" \
    "$(figure "$RUN_DIR/audit.out" "retries republished") ($(figure "$RUN_DIR/audit.out" "retries republished twice or more"))"
  row "retry lateness min / p50 / p99 / max" \
    "$LATENESS_MIN / $(figure "$RUN_DIR/audit.out" "retry lateness p50") / $(figure "$RUN_DIR/audit.out" "retry lateness p99") / $(figure "$RUN_DIR/audit.out" "retry lateness max")"
  row "wall time (total / after build)" "$((SECONDS - T_START))s / $((SECONDS - T_AFTER_BUILD))s"
  row "  load / chaos / drain" "${LOAD_TIME:-?}s / ${CHAOS_TIME}s / ${DRAIN_TIME}s"
  if ((${#FAILED[@]} == 0)); then
    row "verdict" "PASS"
  else
    row "verdict" "FAIL: $(IFS=';'; echo "${FAILED[*]}")"
  fi
} | tee "$RUN_DIR/summary.txt"
echo "Audit ($REL_DIR/audit.out):"
cat "$RUN_DIR/audit.out"
say "faults: $REL_DIR/faults.log; logs: $REL_DIR/"
((${#FAILED[@]} == 0)) || exit 1
exit 0
