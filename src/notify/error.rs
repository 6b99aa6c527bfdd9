//! [`Error`]: why a delivery failed, classified once so that every caller agrees: permanent
//! (4xx other than 408/429, SMTP 5xx) or transient (429, 5xx, timeouts: retried); unconfirmed
//! when the provider may have accepted the message without answering; and whether it speaks
//! about the channel (every send through it will fail the same way: a revoked key, a wrong
//! URL, a failed SMTP login, an unreachable host) or about this one message.

use std::time::Duration;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The provider refused it (4xx other than 429, SMTP 5xx): retrying cannot help.
    #[error("rejected by the provider{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Rejected {
        /// HTTP status or SMTP code.
        status: Option<u16>,
        /// What the provider said.
        message: String,
    },
    /// The provider asked to slow down (429).
    #[error("rate limited by the provider{}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// How long it asked to wait.
        retry_after: Option<Duration>,
    },
    /// The provider failed (5xx, SMTP 4xx).
    #[error("the provider is unavailable{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Unavailable {
        /// HTTP status or SMTP code.
        status: Option<u16>,
        /// What it said.
        message: String,
        /// How long it asked to wait.
        retry_after: Option<Duration>,
    },
    /// No answer in time: the message may or may not have been accepted.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The connection failed before the request was sent.
    #[error("cannot reach the provider: {0}")]
    Network(String),
    /// The connection failed after the request was sent: the message may or may not have been
    /// accepted.
    #[error("the connection to the provider failed before an answer: {0}")]
    NoAnswer(String),
    /// The channel cannot work as configured (bad address, bad URL, missing secret).
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// A stable name for logs, metrics and the log table.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Rejected { .. } => "ProviderRejected",
            Error::RateLimited { .. } => "ProviderRateLimited",
            Error::Unavailable { .. } => "ProviderUnavailable",
            Error::Timeout => "ProviderTimeout",
            Error::Network(_) => "ProviderUnreachable",
            Error::NoAnswer(_) => "ProviderNoAnswer",
            Error::Config(_) => "ChannelMisconfigured",
        }
    }

    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Unavailable { .. }
                | Error::Timeout
                | Error::Network(_)
                | Error::NoAnswer(_)
        )
    }

    /// Whether the try got no answer, so the provider may have accepted the message anyway.
    pub fn is_unconfirmed(&self) -> bool {
        matches!(self, Error::Timeout | Error::NoAnswer(_))
    }

    /// Whether the failure is the channel's, not the message's: every other send through the
    /// channel would fail the same way, so the run stops using it and leaves its deliveries due.
    ///
    /// Channel-level: HTTP 401, 403, 404, 405, 407 and 410 from the provider's endpoint (the
    /// key or the URL is wrong); SMTP 530, 534 and 535 (authentication); TLS, DNS and
    /// connection failures after the in-run retries; a channel that cannot work as configured.
    /// Everything else (400, 413, 422 naming a field, SMTP 550 or 553 for a recipient, a bad
    /// address) concerns the message alone.
    pub fn rejects_channel(&self) -> bool {
        match self {
            Error::Rejected {
                status: Some(status),
                ..
            } => CHANNEL_STATUSES.contains(status),
            Error::Network(_) | Error::Config(_) => true,
            _ => false,
        }
    }

    /// The provider's HTTP status or SMTP code, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Rejected { status, .. } | Error::Unavailable { status, .. } => *status,
            Error::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// How long the provider asked to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } | Error::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Classifies an HTTP error response.
    pub fn from_status(status: u16, retry_after: Option<Duration>, body: &str) -> Self {
        let message = body.chars().take(300).collect::<String>().trim().to_owned();
        match status {
            429 => Error::RateLimited { retry_after },
            500..=599 => Error::Unavailable {
                status: Some(status),
                message,
                retry_after,
            },
            // 408 is the server giving up waiting: worth another try.
            408 => Error::Unavailable {
                status: Some(status),
                message,
                retry_after,
            },
            _ => Error::Rejected {
                status: Some(status),
                message,
            },
        }
    }

    /// Classifies a reqwest failure without a response. The message leaves out the request's
    /// URL, which for Slack and webhooks is the secret itself.
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            Error::Timeout
        } else if err.is_builder() {
            Error::Config(format!("invalid request: {}", describe_reqwest(err)))
        } else if err.is_connect() {
            Error::Network(describe_reqwest(err))
        } else {
            // Connected, then failed: the request may have reached the provider.
            Error::NoAnswer(describe_reqwest(err))
        }
    }
}

/// Answers that condemn the channel rather than the message: HTTP 401 (bad key), 403 (key
/// without the permission), 404, 405 and 410 (wrong URL), 407 (proxy authentication), and SMTP
/// 530, 534 and 535 (authentication required, mechanism too weak, credentials invalid).
const CHANNEL_STATUSES: [u16; 9] = [401, 403, 404, 405, 407, 410, 530, 534, 535];

/// A reqwest error and its causes as one line, without the request's URL: reqwest puts the
/// whole URL (path, query, credentials) into its message, and a Slack or webhook URL, or a URL
/// with a password, is a secret.
pub fn describe_reqwest(err: reqwest::Error) -> String {
    crate::error_chain(&err.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert!(!Error::from_status(400, None, "bad").is_transient());
        assert!(!Error::from_status(401, None, "").is_transient());
        assert!(!Error::from_status(404, None, "").is_transient());
        assert!(Error::from_status(408, None, "").is_transient());
        assert!(Error::from_status(429, None, "").is_transient());
        assert!(Error::from_status(500, None, "").is_transient());
        assert!(Error::from_status(503, None, "").is_transient());
        assert_eq!(
            Error::from_status(429, Some(Duration::from_secs(3)), "").retry_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            Error::from_status(400, None, "").reason(),
            "ProviderRejected"
        );
        assert!(Error::Timeout.is_transient() && !Error::Config("x".into()).is_transient());
    }

    #[test]
    fn failures_are_the_channels_or_the_messages() {
        for status in [401, 403, 404, 405, 407, 410] {
            let err = Error::from_status(status, None, "");
            assert!(err.rejects_channel(), "{status}");
            assert_eq!(err.status(), Some(status));
        }
        for status in [400, 409, 413, 422, 429, 500, 503] {
            assert!(
                !Error::from_status(status, None, "").rejects_channel(),
                "{status}"
            );
        }
        let smtp = |status| Error::Rejected {
            status: Some(status),
            message: String::new(),
        };
        for status in [530, 534, 535] {
            assert!(smtp(status).rejects_channel(), "{status}");
        }
        for status in [550, 553, 554] {
            assert!(!smtp(status).rejects_channel(), "{status}");
        }
        assert!(Error::Network("connection refused".into()).rejects_channel());
        assert!(Error::Config("no `to`".into()).rejects_channel());
        let bad_address = Error::Rejected {
            status: None,
            message: "not an email address".into(),
        };
        for row in [Error::Timeout, Error::NoAnswer("reset".into()), bad_address] {
            assert!(!row.rejects_channel(), "{row:?}");
        }
    }
}
