#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/rebound: `helm lint`, then `helm template` of the default
# values and of every variant in deploy/helm/rebound/ci/*-values.yaml, each validated with
# `kubeconform -strict` against the Kubernetes JSON schemas and the vendored KEDA and Prometheus
# Operator CRD schemas (deploy/helm/crd-schemas); that the rendered PrometheusRule holds exactly
# the rules of deploy/prometheus/alerts.yml; that every REBOUND_* variable the chart sets is
# read by a binary; and that values breaking the chart's rules are refused.
#
# Usage: scripts/check-chart.sh
#
# Installs helm, kubeconform and the Kubernetes schemas when missing (scripts/lib/k8s-tools.sh,
# from the Go module proxy, into ~/.cache/rebound/k8s-tools). Every check runs even after a
# failure; the last line is `chart: N passed, M failed`, the exit status 1 when anything failed.
#
# The CRD schemas are generated from the CRDs of the Go modules github.com/kedacore/keda/v2
# (config/crd/bases) and github.com/prometheus-operator/prometheus-operator
# (example/prometheus-operator-crd); to regenerate them after a version change:
#   (cd scripts/lib/k8s-schemas && go run . crd ../../../deploy/helm/crd-schemas CRD_YAML...)
set -euo pipefail

readonly PROG=check-chart.sh SAY_FD=2
# shellcheck source=scripts/lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/k8s-tools.sh
source "$SCRIPT_DIR/lib/k8s-tools.sh"
cd "$REPO"

chart=deploy/helm/rebound
crd_schemas=deploy/helm/crd-schemas
alerts=deploy/prometheus/alerts.yml

ensure_k8s_tools || die "cannot install helm, kubeconform and the schemas"
say "helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, Kubernetes $KUBERNETES_SCHEMA_VERSION schemas"

# helm ARGS...: helm for the Kubernetes version the schemas describe (a helm built by `go
# install` would otherwise assume 1.20), without its notice that files/alerts.yml is a link
# (it is, on purpose: the rules have one source).
helm() {
  "$HELM" "$@" --kube-version "$KUBERNETES_SCHEMA_VERSION" 2> >(grep -v 'found symbolic link in path' >&2)
}

# shellcheck source=scripts/lib/checks.sh
source "$SCRIPT_DIR/lib/checks.sh"

# render_and_validate VALUES_FILE|"": helm template piped into kubeconform -strict. Every kind
# must have a schema (no -ignore-missing-schemas), so a new kind cannot pass unchecked.
render_and_validate() {
  local values=()
  [[ -n $1 ]] && values=(--values "$1")
  helm template rebound "$chart" "${values[@]}" |
    "$KUBECONFORM" -strict -summary \
      -schema-location "$K8S_SCHEMA_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$crd_schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
}

# The PrometheusRule's spec, rendered, is alerts.yml line for line (indented under `spec:`).
prometheus_rule_is_alerts_yml() {
  local rendered
  rendered=$(helm template rebound "$chart" --show-only templates/monitoring.yaml \
    --set monitoring.prometheusRule.enabled=true) || return 1
  diff -u "$alerts" <(printf '%s\n' "$rendered" |
    awk '/^kind: PrometheusRule/ {rule = 1} rule && /^spec:/ {spec = 1; next} spec' |
    sed 's/^  //') && echo "the PrometheusRule holds $alerts as it is"
}

# Every REBOUND_* variable the chart sets, in any variant, is one a binary reads (a clap `env`),
# so a renamed flag cannot leave the chart setting a variable nobody reads.
variables_exist() {
  local rendered name unknown=0 known
  rendered=$(for values in "" "$chart"/ci/*-values.yaml; do
    if [[ -n $values ]]; then helm template rebound "$chart" --values "$values"; else helm template rebound "$chart"; fi
  done) || return 1
  known=$(grep -rhoE 'env = "REBOUND_[A-Z0-9_]+"' crates/*/src | sed 's/env = //; s/"//g' | sort -u)
  for name in $(grep -oE 'name: REBOUND_[A-Z0-9_]+' <<<"$rendered" | sed 's/name: //' | sort -u); do
    if grep -qxF "$name" <<<"$known"; then
      echo "$name"
    else
      echo "$name: no binary reads it"
      unknown=1
    fi
  done
  return "$unknown"
}

# A chart value that breaks a rule of the chart is refused at render time, naming it.
refuses() { # EXPECTED_MESSAGE HELM_ARGS...
  local expected=$1 out
  shift
  if out=$(helm template rebound "$chart" "$@" 2>&1); then
    echo "rendered, but should have been refused with: $expected"
    return 1
  fi
  grep -F -- "$expected" <<<"$out" || { echo "$out"; return 1; }
}

check "helm lint $chart" helm lint --strict "$chart"
check "helm template (default values) | kubeconform -strict" render_and_validate ""
shopt -s nullglob
for variant in "$chart"/ci/*-values.yaml; do
  check "helm lint --values $variant" helm lint --strict "$chart" --values "$variant"
  check "helm template --values $variant | kubeconform -strict" render_and_validate "$variant"
done
shopt -u nullglob
check "PrometheusRule = $alerts" prometheus_rule_is_alerts_yml
check "every REBOUND_* variable of the chart is read by a binary" variables_exist
check "refused: autoscaling with an SQLite sink" \
  refuses "consumer.autoscaling must be none with an sqlite:// sink" \
  --set consumer.sink.url=sqlite:///data/notes.db --set consumer.autoscaling.mode=keda
check "refused: ';' in a -X value" \
  refuses "contains ';'" --set-string 'kafka.config.sasl\.jaas\.config=a;b'

checks_summary chart
