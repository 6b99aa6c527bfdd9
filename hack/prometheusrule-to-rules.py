#!/usr/bin/env python3
"""The rule groups of a rendered PrometheusRule, as a Prometheus rules file (`make alerts`).

Usage: prometheusrule-to-rules.py RENDERED.yaml > RULES.yaml

RENDERED.yaml holds helm template output; exactly one document must be a PrometheusRule. Its
`spec` is what prometheus-operator hands Prometheus, so `promtool check rules` and
`promtool test rules` see the alerts as Prometheus will.
"""

import sys

import yaml


def main(path):
    with open(path, encoding="utf-8") as rendered:
        rules = [
            doc
            for doc in yaml.safe_load_all(rendered)
            if doc and doc.get("kind") == "PrometheusRule"
        ]
    if len(rules) != 1:
        sys.exit(f"{path}: expected one PrometheusRule, found {len(rules)}")
    groups = rules[0]["spec"]["groups"]
    if not any(group.get("rules") for group in groups):
        sys.exit(f"{path}: the PrometheusRule has no rules")
    yaml.safe_dump({"groups": groups}, sys.stdout, sort_keys=False, width=1000)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
