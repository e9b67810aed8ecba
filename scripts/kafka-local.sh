#!/usr/bin/env bash
# kafka-local.sh - run a real local Apache Kafka 4.x broker (or a 3-node KRaft cluster) for
# rebound's development and integration tests.
#
# Usage: scripts/kafka-local.sh COMMAND [--nodes 1|3] [--sasl]
#
#   start [--nodes 1|3] [--sasl]
#                         start a fresh broker or cluster (data of the previous run is wiped);
#                         --sasl gives the 3-node cluster SCRAM listeners too (see below)
#   stop  [--nodes 1|3]   stop what this script started (no --nodes: everything)
#   status [--nodes 1|3]  print running/stopped per node; exit 0 if running (the cluster: all
#                         three nodes), 3 if not
#   restart-broker        single broker: stop and start it again, keeping its data
#   stop-node N...        3-node cluster: stop node(s) N (1..3), keeping their data
#   start-node N...       3-node cluster: start node(s) N again on their existing data
#   tool [--nodes 1|3] NAME [ARGS...]
#                         run the Kafka command line tool org.apache.kafka.tools.NAME (TopicCommand,
#                         GetOffsetShell, ...) on the JVM from the cached jars against the running
#                         broker (or with --nodes 3 the cluster); --bootstrap-server and
#                         --command-config are added. Options go before NAME; everything after
#                         it is the tool's. Its output and exit status are the tool's.
#   version               print the Kafka version these scripts run (scripts/kafka/pom.xml)
#   tls-dir               print the folder of the single broker's TLS files (see below); exit 3
#                         if this state folder has none
#   probe                 exit 0 if a Kafka broker answers on REBOUND_KAFKA_PORT, whoever started it
#                         (this script in another checkout, Docker, ...), 3 if none does
#   jars                  fetch the Kafka jars once (Maven) and print the folder holding them; the
#                         locally built Kafka image (scripts/docker-local.sh) is made from them
#
# Progress goes to stderr; `start`, `restart-broker` and `start-node` print the bootstrap address
# alone on stdout, so `BOOTSTRAP=$(scripts/kafka-local.sh start)` works.
#
# Listeners of the single broker (JVM and Docker mode alike):
#   REBOUND_KAFKA_PORT       PLAINTEXT, no authentication (the default for everything)
#   REBOUND_KAFKA_PORT + 1   the KRaft controller (JVM mode; inside the container in Docker mode)
#   REBOUND_KAFKA_PORT + 2   SASL_PLAINTEXT with SCRAM-SHA-512, one user: rebound / rebound-secret
#                            (created when the storage is formatted in JVM mode, through the admin
#                            API in Docker mode). For authentication tests only: SASL_PLAINTEXT
#                            sends the data itself unencrypted. A client connects with
#                            -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=SCRAM-SHA-512
#                            -X sasl.username=rebound -X sasl.password=rebound-secret
#   REBOUND_KAFKA_PORT + 3   SSL: TLS with the broker's certificate, no client certificate
#                            -X security.protocol=SSL -X ssl.ca.location=TLS_DIR/ca.crt
#   REBOUND_KAFKA_PORT + 4   SASL_SSL: SCRAM-SHA-512 (the user above) over TLS
#                            -X security.protocol=SASL_SSL -X ssl.ca.location=TLS_DIR/ca.crt
#                            -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=rebound
#                            -X sasl.password=rebound-secret
#   REBOUND_KAFKA_PORT + 5   SSL with mutual TLS: a client certificate signed by the CA is required
#                            -X security.protocol=SSL -X ssl.ca.location=TLS_DIR/ca.crt
#                            -X ssl.certificate.location=TLS_DIR/client.crt
#                            -X ssl.key.location=TLS_DIR/client.key
# The TLS listeners exist in JVM mode only. TLS_DIR is $REBOUND_KAFKA_STATE/tls (printed by
# `tls-dir`): a throwaway CA made with openssl at `start` (ca.crt), the broker's certificate for
# 127.0.0.1 and localhost signed by it (broker.p12, password rebound-tls), a client certificate
# (client.crt, client.key, CN=rebound-client) for mutual TLS, and untrusted-ca.crt, a second CA
# that signed nothing here, for testing a client that trusts the wrong CA. `restart-broker` keeps
# them; `start` makes new ones.
# The 3-node cluster has PLAINTEXT listeners only; with `start --nodes 3 --sasl` every node also
# has a SASL_PLAINTEXT listener with SCRAM-SHA-512 on its client port + 2 (19094, 29094, 39094),
# with the same user. Later commands (start-node, ...) need no --sasl: the nodes' configuration
# is kept in the state folder.
#
# Modes: by default the broker runs directly on the JVM from jars that Maven copies once
# (scripts/kafka/pom.xml) into a cache folder outside the repository. With
# REBOUND_KAFKA_MODE=docker the single broker runs in a container named rebound-kafka-<port> on
# the host network, from REBOUND_KAFKA_IMAGE: the official apache/kafka:<version> by default, or
# the image scripts/docker-local.sh builds where no registry answers (`REBOUND_KAFKA_IMAGE=$(
# scripts/docker-local.sh kafka-image)`). Its data lives in the container: `restart-broker` keeps
# it, `stop` removes the container. Docker mode is never chosen on its own: an engine on the
# machine does not mean its broker is wanted. The 3-node cluster always runs on the JVM.
#
# Environment:
#   REBOUND_KAFKA_MODE           jvm | docker (default: jvm)
#   REBOUND_KAFKA_IMAGE          image of Docker mode (default apache/kafka:<version>)
#   REBOUND_KAFKA_PORT           client port of the single broker (default 9092; controller +1)
#   REBOUND_KAFKA_STATE          runtime state (default <repo>/target/kafka-local)
#   REBOUND_KAFKA_CACHE          jar cache (default ${XDG_CACHE_HOME:-~/.cache}/rebound/kafka-<version>)
#   REBOUND_KAFKA_READY_TIMEOUT  seconds to wait for a broker to answer (default 90)
#   REBOUND_KAFKA_JAVA_OPTS      extra JVM options for the brokers
set -euo pipefail

readonly PROG=kafka-local
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
readonly SCRIPT_DIR REPO
readonly POM=$SCRIPT_DIR/kafka/pom.xml

KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$POM" | head -n 1)
readonly KAFKA_VERSION
readonly CACHE=${REBOUND_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rebound/kafka-$KAFKA_VERSION}
readonly LIB=$CACHE/lib
readonly LIB_MARKER=$CACHE/.lib-complete
readonly STATE=${REBOUND_KAFKA_STATE:-$REPO/target/kafka-local}
readonly PORT=${REBOUND_KAFKA_PORT:-9092}
readonly READY_TIMEOUT=${REBOUND_KAFKA_READY_TIMEOUT:-90}
readonly STOP_TIMEOUT=30
readonly QUORUM_GRACE=5
readonly HOST=127.0.0.1
readonly CLUSTER_SIZE=3
# The SCRAM test user of the single broker's SASL listener (see the header).
readonly SASL_USER=rebound
readonly SASL_PASSWORD=rebound-secret
readonly SASL_MECHANISM=SCRAM-SHA-512
# The password of the broker's PKCS#12 key store (a throwaway certificate for tests).
readonly TLS_STORE_PASSWORD=rebound-tls
readonly TLS_DIR=$STATE/tls
# Days the throwaway certificates are valid.
readonly TLS_DAYS=825

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  cat >&2 <<EOF
usage: scripts/kafka-local.sh start [--nodes 1|3] [--sasl]
       scripts/kafka-local.sh stop|status [--nodes 1|3]
       scripts/kafka-local.sh restart-broker
       scripts/kafka-local.sh stop-node N... | start-node N...   (N = 1..3, 3-node cluster)
       scripts/kafka-local.sh tool [--nodes 1|3] NAME [ARGS...]   (org.apache.kafka.tools.NAME)
       scripts/kafka-local.sh version | probe | jars | tls-dir
EOF
}

# ---------------------------------------------------------------------------------------------
# Node layout. "single" is the single broker (state directly in $STATE); 1..3 are cluster nodes
# (state in $STATE/node-N).

node_dir() { if [[ $1 == single ]]; then echo "$STATE"; else echo "$STATE/node-$1"; fi; }
node_port() { if [[ $1 == single ]]; then echo "$PORT"; else echo "$(($1 * 10000 + 9092))"; fi; }
# The SASL_PLAINTEXT listener's port: the single broker always has one, a cluster node when the
# cluster was started with --sasl.
sasl_port() { echo "$(($(node_port "${1:-single}") + 2))"; }
# The single broker's TLS listeners: SSL, SASL_SSL, and SSL with client certificates required.
ssl_port() { echo "$((PORT + 3))"; }
sasl_ssl_port() { echo "$((PORT + 4))"; }
mtls_port() { echo "$((PORT + 5))"; }
# The ports a node listens on besides its client port and controller port.
extra_ports() { # node
  if [[ $1 == single ]]; then
    echo "$(sasl_port) $(ssl_port) $(sasl_ssl_port) $(mtls_port)"
  elif node_has_sasl "$1"; then
    sasl_port "$1"
  fi
}
# Whether a cluster node is configured with a SASL listener (start --nodes 3 --sasl).
node_has_sasl() { [[ $1 == single ]] || grep -q '^sasl.enabled.mechanisms=' "$(node_dir "$1")/server.properties" 2>/dev/null; }
# Whether the node is configured with the TLS listeners (a broker started by an older version of
# this script and restarted with restart-broker is not).
node_has_tls() { [[ $1 == single ]] && grep -q '^listeners=.*MTLS://' "$(node_dir "$1")/server.properties" 2>/dev/null; }
node_label() {
  if [[ $1 == single ]]; then
    echo "kafka ($HOST:$(node_port "$1"), SASL $HOST:$(sasl_port), SSL $HOST:$(ssl_port), SASL_SSL $HOST:$(sasl_ssl_port), mTLS $HOST:$(mtls_port))"
  elif node_has_sasl "$1"; then
    echo "kafka node $1 ($HOST:$(node_port "$1"), SASL $HOST:$(sasl_port "$1"))"
  else
    echo "kafka node $1 ($HOST:$(node_port "$1"))"
  fi
}
cluster_nodes() { seq 1 "$CLUSTER_SIZE"; }
cluster_bootstrap() {
  local n list=()
  for n in $(cluster_nodes); do list+=("$HOST:$(node_port "$n")"); done
  (IFS=,; echo "${list[*]}")
}

# Prints the pid of the node's broker if it is running; fails otherwise. A pid only counts when
# its command line is a kafka.Kafka process with this node's server.properties, so a stale pid
# file can never make us signal an unrelated process.
node_pid() {
  local dir pid cmd
  dir=$(node_dir "$1")
  [[ -f $dir/kafka.pid ]] || return 1
  pid=$(<"$dir/kafka.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmd=$(ps -ww -o args= -p "$pid" 2>/dev/null) || return 1
  [[ $cmd == *kafka.Kafka* && $cmd == *"$dir/server.properties"* ]] || return 1
  echo "$pid"
}

node_running() { node_pid "$1" >/dev/null; }

# ---------------------------------------------------------------------------------------------
# Probes.

# Succeeds when something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Succeeds when a Kafka broker on host:port answers an ApiVersions (v0) request. Unlike a bare TCP
# connect this is not fooled by a kernel backlog or a Docker port proxy without a live backend.
kafka_answers() {
  (
    exec 3<>"/dev/tcp/$1/$2"
    # size=10 | api_key=18 (ApiVersions) | api_version=0 | correlation_id=1 | client_id=null
    printf '\000\000\000\012\000\022\000\000\000\000\000\001\377\377' >&3
    IFS= read -r -t 5 -n 1 -d '' -u 3 _
  ) 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# Jars and Java tools.

# Copies the jars of scripts/kafka/pom.xml into $LIB once; the marker (written only after a
# successful copy) holds the pom's checksum, so editing the pom refreshes the cache.
ensure_lib() {
  local fingerprint
  fingerprint=$(cksum <"$POM")
  lib_ready() { [[ -f $LIB_MARKER && $(<"$LIB_MARKER") == "$fingerprint" ]]; }
  lib_ready && return 0
  command -v java >/dev/null || die "java not found (Java 17+ is needed to run Kafka $KAFKA_VERSION)"
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch the Kafka jars into $CACHE)"
  mkdir -p "$CACHE"
  ( # fd 8 locks the cache against a concurrent copy; it closes with this subshell.
    if command -v flock >/dev/null; then flock -w 600 8 || die "timed out waiting for $CACHE/.lock"; fi
    lib_ready && exit 0
    log "fetching Kafka $KAFKA_VERSION jars into $LIB (once)"
    rm -rf "$LIB" "$LIB_MARKER"
    if ! mvn -B -q -Dstyle.color=never org.apache.maven.plugins:maven-dependency-plugin:3.7.1:copy-dependencies \
      -DoutputDirectory="$LIB" -f "$POM" >"$CACHE/mvn.log" 2>&1; then
      cat "$CACHE/mvn.log" >&2
      die "mvn could not copy the Kafka jars into $LIB (see $CACHE/mvn.log)"
    fi
    compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null || die "no kafka_2.13 jar in $LIB after mvn"
    printf '%s\n' "$fingerprint" >"$LIB_MARKER"
  ) 8>>"$CACHE/.lock" || exit 1
}

write_tools_config() {
  cat >"$STATE/tools-log4j2.properties" <<'EOF'
# Logging of the Kafka command line tools run by scripts/kafka-local.sh: warnings to stderr.
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
  cat >"$STATE/tools-client.properties" <<'EOF'
# Admin client settings of the Kafka tools run by scripts/kafka-local.sh: fail fast.
request.timeout.ms=10000
default.api.timeout.ms=15000
EOF
}

# Runs a Kafka command line tool class from the cached jars.
kafka_tool() {
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$STATE/tools-log4j2.properties" \
    -cp "$LIB/*" "$@" 9>&-
}

# ---------------------------------------------------------------------------------------------
# Broker configuration.

write_node_config() { # node [sasl: 1 gives a cluster node a SCRAM listener]
  local node=$1 sasl=${2:-0} dir port cport id voters rf isr extra_listeners="" extra_map="" extra_config=""
  dir=$(node_dir "$node")
  port=$(node_port "$node")
  cport=$((port + 1))
  if [[ $node == single ]]; then
    id=1 voters="1@$HOST:$cport" rf=1 isr=1 sasl=1
  else
    id=$node rf=3 isr=2 voters=""
    local n
    for n in $(cluster_nodes); do voters+="${voters:+,}$n@$HOST:$(($(node_port "$n") + 1))"; done
  fi
  # Further client listeners next to the unauthenticated one the tests and the demo use: one that
  # requires SCRAM, and on the single broker three TLS ones (see the header). Brokers talk to each
  # other and to the controller over PLAINTEXT.
  local scram_login="org.apache.kafka.common.security.scram.ScramLoginModule required;"
  if ((sasl)); then
    extra_listeners+=",SASL_PLAINTEXT://$HOST:$(sasl_port "$node")"
    extra_map+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    extra_config+="sasl.enabled.mechanisms=$SASL_MECHANISM
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram_login
"
  fi
  if [[ $node == single ]]; then
    extra_listeners+=",SSL://$HOST:$(ssl_port),SASL_SSL://$HOST:$(sasl_ssl_port),MTLS://$HOST:$(mtls_port)"
    extra_map+=",SSL:SSL,SASL_SSL:SASL_SSL,MTLS:SSL"
    extra_config+="listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$scram_login
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$TLS_STORE_PASSWORD
ssl.key.password=$TLS_STORE_PASSWORD
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
ssl.client.auth=none
listener.name.mtls.ssl.client.auth=required
"
  fi
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<EOF
# Generated by scripts/kafka-local.sh - KRaft combined broker+controller for local tests.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport$extra_listeners
advertised.listeners=PLAINTEXT://$HOST:$port$extra_listeners
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT$extra_map
${extra_config}
log.dirs=$dir/data
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.check.interval.ms=30000
EOF
  cat >"$dir/log4j2.properties" <<EOF
# Generated by scripts/kafka-local.sh - the broker logs everything to server.log.
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $dir/server.log
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
EOF
}

# Makes the single broker's throwaway TLS files in $TLS_DIR (see the header): a CA, the broker's
# certificate for 127.0.0.1 and localhost in a PKCS#12 key store, a client certificate for mutual
# TLS, and a second CA that signed nothing. Written to a new folder that replaces the old one
# only when complete, so a failed openssl call never leaves a mix of old and new files.
make_tls_files() {
  command -v openssl >/dev/null || die "openssl not found (needed to make the broker's TLS certificates)"
  local new=$TLS_DIR.new
  rm -rf "$new"
  mkdir -p "$new"
  if ! (
    set -e
    umask 077
    cd "$new"
    ca() { # name subject
      openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$TLS_DAYS" -subj "$2" \
        -keyout "$1.key" -out "$1.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    }
    signed() { # name subject extension...
      local name=$1 subject=$2
      shift 2
      openssl req -newkey rsa:2048 -nodes -sha256 -subj "$subject" -keyout "$name.key" -out "$name.csr"
      printf '%s\n' "$@" >"$name.ext"
      openssl x509 -req -sha256 -days "$TLS_DAYS" -in "$name.csr" -CA ca.crt -CAkey ca.key \
        -set_serial "0x$(openssl rand -hex 16)" -extfile "$name.ext" -out "$name.crt"
      rm -f "$name.csr" "$name.ext"
    }
    ca ca "/CN=rebound local test CA"
    ca untrusted-ca "/CN=rebound untrusted test CA"
    rm -f untrusted-ca.key
    signed broker "/CN=localhost" subjectAltName=IP:127.0.0.1,DNS:localhost extendedKeyUsage=serverAuth
    signed client "/CN=rebound-client" extendedKeyUsage=clientAuth
    openssl pkcs12 -export -name broker -in broker.crt -inkey broker.key -certfile ca.crt \
      -passout "pass:$TLS_STORE_PASSWORD" -out broker.p12
    rm -f broker.key
    # Certificates are public; the client key is for the tests of this checkout's user.
    chmod 644 ca.crt untrusted-ca.crt broker.crt client.crt
  ) >"$STATE/tls.log" 2>&1; then
    cat "$STATE/tls.log" >&2
    die "making the TLS certificates in $new failed (see $STATE/tls.log)"
  fi
  rm -rf "$TLS_DIR"
  mv "$new" "$TLS_DIR"
}

# Formats the node's empty data dir with the given cluster id. The quorum is static
# (controller.quorum.voters), so no --standalone / --initial-controllers.
# The SCRAM user of a node with a SASL listener is written into the metadata log at format time,
# so it exists before the broker accepts its first connection.
format_node() { # node cluster_id
  local dir
  local -a scram=()
  dir=$(node_dir "$1")
  node_has_sasl "$1" && scram=(--add-scram "$SASL_MECHANISM=[name=$SASL_USER,password=$SASL_PASSWORD]")
  rm -rf "$dir/data"
  kafka_tool kafka.tools.StorageTool format -t "$2" -c "$dir/server.properties" ${scram[@]+"${scram[@]}"} \
    >"$dir/format.log" 2>&1 ||
    { cat "$dir/format.log" >&2; die "formatting $dir/data failed"; }
}

require_free_ports() { # node...
  local node port extra
  for node in "$@"; do
    port=$(node_port "$node")
    if port_open "$HOST" "$port" || port_open "$HOST" "$((port + 1))"; then
      die "port $port or $((port + 1)) of $(node_label "$node") is already in use by another process"
    fi
    for extra in $(extra_ports "$node"); do
      if port_open "$HOST" "$extra"; then
        die "port $extra of $(node_label "$node") is already in use by another process"
      fi
    done
  done
}

node_formatted() { [[ -f $(node_dir "$1")/data/meta.properties ]]; }

launch_node() { # node
  local node=$1 dir port heap_min heap_max
  dir=$(node_dir "$node")
  port=$(node_port "$node")
  require_free_ports "$node"
  if [[ $node == single ]]; then heap_min=256m heap_max=512m; else heap_min=256m heap_max=384m; fi
  local -a java_opts=()
  # shellcheck disable=SC2206 # word splitting of the user's extra options is intended
  [[ -n ${REBOUND_KAFKA_JAVA_OPTS:-} ]] && java_opts=($REBOUND_KAFKA_JAVA_OPTS)
  local -a detach=()
  command -v setsid >/dev/null && detach=(setsid)
  rm -f "$dir/kafka.pid"
  {
    printf '\n===== %s: starting %s =====\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$(node_label "$node")"
  } >>"$dir/server.log"
  # The broker must not inherit the lock on fd 9, or the lock would live as long as the broker.
  ${detach[@]+"${detach[@]}"} nohup java -Xms"$heap_min" -Xmx"$heap_max" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
    ${java_opts[@]+"${java_opts[@]}"} -cp "$LIB/*" kafka.Kafka "$dir/server.properties" \
    >>"$dir/stdout.log" 2>&1 </dev/null 9>&- &
  local pid=$! i
  echo "$pid" >"$dir/kafka.pid"
  # Until the child has exec'd java its command line is still ours; wait for that (max 5 s).
  for ((i = 0; i < 50; i++)); do
    node_running "$node" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
}

# Waits until every given node answers and the cluster reports all of them as live brokers.
# On timeout or an early exit of a broker: print its log tail, stop the given nodes, exit 1.
wait_ready() { # node...
  local deadline=$((SECONDS + READY_TIMEOUT)) node pending bootstrap expected extra
  local -a targets=("$@") addrs=()
  for node in "${targets[@]}"; do addrs+=("$HOST:$(node_port "$node")"); done
  bootstrap=$(IFS=,; echo "${addrs[*]}")
  # Brokers that must be live in the cluster metadata: the nodes started now plus running ones.
  expected=${#targets[@]}
  if [[ ${targets[0]} != single ]]; then
    expected=0
    for node in $(cluster_nodes); do node_running "$node" && expected=$((expected + 1)); done
  fi
  while :; do
    pending=0
    for node in "${targets[@]}"; do
      node_running "$node" || fail_start "$(node_label "$node") exited during startup" "${targets[@]}"
      kafka_answers "$HOST" "$(node_port "$node")" || pending=1
      # ApiVersions is answered before authentication, so this probes a SASL listener too; a TLS
      # listener only takes connections until it is up (a Kafka request is no TLS handshake).
      if node_has_sasl "$node"; then kafka_answers "$HOST" "$(sasl_port "$node")" || pending=1; fi
      if node_has_tls "$node"; then
        for extra in $(ssl_port) $(sasl_ssl_port) $(mtls_port); do port_open "$HOST" "$extra" || pending=1; done
      fi
    done
    if ((pending == 0)) && kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
        --command-config "$STATE/tools-client.properties" --list >/dev/null 2>&1 &&
      { [[ ${targets[0]} == single ]] || (($(live_brokers "$bootstrap") >= expected)); }; then
      return 0
    fi
    ((SECONDS < deadline)) || fail_start "not ready after ${READY_TIMEOUT}s" "${targets[@]}"
    sleep 0.5
  done
}

# Number of live (unfenced) brokers in the cluster metadata.
live_brokers() { # bootstrap
  kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$1" \
    --command-config "$STATE/tools-client.properties" 2>/dev/null | grep -c '(id: [0-9]' || true
}

fail_start() { # message node...
  local msg=$1 node dir
  shift
  log "error: $msg"
  for node in "$@"; do
    dir=$(node_dir "$node")
    log "last 50 lines of $dir/server.log:"
    tail -n 50 "$dir/server.log" >&2 || true
    if [[ -s $dir/stdout.log ]]; then
      log "last 20 lines of $dir/stdout.log:"
      tail -n 20 "$dir/stdout.log" >&2 || true
    fi
  done
  stop_nodes "$@"
  exit 1
}

# Stops the given nodes' brokers in parallel: SIGTERM, up to $STOP_TIMEOUT s, then SIGKILL.
# A KRaft node's controlled shutdown needs the controller quorum; once a majority of the cluster
# is down, the remaining nodes would wait minutes for it, so they only get $QUORUM_GRACE s.
stop_nodes() { # node...
  local node pid deadline=$((SECONDS + STOP_TIMEOUT)) cluster=0 live quorum=1
  local -a waiting=() still=()
  for node in "$@"; do
    if pid=$(node_pid "$node"); then
      log "stopping $(node_label "$node") (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      waiting+=("$node")
      [[ $node == single ]] || cluster=1
    fi
  done
  while ((${#waiting[@]} > 0)); do
    still=()
    for node in "${waiting[@]}"; do node_running "$node" && still+=("$node"); done
    waiting=("${still[@]+"${still[@]}"}")
    ((${#waiting[@]} > 0)) || break
    if ((cluster && quorum)); then
      live=0
      for node in $(cluster_nodes); do node_running "$node" && live=$((live + 1)); done
      if ((live <= CLUSTER_SIZE / 2)); then
        quorum=0
        ((deadline <= SECONDS + QUORUM_GRACE)) || deadline=$((SECONDS + QUORUM_GRACE))
        log "the KRaft quorum is gone, so controlled shutdown cannot finish; waiting ${QUORUM_GRACE}s at most"
      fi
    fi
    if ((SECONDS >= deadline)); then
      for node in "${waiting[@]}"; do
        if pid=$(node_pid "$node"); then
          log "$(node_label "$node") is still running, sending SIGKILL to pid $pid"
          kill -KILL "$pid" 2>/dev/null || true
        fi
      done
      sleep 1
      break
    fi
    sleep 0.5
  done
  for node in "$@"; do rm -f "$(node_dir "$node")/kafka.pid"; done
}

ready_message() { # started_at bootstrap node...
  local started=$1 bootstrap=$2 node
  shift 2
  log "ready after $((SECONDS - started))s"
  for node in "$@"; do
    log "  $(node_label "$node"): pid $(node_pid "$node" || echo '?'), log $(node_dir "$node")/server.log"
  done
  log "bootstrap: $bootstrap"
  echo "$bootstrap"
}

# ---------------------------------------------------------------------------------------------
# JVM mode commands.

lock_state() {
  mkdir -p "$STATE"
  exec 9>>"$STATE/.lock"
  if command -v flock >/dev/null; then
    flock -w 300 9 || die "another kafka-local.sh is still busy with $STATE"
  fi
}

jvm_start_single() {
  local started=$SECONDS pid
  lock_state
  if pid=$(node_pid single); then
    log "$(node_label single) is already running (pid $pid), log $STATE/server.log"
    echo "$HOST:$PORT"
    return 0
  fi
  require_free_ports single
  ensure_lib
  write_tools_config
  [[ -f $STATE/server.log ]] && mv -f "$STATE/server.log" "$STATE/server.log.prev"
  rm -f "$STATE/stdout.log"
  make_tls_files
  write_node_config single
  format_node single "$(kafka_tool kafka.tools.StorageTool random-uuid)"
  log "starting $(node_label single) from $LIB"
  launch_node single
  wait_ready single
  ready_message "$started" "$HOST:$PORT" single
}

jvm_restart_single() {
  local started=$SECONDS
  lock_state
  node_formatted single || die "no broker data in $STATE/data; use 'start' first"
  ensure_lib
  write_tools_config
  stop_nodes single
  log "starting $(node_label single) on its existing data"
  launch_node single
  wait_ready single
  ready_message "$started" "$HOST:$PORT" single
}

jvm_start_cluster() { # sasl (0|1)
  local sasl=$1 started=$SECONDS node cluster_id pid
  local -a up=()
  lock_state
  for node in $(cluster_nodes); do node_running "$node" && up+=("$node"); done
  if ((${#up[@]} == CLUSTER_SIZE)); then
    if ((sasl)) && ! node_has_sasl 1; then
      die "the $CLUSTER_SIZE-node cluster is already running without SASL listeners; stop --nodes 3 first"
    fi
    log "the $CLUSTER_SIZE-node cluster is already running, logs in $STATE/node-*/server.log"
    cluster_bootstrap
    return 0
  elif ((${#up[@]} > 0)); then
    die "the cluster is partially running (nodes ${up[*]}); use start-node N, or stop --nodes 3 first"
  fi
  # shellcheck disable=SC2046 # node numbers
  require_free_ports $(cluster_nodes)
  ensure_lib
  write_tools_config
  cluster_id=$(kafka_tool kafka.tools.StorageTool random-uuid)
  for node in $(cluster_nodes); do
    local dir
    dir=$(node_dir "$node")
    mkdir -p "$dir"
    [[ -f $dir/server.log ]] && mv -f "$dir/server.log" "$dir/server.log.prev"
    rm -f "$dir/stdout.log"
    write_node_config "$node" "$sasl"
  done
  # Format the three data dirs in parallel (each format is a JVM start).
  local -a formats=()
  for node in $(cluster_nodes); do
    format_node "$node" "$cluster_id" &
    formats+=("$!")
  done
  local failed=0
  for pid in "${formats[@]}"; do wait "$pid" || failed=1; done
  ((failed == 0)) || exit 1
  log "starting the $CLUSTER_SIZE-node cluster (cluster id $cluster_id) from $LIB"
  for node in $(cluster_nodes); do launch_node "$node"; done
  # shellcheck disable=SC2046 # node numbers
  wait_ready $(cluster_nodes)
  # shellcheck disable=SC2046
  ready_message "$started" "$(cluster_bootstrap)" $(cluster_nodes)
}

# Starts stopped cluster nodes on their existing data. Several nodes start together, which is
# needed when a majority of the cluster is down (no node gets ready without a quorum).
jvm_start_node() { # node...
  local node started=$SECONDS pid
  local -a todo=()
  lock_state
  for node in "$@"; do
    node_formatted "$node" || die "node $node has no data in $(node_dir "$node")/data; use 'start --nodes 3' first"
    if pid=$(node_pid "$node"); then
      log "$(node_label "$node") is already running (pid $pid)"
    else
      todo+=("$node")
    fi
  done
  if ((${#todo[@]} == 0)); then cluster_bootstrap; return 0; fi
  require_free_ports "${todo[@]}"
  ensure_lib
  write_tools_config
  for node in "${todo[@]}"; do
    log "starting $(node_label "$node") on its existing data"
    launch_node "$node"
  done
  wait_ready "${todo[@]}"
  ready_message "$started" "$(cluster_bootstrap)" "${todo[@]}"
}

jvm_stop_node() { # node...
  local node
  lock_state
  for node in "$@"; do node_running "$node" || log "$(node_label "$node") is not running"; done
  stop_nodes "$@"
}

jvm_stop() { # node...
  local node any=0
  if [[ ! -d $STATE ]]; then log "nothing to stop"; return 0; fi
  lock_state
  for node in "$@"; do node_running "$node" && any=1; done
  if ((any == 0)); then
    log "nothing to stop"
  fi
  stop_nodes "$@"
}

jvm_status() { # node...
  local node pid running=0
  for node in "$@"; do
    if pid=$(node_pid "$node"); then
      echo "$(node_label "$node"): running (pid $pid)"
      running=$((running + 1))
    else
      echo "$(node_label "$node"): stopped"
    fi
  done
  ((running == $#))
}

# Runs org.apache.kafka.tools.NAME against the single broker or the cluster. The tools are plain
# clients, so this runs on the JVM whatever the broker's mode. Other scripts call this rather than
# knowing where the jars and the tools' settings are.
run_tool() { # nodes name [args...]
  local nodes=$1 name=$2 bootstrap
  shift 2
  ensure_lib
  mkdir -p "$STATE"
  # Written only when missing: a concurrent start or another tool may be reading them.
  [[ -f $STATE/tools-client.properties && -f $STATE/tools-log4j2.properties ]] || write_tools_config
  if [[ $nodes == 3 ]]; then bootstrap=$(cluster_bootstrap); else bootstrap=$HOST:$PORT; fi
  kafka_tool "org.apache.kafka.tools.$name" --bootstrap-server "$bootstrap" \
    --command-config "$STATE/tools-client.properties" "$@"
}

# ---------------------------------------------------------------------------------------------
# Docker mode (single broker, one container on the host network).

# One container per client port, so brokers of different ports never meet.
readonly CONTAINER=rebound-kafka-$PORT
readonly DOCKER_IMAGE=${REBOUND_KAFKA_IMAGE:-apache/kafka:$KAFKA_VERSION}

docker_usable() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

docker_running() { [[ $(docker inspect --format '{{.State.Running}}' "$CONTAINER" 2>/dev/null) == true ]]; }

docker_fail() { # message
  log "error: $1; last 50 lines of the container's log:"
  docker logs --tail 50 "$CONTAINER" >&2 || true
  docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  exit 1
}

docker_wait_ready() {
  local started=$1 deadline=$((SECONDS + READY_TIMEOUT))
  until kafka_answers "$HOST" "$PORT" && kafka_answers "$HOST" "$(sasl_port)"; do
    docker_running || docker_fail "the kafka container $CONTAINER exited during startup"
    ((SECONDS < deadline)) || docker_fail "the kafka container does not answer on $HOST:$PORT after ${READY_TIMEOUT}s"
    sleep 0.5
  done
  docker_add_scram_user
  log "ready after $((SECONDS - started))s; logs: docker logs $CONTAINER"
  log "bootstrap: $HOST:$PORT"
  echo "$HOST:$PORT"
}

# Both images (the official one and deploy/docker/kafka) format their storage themselves, without
# SCRAM users, so the test user is added through the admin API (idempotent: an existing
# credential is replaced). The first requests may still find no active controller: retried.
docker_add_scram_user() {
  local attempt
  mkdir -p "$STATE"
  for attempt in 1 2 3 4 5; do
    docker exec "$CONTAINER" /opt/kafka/bin/kafka-configs.sh --bootstrap-server "$HOST:$PORT" --alter \
      --entity-type users --entity-name "$SASL_USER" \
      --add-config "$SASL_MECHANISM=[iterations=8192,password=$SASL_PASSWORD]" >"$STATE/scram.log" 2>&1 && return 0
    sleep "$attempt"
  done
  cat "$STATE/scram.log" >&2
  docker_fail "could not create the SCRAM user $SASL_USER"
}

# The listeners of the JVM mode's single broker, as the images' KAFKA_* variables: PLAINTEXT on
# PORT, the controller on PORT+1, SASL_PLAINTEXT/SCRAM on PORT+2, all on 127.0.0.1 of the host
# network (no bridge, no published ports).
docker_start() {
  local started=$SECONDS cport=$((PORT + 1))
  if docker_running; then log "$CONTAINER is already running"; echo "$HOST:$PORT"; return 0; fi
  docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
  require_free_ports single
  docker image inspect "$DOCKER_IMAGE" >/dev/null 2>&1 ||
    die "the image $DOCKER_IMAGE is not here (scripts/docker-local.sh kafka-image pulls or builds one; REBOUND_KAFKA_IMAGE selects it)"
  mkdir -p "$STATE"
  log "starting $CONTAINER from $DOCKER_IMAGE on the host network"
  docker run -d --name "$CONTAINER" --network host --label rebound.kafka-local=1 \
    -e CLUSTER_ID=oF3I0K92SQGn-DBG4cY2Xg -e KAFKA_NODE_ID=1 -e KAFKA_PROCESS_ROLES=broker,controller \
    -e "KAFKA_LISTENERS=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$cport,SASL_PLAINTEXT://$HOST:$(sasl_port)" \
    -e "KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://$HOST:$PORT,SASL_PLAINTEXT://$HOST:$(sasl_port)" \
    -e KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT \
    -e "KAFKA_SASL_ENABLED_MECHANISMS=$SASL_MECHANISM" \
    -e "KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SCRAM___SHA___512_SASL_JAAS_CONFIG=org.apache.kafka.common.security.scram.ScramLoginModule required;" \
    -e KAFKA_INTER_BROKER_LISTENER_NAME=PLAINTEXT -e KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER \
    -e "KAFKA_CONTROLLER_QUORUM_VOTERS=1@$HOST:$cport" -e KAFKA_LOG_DIRS=/var/lib/kafka/data \
    -e KAFKA_NUM_PARTITIONS=3 -e KAFKA_DEFAULT_REPLICATION_FACTOR=1 -e KAFKA_MIN_INSYNC_REPLICAS=1 \
    -e KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1 -e KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=1 \
    -e KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=1 -e KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR=1 \
    -e KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR=1 -e KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0 \
    -e KAFKA_AUTO_CREATE_TOPICS_ENABLE=false -e KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS=30000 \
    -e "KAFKA_HEAP_OPTS=-Xms256m -Xmx512m" \
    "$DOCKER_IMAGE" >/dev/null || die "docker run of $DOCKER_IMAGE failed"
  docker_wait_ready "$started"
}

# Restarts the container: its data (and cluster id) stay, as with the JVM broker's restart.
docker_restart() {
  local started=$SECONDS
  docker_running || die "$CONTAINER is not running"
  log "restarting $CONTAINER"
  docker restart --time "$STOP_TIMEOUT" "$CONTAINER" >/dev/null
  docker_wait_ready "$started"
}

docker_stop() {
  if ! docker inspect "$CONTAINER" >/dev/null 2>&1; then log "$CONTAINER: nothing to stop"; return 0; fi
  log "stopping $CONTAINER"
  docker stop --time "$STOP_TIMEOUT" "$CONTAINER" >/dev/null || true
  docker rm -f "$CONTAINER" >/dev/null
}

docker_status() {
  if docker_running; then
    echo "kafka (docker $CONTAINER, $HOST:$PORT, SASL $HOST:$(sasl_port)): running"
  else
    echo "kafka (docker $CONTAINER, $HOST:$PORT): stopped"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------

main() {
  local cmd="" nodes="" mode node sasl=0
  local -a args=()
  while (($# > 0)); do
    # Everything after a tool's name is the tool's own arguments.
    if [[ $cmd == tool ]] && ((${#args[@]} > 0)); then args+=("$@"); break; fi
    case $1 in
      --nodes) (($# >= 2)) || { usage; exit 2; }; nodes=$2; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      --sasl) sasl=1; shift ;;
      -h | --help | help) usage; exit 0 ;;
      -*) log "unknown option: $1"; usage; exit 2 ;;
      *)
        if [[ -z $cmd ]]; then cmd=$1; else args+=("$1"); fi
        shift ;;
    esac
  done
  [[ -n $cmd ]] || { usage; exit 2; }
  [[ -z $nodes || $nodes == 1 || $nodes == 3 ]] || { log "--nodes must be 1 or 3"; exit 2; }
  # The single broker always has its SASL listener; --sasl is for the cluster.
  if ((sasl)) && [[ $cmd != start || $nodes != 3 ]]; then
    log "--sasl goes with start --nodes 3 (the single broker always has its SASL listener)"; exit 2
  fi
  case $cmd in
    start-node | stop-node)
      ((${#args[@]} > 0)) || { log "$cmd needs node numbers 1..$CLUSTER_SIZE"; exit 2; }
      for node in "${args[@]}"; do
        if ! [[ $node =~ ^[1-9][0-9]*$ ]] || ((node > CLUSTER_SIZE)); then
          log "$cmd needs node numbers 1..$CLUSTER_SIZE, not '$node'"; exit 2
        fi
      done
      [[ -z $nodes || $nodes == 3 ]] || { log "$cmd is for the 3-node cluster"; exit 2; } ;;
    tool)
      ((${#args[@]} > 0)) || { log "tool needs the name of a tool (TopicCommand, GetOffsetShell, ...)"; exit 2; }
      [[ ${args[0]} =~ ^[A-Za-z][A-Za-z0-9]*$ ]] || { log "not a tool name: '${args[0]}'"; exit 2; } ;;
    version | probe | jars | tls-dir) ((${#args[@]} == 0)) || { log "unexpected argument: ${args[0]}"; usage; exit 2; } ;;
    start | stop | status | restart-broker)
      ((${#args[@]} == 0)) || { log "unexpected argument: ${args[0]}"; usage; exit 2; } ;;
    *) log "unknown command: $cmd"; usage; exit 2 ;;
  esac
  [[ -n $KAFKA_VERSION ]] || die "no <kafka.version> in $POM"
  case $cmd in
    version) echo "$KAFKA_VERSION"; exit 0 ;;
    probe) if kafka_answers "$HOST" "$PORT"; then exit 0; else exit 3; fi ;;
    jars) ensure_lib; echo "$LIB"; exit 0 ;;
    tls-dir)
      [[ -f $TLS_DIR/ca.crt ]] || { log "no TLS files in $TLS_DIR; 'start' the single broker (JVM mode) first"; exit 3; }
      echo "$TLS_DIR"; exit 0 ;;
    tool) run_tool "${nodes:-1}" "${args[@]}"; exit ;;
  esac

  case ${REBOUND_KAFKA_MODE:-} in
    jvm) mode=jvm ;;
    docker)
      mode=docker
      docker_usable || die "REBOUND_KAFKA_MODE=docker, but no Docker engine answers (scripts/docker-local.sh engine starts one)" ;;
    "") mode=jvm ;;
    *) die "REBOUND_KAFKA_MODE must be jvm or docker, not '$REBOUND_KAFKA_MODE'" ;;
  esac
  # Docker mode has a single broker: the cluster and its node commands always use the JVM.
  if [[ $nodes == 3 || $cmd == *-node ]]; then
    [[ ${REBOUND_KAFKA_MODE:-} != docker ]] || die "the 3-node cluster runs on the JVM only (REBOUND_KAFKA_MODE=jvm)"
    mode=jvm
  fi

  # shellcheck disable=SC2046 # node numbers
  case $mode:$cmd in
    docker:start) docker_start ;;
    docker:restart-broker) docker_restart ;;
    docker:stop)
      docker_stop
      # Also anything an earlier JVM-mode run left behind.
      for node in single $(cluster_nodes); do
        if node_running "$node"; then jvm_stop single $(cluster_nodes); break; fi
      done ;;
    docker:status) if docker_status; then exit 0; else exit 3; fi ;;
    jvm:start) if [[ $nodes == 3 ]]; then jvm_start_cluster "$sasl"; else jvm_start_single; fi ;;
    jvm:restart-broker)
      [[ $nodes != 3 ]] || die "restart-broker is for the single broker; use stop-node N / start-node N"
      jvm_restart_single ;;
    jvm:start-node) jvm_start_node "${args[@]}" ;;
    jvm:stop-node) jvm_stop_node "${args[@]}" ;;
    jvm:stop)
      case $nodes in
        1) jvm_stop single ;;
        3) jvm_stop $(cluster_nodes) ;;
        *) jvm_stop single $(cluster_nodes) ;;
      esac ;;
    jvm:status)
      case $nodes in
        1) jvm_status single ;;
        3) jvm_status $(cluster_nodes) ;;
        *)
          # Without --nodes: the single broker, plus the cluster if it was ever started here.
          local rc=3
          jvm_status single && rc=0
          if compgen -G "$STATE/node-*" >/dev/null; then jvm_status $(cluster_nodes) && rc=0; fi
          exit "$rc" ;;
      esac || exit 3 ;;
  esac
}

main "$@"
