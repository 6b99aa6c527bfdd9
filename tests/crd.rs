//! The checked-in CRD is exactly what the code generates, and its shape is what DESIGN.md promises.

use signet::crd::{definition, definition_yaml};

const CHECKED_IN: &str = include_str!("../crds/signaturepolicies.signet.dev.yaml");

#[test]
fn checked_in_crd_matches_the_generated_one() {
    assert!(
        CHECKED_IN == definition_yaml(),
        "crds/signaturepolicies.signet.dev.yaml is stale: run `make crds` and commit the result"
    );
}

#[test]
fn crd_names_scope_and_subresources() {
    let crd = definition();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("signaturepolicies.signet.dev")
    );
    assert_eq!(crd.spec.group, "signet.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "SignaturePolicy");
    assert_eq!(crd.spec.names.plural, "signaturepolicies");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["sigpol".to_owned()][..])
    );
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.is_none())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Ready",
            "Delivering",
            "Reminders",
            "Timeout",
            "Last Reminder Run",
            "Last Timeout Run",
            "Age"
        ]
    );
}

#[test]
fn the_schema_carries_defaults_bounds_and_cel_rules() {
    let crd = serde_json::to_value(definition()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["properties"]["timeZone"]["default"], "UTC");
    let reminders = &spec["properties"]["reminders"]["properties"];
    assert_eq!(reminders["maxReminders"]["minimum"], 1.0);
    assert_eq!(reminders["firstAfter"]["default"], "1d");
    assert!(
        reminders["every"]["pattern"]
            .as_str()
            .unwrap()
            .starts_with("^([0-9]{1,6}w)?")
    );
    assert_eq!(
        spec["properties"]["channels"]["x-kubernetes-list-type"],
        "map"
    );
    let rules = spec["x-kubernetes-validations"].as_array().unwrap();
    assert!(
        rules.len() >= 10,
        "cross-field rules on spec: {}",
        rules.len()
    );
    let root_rules =
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
            .as_array()
            .unwrap();
    assert!(
        root_rules[0]["rule"]
            .as_str()
            .unwrap()
            .contains("metadata.name.size() <= 63")
    );
}

/// Every rule and messageExpression compiles, uses only the variables CRD rules may use, and
/// stays within the API server's cost budget by kube's estimate (bounded lists and strings).
#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};

    fn walk(
        schema: &serde_json::Value,
        path: &str,
        found: &mut Vec<(String, serde_json::Value, String)>,
    ) {
        for rule in schema
            .get("x-kubernetes-validations")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
        {
            found.push((
                path.to_owned(),
                schema.clone(),
                rule["rule"].as_str().unwrap().to_owned(),
            ));
        }
        for (name, child) in schema
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            walk(child, &format!("{path}.{name}"), found);
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), found);
        }
    }

    let crd = serde_json::to_value(definition()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let compiled = compile_schema(root);
    assert!(
        !compiled.has_errors(),
        "CEL compilation errors: {:?}",
        compiled.compilation_errors()
    );
    let mut rules = Vec::new();
    walk(root, "", &mut rules);
    assert!(rules.len() >= 15, "rules found: {}", rules.len());
    for (path, schema, rule) in &rules {
        let warnings: Vec<_> =
            analyze_rule(rule, &compile_schema(schema), ScopeContext::CrdValidation)
                .into_iter()
                // kube-cel's scope check does not see variables bound by nested macros
                // (`all(c, ... filter(d, ...))`); a variable bound as `(v, ` is legal.
                .filter(|w| {
                    let bound = w
                        .message
                        .split('\'')
                        .nth(1)
                        .is_some_and(|v| rule.contains(&format!("({v}, ")));
                    !(w.kind == WarningKind::WrongScope && bound)
                })
                .collect();
        assert!(warnings.is_empty(), "{path}: {rule}\n{warnings:#?}");
    }
}
