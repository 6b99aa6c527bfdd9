//! One email body derived from the other, so a policy that words only `text` (or only `html`)
//! sends its own words in both MIME parts: [`text_to_html`] escapes, keeps paragraphs and line
//! breaks and links URLs; [`html_to_text`] renders markup as a plain-text reader would read it.

use std::sync::OnceLock;

use regex::Regex;

/// The HTML of a plain-text body: every character escaped, blank-line-separated paragraphs as
/// `<p>`, other line breaks as `<br>`, `http(s)://` URLs as links.
pub fn text_to_html(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut html = String::new();
    let mut paragraph: Vec<&str> = Vec::new();
    for line in text.split('\n').chain(std::iter::once("")) {
        if !line.trim().is_empty() {
            paragraph.push(line);
            continue;
        }
        if paragraph.is_empty() {
            continue;
        }
        html.push_str("<p>");
        for (i, line) in paragraph.drain(..).enumerate() {
            if i > 0 {
                html.push_str("<br>\n");
            }
            html.push_str(&linkify(line));
        }
        html.push_str("</p>\n");
    }
    html
}

fn url_pattern() -> &'static Regex {
    static URL: OnceLock<Regex> = OnceLock::new();
    URL.get_or_init(|| Regex::new(r#"https?://[^\s<>"]+"#).expect("a valid pattern"))
}

/// `line` escaped, its URLs as links. Punctuation that ends a sentence is not part of the URL.
fn linkify(line: &str) -> String {
    let mut html = String::new();
    let mut at = 0;
    for found in url_pattern().find_iter(line) {
        let mut url = found.as_str();
        loop {
            let trimmed = url.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'']);
            let trimmed = match trimmed.strip_suffix(')') {
                Some(inner) if !inner.contains('(') => inner,
                _ => trimmed,
            };
            if trimmed == url {
                break;
            }
            url = trimmed;
        }
        if url.len() <= "https://".len() {
            continue;
        }
        html.push_str(&escape(&line[at..found.start()]));
        let href = escape(url);
        html.push_str(&format!("<a href=\"{href}\">{href}</a>"));
        at = found.start() + url.len();
    }
    html.push_str(&escape(&line[at..]));
    html
}

/// HTML-escapes the five characters that matter in text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The plain text of an HTML body: tags dropped, block elements as paragraphs, `<br>` as a line
/// break, list items as `- ` lines, a link as `text (url)` (just `url` when they are the same),
/// entities decoded, whitespace collapsed as a browser collapses it; `<head>`, `<style>` and
/// `<script>` contribute nothing.
pub fn html_to_text(html: &str) -> String {
    let mut out = TextWriter::default();
    let mut rest = html;
    let mut link: Option<(String, usize)> = None;
    while let Some(open) = rest.find('<') {
        out.text(&unescape(&rest[..open]));
        rest = &rest[open..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let starts_tag = rest[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if !starts_tag {
            // `3 < 4`: a `<` that opens no tag is text, as browsers read it.
            out.text("<");
            rest = &rest[1..];
            continue;
        }
        let Some(close) = rest.find('>') else {
            out.text(&unescape(rest));
            rest = "";
            break;
        };
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match (name.as_str(), closing) {
            ("head" | "style" | "script" | "title", false) => {
                let end = format!("</{name}");
                rest = find_ignoring_case(rest, &end)
                    .and_then(|at| rest[at..].find('>').map(|gt| &rest[at + gt + 1..]))
                    .unwrap_or("");
            }
            ("br", _) => out.line_break(),
            ("li", false) => {
                out.line_break();
                out.text("- ");
            }
            ("a", false) => link = href(tag).map(|h| (h, out.len())),
            ("a", true) => {
                if let Some((href, start)) = link.take() {
                    out.link_end(&href, start);
                }
            }
            (
                "p" | "div" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "table"
                | "tr" | "blockquote" | "pre" | "hr" | "section" | "article" | "header" | "footer"
                | "body" | "html",
                _,
            ) => out.paragraph_break(),
            _ => {}
        }
    }
    out.text(&unescape(rest));
    out.finish()
}

fn find_ignoring_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .to_ascii_lowercase()
        .find(&needle.to_ascii_lowercase())
}

/// The `href` of an `<a ...>` tag's inside, unescaped.
fn href(tag: &str) -> Option<String> {
    static HREF: OnceLock<Regex> = OnceLock::new();
    let pattern = HREF.get_or_init(|| {
        Regex::new(r#"(?i)\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"#).expect("valid")
    });
    let captures = pattern.captures(tag)?;
    let value = (1..=3).find_map(|i| captures.get(i))?.as_str();
    Some(unescape(value.trim()))
}

/// Decodes character references: the named ones mail templates use, and numeric ones.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest[1..]
            .find(';')
            .filter(|&end| end <= 10)
            .and_then(|end| {
                let name = &rest[1..=end];
                let c = match name {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "nbsp" => Some('\u{a0}'),
                    _ => name
                        .strip_prefix("#x")
                        .or_else(|| name.strip_prefix("#X"))
                        .map(|hex| u32::from_str_radix(hex, 16))
                        .or_else(|| name.strip_prefix('#').map(str::parse))
                        .and_then(Result::ok)
                        .and_then(char::from_u32),
                };
                c.map(|c| (c, end + 2))
            });
        match decoded {
            Some((c, consumed)) => {
                out.push(c);
                rest = &rest[consumed..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Plain text built as a browser lays out inline text: runs of whitespace are one space, and
/// breaks never pile up.
#[derive(Default)]
struct TextWriter {
    out: String,
    space: bool,
}

impl TextWriter {
    fn len(&self) -> usize {
        self.out.len()
    }

    fn text(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                self.space = !self.out.is_empty() && !self.out.ends_with('\n');
                continue;
            }
            if std::mem::take(&mut self.space) {
                self.out.push(' ');
            }
            self.out.push(if c == '\u{a0}' { ' ' } else { c });
        }
    }

    fn line_break(&mut self) {
        self.space = false;
        let trimmed = self.out.trim_end_matches(' ').len();
        self.out.truncate(trimmed);
        self.out.push('\n');
    }

    fn paragraph_break(&mut self) {
        self.space = false;
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        if !self.out.is_empty() {
            self.out.push_str("\n\n");
        }
    }

    /// Ends a link whose text started at `start`: its URL follows unless the text says it.
    fn link_end(&mut self, href: &str, start: usize) {
        let shown = self.out[start..].trim();
        let target = href.strip_prefix("mailto:").unwrap_or(href);
        if target.is_empty() || target.starts_with('#') || shown == target {
            return;
        }
        if shown.is_empty() {
            self.text(target);
        } else {
            self.text(&format!(" ({target})"));
        }
    }

    fn finish(self) -> String {
        let mut text = String::new();
        let mut blank = 0;
        for line in self.out.trim().lines() {
            let line = line.trim_end();
            blank = if line.is_empty() { blank + 1 } else { 0 };
            if blank < 2 {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_escaped_paragraphs_with_links() {
        let text = "Hello <Ada> & \"Co\",\n\nPlease sign: https://sign.example.com/x?a=1&b=2.\n\
                    Or see (https://example.com/faq), then reply.\n\n\n  \nThanks";
        assert_eq!(
            text_to_html(text),
            "<p>Hello &lt;Ada&gt; &amp; &quot;Co&quot;,</p>\n\
             <p>Please sign: <a href=\"https://sign.example.com/x?a=1&amp;b=2\">https://sign.example.com/x?a=1&amp;b=2</a>.<br>\n\
             Or see (<a href=\"https://example.com/faq\">https://example.com/faq</a>), then reply.</p>\n\
             <p>Thanks</p>\n"
        );
        assert_eq!(
            text_to_html("see https://en.wikipedia.org/wiki/Rust_(language)"),
            "<p>see <a href=\"https://en.wikipedia.org/wiki/Rust_(language)\">https://en.wikipedia.org/wiki/Rust_(language)</a></p>\n"
        );
        assert_eq!(
            text_to_html("javascript:alert(1) http:// <script>"),
            "<p>javascript:alert(1) http:// &lt;script&gt;</p>\n",
            "only http(s) URLs are links"
        );
        assert_eq!(text_to_html("\r\n\r\n"), "");
    }

    #[test]
    fn html_becomes_readable_text() {
        let html = "<html><head><title>t</title><style>p {color: red}</style></head><body>\n\
                    <p>Hello   <b>Ada</b> &amp; Co,</p>\n<p>Please <a href=\"https://sign.example.com/x?a=1&amp;b=2\">sign here</a>\
                    <br>or at <a href='https://example.com'>https://example.com</a>.</p>\
                    <ul><li>one</li><li>two&nbsp;three</li></ul><!-- <p>hidden</p> -->\
                    <script>alert(1)</script><p>&lt;not a tag&gt; &#x2F; &#47; &bogus; 3 < 4</p></body></html>";
        assert_eq!(
            html_to_text(html),
            "Hello Ada & Co,\n\n\
             Please sign here (https://sign.example.com/x?a=1&b=2)\n\
             or at https://example.com.\n\n\
             - one\n\
             - two three\n\n\
             <not a tag> / / &bogus; 3 < 4\n"
        );
        assert_eq!(html_to_text("<b>{{ x }}</b>"), "{{ x }}\n");
        assert_eq!(html_to_text(""), "");
    }

    #[test]
    fn a_derived_body_reads_back_as_the_text_it_came_from() {
        let text = "Hello Ada,\n\nSign: https://sign.example.com/x?a=1&b=2\nThanks <3\n";
        assert_eq!(html_to_text(&text_to_html(text)), text);
    }
}
