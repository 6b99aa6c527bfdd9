//! Delivering notifications: one [`Channel`] trait over SendGrid, SMTP, Slack, webhooks and the
//! log; errors split into permanent (4xx: that row only) and transient (429, 5xx, timeouts:
//! retried with capped, jittered exponential backoff honouring `Retry-After`). Secrets come only
//! from the `SecretKeyRef::env_var()` environment variables.

pub mod log;
pub mod sendgrid;
pub mod slack;
pub mod smtp;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use crate::crd::{ChannelKind, SecretKeyRef, SignaturePolicySpec};
use crate::policy::NoticeKind;
use crate::policy::templates::Rendered;

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

/// A reqwest error and its causes as one line, without the request's URL: reqwest puts the
/// whole URL (path, query, credentials) into its message, and a Slack or webhook URL, or a URL
/// with a password, is a secret.
pub fn describe_reqwest(err: reqwest::Error) -> String {
    crate::error_chain(&err.without_url())
}

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

/// What a digest channel sends for a run: how many notifications by kind, and the first few in
/// full. Kept compact so a run with 100,000 alerts does not hold 100,000 rendered messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Digest {
    /// Notifications in the digest.
    pub total: usize,
    /// Notifications by kind.
    pub by_kind: BTreeMap<NoticeKind, usize>,
    /// The first [`slack::DIGEST_ITEMS`] notifications.
    pub sample: Vec<Message>,
}

impl Digest {
    /// Whether the next notification added is listed (it needs a rendered [`Message`]) or only
    /// counted.
    pub fn wants_sample(&self) -> bool {
        self.sample.len() < slack::DIGEST_ITEMS
    }

    /// Counts a notification of `kind`, listing `message` while the sample has room.
    pub fn add(&mut self, kind: NoticeKind, message: Option<Message>) {
        self.total += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if let Some(message) = message.filter(|_| self.wants_sample()) {
            self.sample.push(message);
        }
    }

    /// Takes back a notification of `kind` counted earlier (and listed, if its log row is
    /// `log_id`).
    pub fn remove(&mut self, kind: NoticeKind, log_id: i64) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.by_kind.get_mut(&kind) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_kind.remove(&kind);
            }
        }
        self.sample.retain(|m| m.log_id != log_id);
    }

    /// The digest of `messages`.
    pub fn from_messages(messages: &[Message]) -> Self {
        let mut digest = Self::default();
        for m in messages {
            digest.add(m.kind, Some(m.clone()));
        }
        digest
    }
}

/// What a provider said when it accepted a delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id for the message, when it gives one.
    pub provider_message_id: Option<String>,
}

/// A way to deliver notifications.
pub trait Channel: Send + Sync {
    /// Whether the channel takes every message of a run in one send (Slack's digest); others get
    /// one message per send.
    fn is_digest(&self) -> bool {
        false
    }

    /// Sends `messages` (exactly one unless [`Channel::is_digest`]) once, without retrying.
    fn send<'a>(&'a self, messages: &'a [Message]) -> BoxFuture<'a, Result<Receipt, Error>>;

    /// Sends a run's digest once, without retrying (digest channels; others send its sample).
    fn send_digest<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Receipt, Error>> {
        self.send(&digest.sample)
    }
}

/// Capped, jittered exponential backoff.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Tries per send, the first included.
    pub attempts: u32,
    /// Backoff before the second try (doubling each time, with full jitter).
    pub base: Duration,
    /// Longest backoff.
    pub cap: Duration,
    /// A `Retry-After` longer than this ends the run's tries; the next run retries instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (`attempt` from 1): `Retry-After` when given, else a
    /// random duration up to `min(cap, base * 2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20))
            .min(self.cap);
        let jitter = rand::random_range(0.0..=1.0);
        ceiling.mul_f64(jitter)
    }

    /// Sends through `channel`, retrying transient failures; the last error when all tries fail.
    pub async fn send(
        &self,
        channel: &dyn Channel,
        messages: &[Message],
    ) -> Result<Receipt, Error> {
        self.send_counted(channel, messages).await.0
    }

    /// [`Self::send`], also counting the tries that got no answer ([`Error::is_unconfirmed`]:
    /// the provider may have accepted them) and were sent again: each may have gone out twice.
    pub async fn send_counted(
        &self,
        channel: &dyn Channel,
        messages: &[Message],
    ) -> (Result<Receipt, Error>, u64) {
        self.retry(|| channel.send(messages)).await
    }

    /// Sends a digest through `channel`, retrying and counting like [`Self::send_counted`].
    pub async fn send_digest(
        &self,
        channel: &dyn Channel,
        digest: &Digest,
    ) -> (Result<Receipt, Error>, u64) {
        self.retry(|| channel.send_digest(digest)).await
    }

    async fn retry<'a>(
        &self,
        send: impl Fn() -> BoxFuture<'a, Result<Receipt, Error>>,
    ) -> (Result<Receipt, Error>, u64) {
        let mut attempt = 1;
        let mut unconfirmed = 0;
        loop {
            match send().await {
                Ok(receipt) => return (Ok(receipt), unconfirmed),
                Err(err) if !err.is_transient() || attempt >= self.attempts => {
                    return (Err(err), unconfirmed);
                }
                Err(err) => {
                    let wait = self.backoff(attempt, err.retry_after());
                    if wait > self.max_retry_after {
                        return (Err(err), unconfirmed);
                    }
                    if err.is_unconfirmed() {
                        unconfirmed += 1;
                    }
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %err, "retrying a send");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response, if any.
pub fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    parse_retry_after(value.to_str().ok()?, Utc::now())
}

/// Sends `request`; a 2xx response is returned, anything else classified as an [`Error`].
pub async fn send_http(request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
    let response = request.send().await.map_err(Error::from_reqwest)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after_header(&response);
    let body = response.text().await.unwrap_or_default();
    Err(Error::from_status(status.as_u16(), retry_after, &body))
}

/// Timeouts of the shared HTTP client.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// A whole request, response included.
    pub total: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(30),
        }
    }
}

/// The one HTTP client every HTTP channel shares. Installs the ring crypto provider for rustls
/// if none is installed yet.
pub fn http_client(timeouts: HttpTimeouts) -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .user_agent(concat!("signet/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

/// Reads an environment variable; tests pass their own lookup instead of the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of a secret from its environment variable.
pub fn secret(env: EnvLookup<'_>, secret: &SecretKeyRef, field: &str) -> Result<String, Error> {
    let var = secret.env_var();
    env(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
        Error::Config(format!(
            "{field}: environment variable {var} (Secret {:?} key {:?}) is not set",
            secret.name, secret.key
        ))
    })
}

/// Builds the channels named in `names` from the policy; a missing secret or unknown channel is
/// a configuration error.
pub fn build_channels(
    spec: &SignaturePolicySpec,
    names: &[&str],
    env: EnvLookup<'_>,
    http: &reqwest::Client,
    log_out: &log::SharedWriter,
) -> Result<BTreeMap<String, Arc<dyn Channel>>, Error> {
    let mut channels: BTreeMap<String, Arc<dyn Channel>> = BTreeMap::new();
    for name in names {
        if channels.contains_key(*name) {
            continue;
        }
        let channel = spec
            .channel(name)
            .ok_or_else(|| Error::Config(format!("no channel named {name} in spec.channels")))?;
        let path = |field: &str| format!("channel {name}: {field}");
        let built: Arc<dyn Channel> = match channel.kind() {
            Some(ChannelKind::SendGrid(c)) => Arc::new(sendgrid::SendGrid::new(
                c,
                secret(
                    env,
                    &c.api_key_secret_ref,
                    &path("sendgrid.apiKeySecretRef"),
                )?,
                http.clone(),
            )?),
            Some(ChannelKind::Smtp(c)) => {
                let credentials = match &c.credentials_secret_ref {
                    Some(creds) => Some((
                        secret(env, &creds.username(), &path("smtp.credentialsSecretRef"))?,
                        secret(env, &creds.password(), &path("smtp.credentialsSecretRef"))?,
                    )),
                    None => None,
                };
                Arc::new(smtp::Smtp::new(c, credentials)?)
            }
            Some(ChannelKind::Slack(c)) => Arc::new(slack::Slack::new(
                secret(
                    env,
                    &c.webhook_url_secret_ref,
                    &path("slack.webhookUrlSecretRef"),
                )?,
                http.clone(),
            )),
            Some(ChannelKind::Webhook(c)) => Arc::new(webhook::Webhook::new(
                secret(env, &c.url_secret_ref, &path("webhook.urlSecretRef"))?,
                c.signing_secret_ref
                    .as_ref()
                    .map(|s| secret(env, s, &path("webhook.signingSecretRef")))
                    .transpose()?,
                http.clone(),
            )),
            Some(ChannelKind::Log(_)) => Arc::new(log::Log::new(name, log_out.clone())),
            None => {
                return Err(Error::Config(format!(
                    "channel {name} must set exactly one kind"
                )));
            }
        };
        channels.insert((*name).to_owned(), built);
    }
    Ok(channels)
}

/// Splits `Name <address>` into its parts (`address` alone has no name).
pub fn split_mailbox(mailbox: &str) -> (Option<String>, String) {
    let mailbox = mailbox.trim();
    match mailbox.rsplit_once('<') {
        Some((name, rest)) => {
            let name = name.trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then(|| name.to_owned()),
                rest.trim_end_matches('>').trim().to_owned(),
            )
        }
        None => (None, mailbox.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 29 Mar 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Mar 2026 09:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

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
    fn backoff_is_capped_jittered_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(60),
        };
        for attempt in 1..=12 {
            let ceiling = Duration::from_millis((100u64 << (attempt - 1)).min(1000));
            let waits: Vec<Duration> = (0..50).map(|_| policy.backoff(attempt, None)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "attempt {attempt}");
            assert!(waits.iter().any(|w| *w != waits[0]), "jittered");
        }
        assert_eq!(
            policy.backoff(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    /// Answers from a script, one entry per try.
    struct Scripted(std::sync::Mutex<Vec<Result<Receipt, Error>>>);

    impl Channel for Scripted {
        fn send<'a>(&'a self, _: &'a [Message]) -> BoxFuture<'a, Result<Receipt, Error>> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    #[tokio::test]
    async fn tries_without_an_answer_that_are_sent_again_are_counted() {
        let policy = RetryPolicy {
            base: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let unavailable = Error::from_status(503, None, "");
        let script = |tries: Vec<Result<Receipt, Error>>| Scripted(std::sync::Mutex::new(tries));
        // A timeout and a connection lost after sending, each possibly accepted, then a
        // success: up to two duplicates.
        let channel = script(vec![
            Err(Error::Timeout),
            Err(unavailable.clone()),
            Err(Error::NoAnswer("connection closed".into())),
            Ok(Receipt::default()),
        ]);
        assert_eq!(
            policy.send_counted(&channel, &[]).await,
            (Ok(Receipt::default()), 2)
        );
        // A connection that could not be made carried nothing.
        let channel = script(vec![
            Err(Error::Network("refused".into())),
            Ok(Receipt::default()),
        ]);
        assert_eq!(
            policy.send_counted(&channel, &[]).await,
            (Ok(Receipt::default()), 0)
        );
        // A last try that times out is not sent again here (the next run counts it).
        let channel = script(vec![
            Err(unavailable.clone()),
            Err(unavailable.clone()),
            Err(unavailable.clone()),
            Err(Error::Timeout),
        ]);
        assert_eq!(
            policy.send_counted(&channel, &[]).await,
            (Err(Error::Timeout), 0)
        );
        // Answers that say no are no duplicates.
        let channel = script(vec![Err(unavailable.clone()), Ok(Receipt::default())]);
        assert_eq!(
            policy.send_counted(&channel, &[]).await,
            (Ok(Receipt::default()), 0)
        );
        for unanswered in [Error::Timeout, Error::NoAnswer(String::new())] {
            assert!(unanswered.is_unconfirmed(), "{unanswered:?}");
        }
    }

    #[test]
    fn a_digest_lists_the_first_items_counts_all_and_takes_items_back() {
        let message = |log_id: i64, kind: NoticeKind| Message {
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
        };
        let mut digest = Digest::default();
        for id in 0..12 {
            let kind = if id % 2 == 0 {
                NoticeKind::TimeoutAlert
            } else {
                NoticeKind::Escalation
            };
            let listed = digest.wants_sample().then(|| message(id, kind));
            digest.add(kind, listed);
        }
        assert_eq!(digest.total, 12);
        assert_eq!(digest.sample.len(), slack::DIGEST_ITEMS);
        digest.remove(NoticeKind::TimeoutAlert, 0);
        digest.remove(NoticeKind::TimeoutAlert, 10);
        assert_eq!(digest.total, 10);
        assert_eq!(
            digest.by_kind,
            BTreeMap::from([(NoticeKind::Escalation, 6), (NoticeKind::TimeoutAlert, 4)])
        );
        let listed: Vec<i64> = digest.sample.iter().map(|m| m.log_id).collect();
        assert_eq!(listed, (1..10).collect::<Vec<_>>());
        for id in [2, 4, 6, 8] {
            digest.remove(NoticeKind::TimeoutAlert, id);
        }
        assert_eq!(
            digest.by_kind,
            BTreeMap::from([(NoticeKind::Escalation, 6)]),
            "a kind with nothing left is not listed"
        );
    }

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
            split_mailbox("a@example.com"),
            (None, "a@example.com".into())
        );
    }
}
