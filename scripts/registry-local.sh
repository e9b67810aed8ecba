#!/usr/bin/env bash
# registry-local.sh - run a real Confluent-compatible schema registry (Apicurio Registry 3.0.9 on
# the JVM, in-memory storage) on loopback for rebound's development and integration tests.
#
# Usage: scripts/registry-local.sh start|stop|status
#
#   start    start the registry (its data is in memory: every start is empty) and print its
#            Confluent-compatible base URL alone on stdout, so
#            `REGISTRY_URL=$(scripts/registry-local.sh start)` works
#   stop     stop the registry this checkout started
#   status   print running/stopped and the URL; exit 0 if running, 3 if not
#
# The server is the ready-to-run zip `io.apicurio:apicurio-registry-app:3.0.9:zip:all` from Maven
# Central, fetched once by its repository-layout path (Maven cannot resolve the coordinate: its
# parent POM is not on Central), checked against its sha256 and unpacked into a cache folder
# outside the repository. Apicurio 3.1 and later need Java 21; 3.0.9 runs on Java 17.
#
# Environment:
#   REBOUND_REGISTRY_PORT           loopback port (default 18081)
#   REBOUND_REGISTRY_STATE          pid file and log (default <repo>/target/registry-local)
#   REBOUND_REGISTRY_CACHE          unpacked server (default ${XDG_CACHE_HOME:-~/.cache}/rebound/apicurio-<version>)
#   REBOUND_REGISTRY_READY_TIMEOUT  seconds to wait until it answers (default 90)
#   REBOUND_MAVEN_CENTRAL           Maven Central's base URL (default https://repo.maven.apache.org/maven2)
set -euo pipefail

readonly PROG=registry-local SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

readonly VERSION=3.0.9
readonly ZIP_SHA256=8fc13160eaaafeec930a9a93b7e82da1ee8caef3eae29c9ce4b403d80a1523ea
readonly ZIP_NAME=apicurio-registry-app-$VERSION-all.zip
readonly CENTRAL=${REBOUND_MAVEN_CENTRAL:-https://repo.maven.apache.org/maven2}
readonly ZIP_URL=$CENTRAL/io/apicurio/apicurio-registry-app/$VERSION/$ZIP_NAME
readonly CACHE=${REBOUND_REGISTRY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rebound/apicurio-$VERSION}
readonly STATE=${REBOUND_REGISTRY_STATE:-$REPO/target/registry-local}
readonly PORT=${REBOUND_REGISTRY_PORT:-18081}
readonly READY_TIMEOUT=${REBOUND_REGISTRY_READY_TIMEOUT:-90}
readonly HOST=127.0.0.1
readonly BASE_URL=http://$HOST:$PORT
readonly CCOMPAT_URL=$BASE_URL/apis/ccompat/v7
readonly RUNNER=apicurio-registry-app-$VERSION-runner.jar

# The runner jar, fetched and unpacked once; the marker is written only after a complete unpack.
ensure_server() {
  [[ -f $CACHE/.complete ]] && return
  command -v curl >/dev/null || die "curl is needed to fetch the registry"
  command -v unzip >/dev/null || die "unzip is needed to unpack the registry"
  mkdir -p "$CACHE"
  local zip=$CACHE/$ZIP_NAME
  if [[ ! -f $zip ]] || ! echo "$ZIP_SHA256  $zip" | sha256sum --check --status; then
    say "fetching $ZIP_URL (about 104 MiB, once)"
    curl --fail --location --silent --show-error --retry 3 -o "$zip.part" "$ZIP_URL" \
      || die "fetching $ZIP_URL failed"
    echo "$ZIP_SHA256  $zip.part" | sha256sum --check --status \
      || { rm -f "$zip.part"; die "$ZIP_NAME does not have the expected sha256 $ZIP_SHA256"; }
    mv "$zip.part" "$zip"
  fi
  rm -rf "$CACHE/server"
  unzip -q "$zip" -d "$CACHE/server" || die "unpacking $zip failed"
  [[ -n $(runner_jar) ]] || die "$ZIP_NAME holds no $RUNNER"
  touch "$CACHE/.complete"
}

runner_jar() { find "$CACHE/server" -name "$RUNNER" -print -quit 2>/dev/null; }

# The pid of this checkout's registry, only if that process really is the registry runner.
registry_pid() {
  local pid cmd
  [[ -f $STATE/registry.pid ]] || return 1
  pid=$(<"$STATE/registry.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmd=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  [[ $cmd == *"$RUNNER"* ]] || return 1
  echo "$pid"
}

answers() { curl --fail --silent --max-time 2 -o /dev/null "$CCOMPAT_URL/subjects"; }

start() {
  registry_pid >/dev/null && die "a registry of this checkout already runs ($CCOMPAT_URL); stop it first"
  answers && die "something already answers on $BASE_URL; choose REBOUND_REGISTRY_PORT"
  command -v java >/dev/null || die "java (17 or later) is needed to run the registry"
  ensure_server
  mkdir -p "$STATE"
  local jar detach=() pid deadline
  jar=$(runner_jar)
  command -v setsid >/dev/null && detach=(setsid)
  say "starting Apicurio Registry $VERSION on $BASE_URL (log: $STATE/registry.log)"
  # Serial GC and C1 only: it is ready in about 6 s instead of 12 on two cores, and small.
  (
    cd "$(dirname -- "$jar")"
    ${detach[@]+"${detach[@]}"} nohup java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
      -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$PORT" -jar "$jar" \
      >"$STATE/registry.log" 2>&1 </dev/null &
    echo $! >"$STATE/registry.pid"
  )
  pid=$(<"$STATE/registry.pid")
  # There is no "started" log line: the API answering is the readiness signal.
  deadline=$((SECONDS + READY_TIMEOUT))
  until answers; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$STATE/registry.log" >&2; die "the registry exited during start-up"; }
    ((SECONDS < deadline)) || { tail -n 30 "$STATE/registry.log" >&2; die "the registry did not answer within ${READY_TIMEOUT}s"; }
    sleep 0.5
  done
  say "registry ready"
  echo "$CCOMPAT_URL"
}

stop() {
  local pid deadline
  if ! pid=$(registry_pid); then
    say "no registry of this checkout runs"
    rm -f "$STATE/registry.pid"
    return 0
  fi
  say "stopping the registry (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      warn "the registry did not stop within 30s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$STATE/registry.pid"
}

status() {
  if registry_pid >/dev/null && answers; then
    echo "running $CCOMPAT_URL"
  else
    echo "stopped"
    return 3
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage; exit 2 ;;
esac
