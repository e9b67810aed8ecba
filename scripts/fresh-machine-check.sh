#!/usr/bin/env bash
# fresh-machine-check.sh - the README's two commands on a machine that has nothing but Rust: a
# container from the bare Debian base (scripts/docker-local.sh base-image), the host's Rust
# toolchain mounted read-only, a copy of the repository's HEAD (a fresh clone: uncommitted
# changes are not in it). Runs `scripts/demo.sh`, then `scripts/test.sh`, and reports each
# step's time and result.
#
# Usage: scripts/fresh-machine-check.sh
#
# Host networking only. The host's local CA certificates (/usr/local/share/ca-certificates, on a
# network that inspects TLS) are mounted read-only where Debian's ca-certificates picks them up
# when it is installed: a fresh machine on that network is given them too. The container's
# broker, PostgreSQL and schema registry use their own ports (FRESH_*_PORT), so those already
# running on the host are neither used nor disturbed. The container has no Docker engine,
# so test.sh runs with REBOUND_TEST_DOCKER=0 (its dockerized stage is the host's to run). Slow:
# everything is built from scratch inside (crates are downloaded into the container).
#
# Files: target/fresh-machine/<run>/ (repo/ the copy and its build, demo.log, test.log).
#
# Environment:
#   FRESH_KAFKA_PORT     client port of the broker inside (default 27092; +1 .. +5 are used too)
#   FRESH_POSTGRES_PORT  port of the test command's PostgreSQL inside (default 25432)
#   FRESH_REGISTRY_PORT  port of the test command's schema registry inside (default 28181)
#   FRESH_NICE           niceness of the steps inside (default 0; 19 yields to everything else)
#   RUSTUP_HOME, CARGO_HOME  the host's Rust installation (default ~/.rustup, ~/.cargo)
set -euo pipefail

readonly PROG=fresh-machine
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

case ${1:-} in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) warn "error: unexpected argument: $1"; usage; exit 2 ;;
esac

# Below the kernel's ephemeral port range (32768 and up on Linux), where outgoing connections
# take their local ports: a listener there can find its port taken (the broker binds six).
readonly KAFKA_PORT=${FRESH_KAFKA_PORT:-27092}
readonly POSTGRES_PORT=${FRESH_POSTGRES_PORT:-25432}
readonly REGISTRY_PORT=${FRESH_REGISTRY_PORT:-28181}
readonly NICENESS=${FRESH_NICE:-0}
[[ $NICENESS =~ ^[0-9]+$ ]] || die "FRESH_NICE must be a whole number from 0 to 19, not '$NICENESS'"
readonly HOST_RUSTUP=${RUSTUP_HOME:-$HOME/.rustup}
readonly HOST_CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
[[ -d $HOST_RUSTUP && -x $HOST_CARGO_BIN/cargo ]] ||
  die "no Rust installation at $HOST_RUSTUP and $HOST_CARGO_BIN (set RUSTUP_HOME / CARGO_HOME)"
docker info >/dev/null 2>&1 || die "no Docker engine answers; start one with scripts/docker-local.sh engine"

make_run_dir fresh-machine
readonly CONTAINER=rebound-$RUN
CONTAINER_STARTED=0
# shellcheck disable=SC2317 # invoked by the EXIT trap (install_traps)
cleanup() {
  if ((CONTAINER_STARTED)); then docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; fi
}
install_traps cleanup

base=$("$SCRIPT_DIR/docker-local.sh" base-image)
say "copying HEAD ($(git -C "$REPO" rev-parse --short HEAD)) into $REL_DIR/repo"
mkdir -p "$RUN_DIR/repo"
git -C "$REPO" archive HEAD | tar -x -C "$RUN_DIR/repo"

# Nothing of the host but the toolchain (read-only) and the copy. CARGO_HOME is the container's
# own, so the crates are downloaded as on a fresh machine; rustup and cargo come from the mount.
local_ca=()
compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null &&
  local_ca=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
say "starting $CONTAINER from $base (host network; Rust from $HOST_RUSTUP, read-only)"
# --init: an init reaps the processes the scripts leave behind (the demo's broker, a killed
# service), as on any real machine; `sleep` as pid 1 would keep them as zombies.
docker run -d --init --name "$CONTAINER" --network host ${local_ca[@]+"${local_ca[@]}"} \
  -v "$HOST_RUSTUP:/opt/rust/rustup:ro" -v "$HOST_CARGO_BIN:/opt/rust/bin:ro" \
  -v "$RUN_DIR/repo:/src" -w /src \
  -e RUSTUP_HOME=/opt/rust/rustup -e CARGO_HOME=/root/.cargo \
  -e PATH=/root/.cargo/bin:/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  -e REBOUND_KAFKA_PORT="$KAFKA_PORT" -e REBOUND_POSTGRES_PORT="$POSTGRES_PORT" \
  -e REBOUND_REGISTRY_PORT="$REGISTRY_PORT" -e REBOUND_TEST_DOCKER=0 \
  "$base" sleep infinity >/dev/null
CONTAINER_STARTED=1

RESULTS=()
step() { # name command...
  local name=$1 started=$SECONDS rc=0
  shift
  say "$name: $* (log $REL_DIR/$name.log)"
  docker exec "$CONTAINER" nice -n "$NICENESS" bash -c "$*" >"$RUN_DIR/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - started))
  if ((rc == 0)); then
    RESULTS+=("$name: passed in $((took / 60))m$((took % 60))s")
  else
    RESULTS+=("$name: FAILED (status $rc) after $((took / 60))m$((took % 60))s")
    warn "$name failed; last lines of $REL_DIR/$name.log:"
    tail -n 25 "$RUN_DIR/$name.log" >&2
  fi
  say "${RESULTS[-1]}"
  return "$rc"
}

status=0
step demo scripts/demo.sh || status=1
step test scripts/test.sh || status=1
say "summary: ${RESULTS[*]}"
exit "$status"
