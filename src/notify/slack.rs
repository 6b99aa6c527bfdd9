//! Slack incoming webhooks: ONE digest message per run (Slack allows about one message a second
//! per webhook): the count by kind, then the first ten notifications.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::json;

use super::{Channel, Error, Message, Receipt, send_http};

/// Notifications listed in a digest; the rest are counted.
pub const DIGEST_ITEMS: usize = 10;

/// A Slack channel.
pub struct Slack {
    url: String,
    http: reqwest::Client,
}

impl Slack {
    /// Posts to the incoming webhook `url`.
    pub fn new(url: String, http: reqwest::Client) -> Self {
        Self { url, http }
    }

    /// The digest text for `messages`.
    pub fn digest(messages: &[Message]) -> String {
        let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for m in messages {
            *by_kind.entry(m.kind.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = by_kind
            .iter()
            .map(|(kind, n)| format!("{n} {}", kind.replace('_', " ")))
            .collect();
        let mut text = format!(
            "Signet: {} notification{} ({})",
            messages.len(),
            if messages.len() == 1 { "" } else { "s" },
            counts.join(", ")
        );
        for m in messages.iter().take(DIGEST_ITEMS) {
            let title = m.document_title.as_deref().unwrap_or(&m.workflow_type);
            text.push_str(&format!(
                "\n• {}{}: {} – {} ({})",
                m.kind.as_str().replace('_', " "),
                if m.kind == crate::store::NoticeKind::Reminder {
                    format!(" {}", m.sequence)
                } else {
                    String::new()
                },
                escape(title),
                escape(&m.signer_email),
                m.workflow_id
            ));
        }
        if messages.len() > DIGEST_ITEMS {
            text.push_str(&format!("\n…and {} more", messages.len() - DIGEST_ITEMS));
        }
        text
    }
}

/// Slack's three control characters in message text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Channel for Slack {
    fn is_digest(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Result<Receipt, Error>> {
        Box::pin(async move {
            if messages.is_empty() {
                return Ok(Receipt::default());
            }
            let request = self
                .http
                .post(&self.url)
                .json(&json!({"text": Self::digest(messages)}));
            send_http(request).await?;
            Ok(Receipt::default())
        })
    }
}
