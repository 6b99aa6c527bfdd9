//! Offline re-implementation of what kube-apiserver does with a `CustomResourceDefinition`'s
//! structural `openAPIV3Schema` when a custom resource is created with `kubectl apply`
//! (field validation `Strict`): prune non-nullable nulls, apply `default`s, refuse unknown
//! fields, and validate types and value constraints.
//!
//! Errors carry apiserver field paths (`spec.channels[1].smtp.port`, `spec.nodeSelector[foo]`)
//! and apiserver-like messages, so the `validate` CLI can reject a policy file with the same
//! complaint a cluster would give. `x-kubernetes-validations` (CEL) rules are evaluated
//! elsewhere; `metadata` gets the `ObjectMeta` checks instead of schema validation, and `status`
//! is skipped because `kubectl apply` cannot set it once the status subresource is enabled.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

/// Values longer than this are cut in messages, so one huge blob doesn't drown the report.
const MAX_RENDERED: usize = 60;
const PRESERVE_UNKNOWN: &str = "x-kubernetes-preserve-unknown-fields";
const DATE_TIME: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";
const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// Problems are reported as the crate's [`FieldError`](crate::policy::validate::FieldError): an apiserver-style path (empty for the
/// object itself) and an apiserver-like message such as `Required value`.
pub use crate::policy::validate::FieldError as SchemaError;

/// Applies defaults in place then validates; returns every error, in document order.
///
/// `schema` is a CRD version's `openAPIV3Schema`; `object` is the whole custom resource.
pub fn default_and_validate(schema: &Value, object: &mut Value) -> Vec<SchemaError> {
    let mut validator = Validator::default();
    validator.walk(schema, object, "");
    validator.errors
}

#[derive(Default)]
struct Validator {
    /// Compiled `pattern`s; `None` remembers one that does not compile.
    regexes: HashMap<String, Option<Regex>>,
    /// How many times a pattern was compiled (once each, thanks to `regexes`).
    compilations: usize,
    errors: Vec<SchemaError>,
    /// Above zero while evaluating `allOf`/`anyOf`/`oneOf`/`not` branches, which in structural
    /// schemas only carry value validations: no defaulting and no unknown-field checks there.
    branch_depth: usize,
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn render(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_RENDERED {
        return text;
    }
    let head: String = text.chars().take(MAX_RENDERED).collect();
    format!("{head}...")
}

/// A bound as the API server prints it: `1`, not `1.0`, for whole numbers.
fn render_number(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 9.0e15 {
        format!("{}", number as i64)
    } else {
        number.to_string()
    }
}

fn is_integer(value: &Value) -> bool {
    // apiserver decodes 3.0 to an integer, so a float with no fraction is one too.
    value
        .as_number()
        .is_some_and(|n| n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0))
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        // The apiserver refuses such a CRD; the value is not the one to blame.
        _ => true,
    }
}

fn limit(schema: &Value, key: &str) -> Option<u64> {
    schema.get(key).and_then(Value::as_u64)
}

fn strings<'a>(schema: &'a Value, key: &str) -> Vec<&'a str> {
    let list = schema.get(key).and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

impl Validator {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(SchemaError::new(path, message));
    }

    fn invalid(&mut self, path: &str, value: &Value, detail: &str) {
        self.push(path, format!("Invalid value: {}: {detail}", render(value)));
    }

    /// `None` when the pattern does not compile.
    fn matches(&mut self, pattern: &str, text: &str) -> Option<bool> {
        let entry = self.regexes.entry(pattern.to_owned());
        let compilations = &mut self.compilations;
        let compiled = entry.or_insert_with(|| {
            *compilations += 1;
            Regex::new(pattern).ok()
        });
        compiled.as_ref().map(|re| re.is_match(text))
    }

    fn walk(&mut self, schema: &Value, value: &mut Value, path: &str) {
        if !schema.is_object() || (value.is_null() && flag(schema, "nullable")) {
            return;
        }
        let int_or_string = flag(schema, "x-kubernetes-int-or-string");
        if int_or_string && !(is_integer(value) || value.is_string()) {
            return self.invalid(path, value, "must be of type integer or string");
        }
        let expected = schema.get("type").and_then(Value::as_str);
        if let Some(expected) = expected.filter(|t| !int_or_string && !type_matches(t, value)) {
            return self.invalid(path, value, &format!("must be of type {expected}"));
        }
        let allowed = schema.get("enum").and_then(Value::as_array);
        if let Some(allowed) = allowed.filter(|allowed| !allowed.contains(value)) {
            let supported: Vec<String> = allowed.iter().map(render).collect();
            let (value, supported) = (render(value), supported.join(", "));
            self.push(
                path,
                format!("Unsupported value: {value}: supported values: {supported}"),
            );
        }
        match value {
            Value::Object(map) => self.walk_object(schema, map, path),
            Value::Array(items) => self.walk_array(schema, items, path),
            Value::String(_) => self.check_string(schema, value, path),
            Value::Number(_) => self.check_number(schema, value, path),
            Value::Bool(_) | Value::Null => {}
        }
        self.check_branches(schema, value, path);
    }

    fn walk_object(&mut self, schema: &Value, map: &mut Map<String, Value>, path: &str) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let value_schema = additional.filter(|a| a.is_object());
        // The apiserver prunes nulls of non-nullable fields before defaulting, so a default can
        // take their place and `required` then sees them as missing.
        map.retain(|key, child| {
            let child_schema = properties.and_then(|p| p.get(key)).or(value_schema);
            !child.is_null() || child_schema.is_none_or(|s| flag(s, "nullable"))
        });
        let defaulting = self.branch_depth == 0;
        for (name, property) in properties.into_iter().flatten().filter(|_| defaulting) {
            if let Some(default) = property.get("default").filter(|_| !map.contains_key(name)) {
                map.insert(name.clone(), default.clone());
            }
        }
        let root = path.is_empty();
        let open = flag(schema, PRESERVE_UNKNOWN) || additional == Some(&Value::Bool(true));
        for (key, child) in map.iter_mut() {
            if root && key == "metadata" {
                if self.branch_depth == 0 {
                    self.check_metadata(child);
                }
            } else if root && key == "status" {
                // The status subresource owns it; apply cannot set it, so it is not validated.
            } else if let Some(property) = properties.and_then(|p| p.get(key)) {
                self.walk(property, child, &child_path(path, key));
            } else if let Some(value_schema) = value_schema {
                self.walk(value_schema, child, &format!("{path}[{key}]"));
            } else if !open && self.branch_depth == 0 {
                self.push(&child_path(path, key), format!("unknown field \"{key}\""));
            }
        }
        for name in strings(schema, "required") {
            if !map.contains_key(name) {
                self.push(&child_path(path, name), "Required value");
            }
        }
        if root && self.branch_depth == 0 && !map.contains_key("metadata") {
            self.check_metadata(&Value::Object(Map::new()));
        }
        self.check_size(schema, path, map.len(), "Properties");
    }

    /// `minItems`/`maxItems` (`kind` "Items") or `minProperties`/`maxProperties`.
    fn check_size(&mut self, schema: &Value, path: &str, count: usize, kind: &str) {
        let count = count as u64;
        if let Some(max) = limit(schema, &format!("max{kind}")).filter(|max| count > *max) {
            // The apiserver reports both maxima with field.TooMany, which always says "items".
            self.push(
                path,
                format!("Too many: {count}: must have at most {max} items"),
            );
        }
        if let Some(min) = limit(schema, &format!("min{kind}")).filter(|min| count < *min) {
            let noun = kind.to_lowercase();
            self.invalid(
                path,
                &count.into(),
                &format!("should have at least {min} {noun}"),
            );
        }
    }

    fn walk_array(&mut self, schema: &Value, items: &mut [Value], path: &str) {
        self.check_size(schema, path, items.len(), "Items");
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter_mut().enumerate() {
                self.walk(item_schema, item, &format!("{path}[{index}]"));
            }
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                let values: Vec<_> = items.iter().map(Some).collect();
                self.report_duplicates(path, &values);
            }
            Some("map") => {
                let keys = strings(schema, "x-kubernetes-list-map-keys");
                let mut tuples = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    tuples.push(self.map_key_tuple(&keys, item, &format!("{path}[{index}]")));
                }
                let tuples: Vec<_> = tuples.iter().map(Option::as_ref).collect();
                self.report_duplicates(path, &tuples);
            }
            _ => {}
        }
    }

    /// The item's list-map key fields as an object, or `None` when it lacks some of them.
    fn map_key_tuple(&mut self, keys: &[&str], item: &Value, item_path: &str) -> Option<Value> {
        let fields = item.as_object()?;
        let mut tuple = Map::new();
        for &key in keys {
            if let Some(value) = fields.get(key) {
                tuple.insert(key.to_owned(), value.clone());
                continue;
            }
            let error = SchemaError::new(child_path(item_path, key), "Required value");
            // The item schema's own `required` usually lists the key already.
            if !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
        (tuple.len() == keys.len()).then_some(Value::Object(tuple))
    }

    fn report_duplicates(&mut self, path: &str, values: &[Option<&Value>]) {
        for (index, value) in values.iter().enumerate() {
            let earlier = values.get(..index).unwrap_or_default();
            if let Some(value) = value.filter(|v| earlier.contains(&Some(*v))) {
                let message = format!("Duplicate value: {}", render(value));
                self.push(&format!("{path}[{index}]"), message);
            }
        }
    }

    fn check_string(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(text) = value.as_str() else { return };
        let length = text.chars().count() as u64;
        if let Some(max) = limit(schema, "maxLength").filter(|max| length > *max) {
            self.push(path, format!("Too long: may not be longer than {max}"));
        }
        if let Some(min) = limit(schema, "minLength").filter(|min| length < *min) {
            self.invalid(path, value, &format!("should be at least {min} chars long"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match self.matches(pattern, text) {
                Some(true) => {}
                Some(false) => self.invalid(path, value, &format!("should match '{pattern}'")),
                None => self.push(path, format!("Internal error: bad pattern '{pattern}'")),
            }
        }
        let format = schema.get("format").and_then(Value::as_str);
        if format == Some("date-time") && self.matches(DATE_TIME, text) == Some(false) {
            self.invalid(path, value, "must be an RFC 3339 date-time");
        }
    }

    fn check_number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(number) = value.as_f64() else { return };
        let bounds = [
            ("minimum", "Minimum", "greater"),
            ("maximum", "Maximum", "less"),
        ];
        for (key, exclusive_key, relation) in bounds {
            let Some(limit) = schema.get(key).filter(|l| l.is_number()) else {
                continue;
            };
            let bound = limit.as_f64().unwrap_or_default();
            let exclusive = flag(schema, &format!("exclusive{exclusive_key}"));
            let beyond = if key == "minimum" {
                number < bound
            } else {
                number > bound
            };
            if beyond || (exclusive && number == bound) {
                let inclusive = if exclusive { "" } else { " or equal to" };
                let detail = format!(
                    "should be {relation} than{inclusive} {}",
                    render_number(bound)
                );
                self.invalid(path, value, &detail);
            }
        }
        let factor = schema.get("multipleOf");
        if let Some(factor) = factor.filter(|f| f.as_f64().is_some_and(|f| f > 0.0)) {
            let ratio = number / factor.as_f64().unwrap_or(1.0);
            // Same relative tolerance as kube-openapi, so 0.3 is a multiple of 0.1.
            if (ratio - ratio.round()).abs() > 1e-9 * ratio.abs().max(1.0) {
                self.invalid(path, value, &format!("should be a multiple of {factor}"));
            }
        }
    }

    fn check_branches(&mut self, schema: &Value, value: &Value, path: &str) {
        let branches = |key| schema.get(key).and_then(Value::as_array).map(Vec::as_slice);
        for branch in branches("allOf").unwrap_or_default() {
            // A failing allOf branch's own errors say more than "must validate all the schemas".
            self.branch_depth += 1;
            self.walk(branch, &mut value.clone(), path);
            self.branch_depth -= 1;
        }
        if let Some(any_of) = branches("anyOf").filter(|b| !b.is_empty())
            && !any_of.iter().any(|branch| self.passes(branch, value, path))
        {
            self.push(path, "must validate at least one schema (anyOf)");
        }
        if let Some(one_of) = branches("oneOf").filter(|b| !b.is_empty())
            && one_of
                .iter()
                .filter(|branch| self.passes(branch, value, path))
                .count()
                != 1
        {
            self.push(path, "must validate one and only one schema (oneOf)");
        }
        if let Some(forbidden) = schema.get("not")
            && self.passes(forbidden, value, path)
        {
            self.push(path, "must not validate the schema (not)");
        }
    }

    fn passes(&mut self, branch: &Value, value: &Value, path: &str) -> bool {
        let mark = self.errors.len();
        self.branch_depth += 1;
        self.walk(branch, &mut value.clone(), path);
        self.branch_depth -= 1;
        let passed = self.errors.len() == mark;
        self.errors.truncate(mark);
        passed
    }

    /// `ObjectMeta` checks the apiserver makes on a custom resource's metadata.
    fn check_metadata(&mut self, metadata: &Value) {
        let Some(fields) = metadata.as_object() else {
            return self.invalid("metadata", metadata, "must be of type object");
        };
        let present = |key| {
            !fields
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        };
        if !present("name") && !present("generateName") {
            let message = "Required value: name or generateName is required";
            self.push("metadata.name", message);
        }
        let names = [
            ("name", 253, DNS1123_SUBDOMAIN, SUBDOMAIN_MESSAGE),
            ("namespace", 63, DNS1123_LABEL, LABEL_MESSAGE),
        ];
        for (key, max_length, pattern, message) in names {
            let path = format!("metadata.{key}");
            match fields.get(key) {
                None | Some(Value::Null) => {}
                Some(value @ Value::String(text)) => {
                    if text.len() > max_length {
                        let detail = format!("must be no more than {max_length} characters");
                        self.invalid(&path, value, &detail);
                    }
                    if !text.is_empty() && self.matches(pattern, text) == Some(false) {
                        self.invalid(&path, value, message);
                    }
                }
                Some(other) => self.invalid(&path, other, "must be of type string"),
            }
        }
        for key in ["labels", "annotations"] {
            let path = format!("metadata.{key}");
            match fields.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(entries)) => {
                    for (name, value) in entries.iter().filter(|(_, v)| !v.is_string()) {
                        self.invalid(&format!("{path}[{name}]"), value, "must be of type string");
                    }
                }
                Some(other) => self.invalid(&path, other, "must be of type object"),
            }
        }
    }
}
