#!/usr/bin/env python3
"""Strict schema validation of rendered Helm output (`make chart`).

Usage: chartcheck.py -k 1.33.0 -k 1.37.0 RENDERED.yaml...

Every document is checked; none may pass unseen:
- Kubernetes kinds with kubernetes-validate's strict schemas, for each version given. The
  kubernetes-validate command only warns about a kind it has no schema for and exits 0, so it is
  called as a library here and an unknown kind is a failure.
- prometheus-operator kinds (ServiceMonitor, PrometheusRule), which kubernetes-validate does not
  know, against the strict subset schemas in hack/schemas/; every alert expression must parse as
  PromQL and every duration as a Prometheus duration.
"""

import argparse
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate.utils as kv
import promql_parser
import yaml

SCHEMAS = pathlib.Path(__file__).parent / "schemas"
# Kinds kubernetes-validate does not know, with the schema that stands in for it.
CUSTOM = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
}


def name_of(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def check_custom(doc, schema_file):
    """Problems of a prometheus-operator object, as sentences."""
    schema = json.loads((SCHEMAS / schema_file).read_text())
    problems = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)
    ]
    if doc["kind"] == "PrometheusRule" and not problems:
        for group in doc["spec"].get("groups", []):
            for rule in group.get("rules", []):
                label = rule.get("alert") or rule.get("record")
                try:
                    promql_parser.parse(str(rule["expr"]))
                except ValueError as e:
                    problems.append(f"{label}: expr is not valid PromQL: {e}")
                for field in ("for", "keep_firing_for"):
                    if field in rule:
                        try:
                            promql_parser.parse_duration(rule[field])
                        except ValueError as e:
                            problems.append(f"{label}: {field} {rule[field]!r}: {e}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    failed = False
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"FAIL {path}: no documents")
            failed = True
            continue
        custom_seen = set()
        file_failed = False
        for doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CUSTOM:
                custom_seen.add(key[1])
                for problem in check_custom(doc, CUSTOM[key]):
                    print(f"FAIL {path}: {name_of(doc)}: {problem}")
                    file_failed = True
                continue
            for version in args.kubernetes_version:
                try:
                    kv.validate(doc, version, strict=True)
                except kv.ValidationError as e:
                    where = ".".join(map(str, e.path))
                    print(f"FAIL {path}: {name_of(doc)} (Kubernetes {version}): {where}: {e.message}")
                    file_failed = True
                except kv.SchemaNotFoundError:
                    print(f"FAIL {path}: {name_of(doc)}: no schema for {key[0]} {key[1]} in Kubernetes {version}")
                    file_failed = True
        failed |= file_failed
        if not file_failed:
            kinds = len(docs) - sum(1 for d in docs if (d.get("apiVersion"), d.get("kind")) in CUSTOM)
            extra = f"; {', '.join(sorted(custom_seen))} against hack/schemas/ and PromQL" if custom_seen else ""
            print(
                f"ok   {path}: {kinds} objects valid for Kubernetes {', '.join(args.kubernetes_version)}{extra}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
