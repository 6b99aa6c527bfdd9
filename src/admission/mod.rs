//! Offline admission: everything a cluster and the controller would check before a policy takes
//! effect, without a cluster. The CRD's OpenAPI schema with defaulting and strict unknown-field
//! checks ([`openapi`]), its CEL rules (kube's client-side CEL evaluator), decoding into the Rust
//! types, then [`crate::policy::validate`]. Used by `signet validate`.

pub mod openapi;

use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde_json::Value;

use crate::crd::{CLOCK_PATTERN, SignaturePolicy, definition, expect_policy};
use crate::duration::{DURATION_PATTERN, Duration};
use crate::policy::Policy;
use crate::policy::validate::{self, FieldError};

/// The checks a policy goes through, compiled once and reused for every document.
pub struct Admission {
    schema: Value,
    cel: CompiledSchema,
    validator: Validator,
}

/// The outcome for one document.
#[derive(Debug)]
pub struct Verdict {
    /// The policy as the API server would store it (defaults applied), when it could be decoded.
    pub policy: Option<SignaturePolicy>,
    /// Every problem found, in the order: schema, CEL, semantic.
    pub errors: Vec<FieldError>,
    /// The parsed spec, when no problem was found.
    pub parsed: Option<Policy>,
}

impl Verdict {
    /// No problem found.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new()
    }
}

impl Admission {
    /// Compiles the schema and CEL rules of the CRD this binary generates.
    pub fn new() -> Self {
        let crd = definition();
        let mut schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| serde_json::to_value(s).expect("the schema serializes to JSON"))
            .expect("the generated CRD has an openAPIV3Schema");
        // The API server knows these on every object, whatever the schema says.
        for field in ["apiVersion", "kind"] {
            schema["properties"][field] = serde_json::json!({"type": "string"});
        }
        let cel = compile_schema(&schema);
        Self {
            schema,
            cel,
            validator: Validator::new(),
        }
    }

    /// Runs every check on one object, as parsed from YAML or JSON.
    pub fn check(&self, mut object: Value) -> Verdict {
        let mut errors = Vec::new();
        if let Err(message) = expect_policy(&object) {
            errors.push(FieldError::new("", message));
            return Verdict {
                policy: None,
                errors,
                parsed: None,
            };
        }

        let schema_errors = openapi::default_and_validate(&self.schema, &mut object);
        // Like the API server, CEL rules are not evaluated over values of the wrong type.
        let type_errors = schema_errors
            .iter()
            .any(|e| e.message.contains("must be of type"));
        errors.extend(schema_errors.into_iter().map(|e| explain(&object, e)));
        if type_errors {
            errors.push(FieldError::new(
                "",
                "CEL validation rules were not checked because of the type errors above; correct them to complete validation",
            ));
        } else if let Err(failures) = self.validator.validate_compiled(&self.cel, &object, None) {
            errors.extend(
                failures
                    .iter()
                    .map(|f| FieldError::new(f.field_path.clone(), f.message.clone())),
            );
        }

        let schema_or_cel_failed = !errors.is_empty();
        let policy = match serde_path_to_error::deserialize::<_, SignaturePolicy>(&object) {
            Ok(policy) => Some(policy),
            Err(err) => {
                // After schema errors a decoding error only repeats them.
                if !schema_or_cel_failed {
                    errors.push(FieldError::new(
                        err.path().to_string(),
                        err.inner().to_string(),
                    ));
                }
                None
            }
        };
        if let Some(Err(semantic)) = policy.as_ref().map(|p| validate::validate(&p.spec)) {
            errors.extend(semantic);
        }
        dedup_in_order(&mut errors);
        // CEL has checked the routes already, so this cannot fail where the checks above passed.
        let parsed = match &policy {
            Some(p) if errors.is_empty() => match Policy::from_validated(&p.spec) {
                Ok(parsed) => Some(parsed),
                Err(more) => {
                    errors.extend(more);
                    None
                }
            },
            _ => None,
        };
        Verdict {
            policy,
            errors,
            parsed,
        }
    }
}

/// Replaces the schema's bare pattern message with an explanation for the patterns people trip
/// over: durations and times of day.
fn explain(object: &Value, error: openapi::SchemaError) -> FieldError {
    let value = || value_at(object, &error.path).and_then(Value::as_str);
    let mismatch = |pattern: &str| {
        error
            .message
            .ends_with(&format!("should match '{pattern}'"))
    };
    let explanation = if mismatch(DURATION_PATTERN) {
        value()
            .and_then(|v| v.parse::<Duration>().err())
            .map(|e| e.to_string())
    } else if mismatch(CLOCK_PATTERN) {
        value().map(|v| {
            format!("{v:?} is not a time of day; write HH:MM on a 24-hour clock, e.g. \"08:00\"")
        })
    } else {
        None
    };
    FieldError::new(error.path.clone(), explanation.unwrap_or(error.message))
}

/// The value at a field path such as `spec.channels[0].name`.
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut value = object;
    for segment in path.split('.') {
        let (field, indexes) = segment
            .split_once('[')
            .map_or((segment, ""), |(f, rest)| (f, rest));
        value = value.get(field)?;
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            value = value.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(value)
}

fn dedup_in_order(errors: &mut Vec<FieldError>) {
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert((e.path.clone(), e.message.clone())));
}
