#!/usr/bin/env bash
# docker-local.sh - a Docker engine and rebound's images on this machine, without a registry.
#
# Usage: scripts/docker-local.sh engine | engine-stop | base-image | kafka-image |
#                                runtime-image [--profile release|dev] [--no-cargo] | images | sizes |
#                                compose-plugin | compose-config
#
#   engine          start a Docker engine unless one answers (Debian's docker.io is installed when
#                   dockerd is missing); host networking only: no bridge, no iptables rules
#   engine-stop     stop the engine that `engine` started (one that was running before is left)
#   base-image      make sure debian:bookworm-slim exists: pulled, or where no registry answers
#                   built with `debootstrap --variant=minbase bookworm` and `docker import`
#   kafka-image     print the Kafka image for `REBOUND_KAFKA_MODE=docker scripts/kafka-local.sh`:
#                   REBOUND_KAFKA_IMAGE if set, else the official apache/kafka:<version> when it is
#                   here or can be pulled, else rebound-kafka:<version> built from the base image,
#                   Debian's JRE and the Maven Central jars of scripts/kafka/pom.xml
#                   (deploy/docker/kafka/)
#   runtime-image   build the rebound:local image (./Dockerfile) from the four binaries built on
#                   this machine by cargo (default profile release), stripped; prints its name.
#                   --no-cargo takes the binaries cargo left in target/ as they are
#   images          base-image, kafka-image and runtime-image
#   sizes           the stripped binaries' and the images' sizes, as the README lists them
#   compose-plugin  make sure `docker compose` works: where it does not, build the Compose CLI
#                   plugin (COMPOSE_VERSION) from the Go module proxy into ~/.docker/cli-plugins
#                   (needs Go; a few minutes of compiling)
#   compose-config  validate docker-compose.yml, alone and with the host-network override
#                   deploy/docker/compose.host-network.yml, with `docker compose config`
#
# Progress goes to stderr; the image commands print the image's name alone on stdout.
# Images stay in the engine, so a second run on the same machine only rebuilds what changed.
#
# Environment:
#   REBOUND_KAFKA_IMAGE          the Kafka image to use (see kafka-image)
#   REBOUND_DOCKER_STATE         the started engine's pid file and log (default /var/tmp/rebound-docker)
#   REBOUND_DOCKER_MIRROR        Debian mirror of debootstrap (default http://deb.debian.org/debian)
#   REBOUND_DOCKER_PULL_TIMEOUT  seconds a pull may take before the registry counts as
#                                unreachable (default 120)
set -euo pipefail

readonly PROG=docker-local SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

readonly ENGINE_STATE=${REBOUND_DOCKER_STATE:-/var/tmp/rebound-docker}
readonly ENGINE_PIDFILE=$ENGINE_STATE/dockerd.pid
readonly ENGINE_LOG=$ENGINE_STATE/dockerd.log
readonly ENGINE_TIMEOUT=60
readonly MIRROR=${REBOUND_DOCKER_MIRROR:-http://deb.debian.org/debian}
readonly PULL_TIMEOUT=${REBOUND_DOCKER_PULL_TIMEOUT:-120}
readonly BASE_IMAGE=debian:bookworm-slim
readonly RUNTIME_IMAGE=rebound:local
readonly BINARIES=(rebound rebound-consumer rebound-scheduler rebound-producer)
readonly BUILD_DIR=$REPO/target/docker
KAFKA_VERSION=$("$KAFKA_LOCAL" version)
readonly KAFKA_VERSION
readonly OFFICIAL_KAFKA_IMAGE=apache/kafka:$KAFKA_VERSION
readonly LOCAL_KAFKA_IMAGE=rebound-kafka:$KAFKA_VERSION
# The Compose CLI plugin built where none is installed; the last release series that still talks
# to engines as old as Debian bookworm's docker.io (API 1.41).
readonly COMPOSE_VERSION=v2.29.7
readonly HOST_NETWORK_OVERRIDE=$REPO/deploy/docker/compose.host-network.yml

# ---------------------------------------------------------------------------------------------
# Helpers.

# Installs Debian packages as root, or through sudo.
apt_install() { # package...
  command -v apt-get >/dev/null || die "$* missing, and this is not a Debian/Ubuntu machine (no apt-get)"
  local -a sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "$* missing; install them as root (no sudo here)"
    sudo=(sudo)
  fi
  say "installing $* with apt-get"
  "${sudo[@]+"${sudo[@]}"}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]+"${sudo[@]}"}" apt-get install -y -qq --no-install-recommends "$@" >&2
}

engine_answers() { docker info >/dev/null 2>&1; }

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# A pull that fails or hangs (no DNS, a proxy that drops packets) means: no registry.
try_pull() { # image
  say "pulling $1 (at most ${PULL_TIMEOUT}s)"
  if timeout "$PULL_TIMEOUT" docker pull --quiet "$1" >/dev/null 2>"$BUILD_DIR/pull.err"; then return 0; fi
  say "no registry answered for $1 ($(head -c 200 "$BUILD_DIR/pull.err" | tr '\n' ' '))"
  return 1
}

# The client that builds with BuildKit (the Dockerfile uses RUN --mount and a stage chosen by a
# build argument): one with the buildx plugin, or a client older than 23.0 with BuildKit built
# in (Debian's docker.io). A newer client without buildx would use the legacy builder.
BUILD_CLIENT=""
build_client() {
  [[ -z $BUILD_CLIENT ]] || return 0
  local client version
  if docker buildx version >/dev/null 2>&1; then BUILD_CLIENT=$(command -v docker); return 0; fi
  while IFS= read -r client; do
    version=$("$client" version --format '{{.Client.Version}}' 2>/dev/null) || continue
    if [[ ${version%%.*} =~ ^[0-9]+$ ]] && ((${version%%.*} < 23)); then BUILD_CLIENT=$client; return 0; fi
  done < <(type -ap docker)
  die "no Docker client here can build with BuildKit: install the buildx plugin (docker-buildx)"
}

# docker build with BuildKit on the host network (there is no bridge).
docker_build() { # docker build arguments...
  build_client
  DOCKER_BUILDKIT=1 "$BUILD_CLIENT" build --network host --progress plain "$@"
}

label_of() { # image label
  docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

since() { echo "$((SECONDS - $1))s"; }

# ---------------------------------------------------------------------------------------------
# Engine.

engine_pid() {
  local pid
  [[ -f $ENGINE_PIDFILE ]] || return 1
  pid=$(<"$ENGINE_PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ $(ps -o comm= -p "$pid" 2>/dev/null) == dockerd ]] || return 1
  echo "$pid"
}

engine_start() {
  local started=$SECONDS
  if engine_answers; then say "a Docker engine is already running"; return 0; fi
  command -v dockerd >/dev/null || apt_install docker.io
  command -v docker >/dev/null || apt_install docker.io
  ((EUID == 0)) || die "dockerd must run as root; run 'sudo $0 engine' once"
  mkdir -p "$ENGINE_STATE"
  say "starting dockerd (host networking only; log $ENGINE_LOG)"
  # No bridge and no iptables rules: containers use the host's network (--network host), so the
  # engine touches neither the firewall nor the routing of the machine it runs on. The marker
  # says this script started it, so engine-stop never stops someone else's engine.
  setsid nohup dockerd --bridge=none --iptables=false --pidfile "$ENGINE_PIDFILE" \
    >>"$ENGINE_LOG" 2>&1 </dev/null &
  until engine_answers; do
    if ((SECONDS - started >= ENGINE_TIMEOUT)); then
      tail -n 30 "$ENGINE_LOG" >&2 || true
      die "dockerd does not answer after ${ENGINE_TIMEOUT}s"
    fi
    sleep 0.5
  done
  : >"$ENGINE_STATE/started-by-docker-local"
  say "Docker engine ready in $(since "$started")"
}

engine_stop() {
  local pid deadline
  if [[ ! -f $ENGINE_STATE/started-by-docker-local ]] || ! pid=$(engine_pid); then
    say "no engine started by this script is running"
    return 0
  fi
  say "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { warn "dockerd did not stop within 30s, sending SIGKILL"; kill -KILL "$pid" || true; break; }
    sleep 0.5
  done
  rm -f "$ENGINE_STATE/started-by-docker-local"
}

# ---------------------------------------------------------------------------------------------
# Images.

base_image() {
  local started=$SECONDS rootfs
  if image_present "$BASE_IMAGE"; then say "$BASE_IMAGE is here"; echo "$BASE_IMAGE"; return 0; fi
  if try_pull "$BASE_IMAGE"; then echo "$BASE_IMAGE"; return 0; fi
  command -v debootstrap >/dev/null || apt_install debootstrap
  rootfs=$BUILD_DIR/rootfs
  rm -rf "$rootfs"
  say "building $BASE_IMAGE with debootstrap --variant=minbase bookworm ($MIRROR; log $BUILD_DIR/debootstrap.log)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$BUILD_DIR/debootstrap.log" 2>&1; then
    tail -n 20 "$BUILD_DIR/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  # What the official slim image has: the same Debian suites, and no package lists or caches.
  cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase, built by scripts/docker-local.sh"' \
    --message "debootstrap --variant=minbase bookworm" - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "built $BASE_IMAGE in $(since "$started")"
  echo "$BASE_IMAGE"
}

# Builds rebound-kafka:<version>, unless the image of the same pom and files is here already.
build_local_kafka_image() {
  local started=$SECONDS context lib fingerprint
  fingerprint=$(cat "$REPO/scripts/kafka/pom.xml" "$REPO"/deploy/docker/kafka/* | cksum | tr -d ' ')
  if [[ $(label_of "$LOCAL_KAFKA_IMAGE" rebound.fingerprint) == "$fingerprint" ]]; then
    say "$LOCAL_KAFKA_IMAGE is here and up to date"
    return 0
  fi
  base_image >/dev/null
  # The jars of the JVM mode (Maven copies them once into its cache).
  lib=$("$KAFKA_LOCAL" jars)
  context=$BUILD_DIR/kafka-context
  rm -rf "$context"
  mkdir -p "$context"
  cp -a "$REPO"/deploy/docker/kafka/. "$context/"
  cp -a "$lib" "$context/lib"
  say "building $LOCAL_KAFKA_IMAGE (Debian JRE + the jars of scripts/kafka/pom.xml; log $BUILD_DIR/kafka-image.log)"
  if ! docker_build --label "rebound.fingerprint=$fingerprint" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      -t "$LOCAL_KAFKA_IMAGE" "$context" >"$BUILD_DIR/kafka-image.log" 2>&1; then
    tail -n 30 "$BUILD_DIR/kafka-image.log" >&2
    die "building $LOCAL_KAFKA_IMAGE failed"
  fi
  rm -rf "$context"
  say "built $LOCAL_KAFKA_IMAGE in $(since "$started")"
}

kafka_image() {
  local image=${REBOUND_KAFKA_IMAGE:-}
  if [[ -n $image ]]; then
    if [[ $image == "$LOCAL_KAFKA_IMAGE" ]]; then build_local_kafka_image
    elif ! image_present "$image"; then try_pull "$image" || die "REBOUND_KAFKA_IMAGE=$image is neither here nor pullable"
    fi
  elif image_present "$OFFICIAL_KAFKA_IMAGE" || try_pull "$OFFICIAL_KAFKA_IMAGE"; then
    image=$OFFICIAL_KAFKA_IMAGE
  else
    build_local_kafka_image
    image=$LOCAL_KAFKA_IMAGE
  fi
  echo "$image"
}

runtime_image() { # profile run-cargo(1|0)
  local profile=$1 run_cargo=$2 started=$SECONDS dir context exe
  case $profile in
    release) dir=release ;;
    dev) dir=debug ;;
    *) die "--profile must be release or dev, not '$profile'" ;;
  esac
  command -v strip >/dev/null || apt_install binutils
  base_image >/dev/null
  local -a bins=()
  for exe in "${BINARIES[@]}"; do bins+=(--bin "$exe"); done
  if ((run_cargo)); then
    say "building the binaries (cargo, profile $profile; log $BUILD_DIR/cargo-$profile.log)"
    if ! (cd "$REPO" && cargo build --locked --profile "$profile" "${bins[@]}") >"$BUILD_DIR/cargo-$profile.log" 2>&1; then
      tail -n 30 "$BUILD_DIR/cargo-$profile.log" >&2
      die "cargo build failed"
    fi
  fi
  for exe in "${BINARIES[@]}"; do
    [[ -x $REPO/target/$dir/$exe ]] || die "target/$dir/$exe is missing (build it, or leave out --no-cargo)"
  done
  # Only the stripped binaries go to the engine: the build context stays a few tens of MB.
  context=$BUILD_DIR/runtime-context
  rm -rf "$context"
  mkdir -p "$context/prebuilt"
  for exe in "${BINARIES[@]}"; do strip -o "$context/prebuilt/$exe" "$REPO/target/$dir/$exe"; done
  printf '*\n!prebuilt/\n' >"$context/.dockerignore"
  say "building $RUNTIME_IMAGE from the stripped $profile binaries (log $BUILD_DIR/runtime-image.log)"
  if ! docker_build --build-arg REBOUND_BINARIES=prebuilt -f "$REPO/Dockerfile" -t "$RUNTIME_IMAGE" \
      "$context" >"$BUILD_DIR/runtime-image.log" 2>&1; then
    tail -n 30 "$BUILD_DIR/runtime-image.log" >&2
    die "building $RUNTIME_IMAGE failed"
  fi
  say "built $RUNTIME_IMAGE in $(since "$started")"
  echo "$RUNTIME_IMAGE"
}

sizes() {
  local exe image
  echo "stripped release binaries:"
  for exe in "${BINARIES[@]}"; do
    [[ -f $BUILD_DIR/runtime-context/prebuilt/$exe ]] || die "no stripped binaries; run '$0 runtime-image' first"
    printf '  %-20s %s\n' "$exe" "$(du -h --apparent-size "$BUILD_DIR/runtime-context/prebuilt/$exe" | cut -f1)"
  done
  echo "images:"
  for image in "$RUNTIME_IMAGE" "$LOCAL_KAFKA_IMAGE" "$OFFICIAL_KAFKA_IMAGE" "$BASE_IMAGE"; do
    image_present "$image" || continue
    printf '  %-24s %s MB\n' "$image" "$(($(docker image inspect --format '{{.Size}}' "$image") / 1000000))"
  done
}

# ---------------------------------------------------------------------------------------------
# Compose.

compose_plugin() {
  local started=$SECONDS plugins=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins gobin
  if docker compose version >/dev/null 2>&1; then say "$(docker compose version)"; return 0; fi
  command -v go >/dev/null || die "'docker compose' is missing and Go is not installed to build it (https://go.dev/dl/)"
  gobin=$BUILD_DIR/compose-bin
  say "building the Compose CLI plugin $COMPOSE_VERSION from the Go module proxy (log $BUILD_DIR/compose-build.log)"
  if ! GOBIN=$gobin go install -ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION" >"$BUILD_DIR/compose-build.log" 2>&1; then
    tail -n 20 "$BUILD_DIR/compose-build.log" >&2
    die "building the Compose plugin failed"
  fi
  mkdir -p "$plugins"
  install -m 0755 "$gobin/cmd" "$plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || die "docker compose does not work after installing $plugins/docker-compose"
  say "installed $plugins/docker-compose ($COMPOSE_VERSION) in $(since "$started")"
}

compose_config() {
  docker compose version >/dev/null 2>&1 || die "'docker compose' is missing; run '$0 compose-plugin'"
  docker compose -f "$REPO/docker-compose.yml" config --quiet || die "docker-compose.yml is not valid"
  say "docker-compose.yml is valid"
  docker compose -f "$REPO/docker-compose.yml" -f "$HOST_NETWORK_OVERRIDE" config --quiet ||
    die "docker-compose.yml with ${HOST_NETWORK_OVERRIDE#"$REPO"/} is not valid"
  say "docker-compose.yml with ${HOST_NETWORK_OVERRIDE#"$REPO"/} is valid"
}

# ---------------------------------------------------------------------------------------------

main() {
  local cmd=${1:-} profile=release run_cargo=1
  (($# > 0)) && shift
  case $cmd in
    runtime-image | images)
      while (($# > 0)); do
        case $1 in
          --profile) (($# >= 2)) || { usage; exit 2; }; profile=$2; shift 2 ;;
          --profile=*) profile=${1#--profile=}; shift ;;
          --no-cargo) run_cargo=0; shift ;;
          *) warn "error: unexpected argument: $1"; usage; exit 2 ;;
        esac
      done ;;
    -h | --help | help) usage; exit 0 ;;
    "") usage; exit 2 ;;
    *) (($# == 0)) || { warn "error: unexpected argument: $1"; usage; exit 2; } ;;
  esac
  case $cmd in
    engine | engine-stop) ;;
    compose-plugin) mkdir -p "$BUILD_DIR" ;;
    base-image | kafka-image | runtime-image | images | sizes | compose-config)
      engine_answers || die "no Docker engine answers; start one with '$0 engine'"
      mkdir -p "$BUILD_DIR" ;;
    *) warn "error: unknown command: $cmd"; usage; exit 2 ;;
  esac
  case $cmd in
    engine) engine_start ;;
    engine-stop) engine_stop ;;
    base-image) base_image ;;
    kafka-image) kafka_image ;;
    runtime-image) runtime_image "$profile" "$run_cargo" ;;
    images) base_image; kafka_image; runtime_image "$profile" "$run_cargo" ;;
    sizes) sizes ;;
    compose-plugin) compose_plugin ;;
    compose-config) compose_config ;;
  esac
}

main "$@"
