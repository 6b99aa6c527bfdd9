//! Message templates (minijinja): the variables a template may use and the syntax check that
//! semantic validation runs on a policy's own templates.

use minijinja::Environment;

/// Variables available to reminder and warning templates.
pub const VARIABLES: &[&str] = &[
    "workflow_id",
    "workflow_type",
    "signer_name",
    "signer_email",
    "document_title",
    "signing_url",
    "requested_at",
    "deadline",
    "reminder_number",
    "max_reminders",
    "kind",
];

/// Checks that `source` parses and uses only [`VARIABLES`]; the error says where and why.
pub fn check(source: &str) -> Result<(), String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("policy", source).map_err(describe)?;
    let template = env.get_template("policy").map_err(describe)?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !VARIABLES.contains(&v.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(format!(
        "uses unknown variable {}; available: {}",
        unknown.join(", "),
        VARIABLES.join(", ")
    ))
}

fn describe(err: minijinja::Error) -> String {
    let detail = err.detail().map(|d| format!(": {d}")).unwrap_or_default();
    match err.line() {
        Some(line) => format!(
            "template syntax error on line {line}: {}{detail}",
            err.kind()
        ),
        None => format!("template syntax error: {}{detail}", err.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_known_variables_and_filters() {
        check("Hello {{ signer_name | default('there') }}, please sign {{ document_title }}")
            .unwrap();
        check("{% if deadline %}by {{ deadline }}{% endif %} {{ signing_url }}").unwrap();
        check("{% for x in [1, 2] %}{{ x }}{% endfor %}").unwrap();
    }

    #[test]
    fn reports_syntax_errors_with_their_line() {
        let err = check("line one\n{{ signer_name ").unwrap_err();
        assert!(err.starts_with("template syntax error on line 2"), "{err}");
        let err = check("{% if signer_name %}unclosed").unwrap_err();
        assert!(err.contains("template syntax error"), "{err}");
    }

    #[test]
    fn reports_unknown_variables() {
        let err = check("Hi {{ signer_nme }} {{ sigining_url }}").unwrap_err();
        assert!(
            err.starts_with(
                "uses unknown variable sigining_url, signer_nme; available: workflow_id"
            ),
            "{err}"
        );
    }
}
