#!/usr/bin/env bash
# The chart's alerts under the real promtool (`make alerts`): render the PrometheusRule with the
# real helm, with default values and with every option on, extract its rule groups, run
# `promtool check rules` on both and `promtool test rules` on tests/alerts/*.yaml, whose tests
# read the default render (target/alerts/signet.rules.yaml).
#
# promtool comes with the Debian package `prometheus` (.ci/run installs it); PROMTOOL names
# another. Without it this fails; outside CI (CI=true), SIGNET_TEST_SKIP_PROMTOOL=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

helm="${1:-target/tools/helm}"
promtool="${PROMTOOL:-promtool}"
chart=charts/signet
out=target/alerts

if ! command -v "$promtool" > /dev/null; then
  if [[ "${CI:-}" != true && "${SIGNET_TEST_SKIP_PROMTOOL:-}" == 1 ]]; then
    echo "SKIPPED make alerts: no $promtool (SIGNET_TEST_SKIP_PROMTOOL=1)" >&2
    exit 0
  fi
  echo "make alerts: no $promtool (apt-get install prometheus, or set PROMTOOL);" \
    "outside CI, SIGNET_TEST_SKIP_PROMTOOL=1 skips this" >&2
  exit 1
fi

mkdir -p "$out"
render() {
  "$helm" template signet "$chart" -n signet-system --show-only templates/prometheusrule.yaml \
    --set metrics.prometheusRule.enabled=true "$@"
}
render > "$out/default.yaml"
render -f "$chart/ci/all-options-values.yaml" > "$out/all-options.yaml"
python3 hack/prometheusrule-to-rules.py "$out/default.yaml" > "$out/signet.rules.yaml"
python3 hack/prometheusrule-to-rules.py "$out/all-options.yaml" > "$out/all-options.rules.yaml"

"$promtool" check rules "$out/signet.rules.yaml" "$out/all-options.rules.yaml"

# Every alert the chart renders has a unit test.
untested=()
for alert in $(sed -n 's/^ *- alert: //p' "$out/signet.rules.yaml"); do
  grep -q "alertname: $alert\$" tests/alerts/*.yaml || untested+=("$alert")
done
if ((${#untested[@]})); then
  echo "make alerts: no test in tests/alerts/ for ${untested[*]}" >&2
  exit 1
fi

"$promtool" test rules tests/alerts/*.yaml
