#!/bin/bash
# run.sh - the entry point of the locally built Kafka image (deploy/docker/kafka/Dockerfile):
# writes server.properties from the environment, formats the log directory once, runs the broker.
#
# Usage: run.sh   (no arguments; the configuration is the environment)
#
#   CLUSTER_ID          the KRaft cluster id (required; 16 bytes, base64url without padding)
#   KAFKA_<NAME>        broker property <name>, as in the official apache/kafka image: lower case,
#                       `_` becomes `.`, `__` becomes `_`, `___` becomes `-`
#                       (KAFKA_LOG_DIRS -> log.dirs, KAFKA_LISTENER_NAME_SASL__PLAINTEXT_... ->
#                       listener.name.sasl_plaintext....)
#   KAFKA_HEAP_OPTS     JVM heap options (default -Xms256m -Xmx512m); not a property
#   KAFKA_OPTS          extra JVM options; not a property
set -euo pipefail

readonly CONFIG=/opt/kafka/config/server.properties

[[ -n ${CLUSTER_ID:-} ]] || { echo "run.sh: CLUSTER_ID is not set" >&2; exit 2; }

# KAFKA_* variables to properties; the JVM options are not properties.
: >"$CONFIG"
while IFS= read -r name; do
  case $name in KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS) continue ;; esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "${!name}" >>"$CONFIG"
done < <(compgen -e | grep '^KAFKA_' || true)
grep -q '^log\.dirs=' "$CONFIG" || echo 'log.dirs=/var/lib/kafka/data' >>"$CONFIG"

java_tool() { java -Xmx256m -XX:+UseSerialGC -Dlog4j2.configurationFile=/opt/kafka/docker/tools-log4j2.properties -cp '/opt/kafka/libs/*' "$@"; }

# Formats once: a restarted container keeps its data (and its cluster id).
java_tool kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$CONFIG"

# shellcheck disable=SC2086 # the JVM options are word lists
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/docker/log4j2.properties ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$CONFIG"
