//! Slack incoming webhooks: ONE digest message per run (Slack allows about one message a second
//! per webhook), as Block Kit (a header, a section per listed notification, a context line with
//! the counts and "…and N more") with the same digest as the `text` notifications show.
//!
//! Bounded by Slack's documented limits, so nothing is cut and the closing "…and N more" always
//! arrives:
//! - `text`: Slack truncates past 40,000 characters and asks for at most 4,000
//!   (<https://docs.slack.dev/reference/methods/chat.postMessage#truncating>); the digest keeps
//!   to [`TEXT_LIMIT`] = 4,000, counted in UTF-16 units (never fewer than characters);
//! - blocks: at most 50 per message (<https://docs.slack.dev/reference/block-kit/blocks>), a
//!   header's text at most 150 characters
//!   (<https://docs.slack.dev/reference/block-kit/blocks/header-block>), a section's text at most
//!   3,000 (<https://docs.slack.dev/reference/block-kit/blocks/section-block>), at most 10
//!   elements in a context block
//!   (<https://docs.slack.dev/reference/block-kit/blocks/context-block>). The sections list what
//!   `text` lists, so the blocks stay near 4,000 characters too, well below the ~13,000 at which
//!   Slack has been seen to answer `msg_blocks_too_long`
//!   (<https://github.com/slackapi/bolt-js/issues/2509>).
//!
//! Values from the database are escaped for mrkdwn ([`escape`]).

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{Digest, DigestChannel, Error, Message, Receipt, send_http};
use crate::policy::NoticeKind;

/// Notifications listed in a digest at most; the rest are counted.
pub const DIGEST_ITEMS: usize = 10;
/// Most UTF-16 units of a digest's `text` (Slack's recommended maximum).
pub const TEXT_LIMIT: usize = 4_000;
/// Most characters of a header block's text.
pub const HEADER_LIMIT: usize = 150;
/// Most characters of a section block's text.
pub const SECTION_LIMIT: usize = 3_000;
/// Most blocks in a message.
pub const BLOCK_LIMIT: usize = 50;
/// Characters of a document title shown before it is cut with "…".
const TITLE_CHARS: usize = 200;
/// Characters of an address shown (a valid one is at most 254).
const ADDRESS_CHARS: usize = 254;

/// A Slack channel.
pub struct Slack {
    url: String,
    http: reqwest::Client,
}

/// Slack's length of `text`: UTF-16 units, which is at least its characters.
pub fn slack_len(text: &str) -> usize {
    text.encode_utf16().count()
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

    /// The text of a digest: the count by kind, then as many of the sample as fit, then how
    /// many more.
    pub fn text(digest: &Digest) -> String {
        Layout::of(digest).text()
    }

    /// The webhook payload: Block Kit blocks, and `text` for notifications and old clients.
    pub fn payload(digest: &Digest) -> Value {
        let layout = Layout::of(digest);
        let mut blocks = vec![json!({
            "type": "header",
            "text": {"type": "plain_text", "text": layout.title(), "emoji": false},
        })];
        blocks.extend(
            layout
                .items
                .iter()
                .map(|item| json!({"type": "section", "text": {"type": "mrkdwn", "text": item}})),
        );
        let mut context = layout.counts.clone();
        if let Some(more) = layout.more() {
            context.push_str(&format!(" · {more}"));
        }
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": context}],
        }));
        json!({"text": layout.text(), "blocks": blocks})
    }
}

/// What a digest shows, fitted to the limits.
struct Layout {
    total: usize,
    /// `3 timeout alerts, 1 escalation`.
    counts: String,
    /// The listed notifications, escaped, one line each.
    items: Vec<String>,
}

impl Layout {
    fn of(digest: &Digest) -> Self {
        let counts = digest
            .by_kind
            .iter()
            .map(|(kind, n)| counted(*n, kind_name(*kind)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut layout = Self {
            total: digest.total,
            counts,
            items: Vec::new(),
        };
        // Room for the widest "…and N more" the digest could end with, so it always fits.
        let reserved = slack_len(&format!("\n…and {} more", digest.total));
        let mut used = slack_len(&layout.head()) + reserved;
        for message in digest.sample.iter().take(DIGEST_ITEMS.min(BLOCK_LIMIT - 2)) {
            let item = item(message);
            let cost = slack_len(&item) + "\n• ".len();
            if used + cost > TEXT_LIMIT {
                break;
            }
            used += cost;
            layout.items.push(item);
        }
        layout
    }

    fn title(&self) -> String {
        format!(
            "Signet: {}",
            counted(self.total, ("notification", "notifications"))
        )
    }

    fn head(&self) -> String {
        format!("{} ({})", self.title(), self.counts)
    }

    fn more(&self) -> Option<String> {
        let more = self.total.saturating_sub(self.items.len());
        (more > 0).then(|| format!("…and {more} more"))
    }

    fn text(&self) -> String {
        let mut text = self.head();
        for item in &self.items {
            text.push_str("\n• ");
            text.push_str(item);
        }
        if let Some(more) = self.more() {
            text.push('\n');
            text.push_str(&more);
        }
        text
    }
}

/// `1 timeout alert`, `15 timeout alerts`.
fn counted(n: usize, (one, many): (&str, &str)) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A kind's name, singular and plural.
fn kind_name(kind: NoticeKind) -> (&'static str, &'static str) {
    match kind {
        NoticeKind::Reminder => ("reminder", "reminders"),
        NoticeKind::ExpiryWarning => ("expiry warning", "expiry warnings"),
        NoticeKind::Escalation => ("escalation", "escalations"),
        NoticeKind::TimeoutAlert => ("timeout alert", "timeout alerts"),
    }
}

/// One listed notification: `timeout alert: <title> – <signer> (<workflow id>)`, escaped.
fn item(m: &Message) -> String {
    let title = m.document_title.as_deref().unwrap_or(&m.workflow_type);
    format!(
        "{}{}: {} – {} ({})",
        kind_name(m.kind).0,
        if m.kind == NoticeKind::Reminder {
            format!(" {}", m.sequence)
        } else {
            String::new()
        },
        escape(&cut(title, TITLE_CHARS)),
        escape(&cut(&m.signer_email, ADDRESS_CHARS)),
        m.workflow_id
    )
}

/// `text` cut to `chars` characters, ending in "…" when it was longer.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Zero-width space, which Slack shows as nothing.
const ZWSP: char = '\u{200b}';

/// A value from the database as literal mrkdwn. `&`, `<` and `>` are Slack's control
/// characters and become `&amp;`, `&lt;` and `&gt;`, as Slack's formatting guide requires
/// (<https://docs.slack.dev/messaging/formatting-message-text#escaping>). mrkdwn has no escape for
/// `*`, `_`, `~` and `` ` `` (a backslash shows as itself), so each is enclosed in zero-width
/// spaces: a delimiter must touch a word on one side and a space or the line's edge on the other,
/// and with an invisible character on both sides it does neither, while the character itself
/// still shows and copies. Line breaks and other control characters become spaces, so a value
/// stays on its line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '*' | '_' | '~' | '`' => {
                out.push(ZWSP);
                out.push(c);
                out.push(ZWSP);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
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
        let request = self.http.post(&self.url).json(&Self::payload(digest));
        send_http(request).await?;
        Ok(Receipt::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(id: i64, title: &str) -> Message {
        let mut m = Message::for_test(id, NoticeKind::TimeoutAlert);
        m.document_title = Some(title.to_owned());
        m
    }

    /// Every limit of the module's doc comment, checked on a payload.
    fn assert_within_limits(payload: &Value) {
        let text = payload["text"].as_str().unwrap();
        assert!(slack_len(text) <= TEXT_LIMIT, "text of {}", slack_len(text));
        let blocks = payload["blocks"].as_array().unwrap();
        assert!(blocks.len() <= BLOCK_LIMIT);
        let mut total = 0;
        for block in blocks {
            match block["type"].as_str().unwrap() {
                "header" => {
                    let header = block["text"]["text"].as_str().unwrap();
                    assert!(header.chars().count() <= HEADER_LIMIT);
                    total += slack_len(header);
                }
                "section" => {
                    let section = block["text"]["text"].as_str().unwrap();
                    assert!(slack_len(section) <= SECTION_LIMIT);
                    total += slack_len(section);
                }
                "context" => {
                    let elements = block["elements"].as_array().unwrap();
                    assert!(elements.len() <= 10);
                    total += elements
                        .iter()
                        .map(|e| slack_len(e["text"].as_str().unwrap()))
                        .sum::<usize>();
                }
                other => panic!("unexpected block {other}"),
            }
        }
        assert!(total <= TEXT_LIMIT + 200, "blocks hold {total}");
    }

    #[test]
    fn plurals_and_counts() {
        let one = Digest::from_messages(&[alert(1, "NDA")]);
        let text = Slack::text(&one);
        assert!(
            text.starts_with("Signet: 1 notification (1 timeout alert)\n• timeout alert: NDA"),
            "{text}"
        );
        let mut many: Vec<Message> = (0..15).map(|i| alert(i, "NDA")).collect();
        many.push(Message::for_test(99, NoticeKind::Escalation));
        let text = Slack::text(&Digest::from_messages(&many));
        assert!(
            text.starts_with("Signet: 16 notifications (1 escalation, 15 timeout alerts)"),
            "{text}"
        );
        assert!(text.ends_with("\n…and 6 more"), "{text}");
    }

    #[test]
    fn titles_arrive_as_literal_text() {
        let digest = Digest::from_messages(&[alert(
            1,
            "*Q3* _draft_ ~old~ `v2` <@U123> & <!channel>\nBcc",
        )]);
        let text = Slack::text(&digest);
        let z = ZWSP;
        let expected = format!(
            "{z}*{z}Q3{z}*{z} {z}_{z}draft{z}_{z} {z}~{z}old{z}~{z} {z}`{z}v2{z}`{z} &lt;@U123&gt; &amp; &lt;!channel&gt; Bcc"
        );
        assert!(text.contains(&expected), "{text:?}");
        assert_eq!(
            text.replace(ZWSP, "").lines().nth(1).unwrap(),
            "• timeout alert: *Q3* _draft_ ~old~ `v2` &lt;@U123&gt; &amp; &lt;!channel&gt; Bcc – a@example.com (00000000-0000-0000-0000-000000000000)",
            "only the invisible guards are added"
        );
    }

    #[test]
    fn a_digest_of_500_timeouts_with_4kb_titles_stays_within_slacks_limits() {
        // The run keeps only the first DIGEST_ITEMS in full; the rest are counted.
        let mut digest = Digest::default();
        for id in 0..500 {
            let title = format!("{id} ") + &"*&_<".repeat(1024);
            let listed = digest.wants_sample().then(|| alert(id, &title));
            digest.add(NoticeKind::TimeoutAlert, listed);
        }
        let payload = Slack::payload(&digest);
        assert_within_limits(&payload);
        let text = payload["text"].as_str().unwrap();
        let listed = text.matches("\n• timeout alert: ").count();
        assert!(listed >= 1, "{text}");
        assert!(
            text.starts_with("Signet: 500 notifications (500 timeout alerts)\n• timeout alert: 0 "),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("\n…and {} more", 500 - listed)),
            "{text}"
        );
        let blocks = payload["blocks"].as_array().unwrap();
        assert_eq!(
            blocks.len(),
            listed + 2,
            "header, one section per listed item, context"
        );
        assert_eq!(
            blocks.last().unwrap()["elements"][0]["text"],
            format!("500 timeout alerts · …and {} more", 500 - listed)
        );
    }

    #[test]
    fn the_closing_count_fits_whatever_the_items_fill() {
        // Titles of every length up to the cut, with every digest size's count: some of them
        // fill the text to just under the limit before "…and N more" is added.
        for chars in 0..=TITLE_CHARS {
            for total in [11, 99_999] {
                let mut digest = Digest::default();
                for id in 0..total {
                    let listed = digest.wants_sample().then(|| alert(id, &"&".repeat(chars)));
                    digest.add(NoticeKind::TimeoutAlert, listed);
                }
                let payload = Slack::payload(&digest);
                assert_within_limits(&payload);
                let text = payload["text"].as_str().unwrap();
                let listed = text.matches("\n• timeout alert: ").count();
                assert!(
                    text.ends_with(&format!("\n…and {} more", total as usize - listed)),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn long_plain_titles_are_cut_and_ten_are_listed() {
        let messages: Vec<Message> = (0..500).map(|i| alert(i, &"x".repeat(4096))).collect();
        let payload = Slack::payload(&Digest::from_messages(&messages));
        assert_within_limits(&payload);
        let text = payload["text"].as_str().unwrap();
        assert_eq!(text.matches("\n• timeout alert: ").count(), DIGEST_ITEMS);
        assert!(text.contains(&format!("{}… – a@example.com", "x".repeat(200))));
        assert!(text.ends_with("\n…and 490 more"), "{text}");
    }
}
