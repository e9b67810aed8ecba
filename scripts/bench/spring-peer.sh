#!/usr/bin/env bash
# spring-peer.sh - builds the Spring for Apache Kafka peer of scripts/bench.sh's "peer" phase
# (scripts/bench/spring/) with Maven, once per change of its sources, and prints the jar's path.
#
# Usage: scripts/bench/spring-peer.sh
#
# The build happens in a cache folder outside the repository, with its own Maven repository
# there, as scripts/kafka-local.sh keeps the Kafka jars: the jar is named after the checksum of
# the pom and the sources, so editing either builds it again and an unchanged tree reuses it.
#
# Environment:
#   REBOUND_SPRING_PEER_CACHE  cache folder (default ${XDG_CACHE_HOME:-~/.cache}/rebound/spring-peer)
set -euo pipefail

readonly PROG=spring-peer
# stdout carries only the jar's path.
readonly SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

case ${1:-} in
  "") ;;
  -h | --help) usage; exit 0 ;;
  *) warn "error: unexpected argument: $1"; usage; exit 2 ;;
esac

readonly SOURCE_DIR=$SCRIPT_DIR/bench/spring
readonly CACHE=${REBOUND_SPRING_PEER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rebound/spring-peer}

command -v java >/dev/null || die "java not found (Java 17+ runs the Spring peer)"
command -v mvn >/dev/null || die "mvn not found (it builds the Spring peer from $SOURCE_DIR)"

# The checksum of every file of the peer's sources, names included.
fingerprint=$(cd "$SOURCE_DIR" && find pom.xml src -type f -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -c1-16)
readonly JAR=$CACHE/spring-peer-$fingerprint.jar
if [[ -f $JAR ]]; then
  printf '%s\n' "$JAR"
  exit 0
fi

mkdir -p "$CACHE"
( # fd 8 locks the cache against a concurrent build; it closes with this subshell.
  if command -v flock >/dev/null; then flock -w 900 8 || die "timed out waiting for $CACHE/.lock"; fi
  [[ -f $JAR ]] && exit 0
  build=$CACHE/build-$fingerprint
  rm -rf "$build"
  mkdir -p "$build"
  cp -R "$SOURCE_DIR/pom.xml" "$SOURCE_DIR/src" "$build/"
  say "building the Spring peer with Maven in $build (once per change of its sources)"
  if ! mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$CACHE/m2" -Dmaven.test.skip=true \
    -f "$build/pom.xml" package >"$CACHE/mvn.log" 2>&1; then
    cat "$CACHE/mvn.log" >&2
    die "mvn could not build the Spring peer (see $CACHE/mvn.log)"
  fi
  [[ -f $build/target/spring-peer.jar ]] || die "no spring-peer.jar in $build/target after mvn"
  # Renamed into place only when complete, so a jar that exists is whole.
  mv "$build/target/spring-peer.jar" "$JAR.tmp"
  mv "$JAR.tmp" "$JAR"
  rm -rf "$build"
) 8>>"$CACHE/.lock" || exit 1
printf '%s\n' "$JAR"
