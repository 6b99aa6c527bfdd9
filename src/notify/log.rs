//! The log channel: one JSON line per notification on the worker's standard output (for trials
//! and audits); the run's summary line follows them on the same stream.

use std::io::Write;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::json;

use super::{Error, Message, MessageChannel, Receipt};

/// Where log lines go, shared with the run's summary.
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Standard output as a [`SharedWriter`].
pub fn stdout() -> SharedWriter {
    Arc::new(Mutex::new(Box::new(std::io::stdout())))
}

/// A log channel.
pub struct Log {
    name: String,
    out: SharedWriter,
}

impl Log {
    /// Writes to `out` as channel `name`.
    pub fn new(name: &str, out: SharedWriter) -> Self {
        Self {
            name: name.to_owned(),
            out,
        }
    }
}

impl MessageChannel for Log {
    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<Receipt, Error>> {
        Box::pin(async move {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let line = json!({
                "channel": self.name,
                "notification": message,
                "subject": message.content.subject,
            });
            writeln!(out, "{line}").map_err(|e| Error::Network(format!("stdout: {e}")))?;
            out.flush()
                .map_err(|e| Error::Network(format!("stdout: {e}")))?;
            Ok(Receipt::default())
        })
    }
}
