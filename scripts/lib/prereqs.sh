#!/usr/bin/env bash
# prereqs.sh - the one prerequisites step of scripts/demo.sh, scripts/test.sh and .ci/run: checks
# each piece a command needs and installs what is missing with the platform's package manager
# (apt-get on Debian/Ubuntu, as root or through sudo; Homebrew on macOS), saying what it installs
# and why before it does. Where it cannot install a piece it stops, naming the piece, the
# packages that provide it and how to get them.
#
# Usage: scripts/lib/prereqs.sh --for demo|test   (what that command needs, then exit)
#        scripts/lib/prereqs.sh PIECE...          (check and install these, then exit)
#        scripts/lib/prereqs.sh --list            (the pieces and what each is for)
#
# Sourced: `source scripts/lib/prereqs.sh; prereqs_ensure $(prereqs_for test)`. A piece written
# `NAME?` is required in CI but optional elsewhere: when it cannot be installed, prereqs_ensure
# warns and goes on, and `prereqs_skipped NAME` then tells the caller to skip what needs it.
#
# Pieces (`scripts/lib/prereqs.sh --list` prints them with what each is for):
#   rust        cargo and rustc at least the workspace's rust-version (never installed: rustup)
#   rust-lint   rustfmt and clippy (rustup component add)
#   build       a C toolchain, make, pkg-config, OpenSSL and zlib headers (the bundled librdkafka)
#   java        Java 17 or newer (the local Kafka broker runs on the JVM)
#   maven       Maven (fetches the broker's jars from Maven Central once)
#   kcat        kcat (one bad-input test writes a record the Rust client cannot)
#   python3     Python 3 (the soak's load client, the benchmark harness)
#   promtool    promtool (alert rule tests)
#   amtool      amtool (Alertmanager configuration tests)
#   ps          the ps command (procps; the broker scripts check on their processes)
#   curl, unzip fetch and unpack the schema registry (Apicurio, from Maven Central)
#   python3-venv  a virtualenv for Confluent's Python client (interoperability tests)
#   openssl     the openssl command (the local broker's throwaway TLS certificates)
#   postgres    PostgreSQL's server binaries (initdb, pg_ctl) for the PostgreSQL sink's tests
#   go          a Go toolchain (builds helm and kubeconform for the Helm chart check)
#   sqlite3     the sqlite3 shell (optional extras of the demo's progress line)
# A new piece is one line in prereqs_piece (packages and purpose), when `command -v NAME` is not
# the right check one prereqs_check_NAME function, and its name in prereqs_for.
#
# Environment:
#   REBOUND_PREREQS_INSTALL  1 (default) installs what is missing; 0 only checks and names it
#   CI                       set by CI: pieces that are optional on a laptop are required there
#
# Sourced after scripts/lib/common.sh (for say/warn/die) or run on its own. Exit status when run:
# 0 when every piece is there afterwards, 1 when one is missing, 2 for an unknown piece.

if [[ -z ${PROG:-} ]]; then
  # Run on its own (as .ci/run does): borrow common.sh's messages.
  PROG=prereqs
  # shellcheck source=scripts/lib/common.sh
  source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"
  PREREQS_STANDALONE=1
fi

# prereqs_piece NAME: sets PIECE_APT (apt packages; `a|b` means the first one apt can install),
# PIECE_BREW (Homebrew formulae) and PIECE_WHY. Empty package lists mean "cannot be installed
# here"; PIECE_HINT then says how to get it. Returns 1 for an unknown piece.
prereqs_piece() {
  PIECE_APT="" PIECE_BREW="" PIECE_WHY="" PIECE_HINT=""
  case $1 in
    rust) PIECE_WHY="builds rebound" PIECE_HINT="install Rust with rustup (https://rustup.rs), or run 'rustup update'" ;;
    rust-lint) PIECE_WHY="formatting and lint checks" PIECE_HINT="rustup component add rustfmt clippy" ;;
    build) PIECE_APT="build-essential pkg-config libssl-dev zlib1g-dev libcurl4-openssl-dev" PIECE_BREW="pkg-config openssl@3"
      PIECE_WHY="C toolchain and headers for the bundled librdkafka (TLS, compression, OIDC token requests)"
      PIECE_HINT="on macOS the C compiler comes with the Xcode command line tools: xcode-select --install" ;;
    java) PIECE_APT="openjdk-17-jre-headless|openjdk-21-jre-headless|default-jre-headless" PIECE_BREW="openjdk@17"
      PIECE_WHY="runs the local Kafka broker (Java 17 or newer)" ;;
    maven) PIECE_APT="maven" PIECE_BREW="maven" PIECE_WHY="fetches the local broker's jars from Maven Central once" ;;
    kcat) PIECE_APT="kcat" PIECE_BREW="kcat" PIECE_WHY="one bad-input test writes a record the Rust client cannot" ;;
    python3) PIECE_APT="python3" PIECE_BREW="python" PIECE_WHY="the soak's load client and the benchmark harness" ;;
    promtool) PIECE_APT="prometheus" PIECE_BREW="prometheus"
      PIECE_WHY="alert rule tests (only the promtool command is used, not the server)" ;;
    amtool) PIECE_APT="prometheus-alertmanager" PIECE_BREW="alertmanager"
      PIECE_WHY="Alertmanager configuration tests (only the amtool command is used, not the server)" ;;
    go) PIECE_APT="golang-go" PIECE_BREW="go"
      PIECE_WHY="builds helm and kubeconform for the Helm chart check (scripts/lib/k8s-tools.sh)" ;;
    postgres) PIECE_APT="postgresql" PIECE_BREW="postgresql@16"
      PIECE_WHY="a throwaway PostgreSQL server for the PostgreSQL sink's tests (scripts/postgres-local.sh)" ;;
    openssl) PIECE_APT="openssl" PIECE_BREW="openssl@3"
      PIECE_WHY="makes the local broker's throwaway CA and certificates for the TLS listener tests" ;;
    curl) PIECE_APT="curl" PIECE_BREW="curl" PIECE_WHY="fetches the schema registry's zip from Maven Central once" ;;
    unzip) PIECE_APT="unzip" PIECE_BREW="unzip" PIECE_WHY="unpacks the schema registry's zip" ;;
    python3-venv) PIECE_APT="python3-venv" PIECE_WHY="a virtualenv under target/ for Confluent's Python client (the interoperability tests)" ;;
    ps) PIECE_APT="procps" PIECE_WHY="scripts/kafka-local.sh checks on the broker process with ps" ;;
    sqlite3) PIECE_APT="sqlite3" PIECE_BREW="sqlite" PIECE_WHY="the demo's progress line counts rows of the sink" ;;
    *) return 1 ;;
  esac
}
readonly PREREQS_PIECES=(rust rust-lint build ps openssl curl unzip python3-venv java maven kcat python3 go postgres promtool amtool sqlite3)

# What each command needs, in one place (scripts/demo.sh, scripts/test.sh and .ci/run ask here).
prereqs_for() { # demo|test
  case $1 in
    demo) echo rust build ps "$(prereqs_kafka_pieces)" ;;
    # promtool and amtool: a laptop without them skips the alert checks; CI may not.
    test) echo rust rust-lint build ps openssl curl unzip kcat python3 python3-venv go postgres promtool? amtool? "$(prereqs_kafka_pieces)" ;;
    *) return 1 ;;
  esac
}

# --- checks: succeed when the piece is usable --------------------------------------------------

prereqs_workspace_msrv() { sed -n 's/^rust-version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml"; }

# Whether version $1 (x.y[.z]) is at least $2.
prereqs_version_at_least() {
  local IFS=.
  # shellcheck disable=SC2206 # splitting on dots is the point
  local -a have=($1) want=($2)
  local i
  for i in 0 1 2; do
    ((${have[i]:-0} > ${want[i]:-0})) && return 0
    ((${have[i]:-0} < ${want[i]:-0})) && return 1
  done
  return 0
}

prereqs_check_rust() {
  command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 || return 1
  local have want
  have=$(rustc --version 2>/dev/null | awk '{ print $2 }') want=$(prereqs_workspace_msrv)
  [[ -z $want ]] || prereqs_version_at_least "${have%%-*}" "$want"
}
prereqs_check_rust-lint() {
  cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1
}
prereqs_check_build() {
  command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 ||
    return 1
  # macOS ships zlib in its SDK and Homebrew's OpenSSL is found by openssl-sys without pkg-config.
  [[ $(uname -s) == Darwin ]] && return 0
  pkg-config --exists openssl zlib libcurl
}
prereqs_check_maven() { command -v mvn >/dev/null 2>&1; }
prereqs_check_postgres() {
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
prereqs_check_python3-venv() { python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }
prereqs_check_go() { command -v go >/dev/null 2>&1 || [[ -x /usr/local/go/bin/go ]]; }
prereqs_check_java() {
  command -v java >/dev/null 2>&1 || return 1
  # `java -version` prints `openjdk version "17.0.12" ...` (or "1.8.0_402" for Java 8).
  local version
  version=$(java -version 2>&1 | sed -n 's/.* version "\([0-9][0-9.]*\).*/\1/p' | head -n 1)
  [[ -n $version && $version != 1.* ]] && prereqs_version_at_least "$version" 17
}

prereqs_check() { # piece
  if declare -F "prereqs_check_$1" >/dev/null; then "prereqs_check_$1"; else command -v "$1" >/dev/null 2>&1; fi
}

# --- installing --------------------------------------------------------------------------------

# The first of the `|`-separated apt alternatives that has an installation candidate.
prereqs_apt_choice() {
  local candidate
  IFS='|' read -r -a alternatives <<<"$1"
  for candidate in "${alternatives[@]}"; do
    if apt-cache policy "$candidate" 2>/dev/null | grep -q 'Candidate: [^(]'; then
      echo "$candidate"
      return 0
    fi
  done
  echo "${alternatives[0]}"
}

prereqs_as_root() {
  if [[ $(id -u) == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 1
  fi
}

PREREQS_APT_UPDATED=0
prereqs_install_apt() { # piece...
  local piece package packages=() why=()
  if [[ $(id -u) != 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    return 1
  fi
  if ((!PREREQS_APT_UPDATED)); then
    prereqs_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    PREREQS_APT_UPDATED=1
  fi
  for piece in "$@"; do
    prereqs_piece "$piece"
    for package in $PIECE_APT; do
      [[ $package == *'|'* ]] && package=$(prereqs_apt_choice "$package")
      packages+=("$package")
    done
    why+=("$piece: $PIECE_WHY")
  done
  say "installing with apt-get: ${packages[*]}"
  printf '  %s\n' "${why[@]}" >&"${SAY_FD:-1}"
  [[ $(id -u) == 0 ]] || say "(through sudo, which may ask for your password)"
  prereqs_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
}

prereqs_install_brew() { # piece...
  local piece formulae=() why=()
  for piece in "$@"; do
    prereqs_piece "$piece"
    # shellcheck disable=SC2206 # formulae are single words
    formulae+=($PIECE_BREW)
    why+=("$piece: $PIECE_WHY")
  done
  say "installing with Homebrew: ${formulae[*]}"
  printf '  %s\n' "${why[@]}" >&"${SAY_FD:-1}"
  brew install --quiet "${formulae[@]}" || return 1
  # Homebrew's OpenJDK is keg-only: put it on this run's PATH (and say how to keep it there).
  if [[ " ${formulae[*]} " == *" openjdk@17 "* ]]; then
    local jdk_bin
    jdk_bin="$(brew --prefix openjdk@17)/bin"
    PATH="$jdk_bin:$PATH"
    say "Java 17 is in $jdk_bin; add it to your PATH to use it outside rebound's scripts"
  fi
}

# rustfmt and clippy come from rustup, whatever the platform.
prereqs_install_rust-lint() {
  command -v rustup >/dev/null 2>&1 || return 1
  say "installing with rustup: the rustfmt and clippy components (formatting and lint checks)"
  rustup component add rustfmt clippy >/dev/null 2>&1
}

# Checks every piece, installs the missing ones with one package manager call, checks again, and
# dies naming what is still missing. Pieces may repeat; unknown ones are a caller's bug.
PREREQS_SKIPPED=()
prereqs_ensure() { # piece[?]...
  local piece missing=() installable=() unreachable=() optional=() platform manager=""
  for piece in "$@"; do
    if [[ $piece == *'?' ]]; then
      piece=${piece%'?'}
      optional+=("$piece")
    fi
    prereqs_piece "$piece" || die "prereqs: unknown piece '$piece' (known: ${PREREQS_PIECES[*]})"
    [[ " ${missing[*]-} " == *" $piece "* ]] && continue
    prereqs_check "$piece" || missing+=("$piece")
  done
  ((${#missing[@]} == 0)) && return 0

  platform=$(uname -s)
  if [[ $platform == Linux ]] && command -v apt-get >/dev/null 2>&1; then
    manager=apt
  elif [[ $platform == Darwin ]] && command -v brew >/dev/null 2>&1; then
    manager=brew
  fi
  for piece in "${missing[@]}"; do
    prereqs_piece "$piece"
    if declare -F "prereqs_install_$piece" >/dev/null; then
      if [[ ${REBOUND_PREREQS_INSTALL:-1} == 1 ]]; then "prereqs_install_$piece" || true; fi
    elif [[ ($manager == apt && -n $PIECE_APT) || ($manager == brew && -n $PIECE_BREW) ]]; then
      installable+=("$piece")
    fi
  done
  if ((${#installable[@]} > 0)) && [[ ${REBOUND_PREREQS_INSTALL:-1} == 1 ]]; then
    "prereqs_install_$manager" "${installable[@]}" || warn "prereqs: installing with $manager failed"
  fi

  for piece in "${missing[@]}"; do
    prereqs_check "$piece" && continue
    if [[ -z ${CI:-} && " ${optional[*]-} " == *" $piece "* ]]; then
      prereqs_piece "$piece"
      warn "missing: $piece ($PIECE_WHY); skipping what needs it (CI requires it;" \
        "Debian/Ubuntu: apt-get install ${PIECE_APT//|/ or }; macOS: brew install $PIECE_BREW)"
      PREREQS_SKIPPED+=("$piece")
      continue
    fi
    unreachable+=("$piece")
  done
  ((${#unreachable[@]} == 0)) && return 0
  for piece in "${unreachable[@]}"; do
    prereqs_piece "$piece"
    local how=$PIECE_HINT
    if [[ -z $how ]]; then
      how="Debian/Ubuntu: apt-get install ${PIECE_APT//|/ or }; macOS: brew install $PIECE_BREW"
    fi
    [[ $piece == rust && -n $(prereqs_workspace_msrv) ]] && how="Rust $(prereqs_workspace_msrv) or newer is needed: $how"
    warn "missing: $piece ($PIECE_WHY). $how"
  done
  [[ ${REBOUND_PREREQS_INSTALL:-1} == 1 ]] || warn "(REBOUND_PREREQS_INSTALL=0: nothing was installed)"
  die "prerequisites missing: ${unreachable[*]}"
}

# Whether the piece is there now, without installing anything (for optional pieces).
prereqs_have() { prereqs_check "$1"; }

# Whether prereqs_ensure skipped the optional piece (missing, and not in CI).
prereqs_skipped() { [[ " ${PREREQS_SKIPPED[*]-} " == *" $1 "* ]]; }

# The pieces the local Kafka broker needs: none when a broker already answers or Docker runs it
# (REBOUND_KAFKA_MODE=docker; scripts/kafka-local.sh never picks Docker by itself), Java and Maven
# otherwise.
prereqs_kafka_pieces() {
  local_broker_running && return 0
  [[ ${REBOUND_KAFKA_MODE:-} == docker ]] && return 0
  echo java maven
}

if [[ ${PREREQS_STANDALONE:-0} == 1 ]]; then
  case ${1:-} in
    -h | --help | "") usage; exit 0 ;;
    --list)
      for piece in "${PREREQS_PIECES[@]}"; do prereqs_piece "$piece"; printf '%-10s %s\n' "$piece" "$PIECE_WHY"; done
      exit 0 ;;
  esac
  if [[ $1 == --for ]]; then
    pieces=$(prereqs_for "${2:-}") || { warn "error: --for takes demo or test, not '${2:-}'"; exit 2; }
    # shellcheck disable=SC2086 # the list is words
    set -- $pieces
  fi
  for piece in "$@"; do
    prereqs_piece "${piece%'?'}" || { warn "error: unknown piece '$piece' (known: ${PREREQS_PIECES[*]})"; exit 2; }
  done
  prereqs_ensure "$@"
  say "present: $(printf '%s ' "$@" | tr -d '?')"
fi
