#!/usr/bin/env bash
# failover.sh - rebound across a broker failure: the whole pipeline on the local three-broker
# cluster while the leader of a busy partition is stopped mid-stream and started again later.
#
# Usage: scripts/failover.sh [--sasl]
#
#   --sasl   every client (services, topic creation, audit) authenticates with SCRAM-SHA-512 on the
#            nodes' SASL_PLAINTEXT listeners (ports 19094, 29094, 39094) of
#            `scripts/kafka-local.sh start --nodes 3 --sasl`; a cluster already running without
#            them is refused. The Kafka tools the script runs itself use the plain listeners.
#
# Builds the binaries (debug profile, shared with the tests), starts the 3-node KRaft cluster of
# `scripts/kafka-local.sh start --nodes 3` (ports 19092, 29092, 39092) unless it already runs,
# creates the topics under a fresh per-run prefix with replication factor 3 and
# min.insync.replicas=2 (and checks that the cluster really made them so), then runs
#   rebound-producer generate (FAILOVER_RATE notes/s for FAILOVER_SECONDS, acks=all, idempotent)
#   rebound-consumer (SQLite sink, injected failures: 5% transient, 0.5% permanent)
#   rebound-scheduler (short tiers: retry-2s, retry-8s)
# While notes flow it finds the broker that leads partition 0 of the notes topic, stops it
# (FAILOVER_STOP_AFTER seconds in), starts it again FAILOVER_DOWN_FOR seconds later, and waits
# until `rebound audit` accounts for every acknowledged note version (lost = 0) and every
# partition is fully replicated again.
#
# Prints the figures: versions (Kafka, librdkafka, Java), how long the new leader took, the
# longest gap in the consumer's applies around the stop (against the longest one before it), how
# long the stopped broker took to rejoin every ISR, whether the producer kept its pace,
# lost versions, and duplicates (records in the notes topic beyond the acknowledged versions and
# the scheduler's republished copies: producer retries; and source records applied more than
# once: consumer redeliveries).
#
# Everything this run started (services, audit, and the cluster if it started it) is stopped
# when it ends, also on failure or Ctrl-C; a cluster that was already running keeps running.
# Exits 0 when nothing is lost, 1 on loss or any failure.
#
# Files of a run: target/failover/<run>/ (build.log, topics.log, describe-*.txt, producer.log,
# ids.log, consumer.log, scheduler.log, notes.db, audit.out, kafka-*.log, figures.txt).
#
# Environment:
#   FAILOVER_RATE        notes per second the producer sends (default 200)
#   FAILOVER_SECONDS     seconds the producer sends for (default 60)
#   FAILOVER_STOP_AFTER  seconds after the producer starts when the leader is stopped (default 20)
#   FAILOVER_DOWN_FOR    seconds the stopped broker stays down (default 25)
#   FAILOVER_TIMEOUT     seconds after the producer ends for lost = 0 (default 120)
#   FAILOVER_SEED        seed of the generator and the failure injector (default 1)
#   The REBOUND_KAFKA_* variables of scripts/kafka-local.sh (except the port: the cluster's
#   ports are fixed) are passed on to it.
set -euo pipefail

readonly PROG=failover
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"

SASL=0
case ${1:-} in
  "") ;;
  --sasl) SASL=1 ;;
  -h | --help) usage; exit 0 ;;
  *) warn "error: unexpected argument: $1 (settings are FAILOVER_* variables, see the header)"; usage; exit 2 ;;
esac
(($# <= 1)) || { warn "error: unexpected argument: $2"; usage; exit 2; }
readonly SASL

readonly RATE=${FAILOVER_RATE:-200}
readonly SEND_SECONDS=${FAILOVER_SECONDS:-60}
readonly STOP_AFTER=${FAILOVER_STOP_AFTER:-20}
readonly DOWN_FOR=${FAILOVER_DOWN_FOR:-25}
readonly TIMEOUT=${FAILOVER_TIMEOUT:-120}
readonly SEED=${FAILOVER_SEED:-1}
readonly FAILURES=transient=0.05,permanent=0.005
readonly TIERS=retry-2s:2s,retry-8s:8s
# The clients' listeners: PLAINTEXT on each node's client port, or SASL_PLAINTEXT on port + 2.
if ((SASL)); then
  readonly CLIENT_PORT_OFFSET=2 CLIENT_SECURITY="SASL_PLAINTEXT, SCRAM-SHA-512"
else
  readonly CLIENT_PORT_OFFSET=0 CLIENT_SECURITY=PLAINTEXT
fi
readonly BROKERS=127.0.0.1:$((19092 + CLIENT_PORT_OFFSET)),127.0.0.1:$((29092 + CLIENT_PORT_OFFSET)),127.0.0.1:$((39092 + CLIENT_PORT_OFFSET))

for var in RATE SEND_SECONDS STOP_AFTER DOWN_FOR TIMEOUT SEED; do
  [[ ${!var} =~ ^[0-9]+$ ]] || { warn "error: $var must be a whole number, not '${!var}'"; exit 2; }
done
((RATE > 0 && SEND_SECONDS > 0)) || { warn "error: FAILOVER_RATE and FAILOVER_SECONDS must be at least 1"; exit 2; }
((STOP_AFTER < SEND_SECONDS)) || { warn "error: FAILOVER_STOP_AFTER must be less than FAILOVER_SECONDS"; exit 2; }

# The script names its topics, groups and tiers itself (see common.sh).
unset_rebound_env

make_run_dir failover
readonly DB=$RUN_DIR/notes.db
readonly IDS=$RUN_DIR/ids.log
readonly NOTES_TOPIC=${PREFIX}notes

# The connection flags of every rebound command. With --sasl the SCRAM credentials (the test user
# of kafka-local.sh) go in a properties file, which keeps them off the command lines.
KAFKA=(--brokers "$BROKERS")
if ((SASL)); then
  cat >"$RUN_DIR/kafka-client.properties" <<'EOF'
# librdkafka settings of every client of a failover.sh --sasl run.
security.protocol=SASL_PLAINTEXT
sasl.mechanisms=SCRAM-SHA-512
sasl.username=rebound
sasl.password=rebound-secret
EOF
  KAFKA+=(--kafka-config-file "$RUN_DIR/kafka-client.properties")
fi
readonly KAFKA

# ---------------------------------------------------------------------------------------------
# Cleanup.

PRODUCER_PID=""
CONSUMER_PID=""
SCHEDULER_PID=""
CLUSTER_STARTED=0
STOPPED_NODE=""

# shellcheck disable=SC2317 # invoked by the EXIT trap (install_traps)
cleanup() {
  local -a services=()
  [[ -n $PRODUCER_PID ]] && services+=("rebound-producer=$PRODUCER_PID")
  [[ -n $CONSUMER_PID ]] && services+=("rebound-consumer=$CONSUMER_PID")
  [[ -n $SCHEDULER_PID ]] && services+=("rebound-scheduler=$SCHEDULER_PID")
  ((${#services[@]} == 0)) || stop_services "${services[@]}"
  if ((CLUSTER_STARTED)); then
    say "stopping the cluster this run started"
    stop_started_kafka --nodes 3 || EXIT_STATUS=1
  elif [[ -n $STOPPED_NODE ]]; then
    # A cluster that was running before stays running: bring back the node this run stopped.
    "$KAFKA_LOCAL" start-node "$STOPPED_NODE" >/dev/null 2>>"$RUN_DIR/kafka-start-node.log" || true
  fi
}
install_traps cleanup

# ---------------------------------------------------------------------------------------------
# Helpers.

# Seconds with millisecond precision since the epoch.
now() { date +%s.%N | cut -c1-14; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

require_running() { # name pid log
  if ! kill -0 "$2" 2>/dev/null; then
    local rc=0
    wait "$2" 2>/dev/null || rc=$?
    warn "$1 exited early with status $rc; last lines of $3:"
    tail -n 20 "$3" >&2 || true
    exit 1
  fi
}

# The clients' port of cluster node N (kafka-local.sh: N * 10000 + 9092, SASL + 2).
node_label_port() { echo "127.0.0.1:$(($1 * 10000 + 9092 + CLIENT_PORT_OFFSET))"; }

# Runs a Kafka command line tool (org.apache.kafka.tools.NAME) against the cluster; kafka-local.sh
# knows where its jars and client settings are.
kafka_tool() { # NAME [tool arguments]
  "$KAFKA_LOCAL" tool --nodes 3 "$@"
}

describe_topic() { # topic [extra TopicCommand flags]
  local topic=$1
  shift
  kafka_tool TopicCommand --describe --topic "$topic" "$@" 2>/dev/null
}

# The leader broker id of a partition, from `--describe` ("Partition: 0 Leader: 2 ..."); "none"
# while no leader is elected.
partition_leader() { # topic partition
  describe_topic "$1" | awk -v p="$2" '
    { for (i = 1; i < NF; i++) { if ($i == "Partition:") part = $(i + 1); if ($i == "Leader:") lead = $(i + 1) } }
    $0 ~ /Partition:/ && part == p { print lead; exit }'
}

# Partitions of the run's topics that lack an in-sync replica.
under_replicated() {
  kafka_tool TopicCommand --describe --under-replicated-partitions 2>/dev/null | grep -c -F "Topic: $PREFIX" || true
}

# Timestamps (epoch seconds) of the consumer's "applied" events, one a line.
applied_times() {
  grep -F '"message":"applied"' "$RUN_DIR/consumer.log" |
    sed -n 's/.*"timestamp":"\([0-9-]*\)T\([0-9:.]*\)Z".*/\1 \2/p' |
    awk '{ split($2, t, ":"); print t[1] * 3600 + t[2] * 60 + t[3] }'
}

# From sorted times on stdin (seconds of the day): the longest gap between consecutive times
# before `from`, and the longest one that ends in [from, to]: "before during". The consumer
# applies in batches, so gaps of a few seconds are normal; the figure that matters is whether
# the failover made them longer.
gap_figures() { # from to
  awk -v from="$1" -v to="$2" '
    NR > 1 {
      gap = $1 - prev
      if ($1 < from && gap > before) before = gap
      if ($1 >= from && prev <= to && gap > during) during = gap
    }
    { prev = $1 }
    END { printf "%.1f %.1f\n", before, during }'
}

# Epoch seconds of the "timestamp" of the first JSON log line of $1 that contains $2.
log_time() { # file text
  local stamp
  stamp=$(grep -m 1 -F -- "$2" "$1" | sed -n 's/.*"timestamp":"\([^"]*\)".*/\1/p')
  [[ -n $stamp ]] && date -u -d "$stamp" +%s.%N | cut -c1-14
}

# Seconds of the day (UTC) of an epoch timestamp, the unit of applied_times.
# (A run that spans midnight UTC gets meaningless gap figures; the loss check is unaffected.)
day_seconds() { awk -v t="$1" 'BEGIN { printf "%.3f", t - int(t / 86400) * 86400 }'; }

# ---------------------------------------------------------------------------------------------
# 1. Build, cluster, topics.

readonly T_START=$SECONDS
say "run $RUN, files in $REL_DIR/"
say "building the binaries (log: $REL_DIR/build.log)"
cargo build --workspace --bins >"$RUN_DIR/build.log" 2>&1 || { tail -n 40 "$RUN_DIR/build.log" >&2; die "cargo build failed"; }
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p') || true
readonly BIN=${TARGET_DIR:-$REPO/target}/debug

KAFKA_VERSION=$("$KAFKA_LOCAL" version)
LIBRDKAFKA_VERSION=$(awk '/^name = "rdkafka-sys"/ { getline; print $3; exit }' Cargo.lock | tr -d '"' | sed 's/.*+//')
JAVA_VERSION=$(java -version 2>&1 | head -n 1 | sed 's/.*version "\([^"]*\)".*/\1/')
readonly KAFKA_VERSION LIBRDKAFKA_VERSION JAVA_VERSION

if CLUSTER_STATUS=$("$KAFKA_LOCAL" status --nodes 3 2>/dev/null); then
  # Each node's status line names its SASL listener when it has one.
  if ((SASL)) && [[ $CLUSTER_STATUS != *SASL* ]]; then
    die "the 3-node cluster runs without SASL listeners; stop it (scripts/kafka-local.sh stop --nodes 3) and run again"
  fi
  say "using the 3-node cluster that is already running"
else
  say "starting the 3-node cluster (log: $REL_DIR/kafka-start.log)"
  CLUSTER_STARTED=1
  start_flags=(--nodes 3)
  ((SASL)) && start_flags+=(--sasl)
  REBOUND_KAFKA_MODE=jvm "$KAFKA_LOCAL" start "${start_flags[@]}" >/dev/null 2>"$RUN_DIR/kafka-start.log" ||
    { tail -n 30 "$RUN_DIR/kafka-start.log" >&2; die "the cluster did not start"; }
fi
say "clients connect with $CLIENT_SECURITY ($BROKERS)"

"$BIN/rebound" "${KAFKA[@]}" topics create --topic-prefix "$PREFIX" --tier "$TIERS" \
  --partitions 6 --replication-factor 3 --min-insync-replicas 2 >"$RUN_DIR/topics.log" 2>&1 ||
  { cat "$RUN_DIR/topics.log" >&2; die "creating the topics failed"; }
for topic in notes retry-2s retry-8s dlq; do
  describe_topic "$PREFIX$topic" >"$RUN_DIR/describe-$topic.txt" || die "cannot describe $PREFIX$topic"
  grep -q 'ReplicationFactor: 3' "$RUN_DIR/describe-$topic.txt" ||
    die "$PREFIX$topic does not have replication factor 3: $(head -n 1 "$RUN_DIR/describe-$topic.txt")"
  grep -q 'min.insync.replicas=2' "$RUN_DIR/describe-$topic.txt" ||
    die "$PREFIX$topic does not have min.insync.replicas=2: $(head -n 1 "$RUN_DIR/describe-$topic.txt")"
done
say "topics ${PREFIX}{notes,retry-2s,retry-8s,dlq}: replication factor 3, min.insync.replicas=2 (checked)"

# ---------------------------------------------------------------------------------------------
# 2. Pipeline.

readonly SERVICE_LOG="info,rebound_service::events=debug"
DETACH=()
command -v setsid >/dev/null && DETACH=(setsid)
RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "$BIN/rebound-consumer" "${KAFKA[@]}" --log-format json \
  --topic-prefix "$PREFIX" --group "$RUN.consumer" --sink "sqlite://$DB" --tier "$TIERS" \
  --inject-failures "$FAILURES" --inject-seed "$SEED" </dev/null 2>"$RUN_DIR/consumer.log" >&2 &
CONSUMER_PID=$!
RUST_LOG=$SERVICE_LOG ${DETACH[@]+"${DETACH[@]}"} "$BIN/rebound-scheduler" "${KAFKA[@]}" --log-format json \
  --topic-prefix "$PREFIX" --group "$RUN.scheduler" --tier retry-2s:2s --tier retry-8s:8s \
  </dev/null 2>"$RUN_DIR/scheduler.log" >&2 &
SCHEDULER_PID=$!
readonly COUNT=$((RATE * SEND_SECONDS))
T_PRODUCE=$(now)
RUST_LOG=info ${DETACH[@]+"${DETACH[@]}"} "$BIN/rebound-producer" "${KAFKA[@]}" --log-format json \
  generate --count "$COUNT" --seed "$SEED" --rate "$RATE" --ids-log "$IDS" --topic-prefix "$PREFIX" \
  </dev/null >"$RUN_DIR/producer.log" 2>&1 &
PRODUCER_PID=$!
say "producing $COUNT notes at $RATE/s; consumer (failures $FAILURES) and scheduler (tiers $TIERS) running"

# ---------------------------------------------------------------------------------------------
# 3. Stop the leader of notes[0] mid-stream, then start it again.

while (($(printf '%.0f' "$(elapsed "$T_PRODUCE" "$(now)")") < STOP_AFTER)); do
  require_running rebound-consumer "$CONSUMER_PID" "$RUN_DIR/consumer.log"
  require_running rebound-scheduler "$SCHEDULER_PID" "$RUN_DIR/scheduler.log"
  sleep 0.5
done
LEADER=$(partition_leader "$NOTES_TOPIC" 0)
[[ $LEADER =~ ^[1-3]$ ]] || die "cannot find the leader of $NOTES_TOPIC partition 0 (got '$LEADER')"
say "partition 0 of $NOTES_TOPIC is led by broker $LEADER; stopping it"
T_STOP=$(now)
STOPPED_NODE=$LEADER
"$KAFKA_LOCAL" stop-node "$LEADER" >/dev/null 2>"$RUN_DIR/kafka-stop-node.log" || die "stop-node $LEADER failed"
T_STOPPED=$(now)
NEW_LEADER=none
while :; do
  NEW_LEADER=$(partition_leader "$NOTES_TOPIC" 0) || NEW_LEADER=none
  [[ $NEW_LEADER =~ ^[1-3]$ && $NEW_LEADER != "$LEADER" ]] && break
  (($(printf '%.0f' "$(elapsed "$T_STOP" "$(now)")") < 60)) || die "no new leader for partition 0 within 60 s"
  sleep 0.2
done
T_NEW_LEADER=$(now)
say "broker $LEADER stopped after $(elapsed "$T_STOP" "$T_STOPPED") s; partition 0 now led by broker $NEW_LEADER" \
  "($(elapsed "$T_STOP" "$T_NEW_LEADER") s after the stop began)"

while (($(printf '%.0f' "$(elapsed "$T_STOP" "$(now)")") < DOWN_FOR)); do
  require_running rebound-consumer "$CONSUMER_PID" "$RUN_DIR/consumer.log"
  require_running rebound-scheduler "$SCHEDULER_PID" "$RUN_DIR/scheduler.log"
  sleep 0.5
done
say "starting broker $LEADER again"
T_START_NODE=$(now)
"$KAFKA_LOCAL" start-node "$LEADER" >/dev/null 2>"$RUN_DIR/kafka-start-node.log" ||
  { tail -n 20 "$RUN_DIR/kafka-start-node.log" >&2; die "start-node $LEADER failed"; }
STOPPED_NODE=""
T_NODE_UP=$(now)
while (($(under_replicated) > 0)); do
  (($(printf '%.0f' "$(elapsed "$T_NODE_UP" "$(now)")") < 120)) || die "partitions still under-replicated 120 s after broker $LEADER came back"
  sleep 1
done
T_ISR=$(now)
say "broker $LEADER answering after $(elapsed "$T_START_NODE" "$T_NODE_UP") s, back in every ISR after" \
  "$(elapsed "$T_START_NODE" "$T_ISR") s"

# ---------------------------------------------------------------------------------------------
# 4. Producer done, then audit until lost = 0.

rc=0
wait "$PRODUCER_PID" || rc=$?
PRODUCER_PID=""
((rc == 0)) || { tail -n 20 "$RUN_DIR/producer.log" >&2; die "the producer failed with status $rc"; }
# It may have finished long before the broker was back: its own log says when.
T_PRODUCED=$(log_time "$RUN_DIR/producer.log" '"message":"generate finished"') || T_PRODUCED=$(now)
ACKED=$(wc -l <"$IDS" | tr -d ' ')
say "producer acknowledged $ACKED of $COUNT notes in $(elapsed "$T_PRODUCE" "$T_PRODUCED") s"

LOST="?"
readonly DEADLINE=$((SECONDS + TIMEOUT))
while :; do
  require_running rebound-consumer "$CONSUMER_PID" "$RUN_DIR/consumer.log"
  require_running rebound-scheduler "$SCHEDULER_PID" "$RUN_DIR/scheduler.log"
  audit_rc=0
  RUST_LOG=warn "$BIN/rebound" "${KAFKA[@]}" audit --sink "sqlite://$DB" --ids-log "$IDS" \
    --topic-prefix "$PREFIX" </dev/null >"$RUN_DIR/audit.out" 2>"$RUN_DIR/audit.err" || audit_rc=$?
  LOST=$(awk '$1 == "lost" && NF == 2 { print $2 }' "$RUN_DIR/audit.out")
  [[ $audit_rc == 0 && $LOST == 0 ]] && break
  ((SECONDS < DEADLINE)) || break
  sleep 3
done
T_DONE=$(now)
stop_services "rebound-consumer=$CONSUMER_PID" "rebound-scheduler=$SCHEDULER_PID"
CONSUMER_PID="" SCHEDULER_PID=""

# ---------------------------------------------------------------------------------------------
# 5. Figures.

IN_TOPIC=$(kafka_tool GetOffsetShell --topic "$NOTES_TOPIC" 2>/dev/null |
  awk -F: '{ sum += $3 } END { print sum + 0 }')
# The notes topic also holds the copies the scheduler sent back from the tiers.
REPUBLISHED=$(grep -c -F '"message":"republished"' "$RUN_DIR/scheduler.log" || true)
PRODUCER_DUPLICATES=$((IN_TOPIC - ACKED - REPUBLISHED))
# Applied events per (partition, offset) of the source topic; more than one is a redelivery.
CONSUMER_REDELIVERED=$(grep -F '"message":"applied"' "$RUN_DIR/consumer.log" | grep -F "\"topic\":\"$NOTES_TOPIC\"" |
  sed -n 's/.*"partition":\([0-9]*\).*"offset":\([0-9]*\).*/\1:\2/p' | sort | uniq -d | wc -l | tr -d ' ')
read -r GAP_BEFORE GAP_DURING < <(applied_times | gap_figures "$(day_seconds "$T_STOP")" "$(day_seconds "$T_ISR")")
DISCONNECTED=$(log_time "$RUN_DIR/consumer.log" "$(node_label_port "$LEADER")/$LEADER: Disconnected") || DISCONNECTED=""
APPLIED_EVENTS=$(grep -c -F '"message":"applied"' "$RUN_DIR/consumer.log" || true)

{
  echo "run                         $RUN"
  echo "versions                    Kafka $KAFKA_VERSION (3 KRaft nodes on the JVM, Java $JAVA_VERSION), librdkafka $LIBRDKAFKA_VERSION"
  echo "clients                     $CLIENT_SECURITY"
  echo "topics                      replication factor 3, min.insync.replicas=2, acks=all idempotent producers"
  echo "load                        $COUNT notes at $RATE/s; failures $FAILURES; tiers $TIERS"
  echo "stopped broker              $LEADER (leader of ${NOTES_TOPIC}[0]) at +$(elapsed "$T_PRODUCE" "$T_STOP") s, down for $(elapsed "$T_STOP" "$T_START_NODE") s"
  echo "stop-node took              $(elapsed "$T_STOP" "$T_STOPPED") s (controlled shutdown)"
  [[ -n $DISCONNECTED ]] &&
    echo "consumer saw broker go      $(elapsed "$T_STOP" "$DISCONNECTED") s after the stop began (connection closed by the broker)"
  echo "new leader of partition 0   broker $NEW_LEADER, seen $(elapsed "$T_STOP" "$T_NEW_LEADER") s after the stop began (polled with the Kafka CLI, a JVM start per poll)"
  echo "longest gap in applies      ${GAP_DURING} s from the stop until every ISR was whole; ${GAP_BEFORE} s before the stop (batches)"
  echo "broker back in every ISR    $(elapsed "$T_START_NODE" "$T_ISR") s after start-node"
  echo "producer                    $ACKED acknowledged of $COUNT in $(elapsed "$T_PRODUCE" "$T_PRODUCED") s (target $SEND_SECONDS s)"
  echo "records in notes topic      $IN_TOPIC = $ACKED acknowledged + $REPUBLISHED republished by the scheduler + $PRODUCER_DUPLICATES duplicates"
  echo "applied events              $APPLIED_EVENTS (source records applied more than once: $CONSUMER_REDELIVERED)"
  echo "lost                        $LOST"
  echo "all accounted for after     $(elapsed "$T_PRODUCE" "$T_DONE") s from the first note"
} >"$RUN_DIR/figures.txt"

echo
echo "Accounting ($REL_DIR/audit.out):"
cat "$RUN_DIR/audit.out"
echo
echo "Figures ($REL_DIR/figures.txt):"
cat "$RUN_DIR/figures.txt"
echo
say "total $((SECONDS - T_START)) s"
if [[ $LOST != 0 || $audit_rc != 0 ]]; then
  # The audit exits 0 only when every version is applied or dead-lettered: lost = 0 with a
  # failed audit means versions still waiting in a tier at the deadline.
  [[ -s $RUN_DIR/audit.err ]] && cat "$RUN_DIR/audit.err" >&2
  die "lost = $LOST after the ${TIMEOUT}s deadline (audit exit status $audit_rc)"
fi
say "lost = 0: every acknowledged note version was applied or dead-lettered across the failover"
