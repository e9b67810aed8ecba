#!/usr/bin/env bash
# postgres-local.sh - run a throwaway local PostgreSQL cluster for rebound's PostgreSQL sink: its
# integration tests, the demo, the soak and the benchmark.
#
# Usage: scripts/postgres-local.sh COMMAND
#
#   start    start a fresh cluster (data of the previous run is wiped) and print its URL
#   stop     stop the cluster this script started (its data stays until the next start)
#   status   print running/stopped and the URL; exit 0 if running, 3 if not
#   url      print the connection URL (whether or not the cluster runs)
#
# Progress goes to stderr; `start` prints the connection URL alone on stdout, so
# `REBOUND_TEST_POSTGRES_URL=$(scripts/postgres-local.sh start)` works. The URL is
# postgres://rebound:rebound@127.0.0.1:PORT/rebound: a password is set so the URL has the form a
# deployment uses, and the cluster listens on loopback only.
#
# The cluster is made with initdb and pg_ctl from the installed PostgreSQL (Debian's
# `postgresql` package: /usr/lib/postgresql/VERSION/bin, or on PATH). initdb refuses to run as
# root, so when uid is 0 the cluster belongs to an unprivileged user (REBOUND_POSTGRES_OS_USER,
# default `nobody`) and the server runs as that user.
#
# Environment:
#   REBOUND_POSTGRES_PORT    loopback port (default 55432)
#   REBOUND_POSTGRES_STATE   data folder (default <repo>/target/postgres-local)
#   REBOUND_POSTGRES_OS_USER operating-system user of the cluster when run as root (default nobody)
set -euo pipefail

readonly PROG=postgres-local SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

readonly PORT=${REBOUND_POSTGRES_PORT:-55432}
readonly STATE=${REBOUND_POSTGRES_STATE:-$REPO/target/postgres-local}
readonly DATA=$STATE/data
readonly OS_USER=${REBOUND_POSTGRES_OS_USER:-nobody}
readonly URL="postgres://rebound:rebound@127.0.0.1:$PORT/rebound"

# The PostgreSQL server binaries: on PATH, or Debian's versioned folder (newest first).
find_bin() { # name
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
    return
  fi
  local candidate
  while IFS= read -r candidate; do
    [[ -x $candidate/$1 ]] && { printf '%s\n' "$candidate/$1"; return; }
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
  die "$1 not found: install PostgreSQL (Debian: apt-get install postgresql)"
}

# Runs a command as the cluster's owner: ourselves, or OS_USER when we are root.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    setpriv --reuid="$OS_USER" --regid="$(id -g "$OS_USER")" --clear-groups -- "$@"
  else
    "$@"
  fi
}

running() { [[ -f $DATA/postmaster.pid ]] && as_owner "$(find_bin pg_ctl)" -D "$DATA" status >/dev/null 2>&1; }

start() {
  local initdb pg_ctl psql
  initdb=$(find_bin initdb)
  pg_ctl=$(find_bin pg_ctl)
  psql=$(find_bin psql)
  if running; then
    say "stopping the previous cluster"
    as_owner "$pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
  rm -rf "$STATE"
  mkdir -p "$STATE"
  if [[ $(id -u) == 0 ]]; then
    # The owner must reach the folder: open the path to it for traversal only.
    local dir=$STATE
    while [[ $dir != / ]]; do
      chmod o+x "$dir" 2>/dev/null || true
      dir=$(dirname -- "$dir")
    done
    chown "$OS_USER" "$STATE"
  fi
  local password_file=$STATE/superuser-password
  printf 'rebound\n' >"$password_file"
  [[ $(id -u) == 0 ]] && chown "$OS_USER" "$password_file"
  say "initdb in $DATA"
  as_owner "$initdb" -D "$DATA" -U rebound --pwfile="$password_file" --auth=scram-sha-256 \
    --encoding=UTF8 --no-locale >"$STATE/initdb.log" 2>&1 || {
    cat "$STATE/initdb.log" >&2
    die "initdb failed"
  }
  say "starting PostgreSQL on 127.0.0.1:$PORT"
  # A socket folder of its own, so no system-wide folder (/var/run/postgresql) is needed.
  as_owner "$pg_ctl" -D "$DATA" -l "$STATE/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $STATE -c fsync=on -c max_connections=200" \
    start >/dev/null || {
    tail -n 30 "$STATE/server.log" >&2
    die "PostgreSQL did not start; its log: $STATE/server.log"
  }
  PGPASSWORD=rebound "$psql" -h 127.0.0.1 -p "$PORT" -U rebound -d postgres -q -v ON_ERROR_STOP=1 \
    -c 'CREATE DATABASE rebound' >/dev/null || die "creating the database failed"
  printf '%s\n' "$URL"
}

stop() {
  if running; then
    say "stopping PostgreSQL on 127.0.0.1:$PORT"
    as_owner "$(find_bin pg_ctl)" -D "$DATA" -m fast -w stop >/dev/null
  else
    say "no cluster of this script runs in $DATA"
  fi
}

status() {
  if running; then
    printf 'running %s\n' "$URL"
  else
    printf 'stopped\n'
    exit 3
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) printf '%s\n' "$URL" ;;
  *)
    usage
    exit 2
    ;;
esac
