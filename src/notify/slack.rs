//! Slack incoming webhooks: ONE digest message per run (Slack allows about one message a second
//! per webhook): the count by kind, then the first ten notifications.

use futures::future::BoxFuture;
use serde_json::json;

use super::{Digest, DigestChannel, Error, Message, Receipt, send_http};

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
        Self::text(&Digest::from_messages(messages))
    }

    /// The text of a digest: the count by kind, then the sample, then how many more.
    pub fn text(digest: &Digest) -> String {
        let counts: Vec<String> = digest
            .by_kind
            .iter()
            .map(|(kind, n)| format!("{n} {}", kind.as_str().replace('_', " ")))
            .collect();
        let mut text = format!(
            "Signet: {} notification{} ({})",
            digest.total,
            if digest.total == 1 { "" } else { "s" },
            counts.join(", ")
        );
        for m in digest.sample.iter().take(DIGEST_ITEMS) {
            let title = m.document_title.as_deref().unwrap_or(&m.workflow_type);
            text.push_str(&format!(
                "\n• {}{}: {} – {} ({})",
                m.kind.as_str().replace('_', " "),
                if m.kind == crate::policy::NoticeKind::Reminder {
                    format!(" {}", m.sequence)
                } else {
                    String::new()
                },
                escape(title),
                escape(&m.signer_email),
                m.workflow_id
            ));
        }
        let listed = digest.sample.len().min(DIGEST_ITEMS);
        if digest.total > listed {
            text.push_str(&format!("\n…and {} more", digest.total - listed));
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

impl DigestChannel for Slack {
    fn send<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Receipt, Error>> {
        Box::pin(self.post(digest))
    }
}

impl Slack {
    async fn post(&self, digest: &Digest) -> Result<Receipt, Error> {
        if digest.total == 0 {
            return Ok(Receipt::default());
        }
        let request = self
            .http
            .post(&self.url)
            .json(&json!({"text": Self::text(digest)}));
        send_http(request).await?;
        Ok(Receipt::default())
    }
}
