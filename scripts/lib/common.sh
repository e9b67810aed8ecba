#!/usr/bin/env bash
# common.sh - what scripts/demo.sh, soak.sh, failover.sh and bench.sh (and, for say/warn/die,
# test.sh and check-alerts.sh) share: paths, messages, the run folder, exit traps, stopping the
# services a run started, and the one list of REBOUND_* variables the runs unset.
#
# Usage: PROG=name; source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
#
# Sourced, never run. The caller sets PROG (the prefix of every message) first, and SAY_FD=2 if
# its progress messages go to stderr (stdout then carries only the script's result).
#
# Defines:
#   SCRIPT_DIR, REPO, KAFKA_LOCAL   scripts/, the repository, scripts/kafka-local.sh
#   usage                           prints the Usage lines of the script's header (to stderr)
#   say MSG / warn MSG / die MSG    progress (fd $SAY_FD, default stdout) / stderr / stderr + exit 1
#   on_die                          hook run before die's and the traps' messages (default: none);
#                                   a script with an open progress line redefines it
#   unset_rebound_env               unsets REBOUND_SCRIPT_UNSET (see there why)
#   make_run_dir KIND               RUN=KIND-<epoch>, PREFIX=RUN., RUN_DIR=target/KIND/RUN (absolute),
#                                   REL_DIR (relative to REPO); creates RUN_DIR
#   install_traps CLEANUP           on any exit run CLEANUP once, with EXIT_STATUS set to the exit
#                                   status (CLEANUP may set it); Ctrl-C, SIGTERM, SIGHUP exit 130/143/129
#   stop_services NAME=PID...       SIGTERM together, SIGKILL after STOP_TIMEOUT s, report each exit
#   local_broker_running            a single broker runs on REBOUND_KAFKA_PORT: this checkout's, or
#                                   one started elsewhere (another worktree, Docker), used as it is
#   stop_started_kafka ARGS...      `kafka-local.sh stop ARGS`, its log in RUN_DIR; 1 on failure

[[ -n ${PROG:-} ]] || { printf 'common.sh: set PROG before sourcing it\n' >&2; exit 2; }

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
KAFKA_LOCAL=$SCRIPT_DIR/kafka-local.sh
readonly SCRIPT_DIR REPO KAFKA_LOCAL

# Seconds a service gets to stop after SIGTERM: the services' own shutdown limit is 30 s.
STOP_TIMEOUT=${STOP_TIMEOUT:-40}

# The header's "# Usage:" paragraph, so the usage text lives in one place: the header.
usage() { sed -n '/^# Usage:/,/^#$/{/^#$/d;s/^# \{0,1\}//;p;}' "$0" >&2; }
on_die() { :; }
say() { printf '%s: %s\n' "$PROG" "$*" >&"${SAY_FD:-1}"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { on_die; warn "error: $*"; exit 1; }

# The runs name their topics, consumer groups, tiers, files and listeners themselves, and start
# every service with the flags they need. A REBOUND_* variable left in the caller's environment
# would still reach a service through its flag's `env` fallback (for a flag the script does not
# pass) and make the producer, the services and the audit disagree: a renamed topic or group, a
# sink, outbox or ids log of another run, another broker or client configuration, injected
# failures, a batch size or listener the measurements do not expect. So every run drops all of
# them: the union of what demo.sh, soak.sh, failover.sh and bench.sh need unset. The
# REBOUND_KAFKA_* variables of kafka-local.sh (port, mode, state, cache) are kept: they choose the
# local broker, which is the caller's to choose.
readonly REBOUND_SCRIPT_UNSET=(
  # topics, tiers, groups
  REBOUND_TOPIC REBOUND_SOURCE_TOPICS REBOUND_TIERS REBOUND_DLQ_TOPIC REBOUND_TOPIC_PREFIX
  REBOUND_GROUP REBOUND_PARTITIONS REBOUND_TIER_PARTITIONS REBOUND_REPLICATION_FACTOR
  REBOUND_MIN_INSYNC_REPLICAS REBOUND_MAX_ATTEMPTS
  # files and listeners of a run
  REBOUND_SINK REBOUND_SINK_JOURNAL REBOUND_IDS_LOG REBOUND_OUTBOX_DIR REBOUND_NO_OUTBOX
  REBOUND_LISTEN REBOUND_METRICS_LISTEN REBOUND_OTLP_ENDPOINT
  # the broker and client settings
  REBOUND_BROKERS REBOUND_KAFKA_CONFIG REBOUND_KAFKA_CONFIG_FILE REBOUND_BATCH_SIZE
  # wire format and schema registry (a run writes and reads single-object notes)
  REBOUND_WIRE_FORMAT REBOUND_SCHEMA_REGISTRY_URL REBOUND_SUBJECT_NAME_STRATEGY REBOUND_AUTO_REGISTER
  # generated load, injected failures, audit mode
  REBOUND_GENERATE_NOTES REBOUND_GENERATE_RUN_ID REBOUND_INJECT_FAILURES REBOUND_INJECT_SEED
  REBOUND_AUDIT_EXTENDED
)
unset_rebound_env() { unset "${REBOUND_SCRIPT_UNSET[@]}"; }

# A fresh folder and topic prefix per run, so runs never share topics, consumer groups or files.
make_run_dir() { # kind
  cd "$REPO" || return
  RUN=$1-$(date +%s)
  [[ -e $REPO/target/$1/$RUN ]] && RUN=$RUN-$$
  PREFIX=$RUN.
  RUN_DIR=$REPO/target/$1/$RUN
  REL_DIR=target/$1/$RUN
  # shellcheck disable=SC2034 # for the scripts that source this file
  readonly RUN PREFIX RUN_DIR REL_DIR
  mkdir -p "$RUN_DIR"
}

EXIT_STATUS=0
COMMON_CLEANUP=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
_common_exit() {
  EXIT_STATUS=$?
  # Once: a second Ctrl-C must not interrupt the cleanup halfway.
  trap '' INT TERM HUP
  trap - EXIT
  [[ -z $COMMON_CLEANUP ]] || "$COMMON_CLEANUP"
  exit "$EXIT_STATUS"
}
install_traps() { # cleanup-function
  COMMON_CLEANUP=$1
  trap _common_exit EXIT
  trap 'on_die; warn "interrupted"; exit 130' INT
  trap 'on_die; warn "terminated"; exit 143' TERM
  trap 'exit 129' HUP
}

# SIGTERMs the given services together, waits for them (SIGKILL after $STOP_TIMEOUT s) and
# reports how each exited. Arguments: name=pid pairs.
stop_services() {
  local pair name pid rc deadline=$((SECONDS + STOP_TIMEOUT)) alive
  for pair in "$@"; do
    kill -TERM "${pair#*=}" 2>/dev/null || true
  done
  while :; do
    alive=0
    for pair in "$@"; do kill -0 "${pair#*=}" 2>/dev/null && alive=1; done
    ((alive)) || break
    if ((SECONDS >= deadline)); then
      for pair in "$@"; do
        if kill -0 "${pair#*=}" 2>/dev/null; then
          warn "${pair%%=*} (pid ${pair#*=}) did not stop within ${STOP_TIMEOUT}s, sending SIGKILL"
          kill -KILL "${pair#*=}" 2>/dev/null || true
        fi
      done
      break
    fi
    sleep 0.2
  done
  for pair in "$@"; do
    name=${pair%%=*} pid=${pair#*=} rc=0
    wait "$pid" 2>/dev/null || rc=$?
    if ((rc == 0)); then say "stopped $name (pid $pid)"; else warn "$name (pid $pid) exited with status $rc"; fi
  done
}

# `kafka-local.sh status` knows only the broker of this checkout's state folder; a broker another
# checkout or Docker runs on the same port is as good, and starting one would fail on the port.
local_broker_running() {
  "$KAFKA_LOCAL" status --nodes 1 >/dev/null 2>&1 || "$KAFKA_LOCAL" probe >/dev/null 2>&1
}

# Stops the broker or cluster this run started (never one that was running before it).
stop_started_kafka() { # kafka-local.sh stop arguments
  if ! "$KAFKA_LOCAL" stop "$@" >/dev/null 2>>"$RUN_DIR/kafka-stop.log"; then
    warn "kafka-local.sh stop failed:"
    cat "$RUN_DIR/kafka-stop.log" >&2
    return 1
  fi
}
