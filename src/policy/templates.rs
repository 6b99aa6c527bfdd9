//! Message templates (minijinja): the variables a template may use, the syntax check that
//! semantic validation runs on a policy's own templates, and the [`Renderer`] the workers use:
//! built-in defaults per notice kind, overridden part by part by the policy (a body the policy
//! leaves out is derived from the one it words); HTML auto-escaped.

use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use crate::crd::SignaturePolicySpec;

use super::notice::NoticeKind;
use super::{bodies, routes};

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
    check_tag_lengths(source)?;
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

/// The values a template sees (the names of [`VARIABLES`]).
#[derive(Clone, Debug, Serialize)]
pub struct TemplateContext {
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow's type.
    pub workflow_type: String,
    /// The signer's name, when known.
    pub signer_name: Option<String>,
    /// The signer's address.
    pub signer_email: String,
    /// The document's title, when known.
    pub document_title: Option<String>,
    /// Where to sign, when known.
    pub signing_url: Option<String>,
    /// When the request was made, in the signer's zone (`2026-03-29 18:00 CEST`).
    pub requested_at: String,
    /// The deadline in the signer's zone, when there is one.
    pub deadline: Option<String>,
    /// Reminder number (1 for the other kinds).
    pub reminder_number: i32,
    /// `reminders.maxReminders`.
    pub max_reminders: i32,
    /// `reminder`, `expiry_warning`, `escalation` or `timeout_alert`.
    pub kind: &'static str,
}

/// A rendered message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

const PARTS: [&str; 3] = ["subject", "text", "html"];

const DEFAULT_REMINDER: [&str; 3] = [
    "Reminder: please sign {{ document_title | default('your document', true) }}",
    "Hello {{ signer_name | default('there', true) }},\n\n\
     {{ document_title | default('A document', true) }} is still waiting for your signature.\n\
     {% if signing_url %}Sign it here: {{ signing_url }}\n{% endif %}\
     {% if deadline %}Please sign before {{ deadline }}.\n{% endif %}\n\
     (Reminder {{ reminder_number }} of {{ max_reminders }}.)\n",
    "<p>Hello {{ signer_name | default('there', true) }},</p>\n\
     <p>{{ document_title | default('A document', true) }} is still waiting for your signature.</p>\n\
     {% if signing_url %}<p><a href=\"{{ signing_url }}\">Sign it here</a></p>\n{% endif %}\
     {% if deadline %}<p>Please sign before {{ deadline }}.</p>\n{% endif %}\
     <p><small>Reminder {{ reminder_number }} of {{ max_reminders }}.</small></p>\n",
];

const DEFAULT_EXPIRY_WARNING: [&str; 3] = [
    "Last chance: {{ document_title | default('your document', true) }} expires {{ deadline }}",
    "Hello {{ signer_name | default('there', true) }},\n\n\
     {{ document_title | default('A document', true) }} expires on {{ deadline }} \
     and still needs your signature.\n\
     {% if signing_url %}Sign it here: {{ signing_url }}\n{% endif %}",
    "<p>Hello {{ signer_name | default('there', true) }},</p>\n\
     <p>{{ document_title | default('A document', true) }} expires on {{ deadline }} \
     and still needs your signature.</p>\n\
     {% if signing_url %}<p><a href=\"{{ signing_url }}\">Sign it here</a></p>\n{% endif %}",
];

const DEFAULT_ALERT: [&str; 3] = [
    "{% if kind == 'escalation' %}Still unsigned after {{ max_reminders }} reminders{% else %}Timed out{% endif %}: \
     {{ document_title | default(workflow_type, true) }} ({{ signer_email }})",
    "{% if kind == 'escalation' %}{{ signer_email }} has not signed \
     {{ document_title | default(workflow_type, true) }} after {{ max_reminders }} reminders.\
     {% else %}{{ document_title | default(workflow_type, true) }} for {{ signer_email }} timed out unsigned.{% endif %}\n\
     Workflow {{ workflow_id }} ({{ workflow_type }}), requested {{ requested_at }}\
     {% if deadline %}, deadline {{ deadline }}{% endif %}.\n",
    "<p>{% if kind == 'escalation' %}{{ signer_email }} has not signed \
     {{ document_title | default(workflow_type, true) }} after {{ max_reminders }} reminders.\
     {% else %}{{ document_title | default(workflow_type, true) }} for {{ signer_email }} timed out unsigned.{% endif %}</p>\n\
     <p>Workflow {{ workflow_id }} ({{ workflow_type }}), requested {{ requested_at }}\
     {% if deadline %}, deadline {{ deadline }}{% endif %}.</p>\n",
];

/// The built-in wording of `kind`: subject, text, html.
fn defaults(kind: NoticeKind) -> [&'static str; 3] {
    match kind {
        NoticeKind::Reminder => DEFAULT_REMINDER,
        NoticeKind::ExpiryWarning => DEFAULT_EXPIRY_WARNING,
        NoticeKind::Escalation | NoticeKind::TimeoutAlert => DEFAULT_ALERT,
    }
}

/// Renders the messages of one policy. Template names are `<kind>.<part>`; `.html` ones are
/// auto-escaped, so values from the database cannot inject markup.
#[derive(Clone)]
pub struct Renderer {
    env: Environment<'static>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

/// An environment with Signet's auto-escaping: `.html` templates are HTML-escaped.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// The built-in wording of every kind, compiled once per process and shared by every policy.
fn built_in() -> &'static Environment<'static> {
    static BUILT_IN: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    BUILT_IN.get_or_init(|| {
        let mut env = environment();
        for kind in NoticeKind::ALL {
            for (part, source) in PARTS.iter().zip(defaults(kind)) {
                env.add_template_owned(format!("{}.{part}", kind.as_str()), source)
                    .expect("the built-in templates compile (tested)");
            }
        }
        env
    })
}

impl Renderer {
    /// The policy's own templates (the built-in ones fill the parts it leaves out); the error
    /// names the broken template.
    pub fn new(spec: &SignaturePolicySpec) -> Result<Self, String> {
        let mut env = environment();
        for kind in NoticeKind::ALL {
            let Some(template) = routes::template(spec, kind) else {
                continue;
            };
            let own = [&template.subject, &template.text, &template.html];
            for (part, source) in PARTS.iter().zip(own) {
                let Some(source) = source else { continue };
                let name = format!("{}.{part}", kind.as_str());
                check_tag_lengths(source).map_err(|e| format!("template {name}: {e}"))?;
                env.add_template_owned(name.clone(), source.clone())
                    .map_err(|e| format!("template {name}: {}", describe(e)))?;
            }
        }
        Ok(Self { env })
    }

    /// Renders the message of `kind`. A policy that words only one body gets the other derived
    /// from it ([`bodies`]), so its own words are in both parts and never beside the built-in
    /// ones; the built-in bodies are used only when it words neither.
    pub fn render(&self, kind: NoticeKind, context: &TemplateContext) -> Result<Rendered, String> {
        let own = |part: &str| {
            self.env
                .get_template(&format!("{}.{part}", kind.as_str()))
                .is_ok()
        };
        let part = |part: &str| {
            let name = format!("{}.{part}", kind.as_str());
            self.env
                .get_template(&name)
                .or_else(|_| built_in().get_template(&name))
                .and_then(|t| t.render(minijinja::value::Serde(context)))
                .map_err(|e| format!("template {name}: {}", describe(e)))
        };
        let (text, html) = match (own("text"), own("html")) {
            (true, false) => {
                let text = part("text")?;
                let html = bodies::text_to_html(&text);
                (text, html)
            }
            (false, true) => {
                let html = part("html")?;
                (bodies::html_to_text(&html), html)
            }
            _ => (part("text")?, part("html")?),
        };
        Ok(Rendered {
            subject: part("subject")?.trim().replace(['\r', '\n'], " "),
            text,
            html,
        })
    }
}

/// Most characters one tag may hold outside string literals and whitespace. minijinja recurses
/// once per operator (`not not x`, `-x`, `a + b + c`, `x.a.b`, `x|f|g`) and guards only brackets
/// and blocks, so a long enough tag overflows the stack, aborting the process: about 1,000
/// levels on a 2 MiB thread in a debug build. Real tags are a few dozen characters.
const MAX_TAG_LENGTH: usize = 256;

/// Refuses a `{{ }}` or `{% %}` tag longer than [`MAX_TAG_LENGTH`] before minijinja parses it.
/// Comments and `{% raw %}` blocks are skipped as minijinja skips them; an unclosed tag runs to
/// the end of the source, as minijinja reads it.
fn check_tag_lengths(source: &str) -> Result<(), String> {
    let mut at = 0;
    while let Some(offset) = source[at..].find('{') {
        let open = at + offset;
        let body_start = open + 2;
        let close = match source.as_bytes().get(open + 1) {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            Some(b'#') => {
                at = source[body_start..]
                    .find("#}")
                    .map_or(source.len(), |end| body_start + end + 2);
                continue;
            }
            _ => {
                at = open + 1;
                continue;
            }
        };
        let body = &source[body_start..];
        let (length, end) = tag_extent(body, close);
        if length > MAX_TAG_LENGTH {
            let line = source[..open].matches('\n').count() + 1;
            return Err(format!(
                "template syntax error on line {line}: a tag may hold at most {MAX_TAG_LENGTH} \
                 characters besides string literals and spaces; split the expression with {{% set %}}"
            ));
        }
        at = body_start + end;
        let keyword = body[..end].trim_matches(|c: char| c.is_whitespace() || "-+%}".contains(c));
        if close == "%}" && keyword == "raw" {
            at = source[at..]
                .find("endraw")
                .map_or(source.len(), |end| at + end);
        }
    }
    Ok(())
}

/// The tag's length (characters outside string literals and whitespace) and where it ends in
/// `body` (after `close`, or the end of `body` when it is never closed).
fn tag_extent(body: &str, close: &str) -> (usize, usize) {
    let mut length = 0;
    let mut quote = None;
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) if c == '\\' => {
                chars.next();
            }
            Some(_) => {}
            None if body[index..].starts_with(close) => return (length, index + close.len()),
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c.is_whitespace() => {}
            None => length += 1,
        }
    }
    (length, body.len())
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
    fn refuses_tags_deep_enough_to_overflow_the_parser_stack() {
        // Each of these aborted the process with a stack overflow at a few thousand levels.
        for deep in ["not ", "-", "x + ", "x|upper", "x.a", "x[0]"] {
            let source = format!("ok\n{{{{ {} signer_name }}}}", deep.repeat(5_000));
            let err = check(&source).unwrap_err();
            assert!(
                err.starts_with("template syntax error on line 2: a tag may hold at most 256"),
                "{err}"
            );
            // Unclosed tags too: minijinja parses them before it finds the missing end.
            assert!(check(&format!("{{% set x = {}", deep.repeat(5_000))).is_err());
        }
        // String literals, comments and raw blocks are not expressions.
        let long = "a".repeat(1_000);
        check(&format!("{{{{ '{long}' ~ \"{long}\" }}}} {{# {long} #}}")).unwrap();
        check(&format!(
            "{{% raw %}}{{{{ {} }}}}{{% endraw %}}",
            "-".repeat(1_000)
        ))
        .unwrap();
        check(&format!("{{{{ {} signer_name }}}}", "not ".repeat(80))).unwrap();
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

    fn context() -> super::TemplateContext {
        super::TemplateContext {
            workflow_id: "7f1c".into(),
            workflow_type: "enrollment-agreement".into(),
            signer_name: Some("Ada <script>alert(1)</script> & Co".into()),
            signer_email: "ada@example.com".into(),
            document_title: Some("Enrollment \"2026\"".into()),
            signing_url: Some("https://sign.example.com/x?a=1&b=2".into()),
            requested_at: "2026-03-27 09:00 CET".into(),
            deadline: Some("2026-04-10 09:00 CEST".into()),
            reminder_number: 2,
            max_reminders: 3,
            kind: "reminder",
        }
    }

    fn spec(extra: &str) -> crate::crd::SignaturePolicySpec {
        let yaml = format!(
            "database: {{urlSecretRef: {{name: db, key: url}}}}\nchannels: [{{name: log, log: {{}}}}]\n{extra}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn defaults_render_every_variable_and_escape_html_only() {
        let renderer = super::Renderer::new(&spec("reminders: {channels: [log]}")).unwrap();
        let r = renderer
            .render(crate::policy::NoticeKind::Reminder, &context())
            .unwrap();
        assert_eq!(r.subject, "Reminder: please sign Enrollment \"2026\"");
        assert!(
            r.text.starts_with(
                "Hello Ada <script>alert(1)</script> & Co,\n\nEnrollment \"2026\" is still waiting"
            ),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("Sign it here: https://sign.example.com/x?a=1&b=2\n")
        );
        assert!(r.text.contains("Please sign before 2026-04-10 09:00 CEST."));
        assert!(r.text.contains("(Reminder 2 of 3.)"));
        assert!(
            r.html
                .contains("Hello Ada &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; Co"),
            "{}",
            r.html
        );
        assert!(
            r.html
                .contains("href=\"https:&#x2f;&#x2f;sign.example.com&#x2f;x?a=1&amp;b=2\""),
            "{}",
            r.html
        );
        assert!(!r.html.contains("<script>"));

        let mut bare = context();
        bare.signer_name = None;
        bare.document_title = None;
        bare.signing_url = None;
        bare.deadline = None;
        let r = renderer
            .render(crate::policy::NoticeKind::Reminder, &bare)
            .unwrap();
        assert_eq!(r.subject, "Reminder: please sign your document");
        assert!(
            r.text.starts_with("Hello there,\n\nA document is still"),
            "{}",
            r.text
        );
        assert!(!r.text.contains("Sign it here") && !r.text.contains("before"));

        let alert = renderer
            .render(
                crate::policy::NoticeKind::Escalation,
                &super::TemplateContext {
                    kind: "escalation",
                    ..context()
                },
            )
            .unwrap();
        assert_eq!(
            alert.subject,
            "Still unsigned after 3 reminders: Enrollment \"2026\" (ada@example.com)"
        );
    }

    #[test]
    fn policy_templates_override_part_by_part() {
        let renderer = super::Renderer::new(&spec(
            "reminders: {channels: [log], template: {subject: \"Sign {{ document_title }} now\\n\", html: \"<b>{{ signer_name }}</b>\"}}",
        ))
        .unwrap();
        let r = renderer
            .render(crate::policy::NoticeKind::Reminder, &context())
            .unwrap();
        assert_eq!(
            r.subject, "Sign Enrollment \"2026\" now",
            "newlines never reach a subject"
        );
        assert_eq!(
            r.html,
            "<b>Ada &lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; Co</b>"
        );
        assert_eq!(
            r.text, "Ada <script>alert(1)</script> & Co\n",
            "the text part says what the policy's html says, not the built-in wording"
        );
    }

    #[test]
    fn a_policy_text_alone_gives_both_bodies_its_words() {
        let renderer = super::Renderer::new(&spec(
            "reminders: {channels: [log]}\nexpiryWarning: {before: 1h, channels: [log], template: {text: \"Please sign {{ document_title }} at {{ signing_url }}\\n\\nThanks, {{ signer_name }}\"}}",
        ))
        .unwrap();
        let r = renderer
            .render(crate::policy::NoticeKind::ExpiryWarning, &context())
            .unwrap();
        assert_eq!(
            r.text,
            "Please sign Enrollment \"2026\" at https://sign.example.com/x?a=1&b=2\n\nThanks, Ada <script>alert(1)</script> & Co"
        );
        assert_eq!(
            r.html,
            "<p>Please sign Enrollment &quot;2026&quot; at <a href=\"https://sign.example.com/x?a=1&amp;b=2\">https://sign.example.com/x?a=1&amp;b=2</a></p>\n\
             <p>Thanks, Ada &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</p>\n"
        );
        assert!(
            r.subject.starts_with("Last chance"),
            "a part the policy leaves out, other than a body, stays built in"
        );
        // The reminder has no template: the built-in bodies, both of them.
        let reminder = renderer
            .render(crate::policy::NoticeKind::Reminder, &context())
            .unwrap();
        assert!(reminder.html.starts_with("<p>Hello Ada &lt;script"));
    }
}
