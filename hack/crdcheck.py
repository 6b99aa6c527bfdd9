#!/usr/bin/env python3
"""Independent check of the generated CRD and the examples, with tools other than Signet's own.

usage: crdcheck.py CRD.yaml EXAMPLE.yaml...

1. The CRD's openAPIV3Schema must be structural, as kube-apiserver demands (no $ref, a type on
   every node, junctors only restating what is outside them, metadata restricted to name).
2. Every example is validated with the `jsonschema` package against the schema, made strict the
   way `kubectl apply` is (unknown fields refused). An example whose first line says
   "Refused (schema)" must fail here; every other example (valid ones, and invalid ones refused by
   CEL or semantic checks) must pass here. This cross-checks both the stated reasons and
   Signet's own schema validator.

Exit status 1 on any problem.
"""
import copy
import sys

import jsonschema
import yaml

FORBIDDEN = ("$ref", "definitions", "id", "$schema", "patternProperties", "dependencies", "additionalItems")
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")


def structural_problems(node, path="", in_junctor=False):
    if not isinstance(node, dict):
        return [f"{path or '<root>'}: a schema must be a mapping"]
    problems = [f"{path}: {key} is not allowed in a structural schema" for key in FORBIDDEN if key in node]
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if node.get("uniqueItems") is True:
        problems.append(f"{path}: uniqueItems: true is not allowed (use x-kubernetes-list-type)")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties: false is not allowed")
    if "additionalProperties" in node and "properties" in node:
        problems.append(f"{path}: properties and additionalProperties cannot be combined")
    if isinstance(node.get("items"), list):
        problems.append(f"{path}: items must be one schema, not a list")
    if in_junctor:
        problems += [f"{path}: {key} is not allowed inside allOf/anyOf/oneOf/not"
                     for key in ("description", "type", "default", "additionalProperties", "nullable")
                     if key in node and not int_or_string]
    elif not node.get("type") and not int_or_string and not preserve:
        problems.append(f"{path or '<root>'}: every node needs a type")
    for name, child in (node.get("properties") or {}).items():
        problems += structural_problems(child, f"{path}.{name}", in_junctor)
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}[*]", in_junctor)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]", in_junctor)
    for junctor in JUNCTORS:
        branches = node.get(junctor)
        branches = [branches] if isinstance(branches, dict) else (branches or [])
        for i, branch in enumerate(branches):
            problems += structural_problems(branch, f"{path}.{junctor}[{i}]", True)
            outside = node.get("properties") or {}
            problems += [f"{path}.{junctor}[{i}].{name}: not specified outside the junctor"
                         for name in (branch.get("properties") or {}) if name not in outside]
    return problems


def root_problems(schema):
    problems = [] if schema.get("type") == "object" else ["<root>: type must be object"]
    metadata = (schema.get("properties") or {}).get("metadata")
    if metadata is not None:
        extra = set(metadata) - {"type", "properties", "description"}
        fields = set(metadata.get("properties") or {}) - {"name", "generateName"}
        if extra or fields:
            problems.append(".metadata: only metadata.name and metadata.generateName may be restricted")
    return problems


def strict_jsonschema(schema):
    """The CRD schema as draft-4 JSON Schema that refuses unknown fields like kubectl apply."""
    def walk(node):
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "properties" in node:
            node["properties"] = {k: walk(v) for k, v in node["properties"].items()}
            if not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
                node["additionalProperties"] = False
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                node[key] = walk(node[key])
        for junctor in ("allOf", "anyOf", "oneOf"):
            if junctor in node:
                node[junctor] = [walk(b) for b in node[junctor]]
        if node.pop("x-kubernetes-int-or-string", False):
            node.pop("type", None)
            node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        return node
    strict = walk(copy.deepcopy(schema))
    # The API server knows these on every object, whatever the schema says.
    strict["properties"]["apiVersion"] = {"type": "string"}
    strict["properties"]["kind"] = {"type": "string"}
    strict["properties"]["metadata"] = {"type": "object"}
    strict["properties"].pop("status", None)
    return strict


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    crd = yaml.safe_load(open(argv[0]))
    problems = 0
    validators = {}
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        for problem in root_problems(schema) + structural_problems(schema):
            print(f"FAIL {argv[0]} ({version['name']}) is not structural: {problem}")
            problems += 1
        validators[f"{crd['spec']['group']}/{version['name']}"] = jsonschema.Draft4Validator(strict_jsonschema(schema))
    checked = 0
    for path in argv[1:]:
        text = open(path).read()
        expect_schema_failure = text.splitlines()[0].startswith("# Refused (schema)")
        for doc in (d for d in yaml.safe_load_all(text) if d):
            validator = validators.get(doc.get("apiVersion"))
            if validator is None or doc.get("kind") != crd["spec"]["names"]["kind"]:
                print(f"FAIL {path}: not a {crd['spec']['names']['kind']} of this CRD")
                problems += 1
                continue
            doc.pop("status", None)
            errors = [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]
            checked += 1
            if expect_schema_failure and not errors:
                print(f"FAIL {path}: says it is refused by the schema, but the schema accepts it")
                problems += 1
            elif not expect_schema_failure and errors:
                for error in errors:
                    print(f"FAIL {path}: {error}")
                problems += 1
            else:
                print(f"ok   {path}" + (" (refused by the schema, as stated)" if errors else ""))
    print(f"{checked} documents checked against {argv[0]}, {problems} problems")
    return 1 if problems or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
