#!/bin/bash
# tool.sh - the Kafka command line tools of the locally built image, by the distribution's
# script names: /opt/kafka/bin/<name>.sh is a link to this file, which runs the tool's class.
#
# Usage: /opt/kafka/bin/kafka-configs.sh | kafka-broker-api-versions.sh | kafka-storage.sh |
#        kafka-topics.sh [the tool's arguments]
set -euo pipefail

case $(basename -- "$0") in
  kafka-configs.sh) class=kafka.admin.ConfigCommand ;;
  kafka-broker-api-versions.sh) class=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
  kafka-storage.sh) class=kafka.tools.StorageTool ;;
  kafka-topics.sh) class=org.apache.kafka.tools.TopicCommand ;;
  *) echo "tool.sh: unknown tool name $(basename -- "$0")" >&2; exit 2 ;;
esac
exec java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
  -Dlog4j2.configurationFile=/opt/kafka/docker/tools-log4j2.properties -cp '/opt/kafka/libs/*' "$class" "$@"
