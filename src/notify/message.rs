//! [`Message`]: one delivery, rendered, as a message channel sends it; and the mailbox helpers
//! the email providers share.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::policy::NoticeKind;
use crate::policy::templates::Rendered;

/// One delivery, rendered: what a channel sends.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `signature_reminder_log.id`.
    #[serde(skip)]
    pub log_id: i64,
    /// Reminder, expiry warning, escalation or timeout alert.
    pub kind: NoticeKind,
    /// Reminder number, 1 for the others.
    pub sequence: i32,
    /// The workflow's id.
    pub workflow_id: Uuid,
    /// The workflow's type.
    pub workflow_type: String,
    /// The signer's address.
    pub signer_email: String,
    /// The signer's name.
    pub signer_name: Option<String>,
    /// The document's title.
    pub document_title: Option<String>,
    /// Where to sign.
    pub signing_url: Option<String>,
    /// The workflow's deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// Stable across retries.
    pub idempotency_key: String,
    /// Subject and bodies.
    #[serde(skip)]
    pub content: Rendered,
}

impl Message {
    /// Where an email goes: the signer for signer notices, the channel's list for alerts.
    pub fn email_recipients(&self, alert_to: &[String]) -> Vec<String> {
        if self.kind.is_for_signer() {
            vec![self.signer_email.clone()]
        } else {
            alert_to.to_vec()
        }
    }
}

/// Headers every email carries: it is automated mail (RFC 3834), so auto-responders and
/// out-of-office replies stay quiet (`X-Auto-Response-Suppress` is Exchange's equivalent).
pub const AUTOMATED_MAIL_HEADERS: [(&str, &str); 2] = [
    ("Auto-Submitted", "auto-generated"),
    ("X-Auto-Response-Suppress", "All"),
];

/// Splits `Name <address>` into its parts (`address` alone has no name). A quoted name
/// (`"O\"Brien, Pat" <pat@example.com>`) is unquoted: `O"Brien, Pat`.
pub fn split_mailbox(mailbox: &str) -> (Option<String>, String) {
    let mailbox = mailbox.trim();
    match mailbox.rsplit_once('<') {
        Some((name, rest)) => {
            let name = name.trim();
            let name = match name
                .strip_prefix('"')
                .and_then(|quoted| quoted.strip_suffix('"'))
            {
                Some(quoted) => unquote(quoted),
                None => name.to_owned(),
            };
            let name = display_name(&name);
            (
                (!name.is_empty()).then_some(name),
                rest.trim_end_matches('>').trim().to_owned(),
            )
        }
        None => (None, mailbox.to_owned()),
    }
}

/// The inside of an RFC 5322 quoted-string: `\x` is `x`.
fn unquote(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// A display name fit for a header: control characters (a line break from a database row)
/// become spaces, and surrounding space goes.
pub fn display_name(name: &str) -> String {
    name.replace(|c: char| c.is_control(), " ")
        .trim()
        .to_owned()
}

#[cfg(test)]
impl Message {
    /// A message with `log_id` and `kind` and placeholder fields, for unit tests.
    pub(crate) fn for_test(log_id: i64, kind: NoticeKind) -> Self {
        Message {
            log_id,
            kind,
            sequence: 1,
            workflow_id: Uuid::nil(),
            workflow_type: "nda".into(),
            signer_email: "a@example.com".into(),
            signer_name: None,
            document_title: None,
            signing_url: None,
            deadline: None,
            idempotency_key: format!("k{log_id}"),
            content: Rendered::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_split() {
        assert_eq!(
            split_mailbox("Enrollment <no-reply@example.com>"),
            (Some("Enrollment".into()), "no-reply@example.com".into())
        );
        assert_eq!(
            split_mailbox("\"Ops, Team\" <ops@example.com>"),
            (Some("Ops, Team".into()), "ops@example.com".into())
        );
        assert_eq!(
            split_mailbox(r#""O\"Brien, Pat \\ Co" <pat@example.com>"#),
            (
                Some(r#"O"Brien, Pat \ Co"#.into()),
                "pat@example.com".into()
            )
        );
        assert_eq!(
            split_mailbox("Ops\r\nBcc: x <ops@example.com>"),
            (Some("Ops  Bcc: x".into()), "ops@example.com".into())
        );
        assert_eq!(
            split_mailbox("a@example.com"),
            (None, "a@example.com".into())
        );
    }
}
