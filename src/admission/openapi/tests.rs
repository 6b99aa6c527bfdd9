use super::*;
use serde_json::json;

fn v(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad test JSON {text}: {e}"))
}

/// A CRD root schema whose `spec` is `spec_schema`.
fn crd(spec_schema: Value) -> Value {
    let mut root = v(
        r#"{"type": "object", "properties": {"apiVersion": {"type": "string"},
        "kind": {"type": "string"}, "metadata": {"type": "object"},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}"#,
    );
    root["properties"]["spec"] = spec_schema;
    root
}

/// Validates a resource with `spec`; returns the rendered errors and the defaulted spec.
fn run(spec_schema: &str, spec: &str) -> (Vec<String>, Value) {
    let mut object = json!({"apiVersion": "signet.dev/v1", "kind": "Policy",
                            "metadata": {"name": "p"}, "spec": v(spec)});
    let errors = default_and_validate(&crd(v(spec_schema)), &mut object);
    (
        errors.iter().map(ToString::to_string).collect(),
        object["spec"].take(),
    )
}

fn errors(spec_schema: &str, spec: &str) -> Vec<String> {
    run(spec_schema, spec).0
}

fn object_errors(object: Value) -> Vec<String> {
    let schema = crd(v(
        r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#,
    ));
    let errors = default_and_validate(&schema, &mut { object });
    errors.iter().map(ToString::to_string).collect()
}

const NONE: [&str; 0] = [];

#[test]
fn defaults_nested_in_defaults_and_in_map_list_items() {
    let schema = r#"{"type": "object", "properties": {
        "reminders": {"type": "object", "default": {}, "properties": {
            "every": {"type": "string", "default": "24h"},
            "limit": {"type": "object", "default": {"count": 3}, "properties": {
                "count": {"type": "integer"}, "unit": {"type": "string", "default": "x"}}}}},
        "channels": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "kind": {"type": "string", "default": "email"}}}}}}"#;
    let (found, spec) = run(schema, r#"{"channels": [{"name": "a"}]}"#);
    assert_eq!(found, NONE);
    let want = r#"{"channels": [{"name": "a", "kind": "email"}],
        "reminders": {"every": "24h", "limit": {"count": 3, "unit": "x"}}}"#;
    assert_eq!(spec, v(want));
    let (found, spec) = run(
        schema,
        r#"{"reminders": {"every": "1h", "limit": {"count": 1}}}"#,
    );
    assert_eq!(found, NONE);
    assert_eq!(
        spec,
        v(r#"{"reminders": {"every": "1h", "limit": {"count": 1, "unit": "x"}}}"#)
    );
}

#[test]
fn null_is_pruned_then_defaulted_or_required() {
    let schema = r#"{"type": "object", "required": ["a"], "properties": {"a": {"type": "string"},
        "b": {"type": "string", "default": "d"}, "c": {"type": "string", "nullable": true}}}"#;
    let (found, spec) = run(schema, r#"{"a": null, "b": null, "c": null}"#);
    assert_eq!(found, ["spec.a: Required value"]);
    assert_eq!(spec, v(r#"{"b": "d", "c": null}"#));
    let list = r#"{"type": "object", "properties": {"l": {"items": {"type": "string"}}}}"#;
    let message = "spec.l[0]: Invalid value: null: must be of type string";
    assert_eq!(errors(list, r#"{"l": [null, "ok"]}"#), [message]);
}

#[test]
fn unknown_fields_at_depth_in_items_and_preserved() {
    let schema = r#"{"type": "object", "properties": {
        "reminders": {"type": "object", "properties": {"every": {"type": "string"}}},
        "channels": {"type": "array", "items": {"type": "object", "properties": {"name": {}}}},
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                  "properties": {"n": {"type": "integer"}}},
        "any": {"x-kubernetes-preserve-unknown-fields": true}}}"#;
    let spec = r#"{"reminders": {"every": "1h", "foo": {"deep": 1}}, "bogus": 1,
        "channels": [{"name": "a"}, {"nmae": "b"}], "extra": {"free": [{"x": 2}], "n": "1"},
        "any": [1, "two", {"three": 3}]}"#;
    assert_eq!(
        errors(schema, spec),
        [
            r#"spec.bogus: unknown field "bogus""#,
            r#"spec.channels[1].nmae: unknown field "nmae""#,
            r#"spec.extra.n: Invalid value: "1": must be of type integer"#,
            r#"spec.reminders.foo: unknown field "foo""#,
        ]
    );
}

#[test]
fn additional_properties() {
    let schema = r#"{"type": "object", "properties": {"free": {"additionalProperties": true},
        "nodeSelector": {"type": "object", "additionalProperties": {"maxLength": 3}}}}"#;
    let spec = r#"{"nodeSelector": {"foo": "long!", "ok": "yes"}, "free": {"a": [1]}}"#;
    let message = "spec.nodeSelector[foo]: Too long: may not be longer than 3";
    assert_eq!(errors(schema, spec), [message]);
}

/// One case a line: schema of `spec.x` | a value it accepts | one it rejects | the message.
const CONSTRAINTS: &str = r#"
    {"properties": {"a": {}, "b": {}}, "required": ["a"]} | {"a": 1} | {} | spec.x.a: Required value
    {"enum": ["a", "b", "c"]} | "b" | "x" | spec.x: Unsupported value: "x": supported values: "a", "b", "c"
    {"type": "string", "maxLength": 3} | "ñññ" | "abcd" | spec.x: Too long: may not be longer than 3
    {"type": "string", "minLength": 1} | "🦀" | "" | spec.x: Invalid value: "": should be at least 1 chars long
    {"type": "string", "pattern": "^[a-z]+$"} | "ab" | "A" | spec.x: Invalid value: "A": should match '^[a-z]+$'
    {"pattern": "("} | 1 | "a" | spec.x: Internal error: bad pattern '('
    {"format": "date-time"} | "2024-02-29T10:00:00.5+01:00" | "2024-13-01T00:00:00Z" | spec.x: Invalid value: "2024-13-01T00:00:00Z": must be an RFC 3339 date-time
    {"type": "string", "format": "email"} | "any" | 1 | spec.x: Invalid value: 1: must be of type string
    {"type": "integer", "minimum": 1} | 1 | 0 | spec.x: Invalid value: 0: should be greater than or equal to 1
    {"type": "integer", "maximum": 100} | 100 | 101 | spec.x: Invalid value: 101: should be less than or equal to 100
    {"minimum": 1, "exclusiveMinimum": true} | 1.5 | 1 | spec.x: Invalid value: 1: should be greater than 1
    {"maximum": 2.5, "exclusiveMaximum": true} | 2 | 2.5 | spec.x: Invalid value: 2.5: should be less than 2.5
    {"type": "number", "multipleOf": 0.1} | 0.3 | 0.35 | spec.x: Invalid value: 0.35: should be a multiple of 0.1
    {"type": "integer"} | 3.0 | 3.5 | spec.x: Invalid value: 3.5: must be of type integer
    {"type": "number"} | 3 | "3" | spec.x: Invalid value: "3": must be of type number
    {"type": "boolean"} | false | [true] | spec.x: Invalid value: [true]: must be of type boolean
    {"type": "object"} | {} | "{}" | spec.x: Invalid value: "{}": must be of type object
    {"type": "array"} | [] | {} | spec.x: Invalid value: {}: must be of type array
    {"x-kubernetes-int-or-string": true} | "50%" | true | spec.x: Invalid value: true: must be of type integer or string
    {"x-kubernetes-int-or-string": true, "pattern": "%$"} | 3 | "5" | spec.x: Invalid value: "5": should match '%$'
    {"type": "string", "nullable": true, "minLength": 2} | null | "a" | spec.x: Invalid value: "a": should be at least 2 chars long
    {"type": "array", "minItems": 1} | [1] | [] | spec.x: Invalid value: 0: should have at least 1 items
    {"type": "array", "maxItems": 1} | [1] | [1, 2] | spec.x: Too many: 2: must have at most 1 items
    {"items": {"minimum": 0}} | [0] | [1, -1] | spec.x[1]: Invalid value: -1: should be greater than or equal to 0
    {"additionalProperties": {}, "minProperties": 1} | {"a": 1} | {} | spec.x: Invalid value: 0: should have at least 1 properties
    {"additionalProperties": {}, "maxProperties": 1} | {"a": 1} | {"a": 1, "b": 2} | spec.x: Too many: 2: must have at most 1 items
    {"properties": {"a": {}, "b": {}}, "anyOf": [{"required": ["a"]}, {"required": ["b"]}]} | {"b": 1} | {} | spec.x: must validate at least one schema (anyOf)
    {"properties": {"a": {}, "b": {}}, "oneOf": [{"required": ["a"]}, {"required": ["b"]}]} | {"a": 1} | {"a": 1, "b": 2} | spec.x: must validate one and only one schema (oneOf)
    {"properties": {"a": {}, "b": {}}, "oneOf": [{"required": ["a"]}, {"required": ["b"]}]} | {"b": 1} | {} | spec.x: must validate one and only one schema (oneOf)
    {"properties": {"a": {}, "b": {}}, "not": {"required": ["a", "b"]}} | {"a": 1} | {"a": 1, "b": 2} | spec.x: must not validate the schema (not)
    {"properties": {"a": {}, "b": {}}, "allOf": [{"required": ["a"]}, {"properties": {"b": {"maxLength": 1}}}]} | {"a": 1, "b": "2"} | {"a": 1, "b": "22"} | spec.x.b: Too long: may not be longer than 1
    {"x-kubernetes-list-type": "set"} | [1, "1", [1]] | [[1], 2, [1]] | spec.x[2]: Duplicate value: [1]
    {"type": "integer"} | 1 | "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy" | spec.x: Invalid value: "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy...: must be of type integer
"#;

#[test]
fn constraints_accept_and_reject() {
    let lines = CONSTRAINTS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    for line in lines {
        let [schema, good, bad, message] = line.splitn(4, " | ").collect::<Vec<_>>()[..] else {
            panic!("malformed case {line}");
        };
        let (schema, good, bad) = (v(schema), v(good), v(bad));
        let schema = json!({"type": "object", "properties": {"x": schema}}).to_string();
        let accepted = errors(&schema, &json!({"x": good}).to_string());
        assert_eq!(accepted, NONE, "{line}");
        assert_eq!(
            errors(&schema, &json!({"x": bad}).to_string()),
            [message],
            "{line}"
        );
    }
}

#[test]
fn list_map_keys_and_duplicates() {
    let schema = r#"{"type": "object", "properties": {"x": {"type": "array",
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "properties": {"name": {}, "port": {"default": 1}}}}}}"#;
    let (found, spec) = run(
        schema,
        r#"{"x": [{"name": "a"}, {"name": "b", "port": 2}]}"#,
    );
    assert_eq!(
        (found, spec),
        (
            vec![],
            v(r#"{"x": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}"#)
        )
    );
    let spec = r#"{"x": [{"name": "a"}, {"port": 2}, {"name": "a", "port": 3}]}"#;
    assert_eq!(
        errors(schema, spec),
        [
            "spec.x[1].name: Required value",
            r#"spec.x[2]: Duplicate value: {"name":"a"}"#,
        ]
    );
    let required = schema.replace(
        r#""type": "object", "properties": {"name""#,
        r#""required": ["name"], "properties": {"name""#,
    );
    assert_eq!(
        errors(&required, r#"{"x": [{}]}"#),
        ["spec.x[0].name: Required value"]
    );
}

#[test]
fn metadata_checks() {
    let ok = json!({"metadata": {"name": "a.b-c", "namespace": "ns-1", "labels": {"a": "b"}}});
    assert_eq!(object_errors(ok), NONE);
    assert_eq!(
        object_errors(json!({"metadata": {"generateName": "p-", "other": [1]}})),
        NONE
    );
    let required = "metadata.name: Required value: name or generateName is required";
    assert_eq!(object_errors(json!({"metadata": {"name": ""}})), [required]);
    assert_eq!(object_errors(json!({"spec": {}})), [required]);
    assert_eq!(object_errors(json!({"metadata": null})), [required]);
    let message = r#"metadata: Invalid value: "x": must be of type object"#;
    assert_eq!(object_errors(json!({"metadata": "x"})), [message]);
    let bad = json!({"metadata": {"name": "Foo_Bar", "namespace": "a.b",
                                  "labels": {"n": 1}, "annotations": []}});
    assert_eq!(
        object_errors(bad),
        [
            format!(r#"metadata.name: Invalid value: "Foo_Bar": {SUBDOMAIN_MESSAGE}"#),
            format!(r#"metadata.namespace: Invalid value: "a.b": {LABEL_MESSAGE}"#),
            "metadata.labels[n]: Invalid value: 1: must be of type string".to_owned(),
            "metadata.annotations: Invalid value: []: must be of type object".to_owned(),
        ]
    );
    let long = json!({"metadata": {"name": "a".repeat(254), "namespace": 7}});
    let name = "a".repeat(59);
    assert_eq!(
        object_errors(long),
        [
            format!(
                r#"metadata.name: Invalid value: "{name}...: must be no more than 253 characters"#
            ),
            "metadata.namespace: Invalid value: 7: must be of type string".to_owned(),
        ]
    );
}

#[test]
fn status_is_ignored_and_root_errors_have_no_path() {
    let status = json!({"metadata": {"name": "p"}, "status": {"phase": 3, "bogus": true}});
    assert_eq!(object_errors(status), NONE);
    assert_eq!(
        object_errors(json!([1])),
        ["Invalid value: [1]: must be of type object"]
    );
    let unknown = json!({"metadata": {"name": "p"}, "foo": 1});
    assert_eq!(object_errors(unknown), [r#"foo: unknown field "foo""#]);
}

#[test]
fn several_errors_in_document_order() {
    let schema = r#"{"type": "object", "required": ["z", "to"], "properties": {
        "to": {"type": "string"}, "z": {"type": "string"},
        "channels": {"type": "array", "items": {"type": "object", "properties": {
            "smtp": {"type": "object", "properties": {"port": {"maximum": 65535}}}}}}}}"#;
    let spec =
        r#"{"channels": [{"smtp": {"port": 1}}, {"smtp": {"port": 70000, "tls": 1}}], "oops": 1}"#;
    assert_eq!(
        errors(schema, spec),
        [
            "spec.channels[1].smtp.port: Invalid value: 70000: should be less than or equal to 65535",
            r#"spec.channels[1].smtp.tls: unknown field "tls""#,
            r#"spec.oops: unknown field "oops""#,
            "spec.z: Required value",
            "spec.to: Required value",
        ]
    );
}

#[test]
fn each_pattern_compiles_once_per_call() {
    let schema = json!({"items": {"pattern": "^a", "format": "date-time"}});
    let mut validator = Validator::default();
    validator.walk(&schema, &mut json!(["a", "b", "c"]), "l");
    // Three items, two expressions (the pattern and the date-time format's): two compilations.
    assert_eq!((validator.compilations, validator.errors.len()), (2, 5));
}

#[test]
fn odd_values_never_panic() {
    let spec_schema = v(r#"{"type": "object", "properties": {
        "a": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
              "maxItems": 3, "items": {"type": "object", "properties": {
                  "k": {"x-kubernetes-int-or-string": true}, "v": {"type": "number", "multipleOf": 0.5}}}},
        "s": {"type": "array", "x-kubernetes-list-type": "set",
              "items": {"type": "string", "pattern": "^\\w+$", "format": "date-time"}},
        "m": {"type": "object", "default": {"b": true},
              "additionalProperties": {"type": "boolean", "nullable": true}},
        "p": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "minProperties": 2,
              "properties": {"k": {"type": "integer", "enum": [1, 2]}}},
        "k": {"type": "string", "maxLength": 2}},
        "anyOf": [{"required": ["a"]}, {"not": {"required": ["s"]}}],
        "oneOf": [{"required": ["k"]}, {"required": ["m"]}]}"#);
    let schema = crd(spec_schema.clone());
    let leaves = [
        json!(null),
        json!(true),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(-0.5),
        json!(""),
        json!("ñ🦀\u{0}"),
        json!("2024-01-01T00:00:00Z"),
    ];
    let keys = ["a", "s", "m", "p", "k", "v", "b", "metadata", "🦀"];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        // xorshift: deterministic, so a failure reproduces.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    fn build(
        depth: usize,
        next: &mut dyn FnMut(usize) -> usize,
        leaves: &[Value],
        keys: &[&str],
    ) -> Value {
        match if depth == 0 { 0 } else { next(3) } {
            0 => leaves[next(leaves.len())].clone(),
            1 => (0..next(4))
                .map(|_| build(depth - 1, next, leaves, keys))
                .collect(),
            _ => Value::Object(
                (0..next(5))
                    .map(|_| {
                        (
                            keys[next(keys.len())].to_owned(),
                            build(depth - 1, next, leaves, keys),
                        )
                    })
                    .collect(),
            ),
        }
    }
    for _ in 0..400 {
        let value = build(4, &mut next, &leaves, &keys);
        let mut object = json!({"metadata": value.clone(), "spec": value.clone()});
        let _ = default_and_validate(&schema, &mut object);
        let _ = default_and_validate(&spec_schema, &mut value.clone());
        // Garbage schemas must not panic either.
        let _ = default_and_validate(&value, &mut spec_schema.clone());
        let _ = default_and_validate(&value, &mut value.clone());
    }
}
