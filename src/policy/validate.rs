//! Semantic validation: what the CRD schema and its CEL rules cannot know. Cron schedules parsed
//! the way Kubernetes parses them, IANA time zones, send windows, templates, email addresses,
//! URLs and the secret environment variables the workers will read. Pure; returns every problem.

use std::collections::BTreeMap;
use std::fmt;

use jiff::SignedDuration;

use super::time;
use crate::crd::{ChannelKind, MessageTemplate, SendWindow, SignaturePolicySpec};
use crate::schedule::Schedule;

/// One problem, located by the field path a person would look for in the YAML.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    /// Field path, e.g. `spec.reminders.schedule`; empty for the object as a whole.
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Checks a policy spec that already passed the CRD schema; `Ok` or every problem found.
pub fn validate(spec: &SignaturePolicySpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    check_time_zone(&spec.time_zone, &mut errors);
    if let Some(reminders) = &spec.reminders {
        check_schedule("spec.reminders.schedule", &reminders.schedule, &mut errors);
        if let Some(window) = &reminders.send_window {
            check_send_window(&spec.time_zone, &reminders.schedule, window, &mut errors);
        }
        if let Some(template) = &reminders.template {
            check_template("spec.reminders.template", template, &mut errors);
        }
    }
    if let Some(template) = spec
        .expiry_warning
        .as_ref()
        .and_then(|w| w.template.as_ref())
    {
        check_template("spec.expiryWarning.template", template, &mut errors);
    }
    if let Some(timeout) = &spec.timeout {
        check_schedule("spec.timeout.schedule", &timeout.schedule, &mut errors);
    }
    check_channels(spec, &mut errors);
    check_secret_env_vars(spec, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_time_zone(zone: &str, errors: &mut Vec<FieldError>) {
    if time::zone(zone).is_some() {
        return;
    }
    let hint = match time::zone_name_ignoring_case(zone) {
        Some(name) => format!("; did you mean {name:?}?"),
        None => {
            "; use a name from the IANA time zone database such as \"Europe/Berlin\" or \"UTC\""
                .to_owned()
        }
    };
    errors.push(FieldError::new(
        "spec.timeZone",
        format!("{zone:?} is not a known IANA time zone{hint}"),
    ));
}

fn check_schedule(path: &str, schedule: &str, errors: &mut Vec<FieldError>) {
    if let Err(err) = schedule.parse::<Schedule>() {
        errors.push(FieldError::new(
            path,
            format!("{schedule:?} is not a valid cron schedule: {err}"),
        ));
    }
}

/// A window the reminder schedule never runs inside would hold every reminder forever. Checked
/// in the policy's zone over two weeks from a fixed Monday, so the verdict does not depend on
/// when validation runs.
fn check_send_window(
    zone: &str,
    schedule: &str,
    window: &SendWindow,
    errors: &mut Vec<FieldError>,
) {
    let (Some(tz), Ok(schedule_parsed), Some(start), Some(end)) = (
        time::zone(zone),
        schedule.parse::<Schedule>(),
        parse_clock(&window.start),
        parse_clock(&window.end),
    ) else {
        return; // reported elsewhere
    };
    let Some(mut at) = time::earliest(&tz, jiff::civil::date(2026, 1, 5).at(0, 0, 0, 0)) else {
        return;
    };
    let horizon = at.timestamp() + SignedDuration::from_hours(14 * 24);
    let in_window = |minute: u32| {
        if start < end {
            start <= minute && minute < end
        } else {
            minute >= start || minute < end
        }
    };
    // Bounded: a schedule firing every minute reaches any window within a day.
    for _ in 0..30_000 {
        let Some(next) = schedule_parsed.next_after(&at) else {
            break;
        };
        if next.timestamp() > horizon {
            break;
        }
        let day = crate::crd::Weekday::from_jiff(next.weekday());
        let minute = i32::from(next.hour()) * 60 + i32::from(next.minute());
        if window.days.contains(&day) && in_window(minute.unsigned_abs()) {
            return;
        }
        at = next;
    }
    let days: Vec<String> = window.days.iter().map(|d| format!("{d:?}")).collect();
    errors.push(FieldError::new(
        "spec.reminders.sendWindow",
        format!(
            "the reminder schedule {schedule:?} never runs between {} and {} on {} in {zone}, so every reminder would be held; widen the window or run the schedule more often",
            window.start,
            window.end,
            days.join(", ")
        ),
    ));
}

/// Minutes after midnight of an `HH:MM` time.
pub fn parse_clock(value: &str) -> Option<u32> {
    let (hours, minutes) = value.split_once(':')?;
    // Two ASCII digits each: u32's parser alone would also take "+1" (the schema pattern does not).
    let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hours) || !two_digits(minutes) {
        return None;
    }
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

fn check_template(path: &str, template: &MessageTemplate, errors: &mut Vec<FieldError>) {
    let parts = [
        ("subject", &template.subject),
        ("text", &template.text),
        ("html", &template.html),
    ];
    for (field, source) in parts {
        if let Some(Err(message)) = source.as_deref().map(crate::policy::templates::check) {
            errors.push(FieldError::new(format!("{path}.{field}"), message));
        }
    }
}

fn check_channels(spec: &SignaturePolicySpec, errors: &mut Vec<FieldError>) {
    for (i, channel) in spec.channels.iter().enumerate() {
        let path = format!("spec.channels[{i}]");
        let (kind_path, from, to, reply_to) = match channel.kind() {
            Some(ChannelKind::SendGrid(c)) => {
                if let Some(endpoint) = &c.endpoint
                    && let Err(message) = check_http_url(endpoint).and_then(|()| {
                        check_encrypted(endpoint, "would send the SendGrid API key unencrypted")
                    })
                {
                    errors.push(FieldError::new(
                        format!("{path}.sendgrid.endpoint"),
                        message,
                    ));
                }
                ("sendgrid", &c.from, &c.to, &c.reply_to)
            }
            Some(ChannelKind::Smtp(c)) => {
                if let Err(message) = check_host(&c.host) {
                    errors.push(FieldError::new(format!("{path}.smtp.host"), message));
                }
                if c.security == crate::crd::SmtpSecurity::None
                    && c.credentials_secret_ref.is_some()
                {
                    errors.push(FieldError::new(
                        format!("{path}.smtp.security"),
                        "security: none would send the SMTP password unencrypted; use starttls or tls",
                    ));
                }
                if let Some(name) = &c.hello_name
                    && let Err(message) = check_host(name)
                {
                    errors.push(FieldError::new(format!("{path}.smtp.helloName"), message));
                }
                ("smtp", &c.from, &c.to, &c.reply_to)
            }
            _ => continue,
        };
        if let Err(message) = check_mailbox(from) {
            errors.push(FieldError::new(format!("{path}.{kind_path}.from"), message));
        }
        if let Some(Err(message)) = reply_to.as_deref().map(check_mailbox) {
            errors.push(FieldError::new(
                format!("{path}.{kind_path}.replyTo"),
                message,
            ));
        }
        for (j, address) in to.iter().enumerate() {
            if let Err(message) = check_mailbox(address) {
                errors.push(FieldError::new(
                    format!("{path}.{kind_path}.to[{j}]"),
                    message,
                ));
            }
        }
    }
}

/// Accepts `address` or `Display Name <address>`.
pub fn check_mailbox(mailbox: &str) -> Result<(), String> {
    let trimmed = mailbox.trim();
    let address = match trimmed.rsplit_once('<') {
        Some((_, rest)) => rest.strip_suffix('>').ok_or_else(|| {
            format!("{mailbox:?} is not an email address: a '<' must be closed by a final '>'")
        })?,
        None => trimmed,
    };
    let invalid = |why: &str| Err(format!("{mailbox:?} is not an email address: {why}"));
    let Some((local, domain)) = address.split_once('@') else {
        return invalid("it has no '@'");
    };
    if local.is_empty() || local.len() > 64 {
        return invalid("the part before '@' must be 1 to 64 characters");
    }
    if address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ';' | '<' | '>' | '"'))
    {
        return invalid("the address contains spaces or one of , ; < > \"");
    }
    if domain.is_empty()
        || domain.len() > 253
        || !domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
    {
        return invalid("the domain after '@' is not a valid host name");
    }
    Ok(())
}

fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http(s) URL; write e.g. \"https://api.eu.sendgrid.com/v3/mail/send\""))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(host, |(h, _)| h);
    check_host(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| format!("{url:?}: {e}"))
}

/// The host of an `http(s)://` URL, without port or brackets.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(authority, |(h, _)| h),
    }
}

/// Refuses a plain `http://` URL unless its host is a loopback address (`127.0.0.0/8`, `::1`,
/// `localhost`), where nothing crosses a network: a stand-in in a test, a local relay.
fn check_encrypted(url: &str, consequence: &str) -> Result<(), String> {
    if !url.starts_with("http://") {
        return Ok(());
    }
    let host = url_host(url);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Ok(());
    }
    Err(format!(
        "{url:?} {consequence}; use https:// (plain http:// is accepted only on a loopback address such as 127.0.0.1)"
    ))
}

fn check_host(host: &str) -> Result<(), String> {
    let valid_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.parse::<std::net::IpAddr>().is_ok()
        || (host.len() <= 253 && host.split('.').all(valid_label))
    {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name or IP address"))
    }
}

/// Two secret references whose environment variables would collide would hand a worker the
/// wrong value, so they are refused.
fn check_secret_env_vars(spec: &SignaturePolicySpec, errors: &mut Vec<FieldError>) {
    let mut seen: BTreeMap<String, (String, (String, String))> = BTreeMap::new();
    for (path, secret) in spec.secret_refs() {
        let var = secret.env_var();
        let identity = (secret.name.clone(), secret.key.clone());
        match seen.get(&var) {
            Some((first_path, first)) if *first != identity => errors.push(FieldError::new(
                path,
                format!(
                    "Secret {:?} key {:?} and Secret {:?} key {:?} (at {first_path}) would both reach the worker as {var}; rename one of them",
                    identity.0, identity.1, first.0, first.1
                ),
            )),
            Some(_) => {}
            None => {
                seen.insert(var, (path, identity));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SignaturePolicy;

    fn spec(yaml: &str) -> SignaturePolicySpec {
        let policy: SignaturePolicy = serde_saphyr::from_str(yaml).unwrap();
        policy.spec
    }

    const BASE: &str = r#"
apiVersion: signet.dev/v1alpha1
kind: SignaturePolicy
metadata: {name: p}
spec:
  timeZone: Europe/Berlin
  database: {urlSecretRef: {name: db, key: url}}
  reminders:
    schedule: "*/30 * * * *"
    channels: [mail]
    sendWindow: {start: "08:00", end: "20:00", days: [Mon, Fri]}
  timeout: {after: 14d, channels: [mail]}
  channels:
    - name: mail
      smtp: {host: smtp.example.com, from: "Signet <no-reply@example.com>", to: [ops@example.com]}
"#;

    fn errors_of(yaml: &str) -> Vec<String> {
        validate(&spec(yaml))
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_sound_policy_passes() {
        assert_eq!(errors_of(BASE), Vec::<String>::new());
    }

    #[test]
    fn reports_every_problem_with_its_field() {
        let yaml = BASE
            .replace("Europe/Berlin", "Europe/berlin")
            .replace("*/30 * * * *", "*/70 * * * *")
            .replace("smtp.example.com", "smtp example.com")
            .replace("[ops@example.com]", "[ops.example.com]");
        let errors = errors_of(&yaml);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert_eq!(
            errors[0],
            "spec.timeZone: \"Europe/berlin\" is not a known IANA time zone; did you mean \"Europe/Berlin\"?"
        );
        assert_eq!(
            errors[1],
            "spec.reminders.schedule: \"*/70 * * * *\" is not a valid cron schedule: minute 70 is out of range (0-59)"
        );
        assert_eq!(
            errors[2],
            "spec.channels[0].smtp.host: \"smtp example.com\" is not a host name or IP address"
        );
        assert_eq!(
            errors[3],
            "spec.channels[0].smtp.to[0]: \"ops.example.com\" is not an email address: it has no '@'"
        );
    }

    #[test]
    fn sendgrid_endpoints_are_https_except_on_loopback() {
        let with_endpoint = |url: &str| {
            let yaml = BASE.replace(
                "smtp: {host: smtp.example.com, from: \"Signet <no-reply@example.com>\", to: [ops@example.com]}",
                &format!(
                    "sendgrid: {{apiKeySecretRef: {{name: sg, key: key}}, from: no-reply@example.com, to: [ops@example.com], endpoint: \"{url}\"}}"
                ),
            );
            assert!(yaml.contains("sendgrid:"), "{yaml}");
            errors_of(&yaml)
        };
        for fine in [
            "https://api.eu.sendgrid.com/v3/mail/send",
            "http://127.0.0.1:8080/v3/mail/send",
            "http://127.9.9.9/v3/mail/send",
            "http://[::1]:8080/v3/mail/send",
            "http://localhost:8080/v3/mail/send",
        ] {
            assert_eq!(with_endpoint(fine), Vec::<String>::new(), "{fine}");
        }
        for plain in [
            "http://api.sendgrid.com/v3/mail/send",
            "http://10.0.0.1/v3/mail/send",
            "http://127.0.0.1.example.com/v3/mail/send",
            "http://[::2]:8080/v3/mail/send",
        ] {
            assert_eq!(
                with_endpoint(plain),
                [format!(
                    "spec.channels[0].sendgrid.endpoint: {plain:?} would send the SendGrid API key unencrypted; use https:// (plain http:// is accepted only on a loopback address such as 127.0.0.1)"
                )],
                "{plain}"
            );
        }
    }

    #[test]
    fn refuses_a_bad_reply_to_and_ehlo_name() {
        let good = BASE.replace(
            "to: [ops@example.com]}",
            "to: [ops@example.com], replyTo: \"\\\"O'Brien, Pat\\\" <pat@example.com>\", helloName: mail.example.com}",
        );
        assert_eq!(errors_of(&good), Vec::<String>::new(), "{good}");
        let bad = good
            .replace("<pat@example.com>", "<pat.example.com>")
            .replace("mail.example.com}", "mail example.com}");
        assert_eq!(
            errors_of(&bad),
            [
                "spec.channels[0].smtp.helloName: \"mail example.com\" is not a host name or IP address",
                "spec.channels[0].smtp.replyTo: \"\\\"O'Brien, Pat\\\" <pat.example.com>\" is not an email address: it has no '@'",
            ]
        );
    }

    #[test]
    fn refuses_tz_in_schedule_and_unknown_zones() {
        let errors = errors_of(
            &BASE
                .replace("*/30 * * * *", "CRON_TZ=UTC */30 * * * *")
                .replace("Europe/Berlin", "Mars/Olympus"),
        );
        assert!(
            errors[0].starts_with(
                "spec.timeZone: \"Mars/Olympus\" is not a known IANA time zone; use a name"
            ),
            "{errors:?}"
        );
        assert!(
            errors[1].contains("set spec.timeZone instead"),
            "{errors:?}"
        );
    }

    #[test]
    fn refuses_bad_templates_and_plaintext_passwords() {
        let yaml = BASE.replace(
            "    channels: [mail]\n    sendWindow",
            "    channels: [mail]\n    template: {subject: \"{{ signer_name \", text: \"Hi {{ nobody }}\"}\n    sendWindow",
        ).replace("from: \"Signet", "security: none, credentialsSecretRef: {name: smtp}, from: \"Signet");
        let errors = errors_of(&yaml);
        assert!(
            errors[0]
                .starts_with("spec.reminders.template.subject: template syntax error on line 1"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("spec.reminders.template.text: uses unknown variable nobody"),
            "{errors:?}"
        );
        assert!(errors[2].starts_with("spec.channels[0].smtp.security: security: none would send the SMTP password unencrypted"), "{errors:?}");
    }

    #[test]
    fn refuses_secret_references_that_collide_as_env_vars() {
        let yaml = BASE.replace("{name: db, key: url}", "{name: a-b, key: c}").replace(
            "      smtp:",
            "      webhook: {urlSecretRef: {name: a, key: b-c}}\n    - name: other\n      smtp:",
        ).replace("channels: [mail]\n    sendWindow", "channels: [other]\n    sendWindow").replace("channels: [mail]}", "channels: [other]}");
        let errors = errors_of(&yaml);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("spec.channels[0].webhook.urlSecretRef: Secret \"a\" key \"b-c\" and Secret \"a-b\" key \"c\""), "{errors:?}");
        assert!(errors[0].contains("SIGNET_SECRET_A_B_C"), "{errors:?}");
    }

    #[test]
    fn refuses_a_send_window_the_schedule_never_reaches() {
        let held_forever = BASE.replace("*/30 * * * *", "0 7 * * *");
        let errors = errors_of(&held_forever);
        assert_eq!(
            errors,
            [
                "spec.reminders.sendWindow: the reminder schedule \"0 7 * * *\" never runs between 08:00 and 20:00 on Mon, Fri in Europe/Berlin, so every reminder would be held; widen the window or run the schedule more often"
            ]
        );
        assert_eq!(
            errors_of(&BASE.replace("*/30 * * * *", "0 8 * * 1")),
            Vec::<String>::new()
        );
        assert!(
            !errors_of(&BASE.replace("*/30 * * * *", "0 8 * * 2")).is_empty(),
            "Tuesdays only, window Mon and Fri"
        );
        let overnight = BASE.replace(
            "start: \"08:00\", end: \"20:00\"",
            "start: \"22:00\", end: \"06:00\"",
        );
        assert_eq!(
            errors_of(&overnight.replace("*/30 * * * *", "30 5 * * *")),
            Vec::<String>::new()
        );
        assert!(!errors_of(&overnight.replace("*/30 * * * *", "30 6 * * *")).is_empty());
    }

    #[test]
    fn mailbox_forms() {
        for ok in [
            "a@example.com",
            "Signet <no-reply@example.com>",
            "\"Ops, Team\" <ops@example.com>",
            "x@localhost",
        ] {
            assert_eq!(check_mailbox(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "example.com",
            "@example.com",
            "a@",
            "a b@example.com",
            "Name <a@example.com",
            "a@exa mple.com",
            "a@-x.com",
        ] {
            assert!(check_mailbox(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clock_parsing() {
        assert_eq!(parse_clock("00:00"), Some(0));
        assert_eq!(parse_clock("23:59"), Some(23 * 60 + 59));
        assert_eq!(parse_clock("24:00"), None);
        assert_eq!(parse_clock("8:00"), None);
        assert_eq!(parse_clock("08:60"), None);
        // u32's parser takes a leading '+'; a time of day does not.
        assert_eq!(parse_clock("+8:00"), None);
        assert_eq!(parse_clock("08:+5"), None);
        assert_eq!(parse_clock("+0:+0"), None);
    }

    #[test]
    fn env_var_names_follow_the_rule() {
        let secret = crate::crd::SecretKeyRef {
            name: "enrollment-db".into(),
            key: "url.v2".into(),
        };
        assert_eq!(secret.env_var(), "SIGNET_SECRET_ENROLLMENT_DB_URL_V2");
    }
}
