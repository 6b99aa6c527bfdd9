//! CEL rules (`x-kubernetes-validations`) that make the API server refuse policies whose parts
//! do not fit together: sections naming channels that do not exist, alerts to email channels
//! without recipients, a warning scheduled after the deadline. Messages say what to change.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, ValidationRule,
};
use schemars::Schema;
use serde_json::{Value, json};

use crate::duration::cel_seconds;
use crate::policy::notice::{Audience, NoticeKind};

/// `x-kubernetes-validations` of `spec`, attached by schemars when the schema is generated.
pub fn spec_rules(schema: &mut Schema) {
    let mut rules = vec![
        rule(
            "has(self.reminders) || has(self.timeout)",
            "set spec.reminders, spec.timeout or both: a policy with neither does nothing",
            None,
        ),
        rule(
            "!has(self.expiryWarning) || has(self.reminders)",
            "spec.expiryWarning is sent by the reminders worker, so it needs spec.reminders",
            Some(".expiryWarning"),
        ),
        rule(
            "!has(self.escalation) || has(self.reminders)",
            "spec.escalation follows the last reminder, so it needs spec.reminders",
            Some(".escalation"),
        ),
        rule(
            &format!(
                "!has(self.expiryWarning) || !has(self.timeout) || {} < {}",
                cel_seconds("self.expiryWarning.before"),
                cel_seconds("self.timeout.after")
            ),
            "must be shorter than spec.timeout.after, or the warning would be due before the workflow was requested",
            Some(".expiryWarning.before"),
        ),
        json!({
            "rule": "!has(self.channels) || self.channels.all(c, self.channels.filter(d, d.name == c.name).size() == 1)",
            "message": "channel names must be unique",
            "messageExpression": "'channel name ' + self.channels.filter(c, self.channels.filter(d, d.name == c.name).size() > 1)[0].name + ' is defined more than once; channel names must be unique'",
            "fieldPath": ".channels",
        }),
    ];
    for kind in NoticeKind::ALL {
        rules.push(channels_exist(kind.spec_field()));
        if kind.audience() == Audience::Team {
            rules.push(alert_recipients(kind.spec_field()));
        }
    }
    schema.insert("x-kubernetes-validations".into(), Value::Array(rules));
}

/// Every name in `spec.<section>.channels` is defined in `spec.channels`.
fn channels_exist(section: &str) -> Value {
    let defined = "(has(self.channels) && self.channels.exists(c, c.name == n))";
    let list = format!("self.{section}.channels");
    json!({
        "rule": format!("!has(self.{section}) || !has({list}) || {list}.all(n, {defined})"),
        "message": "names a channel that is not defined in spec.channels",
        "messageExpression": format!("'no channel named ' + {list}.filter(n, !{defined}).join(', ') + ' in spec.channels'"),
        "fieldPath": format!(".{section}.channels"),
    })
}

/// Email channels named in an alerting section list the alert's recipients (`to`).
fn alert_recipients(section: &str) -> Value {
    let list = format!("self.{section}.channels");
    let missing_to =
        "((has(c.sendgrid) && !has(c.sendgrid.to)) || (has(c.smtp) && !has(c.smtp.to)))";
    json!({
        "rule": format!("!has(self.{section}) || !has({list}) || !has(self.channels) || !self.channels.exists(c, c.name in {list} && {missing_to})"),
        "message": "email channels that receive alerts must list their recipients in to",
        "messageExpression": format!("'email channels that receive alerts must list their recipients in to: ' + self.channels.filter(c, c.name in {list} && {missing_to}).map(c, c.name).join(', ') + ' has no to'"),
        "fieldPath": format!(".{section}.channels"),
    })
}

fn rule(rule: &str, message: &str, field_path: Option<&str>) -> Value {
    let mut value = json!({ "rule": rule, "message": message });
    if let Some(path) = field_path {
        value["fieldPath"] = json!(path);
    }
    value
}

/// Rules on the whole object, which kube-derive does not generate.
pub fn add_root_rules(schema: &mut JSONSchemaProps) {
    let name_rule = ValidationRule {
        rule: "!has(self.metadata.name) || self.metadata.name.size() <= 63".into(),
        message: Some(
            "metadata.name must be at most 63 characters: Signet uses it as a label value".into(),
        ),
        ..Default::default()
    };
    schema
        .x_kubernetes_validations
        .get_or_insert_with(Vec::new)
        .push(name_rule);
}
