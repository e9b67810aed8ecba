#!/usr/bin/env bash
# checks.sh - the named-check runner of scripts/check-alerts.sh and scripts/check-chart.sh:
# every check runs even after another failed, its output is shown indented, and a summary line
# and the exit status come from the counts.
#
# Usage (sourced after scripts/lib/common.sh):
#   source scripts/lib/checks.sh
#   check NAME COMMAND...        # runs one check, prints `ok   NAME` or `FAIL NAME (exit N)`
#   checks_summary LABEL         # prints `LABEL: N passed, M failed`; returns 1 when any failed

passed=0
failed=0
failures=()

# check NAME COMMAND...: runs one check, shows its output indented, counts it.
check() {
  local name=$1
  shift
  local out status=0
  out=$("$@" 2>&1) || status=$?
  if [[ $status == 0 ]]; then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf 'FAIL %s (exit %d)\n' "$name" "$status"
  fi
  if [[ -n $out ]]; then
    printf '%s\n' "$out" | sed 's/^/     | /'
  fi
}

# checks_summary LABEL: the failed checks' names, then `LABEL: N passed, M failed`.
checks_summary() {
  if [[ $failed != 0 ]]; then
    say "failed: ${failures[*]}"
  fi
  echo "$1: $passed passed, $failed failed"
  [[ $failed == 0 ]]
}
