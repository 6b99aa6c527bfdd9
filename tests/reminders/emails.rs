//! What an email recipient gets, parsed as a mail client parses it: the policy's own words in
//! both MIME parts (never the built-in wording beside them), the automated-mail headers, quoted
//! display names intact, Reply-To and the EHLO name; and the same for SendGrid's request.

use mail_parser::{MessagePart, MimeHeaders};

use super::*;

async fn sqlite_harness() -> Harness {
    Harness::new(Backend::Sqlite).await.unwrap()
}

/// Reminders worded in `text` only, expiry warnings in `html` only, both through `channel`.
fn worded_policy(h: &Harness, channel: &str) -> signet::crd::SignaturePolicySpec {
    h.policy(&format!(
        r#"  timeout: {{after: 14d}}
  reminders:
    channels: [{channel}]
    template:
      text: "Dear {{{{ signer_name }}}},\n\nplease sign {{{{ document_title }}}} at {{{{ signing_url }}}}.\n\nThe enrollment office"
  expiryWarning:
    before: 48h
    channels: [{channel}]
    template:
      html: "<p>Dear {{{{ signer_name }}}},</p><p>{{{{ document_title }}}} <b>expires</b> soon: <a href=\"{{{{ signing_url }}}}\">sign now</a></p>"
"#
    ))
}

/// Words of the built-in reminder and warning bodies that a worded policy must never carry.
const BUILT_IN_WORDS: [&str; 4] = [
    "is still waiting for your signature",
    "still needs your signature",
    "Hello",
    "Sign it here",
];

/// A signer due for a reminder and an expiry warning in the same run, with a name that needs
/// quoting in a header.
fn quoted_signer() -> Seed {
    let mut s = Seed::pending(25.0 * HOUR);
    s.signer_name = Some("O\"Brien, Pat".into());
    s.deadline_in = Some(40.0 * HOUR);
    s
}

fn part<'a>(mail: &'a mail_parser::Message<'a>, mime: &str) -> &'a str {
    let parts: Vec<&MessagePart> = mail
        .parts
        .iter()
        .filter(|p| {
            p.content_type()
                .is_some_and(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")) == mime)
        })
        .collect();
    assert_eq!(parts.len(), 1, "one {mime} part");
    parts[0].text_contents().expect("a text part")
}

#[tokio::test]
async fn smtp_mail_carries_the_policys_words_in_both_parts_and_automated_headers() {
    let h = sqlite_harness().await;
    let spec = worded_policy(&h, "smtp");
    let s = quoted_signer();
    h.seed(std::slice::from_ref(&s)).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (2, 2, 0, 0), "{run:?}");
    let mails = h.smtp.mails();
    assert_eq!(mails.len(), 2);
    let url = format!("https://sign.example.com/{}", s.id);
    for mail in &mails {
        assert_eq!(
            mail.hello, "example.com",
            "EHLO defaults to the sender's domain"
        );
        let parsed = mail.parsed();
        assert_eq!(
            parsed.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-generated")
        );
        assert_eq!(
            parsed.header_raw("X-Auto-Response-Suppress").map(str::trim),
            Some("All")
        );
        let to = parsed.to().and_then(|a| a.first()).expect("a To address");
        assert_eq!(
            (to.name(), to.address()),
            (Some("O\"Brien, Pat"), Some(s.signer_email.as_str())),
            "the quoted name arrives intact"
        );
        let reply_to = parsed.reply_to().and_then(|a| a.first()).expect("Reply-To");
        assert_eq!(
            (reply_to.name(), reply_to.address()),
            (Some("Enrollment, Help"), Some("help@example.com"))
        );
        let (text, html) = (part(&parsed, "text/plain"), part(&parsed, "text/html"));
        for word in BUILT_IN_WORDS {
            assert!(
                !text.contains(word) && !html.contains(word),
                "built-in wording {word:?} beside the policy's:\n{text}\n{html}"
            );
        }
        if parsed.subject().unwrap().starts_with("Reminder") {
            assert_eq!(
                text.replace("\r\n", "\n"),
                format!(
                    "Dear O\"Brien, Pat,\n\nplease sign Enrollment agreement at {url}.\n\nThe enrollment office"
                )
            );
            assert_eq!(
                html.replace("\r\n", "\n"),
                format!(
                    "<p>Dear O&quot;Brien, Pat,</p>\n<p>please sign Enrollment agreement at <a href=\"{url}\">{url}</a>.</p>\n<p>The enrollment office</p>\n"
                ),
                "the HTML part is derived from the policy's text"
            );
        } else {
            assert!(
                html.contains("<b>expires</b> soon"),
                "the policy's own html: {html}"
            );
            assert_eq!(
                text.replace("\r\n", "\n"),
                format!(
                    "Dear O\"Brien, Pat,\n\nEnrollment agreement expires soon: sign now ({url})\n"
                ),
                "the text part is derived from the policy's html"
            );
        }
    }

    // A configured EHLO name is the one given.
    let mut spec = spec;
    let smtp = spec.channels.iter_mut().find(|c| c.name == "smtp").unwrap();
    smtp.smtp.as_mut().unwrap().hello_name = Some("mailer.example.org".into());
    h.seed(&[quoted_signer()]).await;
    assert_eq!(h.run(&spec).await.deliveries.sent, 2);
    assert_eq!(h.smtp.mails().last().unwrap().hello, "mailer.example.org");
}

#[tokio::test]
async fn sendgrid_requests_carry_the_same_words_headers_and_quoted_names() {
    let h = sqlite_harness().await;
    let spec = worded_policy(&h, "mail");
    let s = quoted_signer();
    h.seed(std::slice::from_ref(&s)).await;
    let run = h.run(&spec).await;
    assert_eq!(counts(&run), (2, 2, 0, 0), "{run:?}");
    let requests = h.http.requests();
    assert_eq!(requests.len(), 2);
    let url = format!("https://sign.example.com/{}", s.id);
    for request in &requests {
        let body = request.json();
        assert_eq!(
            body["headers"],
            serde_json::json!({"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"})
        );
        assert_eq!(
            body["personalizations"][0]["to"],
            serde_json::json!([{"email": s.signer_email, "name": "\"O\\\"Brien, Pat\""}]),
            "a name with a comma goes as a quoted-string"
        );
        assert_eq!(
            body["reply_to"],
            serde_json::json!({"email": "help@example.com", "name": "\"Enrollment, Help\""})
        );
        let text = body["content"][0]["value"].as_str().unwrap();
        let html = body["content"][1]["value"].as_str().unwrap();
        for word in BUILT_IN_WORDS {
            assert!(
                !text.contains(word) && !html.contains(word),
                "built-in wording {word:?} beside the policy's:\n{text}\n{html}"
            );
        }
        if body["subject"].as_str().unwrap().starts_with("Reminder") {
            assert!(
                text.starts_with("Dear O\"Brien, Pat,\n\nplease sign"),
                "{text}"
            );
            assert!(
                html.contains(&format!("<a href=\"{url}\">{url}</a>")),
                "{html}"
            );
        } else {
            assert!(html.contains("<b>expires</b> soon"), "{html}");
            assert!(text.ends_with(&format!("sign now ({url})\n")), "{text}");
        }
    }
}
