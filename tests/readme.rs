//! The SignaturePolicy reference (docs/policy-reference.md) names every field of the spec schema,
//! so the docs cannot fall behind the types.

use serde_json::Value;

/// Fields whose inner structure is a Kubernetes type documented upstream.
const UPSTREAM_TYPES: [&str; 4] = [
    "spec.jobTemplate.resources",
    "spec.jobTemplate.tolerations",
    "spec.jobTemplate.affinity",
    "spec.jobTemplate.imagePullSecrets",
];

fn field_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    if UPSTREAM_TYPES.contains(&path) {
        return;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            out.push(child_path.clone());
            field_paths(child, &child_path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        field_paths(items, &format!("{path}[]"), out);
    }
}

#[test]
fn the_policy_reference_documents_every_spec_field() {
    let crd = serde_json::to_value(signet::crd::definition()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut paths = Vec::new();
    field_paths(spec, "spec", &mut paths);
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/policy-reference.md"
    ))
    .unwrap();
    // The "## Fields" section, up to the next heading of its level.
    let reference = page
        .split("\n## Fields\n")
        .nth(1)
        .expect("docs/policy-reference.md has a \"## Fields\" section")
        .split("\n## ")
        .next()
        .unwrap();
    // Leaf fields of shared types (SecretKeyRef, MessageTemplate) are documented once, by type.
    let shared_leaves = [".name", ".key", ".subject", ".text", ".html"];
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !reference.contains(&format!("`{p}`")))
        .filter(|p| {
            *p == "spec.channels[].name" || !shared_leaves.iter().any(|leaf| p.ends_with(leaf))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/policy-reference.md's \"Fields\" does not document: {missing:#?}"
    );
    assert!(paths.len() > 60, "walked the schema: {}", paths.len());
}
