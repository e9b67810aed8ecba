#!/usr/bin/env bash
# demo.sh - rebound's end-to-end demo: the whole retry/DLQ pipeline on a real local Kafka.
#
# Usage: scripts/demo.sh [--sink postgres://USER:PASSWORD@HOST:PORT/DB]
#
#   --sink URL   apply the notes to this PostgreSQL database instead of the run's SQLite file
#                (e.g. `--sink "$(scripts/postgres-local.sh start)"`); the notes table is
#                created or migrated there, and note ids are unique per run, so runs can share it
#
# Builds the binaries (debug profile, shared with the tests; DEMO_PROFILE=release for
# optimised ones), starts the local Kafka broker of scripts/kafka-local.sh unless a broker
# already answers on REBOUND_KAFKA_PORT (this checkout's or one started elsewhere), creates the pipeline's topics under a fresh per-run prefix (`demo-<epoch>.`,
# so runs never share topics or consumer groups), produces DEMO_NOTES note versions, and runs the
# consumer (SQLite sink, injected failures: 10% transient, 1% permanent) and the retry scheduler
# with their default tiers (retry-5s: 5 s, retry-1m: 1 min). `rebound audit --output progress` is
# polled until every produced version is accounted for (applied, or in the DLQ); its line says
# what is applied, dead-lettered, waiting in a tier (and when the next is due) or still in
# flight, and never calls a version lost while it can still arrive. Then the final audit's table
# (where `lost` is what can no longer arrive), a summary, and three commands to try next against
# what the run left: inspect the DLQ, replay it, watch its backlog as Prometheus metrics.
#
# Everything the demo started (consumer, scheduler, audit, and the broker if it started it) is
# stopped when it ends, also on failure or Ctrl-C. A broker that was already running is left
# running. Exits 0 when nothing is lost, non-zero when versions are still lost at the deadline
# or anything fails. A run takes about 1.5 minutes after the build (records that fail twice
# wait a full minute in retry-1m); the deadline is DEMO_TIMEOUT (240 s: with per-key order a
# later version of a note waits behind an earlier one's minute in retry-1m, and can fail through
# both tiers in its turn, which a 150 s deadline did not always cover).
#
# On a terminal the progress line is rewritten in place; otherwise a line is printed only when
# something changed (a wait for a tier is said once, not every few seconds).
#
# Files of a run: target/demo/<run>/ (build.log, topics.log, producer.log, ids.log, consumer.log,
# scheduler.log, notes.db, progress.out, audit.out, audit.err).
#
# Environment:
#   DEMO_NOTES      note versions to produce (default 5000)
#   DEMO_TIMEOUT    seconds the pipeline gets to account for every version (default 240)
#   DEMO_SEED       seed of the generator and the failure injector (default 1)
#   DEMO_RATE       notes per second the producer sends (default 0: as fast as possible)
#   DEMO_PROFILE    cargo profile of the binaries: dev (default) or release
#   DEMO_IMAGE      run the four binaries in containers of this image (rebound:local from
#                   scripts/docker-local.sh runtime-image) on the host network instead of building
#                   them; the run folder is mounted at the same path, so files stay where they are
#   REBOUND_KAFKA_PORT and the other REBOUND_KAFKA_* variables are passed to kafka-local.sh.
set -euo pipefail

readonly PROG=demo
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/prereqs.sh
source "$SCRIPT_DIR/lib/prereqs.sh"

SINK_URL=""
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --sink)
      (($# >= 2)) || { warn "error: --sink needs a postgres:// URL"; usage; exit 2; }
      SINK_URL=$2
      shift 2
      ;;
    *) warn "error: unexpected argument: $1 (settings are DEMO_* variables, see the header)"; usage; exit 2 ;;
  esac
done
case $SINK_URL in
  "" | postgres://* | postgresql://*) ;;
  *) warn "error: --sink must be a postgres:// or postgresql:// URL (the default is the run's SQLite file)"; exit 2 ;;
esac

readonly NOTES=${DEMO_NOTES:-5000}
readonly TIMEOUT=${DEMO_TIMEOUT:-240}
readonly SEED=${DEMO_SEED:-1}
readonly RATE=${DEMO_RATE:-0}
readonly IMAGE=${DEMO_IMAGE:-}
readonly FAILURES=transient=0.1,permanent=0.01
readonly BROKERS=127.0.0.1:${REBOUND_KAFKA_PORT:-9092}
readonly PROGRESS_EVERY=2   # seconds between progress updates
readonly AUDIT_EVERY=4      # seconds between the starts of two audits
# A progress line may be open on the terminal when the demo fails: end it first.
on_die() { end_progress_line; }

for var in NOTES TIMEOUT SEED RATE; do
  [[ ${!var} =~ ^[0-9]+$ ]] || { warn "error: DEMO_$var must be a whole number, not '${!var}'"; exit 2; }
done
((NOTES > 0)) || { warn "error: DEMO_NOTES must be at least 1"; exit 2; }

# The demo names its topics, groups and files itself (see common.sh).
unset_rebound_env

# ---------------------------------------------------------------------------------------------
# Run folder and names.

make_run_dir demo
readonly DB=$RUN_DIR/notes.db
# The sink URL the consumer writes and the audit reads; the password of a PostgreSQL URL is
# never printed (SINK_SHOWN).
readonly SINK=${SINK_URL:-sqlite://$DB}
SINK_SHOWN=$(sed -E 's#://[^@/]*@#://***@#' <<<"${SINK_URL:-$REL_DIR/notes.db}")
readonly SINK_SHOWN
readonly IDS=$RUN_DIR/ids.log

# ---------------------------------------------------------------------------------------------
# Cleanup: stop what this run started, whatever way it ends.

CONSUMER_PID=""
SCHEDULER_PID=""
AUDIT_PID=""
KAFKA_STARTED=0
PROGRESS_OPEN=0

# Ends a progress line that is still open on the terminal.
end_progress_line() {
  if ((PROGRESS_OPEN)); then printf '\n'; PROGRESS_OPEN=0; fi
}

# shellcheck disable=SC2317 # invoked by the EXIT trap (install_traps)
cleanup() {
  end_progress_line
  if [[ -n $AUDIT_PID ]]; then
    kill -TERM "$AUDIT_PID" 2>/dev/null || true
    wait "$AUDIT_PID" 2>/dev/null || true
  fi
  local -a services=()
  [[ -n $CONSUMER_PID ]] && services+=("rebound-consumer=$CONSUMER_PID")
  [[ -n $SCHEDULER_PID ]] && services+=("rebound-scheduler=$SCHEDULER_PID")
  ((${#services[@]} == 0)) || stop_services "${services[@]}"
  if ((KAFKA_STARTED)); then
    say "stopping the Kafka broker the demo started"
    stop_started_kafka --nodes 1 || EXIT_STATUS=1
  fi
}
install_traps cleanup

# ---------------------------------------------------------------------------------------------
# Helpers.

# Whole seconds since $1 (a $SECONDS value), as "1m05s" or "42s".
since() {
  local s=$((SECONDS - $1))
  if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# Fails unless the service is still running; then shows the end of its log.
require_running() { # name pid log
  if ! kill -0 "$2" 2>/dev/null; then
    local rc=0
    wait "$2" 2>/dev/null || rc=$?
    [[ $1 == rebound-consumer ]] && CONSUMER_PID=""
    [[ $1 == rebound-scheduler ]] && SCHEDULER_PID=""
    end_progress_line
    if ((rc == 0)); then
      # The services exit 0 only when told to stop: someone else signalled it.
      warn "$1 was stopped by a signal from outside the demo (see $3)"
    else
      warn "$1 exited early with status $rc; last lines of $3:"
      tail -n 20 "$3" >&2 || true
    fi
    exit 1
  fi
}

# ---------------------------------------------------------------------------------------------
# 1. Build, broker, topics.

readonly T_START=$SECONDS
say "run $RUN, files in $REL_DIR/"

# The command that runs binary $1 (in RUN_CMD): the built file, or a container of DEMO_IMAGE on the
# host network, as this user, with the run folder at the same path. Signals reach the service
# through `docker run` (it forwards them), so stopping works the same either way.
run_cmd() { # binary
  if [[ -n $IMAGE ]]; then
    RUN_CMD=(docker run --rm --network host --user "$(id -u):$(id -g)" -v "$RUN_DIR:$RUN_DIR"
      -e RUST_LOG --name "$RUN-$1-$((++CONTAINERS))" "$IMAGE" "$1")
  else
    RUN_CMD=("$BIN/$1")
  fi
}
CONTAINERS=0

if [[ -n $IMAGE ]]; then
  docker image inspect "$IMAGE" >/dev/null 2>&1 ||
    die "DEMO_IMAGE=$IMAGE is not here (scripts/docker-local.sh runtime-image builds rebound:local)"
  BUILD_TIME="none (image $IMAGE)"
  say "running the binaries in containers of $IMAGE"
else
  # Rust, a C toolchain and, unless a broker already answers or Docker runs it, Java and Maven:
  # installed here when missing (scripts/lib/prereqs.sh says what and why first).
  # shellcheck disable=SC2046 # the list is words
  prereqs_ensure $(prereqs_for demo)
  readonly PROFILE=${DEMO_PROFILE:-dev}
  case $PROFILE in
    dev) PROFILE_DIR=debug ;;
    release) PROFILE_DIR=release ;;
    *) die "DEMO_PROFILE must be dev or release, not '$PROFILE'" ;;
  esac
  say "building the binaries, profile $PROFILE (the first build takes a few minutes; log: $REL_DIR/build.log)"
  t=$SECONDS
  if ! cargo build --profile "$PROFILE" --workspace --bins >"$RUN_DIR/build.log" 2>&1; then
    tail -n 40 "$RUN_DIR/build.log" >&2
    die "cargo build failed (full log: $REL_DIR/build.log)"
  fi
  TARGET_DIR=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') || true
  readonly BIN=${TARGET_DIR:-$REPO/target}/$PROFILE_DIR
  for exe in rebound rebound-producer rebound-consumer rebound-scheduler; do
    [[ -x $BIN/$exe ]] || die "$BIN/$exe is missing after the build"
  done
  BUILD_TIME=$(since "$t")
  say "built in $BUILD_TIME"
fi

t=$SECONDS
if local_broker_running; then
  say "using the Kafka broker that is already running at $BROKERS (it stays running)"
  KAFKA_TIME="already running"
else
  say "starting a local Kafka broker (scripts/kafka-local.sh; log: $REL_DIR/kafka-start.log)"
  KAFKA_STARTED=1 # set first, so that an interrupted start is cleaned up too
  if ! "$KAFKA_LOCAL" start >/dev/null 2>"$RUN_DIR/kafka-start.log"; then
    tail -n 30 "$RUN_DIR/kafka-start.log" >&2
    die "the local Kafka broker did not start"
  fi
  KAFKA_TIME="started in $(since "$t")"
  if grep -q 'already running' "$RUN_DIR/kafka-start.log"; then
    KAFKA_STARTED=0 # someone else started it in the meantime: not ours to stop
    KAFKA_TIME="already running"
  fi
  say "Kafka is up at $BROKERS ($KAFKA_TIME)"
fi

run_cmd rebound
if ! "${RUN_CMD[@]}" --brokers "$BROKERS" topics create --topic-prefix "$PREFIX" \
    >"$RUN_DIR/topics.log" 2>&1; then
  cat "$RUN_DIR/topics.log" >&2
  die "creating the topics failed"
fi
say "created topics: $(awk '$1 == "created" || $1 == "exists" { printf "%s%s", sep, $2; sep = ", " }' \
  "$RUN_DIR/topics.log")"

# ---------------------------------------------------------------------------------------------
# 2. Produce.

say "producing $NOTES note versions (seed $SEED)"
t=$SECONDS
run_cmd rebound-producer
if ! RUST_LOG=info "${RUN_CMD[@]}" --brokers "$BROKERS" --log-format json \
    generate --count "$NOTES" --seed "$SEED" --rate "$RATE" --ids-log "$IDS" \
    --topic-prefix "$PREFIX" </dev/null >"$RUN_DIR/producer.log" 2>&1; then
  tail -n 20 "$RUN_DIR/producer.log" >&2
  die "the producer failed (log: $REL_DIR/producer.log)"
fi
produced=$(wc -l <"$IDS" | tr -d ' ')
((produced == NOTES)) || die "the producer acknowledged $produced of $NOTES note versions"
PRODUCE_TIME=$(since "$t")
say "produced and acknowledged $produced note versions in $PRODUCE_TIME"

# ---------------------------------------------------------------------------------------------
# 3. Consumer and scheduler, default tiers.

readonly SERVICE_LOG=info
readonly CONSUMER_LOG=$RUN_DIR/consumer.log
readonly SCHEDULER_LOG=$RUN_DIR/scheduler.log
# On Linux the services run in their own session, so Ctrl-C in the terminal reaches only this
# script, whose trap then stops them in order (SIGTERM, wait).
DETACH=()
command -v setsid >/dev/null && DETACH=(setsid)
T_PIPELINE=$SECONDS
run_cmd rebound-consumer
RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "${RUN_CMD[@]}" --brokers "$BROKERS" --log-format json \
  --topic-prefix "$PREFIX" --group "${RUN}.consumer" --sink "$SINK" \
  --inject-failures "$FAILURES" --inject-seed "$SEED" </dev/null 2>"$CONSUMER_LOG" >&2 &
CONSUMER_PID=$!
run_cmd rebound-scheduler
RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "${RUN_CMD[@]}" --brokers "$BROKERS" --log-format json \
  --topic-prefix "$PREFIX" --group "${RUN}.scheduler" </dev/null 2>"$SCHEDULER_LOG" >&2 &
SCHEDULER_PID=$!
say "started rebound-consumer (pid $CONSUMER_PID, failures $FAILURES) and rebound-scheduler" \
  "(pid $SCHEDULER_PID), tiers retry-5s (5 s) and retry-1m (1 min)"
say "waiting until every version is applied or dead-lettered (audit every ${AUDIT_EVERY}s, deadline ${TIMEOUT}s)"

# ---------------------------------------------------------------------------------------------
# 4./5. Progress and audits until lost = 0 or the deadline.

HAVE_SQLITE3=0
prereqs_have sqlite3 && HAVE_SQLITE3=1
TTY=0 # on a terminal the progress line is rewritten in place; otherwise printed when it changes
[[ -t 1 ]] && TTY=1
PROGRESS="waiting for the first audit"  # the last audit's progress line
AUDIT_NOTE=""        # why the last audit had no line
AUDIT_START=-1000    # $SECONDS when the last audit started
DONE=0
LAST_PRINTED=""      # what the last printed line said, without its clock and countdowns

# Runs the progress audit in the background; its line goes to progress.out.
start_audit() {
  run_cmd rebound
  RUST_LOG=warn "${RUN_CMD[@]}" --brokers "$BROKERS" audit --sink "$SINK" --ids-log "$IDS" \
    --topic-prefix "$PREFIX" --output progress </dev/null >"$RUN_DIR/progress.out.new" 2>"$RUN_DIR/audit.err.new" &
  AUDIT_PID=$!
  AUDIT_START=$SECONDS
}

# Collects a finished audit: sets PROGRESS (and DONE when every version is accounted for, which
# the audit says with exit status 0).
finish_audit() {
  local rc=0 line
  wait "$AUDIT_PID" 2>/dev/null || rc=$?
  AUDIT_PID=""
  mv -f "$RUN_DIR/progress.out.new" "$RUN_DIR/progress.out"
  mv -f "$RUN_DIR/audit.err.new" "$RUN_DIR/audit.err"
  line=$(head -n 1 "$RUN_DIR/progress.out")
  if [[ -n $line ]]; then
    PROGRESS=$line AUDIT_NOTE=""
    if ((rc == 0)); then DONE=1; fi
  else
    # No line: the sink may not exist yet, or the audit failed; keep polling.
    AUDIT_NOTE=$(grep -m 1 . "$RUN_DIR/audit.err" 2>/dev/null | sed 's/^error: //') || true
    AUDIT_NOTE=${AUDIT_NOTE:-"audit exited with status $rc"}
  fi
}

progress() {
  local rows="" line
  if ((HAVE_SQLITE3)) && [[ -f $DB ]]; then
    rows=$(sqlite3 -readonly -cmd '.timeout 1000' "$DB" 'SELECT count(*) FROM notes' 2>/dev/null) || rows=""
    [[ -n $rows ]] && rows=" | notes in sink $rows"
  fi
  line="$PROGRESS$rows"
  [[ -n $AUDIT_NOTE ]] && line+=" | audit: $AUDIT_NOTE"
  if ((TTY)); then
    local cols
    cols=$(tput cols 2>/dev/null) || cols=""
    [[ $cols =~ ^[0-9]+$ ]] && ((cols > 20)) || cols=120
    line=$(printf '[%6s] %s' "$(since "$T_PIPELINE")" "$line")
    printf '\r\033[K%s' "${line:0:cols-1}"
    PROGRESS_OPEN=1
  else
    # Printed when it says something new: the countdowns and the row count alone do not count.
    local key
    key=$(printf '%s' "$PROGRESS" | sed -E 's/due (in [0-9][0-9 mins]*( to [0-9][0-9 mins]*)?|now)/due/g')
    [[ -n $AUDIT_NOTE ]] && key+=" | audit: $AUDIT_NOTE"
    if [[ $key != "$LAST_PRINTED" ]]; then
      printf '[%6s] %s\n' "$(since "$T_PIPELINE")" "$line"
      LAST_PRINTED=$key
    fi
  fi
}

readonly DEADLINE=$((T_PIPELINE + TIMEOUT))
while :; do
  require_running rebound-consumer "$CONSUMER_PID" "$CONSUMER_LOG"
  require_running rebound-scheduler "$SCHEDULER_PID" "$SCHEDULER_LOG"
  if [[ -n $AUDIT_PID ]] && ! kill -0 "$AUDIT_PID" 2>/dev/null; then finish_audit; fi
  progress
  ((DONE)) && break
  ((SECONDS >= DEADLINE)) && break
  # The sink appears when the consumer has started; auditing before that cannot succeed.
  if [[ -z $AUDIT_PID ]] && [[ -n $SINK_URL || -f $DB ]] && ((SECONDS - AUDIT_START >= AUDIT_EVERY)); then
    start_audit
  fi
  sleep "$PROGRESS_EVERY"
done
end_progress_line

if ((!DONE)); then
  # The deadline passed: one last audit, waited for, decides.
  if [[ -n $AUDIT_PID ]]; then kill -TERM "$AUDIT_PID" 2>/dev/null || true; wait "$AUDIT_PID" 2>/dev/null || true; fi
  AUDIT_PID=""
  warn "deadline of ${TIMEOUT}s reached ($PROGRESS); auditing once more"
fi
PIPELINE_TIME=$(since "$T_PIPELINE")

# The services are done; stop them now, so the report is the last thing the demo prints (the
# EXIT trap still stops the broker if the demo started it).
stop_services "rebound-consumer=$CONSUMER_PID" "rebound-scheduler=$SCHEDULER_PID"
CONSUMER_PID="" SCHEDULER_PID=""

# ---------------------------------------------------------------------------------------------
# 6. Report.

# The final audit, with the table: `lost` is what can no longer arrive.
AUDIT_RC=0
run_cmd rebound
RUST_LOG=warn "${RUN_CMD[@]}" --brokers "$BROKERS" audit --sink "$SINK" --ids-log "$IDS" \
  --topic-prefix "$PREFIX" </dev/null >"$RUN_DIR/audit.out" 2>"$RUN_DIR/audit.err" || AUDIT_RC=$?
LOST=$(awk '$1 == "lost" && NF == 2 { print $2 }' "$RUN_DIR/audit.out")
((AUDIT_RC == 0)) || DONE=0
echo
echo "Accounting ($REL_DIR/audit.out):"
cat "$RUN_DIR/audit.out"
echo
if ((DONE)); then
  say "all $NOTES note versions accounted for (applied or dead-lettered), lost = 0"
elif [[ $LOST == 0 ]]; then
  say "FAILED: nothing is lost, but not every version arrived within the ${TIMEOUT}s deadline:" \
    "$(sed 's/^error: //' "$RUN_DIR/audit.err")"
else
  say "FAILED: lost = ${LOST:-?} after the ${TIMEOUT}s deadline (the logs show where the rest went)"
  [[ -s $RUN_DIR/audit.err ]] && cat "$RUN_DIR/audit.err" >&2
fi
say "timings: build $BUILD_TIME, Kafka $KAFKA_TIME, produce $PRODUCE_TIME, consumer/scheduler" \
  "$PIPELINE_TIME, total $(since "$T_START")"
say "logs: $REL_DIR/consumer.log, $REL_DIR/scheduler.log, $REL_DIR/producer.log (JSON lines);" \
  "sink $SINK_SHOWN, ids $REL_DIR/ids.log; topics $PREFIX*"

# What to try next, against the topics this run left (the binaries as built, or the image the
# services ran in; `cargo install`, in the README, puts the binaries on the PATH).
if [[ -n $IMAGE ]]; then
  NEXT_REBOUND="docker run --rm --network host $IMAGE rebound"
else
  NEXT_REBOUND="${BIN#"$REPO/"}/rebound"
fi
BROKER_FLAG=""
[[ $BROKERS == 127.0.0.1:9092 ]] || BROKER_FLAG=" --brokers $BROKERS"
echo
echo "Next, against what this run left in Kafka:"
echo "  $NEXT_REBOUND$BROKER_FLAG dlq inspect --topic-prefix $PREFIX --limit 3      # why each dead letter failed"
echo "  $NEXT_REBOUND$BROKER_FLAG dlq replay --topic-prefix $PREFIX --dry-run       # what a redrive would send back"
echo "  $NEXT_REBOUND$BROKER_FLAG dlq watch --topic-prefix $PREFIX --metrics-listen 127.0.0.1:9464" \
  "   # then: curl -s 127.0.0.1:9464/metrics | grep rebound_dlq"
((DONE)) || exit 1
exit 0
