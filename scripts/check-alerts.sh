#!/usr/bin/env bash
# Checks the alerting configuration: Prometheus rules and their unit tests, the Prometheus
# config, the Alertmanager config and its routing, and that every runbook link has its section.
#
# Usage: scripts/check-alerts.sh
#
# Needs promtool and amtool. When either is missing scripts/lib/prereqs.sh installs the packages
# that ship them (Debian/Ubuntu `prometheus`, `prometheus-alertmanager` with apt-get, as root or
# through sudo; macOS `prometheus`, `alertmanager` with Homebrew). Nothing is installed when both exist.
#
# Checks, each counted once:
#   promtool check rules   deploy/prometheus/alerts.yml
#   promtool test rules    deploy/prometheus/alerts_test.yml (and deploy/prometheus/tests/*.yml)
#   promtool check config  deploy/prometheus/prometheus.yml (loads alerts.yml next to it)
#   amtool check-config    deploy/alertmanager/alertmanager.yml (and its templates)
#   amtool config routes test: a critical alert reaches pagerduty, slack and the email digest;
#                               a warning reaches slack and the digest only
#   runbook anchors: every runbook_url in alerts.yml names a heading of docs/alerts.md
# Every check runs even after a failure. The last line is `alerts: N passed, M failed`; the exit
# status is 1 when anything failed (2 when the tools cannot be installed).
set -euo pipefail

readonly PROG=check-alerts.sh SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/prereqs.sh
source "$SCRIPT_DIR/lib/prereqs.sh"
cd "$REPO"

rules=deploy/prometheus/alerts.yml
rule_tests=deploy/prometheus/alerts_test.yml
prom_config=deploy/prometheus/prometheus.yml
am_config=deploy/alertmanager/alertmanager.yml
runbook=docs/alerts.md

# --- tools -------------------------------------------------------------------------------------

ensure_tools() {
  # In a subshell, so that a missing tool ends in this script's own exit status 2.
  (prereqs_ensure promtool amtool) || exit 2
}

# --- checks ------------------------------------------------------------------------------------

# shellcheck source=scripts/lib/checks.sh
source "$SCRIPT_DIR/lib/checks.sh"

# route_test EXPECTED_RECEIVERS LABEL=VALUE...: the receivers an alert with these labels reaches.
route_test() {
  local expected=$1
  shift
  amtool config routes test --config.file="$am_config" --verify.receivers="$expected" "$@"
}

# GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped, spaces to '-'.
slugify() {
  tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'
}

# Every runbook_url of the rules points into docs/alerts.md at an existing heading, and every
# alert has one.
runbook_anchors() {
  local anchors url anchor bad=0 alerts urls
  alerts=$(grep -cE '^[[:space:]]*-[[:space:]]*alert:' "$rules" || true)
  urls=$(grep -cE '^[[:space:]]*runbook_url:' "$rules" || true)
  if [[ $alerts != "$urls" ]]; then
    echo "$alerts alerts but $urls runbook_url annotations in $rules"
    bad=1
  fi
  anchors=$(grep -E '^#{1,6} ' "$runbook" | sed -E 's/^#+ +//' | slugify)
  while read -r url; do
    case $url in
      https://github.com/rebound-sync/rebound/blob/main/docs/alerts.md\#*) ;;
      *) echo "runbook_url outside docs/alerts.md: $url"; bad=1; continue ;;
    esac
    anchor=${url#*#}
    if grep -qxF -- "$anchor" <<<"$anchors"; then
      echo "#$anchor"
    else
      echo "no heading for #$anchor in $runbook"
      bad=1
    fi
  done < <(grep -E '^[[:space:]]*runbook_url:' "$rules" | sed -E "s/^[[:space:]]*runbook_url:[[:space:]]*['\"]?([^'\"]*)['\"]?[[:space:]]*$/\1/")
  return "$bad"
}

ensure_tools
say "$(promtool --version 2>&1 | head -1)"
say "$(amtool --version 2>&1 | head -1)"

check "promtool check rules $rules" promtool check rules "$rules"
check "promtool test rules $rule_tests" promtool test rules "$rule_tests"
shopt -s nullglob
for extra in deploy/prometheus/tests/*.yml deploy/prometheus/tests/*.yaml; do
  check "promtool test rules $extra" promtool test rules "$extra"
done
shopt -u nullglob
check "promtool check config $prom_config" promtool check config "$prom_config"
check "amtool check-config $am_config" amtool check-config "$am_config"
check "route: critical -> pagerduty, slack, email-digest" \
  route_test pagerduty,slack,email-digest alertname=ReboundDLQSizeCritical severity=critical topic=dlq cluster=rebound-compose
check "route: warning -> slack, email-digest" \
  route_test slack,email-digest alertname=ReboundDLQGrowing severity=warning topic=dlq cluster=rebound-compose
check "runbook anchors $rules -> $runbook" runbook_anchors

checks_summary alerts
