//! The container's termination message: the run's summary line, cut down to what Kubernetes
//! keeps (4096 bytes) without ever becoming invalid JSON.

use std::path::Path;

use serde_json::{Map, Value};

use super::ReportError;

/// Where Kubernetes looks for a container's termination message unless the pod says otherwise.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Kubernetes keeps at most this many bytes of a termination message.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;

/// The termination message for `summary`: its JSON line when it fits in
/// [`MAX_TERMINATION_MESSAGE`] bytes, else a reduced object that does (scalar fields only,
/// strings shortened at a character boundary, `"truncated": true`). Always one valid JSON line.
pub fn termination_message(summary: &Value) -> String {
    let line = format!("{summary}\n");
    if line.len() <= MAX_TERMINATION_MESSAGE {
        return line;
    }
    let empty = Map::new();
    let fields = summary.as_object().unwrap_or(&empty);
    for limit in [1024, 256, 64] {
        let mut reduced = Map::new();
        for (key, value) in fields {
            let kept = match value {
                Value::String(s) => Value::String(truncate(s, limit)),
                Value::Array(_) | Value::Object(_) => continue,
                scalar => scalar.clone(),
            };
            reduced.insert(truncate(key, limit), kept);
        }
        reduced.insert("truncated".into(), Value::Bool(true));
        let line = format!("{}\n", Value::Object(reduced));
        if line.len() <= MAX_TERMINATION_MESSAGE {
            return line;
        }
    }
    // Thousands of fields: keep what a person looks at first.
    let mut minimal = Map::new();
    if let Some(Value::String(outcome)) = fields.get("outcome") {
        minimal.insert("outcome".into(), Value::String(truncate(outcome, 64)));
    }
    minimal.insert("truncated".into(), Value::Bool(true));
    format!("{}\n", Value::Object(minimal))
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Writes [`termination_message`] of `summary` to `path`, replacing what is there.
pub fn write_termination_message(path: &Path, summary: &Value) -> Result<(), ReportError> {
    std::fs::write(path, termination_message(summary)).map_err(|error| {
        ReportError::TerminationMessage {
            path: path.to_owned(),
            error,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_summaries_are_written_whole() {
        let summary = serde_json::json!({"outcome": "Succeeded", "due": 3, "sent": 3});
        let message = termination_message(&summary);
        assert_eq!(message, format!("{summary}\n"));
    }

    #[test]
    fn truncation_cuts_at_a_character_boundary() {
        assert_eq!(truncate("abc", 3), "abc");
        // "é" is two bytes; a cut inside it moves back.
        let cut = truncate("aaééé", 6);
        assert!(cut.len() <= 6, "{cut}");
        assert_eq!(cut, "aa…");
    }
}
