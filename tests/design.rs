//! Policies written from DESIGN.md alone, not kept in examples/: each gets the verdict a careful
//! reader of the design expects, with messages naming the field. Exercises the CEL rules by
//! evaluating them, not by looking for them.

use signet::admission::Admission;
use signet::manifests::parse_documents;

const HEAD: &str =
    "apiVersion: signet.dev/v1alpha1\nkind: SignaturePolicy\nmetadata: {name: p, namespace: ns}\n";

fn verdict(spec: &str) -> Vec<String> {
    let yaml = format!("{HEAD}spec:\n{spec}");
    let value = parse_documents(&yaml).unwrap().remove(0);
    Admission::new()
        .check(value)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn assert_valid(spec: &str) {
    assert_eq!(verdict(spec), Vec::<String>::new(), "{spec}");
}

fn assert_refused(spec: &str, expected: &str) {
    let errors = verdict(spec);
    assert!(
        errors.iter().any(|e| e == expected),
        "expected {expected:?} among {errors:#?}"
    );
}

const DB: &str = "  database: {urlSecretRef: {name: db, key: url}}\n";

#[test]
fn the_design_example_is_valid() {
    assert_valid(
        r#"  suspend: false
  timeZone: Europe/Berlin
  database:
    urlSecretRef: {name: enrollment-db, key: url}
    schema: public
  selector:
    workflowTypes: [enrollment-agreement]
  reminders:
    schedule: "*/30 * * * *"
    firstAfter: 24h
    every: 48h
    maxReminders: 3
    sendWindow:
      start: "08:00"
      end: "20:00"
      days: [Mon, Tue, Wed, Thu, Fri]
    channels: [signer-email]
    template: {subject: "Please sign {{ document_title }}", text: "{{ signing_url }}", html: "<a href='{{ signing_url }}'>sign</a>"}
  expiryWarning:
    before: 48h
    channels: [signer-email]
  escalation:
    after: 24h
    channels: [ops-slack]
  timeout:
    after: 14d
    schedule: "0 */2 * * *"
    channels: [ops-slack]
  channels:
    - name: signer-email
      sendgrid: {apiKeySecretRef: {name: sendgrid, key: api-key}, from: "Enrollment <no-reply@example.com>"}
    - name: ops-email
      sendgrid: {apiKeySecretRef: {name: sendgrid, key: api-key}, from: "Ops <ops-bot@example.com>", to: ["ops@example.com"]}
    - name: smtp-mail
      smtp: {host: smtp.example.com, port: 587, security: starttls, credentialsSecretRef: {name: smtp}, from: "x@example.com"}
    - name: ops-slack
      slack: {webhookUrlSecretRef: {name: slack, key: url}}
    - name: audit-hook
      webhook: {urlSecretRef: {name: audit, key: url}, signingSecretRef: {name: audit, key: hmac}}
    - name: console
      log: {}
  jobTemplate: {}
"#,
    );
}

#[test]
fn durations_in_every_documented_form() {
    for duration in ["90s", "30m", "24h", "14d", "2w", "1h30m"] {
        assert_valid(&format!("{DB}  timeout: {{after: {duration}}}\n"));
    }
    assert_refused(
        &format!("{DB}  timeout: {{after: 1.5h}}\n"),
        "spec.timeout.after: \"1.5h\" is not a valid duration: unknown unit '.' (use w, d, h, m or s); write durations like 90s, 30m, 24h, 14d, 2w or 1h30m",
    );
    assert_refused(
        &format!("{DB}  timeout: {{after: 30m1h}}\n"),
        "spec.timeout.after: \"30m1h\" is not a valid duration: units must go from largest to smallest (w, d, h, m, s), each at most once; write durations like 90s, 30m, 24h, 14d, 2w or 1h30m",
    );
    assert_refused(
        &format!("{DB}  timeout: {{after: 0s}}\n"),
        "spec.timeout.after: must be greater than zero",
    );
}

#[test]
fn the_expiry_warning_is_compared_with_the_timeout_in_seconds() {
    let policy = |before: &str, after: &str| {
        format!(
            "{DB}  reminders: {{channels: [c]}}\n  expiryWarning: {{before: {before}, channels: [c]}}\n  timeout: {{after: {after}}}\n  channels: [{{name: c, log: {{}}}}]\n"
        )
    };
    let refusal = "spec.expiryWarning.before: must be shorter than spec.timeout.after, or the warning would be due before the workflow was requested";
    assert_valid(&policy("47h", "2d"));
    assert_valid(&policy("6d23h59m59s", "1w"));
    assert_valid(&policy("1w", "1w1s"));
    assert_refused(&policy("2d", "48h"), refusal);
    assert_refused(&policy("8d", "1w"), refusal);
    assert_refused(&policy("1w1s", "7d"), refusal);
    // Without a timeout section the deadline comes from each row's deadline_at: no comparison.
    assert_valid(&format!(
        "{DB}  reminders: {{channels: [c]}}\n  expiryWarning: {{before: 30d, channels: [c]}}\n  channels: [{{name: c, log: {{}}}}]\n"
    ));
}

#[test]
fn channels_named_by_each_section_must_exist() {
    let base =
        format!("{DB}  reminders: {{channels: [c]}}\n  channels: [{{name: c, log: {{}}}}]\n");
    assert_valid(&base);
    assert_refused(
        &format!("{base}  escalation: {{after: 1d, channels: [pager]}}\n"),
        "spec.escalation.channels: no channel named pager in spec.channels",
    );
    assert_refused(
        &format!("{base}  expiryWarning: {{before: 1d, channels: [c, sms]}}\n"),
        "spec.expiryWarning.channels: no channel named sms in spec.channels",
    );
    assert_refused(
        &format!("{DB}  timeout: {{after: 1d, channels: [slack]}}\n"),
        "spec.timeout.channels: no channel named slack in spec.channels",
    );
}

#[test]
fn email_alerts_need_recipients_but_reminders_do_not() {
    let smtp = "{name: mail, smtp: {host: mail.example.com, from: a@example.com}}";
    assert_valid(&format!(
        "{DB}  reminders: {{channels: [mail]}}\n  channels: [{smtp}]\n"
    ));
    assert_refused(
        &format!(
            "{DB}  reminders: {{channels: [mail]}}\n  escalation: {{after: 1d, channels: [mail]}}\n  channels: [{smtp}]\n"
        ),
        "spec.escalation.channels: email channels that receive alerts must list their recipients in to: mail has no to",
    );
    assert_valid(&format!(
        "{DB}  timeout: {{after: 1d, channels: [mail]}}\n  channels: [{}]\n",
        smtp.replace("from:", "to: [ops@example.com], from:")
    ));
}

#[test]
fn a_channel_is_exactly_one_kind() {
    assert_refused(
        &format!("{DB}  timeout: {{after: 1d, channels: [c]}}\n  channels: [{{name: c}}]\n"),
        "spec.channels[0]: a channel must set exactly one of sendgrid, smtp, slack, webhook or log",
    );
}

#[test]
fn schedules_and_zones_follow_kubernetes() {
    for schedule in [
        "@hourly",
        "@daily",
        "0 9 * * MON-FRI",
        "*/15 8-18 * * 1-5",
        "0 0 1 */3 *",
    ] {
        assert_valid(&format!(
            "{DB}  timeout: {{after: 1d, schedule: \"{schedule}\"}}\n"
        ));
    }
    assert_refused(
        &format!("{DB}  timeout: {{after: 1d, schedule: \"0 25 * * *\"}}\n"),
        "spec.timeout.schedule: \"0 25 * * *\" is not a valid cron schedule: hour 25 is out of range (0-23)",
    );
    assert_refused(
        &format!("{DB}  timeout: {{after: 1d, schedule: \"0 9 * *\"}}\n"),
        "spec.timeout.schedule: \"0 9 * *\" is not a valid cron schedule: expected exactly 5 fields (minute hour day-of-month month day-of-week), found 4",
    );
    assert_refused(
        &format!("  timeZone: Local\n{DB}  timeout: {{after: 1d}}\n"),
        "spec.timeZone: \"Local\" is not a known IANA time zone; use a name from the IANA time zone database such as \"Europe/Berlin\" or \"UTC\"",
    );
}

#[test]
fn unknown_fields_and_secret_values_are_refused() {
    assert_refused(
        &format!("{DB}  timeout: {{after: 1d}}\n  retries: 3\n"),
        "spec.retries: unknown field \"retries\"",
    );
    // A secret value in place of a reference has nowhere to go.
    assert_refused(
        &format!(
            "{DB}  timeout: {{after: 1d, channels: [s]}}\n  channels: [{{name: s, slack: {{webhookUrl: \"https://hooks.slack.com/x\"}}}}]\n"
        ),
        "spec.channels[0].slack.webhookUrl: unknown field \"webhookUrl\"",
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let errors = verdict(&format!(
        "  timeZone: Nowhere/City\n{DB}  reminders: {{schedule: \"61 * * * *\", maxReminders: 99, channels: [c]}}\n  timeout: {{after: 1d, schedule: \"@weekly\"}}\n  channels: [{{name: c, log: {{}}}}]\n"
    ));
    // A bound violated in the schema does not hide the semantic problems elsewhere.
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(
        errors[0],
        "spec.reminders.maxReminders: Invalid value: 99: should be less than or equal to 20"
    );
    let errors = verdict(&format!(
        "  timeZone: Nowhere/City\n{DB}  reminders: {{schedule: \"61 * * * *\", channels: [c]}}\n  timeout: {{after: 1d, schedule: \"@fortnightly\"}}\n  channels: [{{name: c, log: {{}}}}]\n"
    ));
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("spec.timeZone: "));
    assert!(errors[1].starts_with("spec.reminders.schedule: "));
    assert!(errors[2].starts_with("spec.timeout.schedule: "));
}
