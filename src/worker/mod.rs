//! The reminders worker: one run of `signet send-reminders`. It first retries deliveries an
//! earlier run left pending past their lease, then pages through the workflows due by the
//! database clock, holds what the send window holds, claims the rest (log rows written before
//! any send), sends with bounded concurrency and records each outcome. Slack-style digest
//! channels get one message at the end of the run.

pub mod plan;
pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::crd::SignaturePolicySpec;
use crate::due::{Readiness, Timing};
use crate::notify::{self, Channel, Message, RetryPolicy};
use crate::store::{
    self, ClaimedDelivery, DueCursor, DueQuery, NoticeKind, Outcome, REMINDER_WORKER_KINDS, Store,
};
use crate::templates::{Renderer, TemplateContext};

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy or the environment is wrong: retrying cannot help (exit code 2).
    #[error("configuration error: {0}")]
    Config(String),
    /// The database failed (exit code 1, or 2 for an unusable URL).
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// A stable name for logs, metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Config(_) => "ConfigError",
            Error::Store(e) => e.reason(),
        }
    }

    /// Whether retrying the run cannot help.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Config(_) => true,
            Error::Store(e) => e.is_configuration(),
        }
    }

    /// The process exit code for this failure: 2 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.is_configuration() { 2 } else { 1 }
    }
}

/// Knobs of a run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long a claimed delivery belongs to this run before another run may retry it.
    pub lease: Duration,
    /// Workflows per page and claim.
    pub batch_size: i64,
    /// Sends in flight at most.
    pub concurrency: usize,
    /// Retries within a run.
    pub retry: RetryPolicy,
    /// Attempts (across runs) after which a transient failure is final.
    pub max_attempts: i32,
    /// Delay before the next run retries a transient failure the provider gave no delay for.
    pub retry_later: Duration,
    /// How often progress is logged on long runs.
    pub progress_every: Duration,
    /// The longest one try of a send can take (the HTTP client's total timeout).
    pub send_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15 * 60),
            batch_size: 500,
            concurrency: 16,
            retry: RetryPolicy::default(),
            max_attempts: 5,
            retry_later: Duration::from_secs(5 * 60),
            progress_every: Duration::from_secs(10),
            send_timeout: notify::HttpTimeouts::default().total,
        }
    }
}

impl RunOptions {
    /// The longest a send with all its retries can take.
    pub fn worst_send(&self) -> Duration {
        let tries = self.retry.attempts.max(1);
        let wait = self.retry.cap.max(self.retry.max_retry_after);
        self.send_timeout * tries + wait * (tries - 1)
    }

    /// How long after a claim a send may still start: the lease less the longest send, so a
    /// delivery is never in flight when another run may take it over.
    pub fn send_window(&self) -> Duration {
        self.lease.saturating_sub(self.worst_send())
    }
}

/// The result of a run: the JSON summary line on stdout, and the policy's `status.reminders`.
/// Counts are deliveries (one workflow, notice and channel).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Due now: claimed, recovered or held.
    pub due: u64,
    /// Accepted by the provider.
    pub sent: u64,
    /// Held by the send window for a later run.
    pub held: u64,
    /// Failed for good (the log row says why).
    pub failed: u64,
    /// Retried deliveries whose earlier attempt left no outcome: they may have gone out twice.
    pub possible_duplicates: u64,
    /// Failed for now; a later run retries them.
    pub retrying: u64,
    /// Deliveries taken over from earlier runs.
    pub recovered: u64,
    /// Recovered deliveries not sent because the workflow is no longer pending.
    pub skipped: u64,
    /// Wall time of the run.
    pub duration_ms: u64,
}

impl RunSummary {
    /// `Succeeded` or `CompletedWithFailures`, as in the policy's status.
    pub fn outcome(&self) -> crate::crd::RunOutcome {
        if self.failed == 0 && self.retrying == 0 {
            crate::crd::RunOutcome::Succeeded
        } else {
            crate::crd::RunOutcome::CompletedWithFailures
        }
    }
}

/// The channels each kind of notice goes to, from the policy.
pub fn channels_by_kind(spec: &SignaturePolicySpec) -> BTreeMap<NoticeKind, Vec<String>> {
    let mut map = BTreeMap::new();
    if let Some(r) = &spec.reminders {
        map.insert(NoticeKind::Reminder, r.channels.clone());
    }
    if let Some(w) = &spec.expiry_warning {
        map.insert(NoticeKind::ExpiryWarning, w.channels.clone());
    }
    if let Some(e) = &spec.escalation {
        map.insert(NoticeKind::Escalation, e.channels.clone());
    }
    map
}

/// Everything a run needs besides the database.
pub struct Run<'a> {
    spec: &'a SignaturePolicySpec,
    timing: Timing,
    query: Option<DueQuery>,
    renderer: Renderer,
    routes: BTreeMap<NoticeKind, Vec<String>>,
    channels: &'a BTreeMap<String, Arc<dyn Channel>>,
    options: RunOptions,
}

impl<'a> Run<'a> {
    /// Prepares a run; every channel the policy routes to must be in `channels`.
    pub fn new(
        spec: &'a SignaturePolicySpec,
        channels: &'a BTreeMap<String, Arc<dyn Channel>>,
        options: RunOptions,
    ) -> Result<Self, Error> {
        let timing = Timing::from_spec(spec).map_err(Error::Config)?;
        let workflow_types = spec.workflow_types();
        if options.send_window().is_zero() {
            return Err(Error::Config(format!(
                "the lease ({}s) must be longer than a send with all its retries ({}s)",
                options.lease.as_secs(),
                options.worst_send().as_secs()
            )));
        }
        let routes = channels_by_kind(spec);
        for name in routes.values().flatten() {
            if !channels.contains_key(name) {
                return Err(Error::Config(format!("channel {name} is not configured")));
            }
        }
        Ok(Self {
            spec,
            query: DueQuery::new(&workflow_types, &timing),
            timing,
            renderer: Renderer::new(spec).map_err(Error::Config)?,
            routes,
            channels,
            options,
        })
    }

    /// Runs once against `store`. Per-delivery failures are counted, never returned.
    pub async fn send_reminders(&self, store: &Store) -> Result<RunSummary, Error> {
        let started = Instant::now();
        let mut summary = RunSummary::default();
        let Some(query) = &self.query else {
            tracing::info!("the policy has no reminders section; nothing to do");
            return Ok(summary);
        };
        let mut digest: Vec<Claimed> = Vec::new();
        let mut progress = Progress::new(self.options.progress_every);
        let lease = self.options.lease.as_secs_f64();

        loop {
            let recovered = store
                .recover(
                    &REMINDER_WORKER_KINDS,
                    &query.workflow_types,
                    lease,
                    self.options.batch_size,
                )
                .await?;
            if recovered.is_empty() {
                break;
            }
            summary.recovered += recovered.len() as u64;
            summary.due += recovered.len() as u64;
            summary.possible_duplicates +=
                recovered.iter().filter(|d| d.possible_duplicate).count() as u64;
            self.deliver(store, recovered, &mut digest, &mut summary)
                .await?;
            progress.log(&summary);
        }

        let mut cursor = DueCursor::default();
        loop {
            let rows = store
                .due_page(query, &mut cursor, self.options.batch_size)
                .await?;
            if rows.is_empty() {
                break;
            }
            let now = store.now().await?;
            let mut ready: BTreeMap<NoticeKind, Vec<Uuid>> = BTreeMap::new();
            for workflow in &rows {
                for notice in self.timing.assess(workflow, now) {
                    let fan_out = self.routes.get(&notice.kind).map_or(0, Vec::len) as u64;
                    match notice.readiness {
                        Readiness::Now => ready.entry(notice.kind).or_default().push(workflow.id),
                        Readiness::HeldUntil(_) => {
                            summary.held += fan_out;
                            summary.due += fan_out;
                        }
                    }
                }
            }
            for (kind, ids) in ready {
                let Some(route) = self.routes.get(&kind) else {
                    continue;
                };
                let claimed = store.claim(kind, &ids, route, query, lease).await?;
                summary.due += claimed.len() as u64;
                self.deliver(store, claimed, &mut digest, &mut summary)
                    .await?;
            }
            progress.log(&summary);
        }

        self.send_digests(store, digest, &mut summary).await?;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Sends claimed deliveries (digest channels' are kept for the end) and records outcomes.
    async fn deliver(
        &self,
        store: &Store,
        claimed: Vec<ClaimedDelivery>,
        digest: &mut Vec<Claimed>,
        summary: &mut RunSummary,
    ) -> Result<(), Error> {
        let claimed_at = Instant::now();
        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut sends = Vec::new();
        for delivery in claimed {
            if delivery.workflow.status != "pending" {
                summary.skipped += 1;
                outcomes.push((
                    delivery.log_id,
                    Outcome::Failed {
                        error: format!("not sent: the workflow is {}", delivery.workflow.status),
                    },
                ));
                continue;
            }
            let Some(channel) = self.channels.get(&delivery.channel) else {
                summary.failed += 1;
                outcomes.push((
                    delivery.log_id,
                    Outcome::Failed {
                        error: format!("channel {} is no longer configured", delivery.channel),
                    },
                ));
                continue;
            };
            let message = match self.message(&delivery) {
                Ok(message) => message,
                Err(error) => {
                    summary.failed += 1;
                    outcomes.push((delivery.log_id, Outcome::Failed { error }));
                    continue;
                }
            };
            if channel.is_digest() {
                digest.push(Claimed {
                    delivery,
                    message,
                    claimed_at,
                });
            } else {
                sends.push((delivery, message, channel.clone()));
            }
        }

        let retry = self.options.retry;
        let window = self.options.send_window();
        let results: Vec<_> = futures::stream::iter(sends)
            .map(|(delivery, message, channel)| async move {
                if claimed_at.elapsed() > window {
                    return (delivery, None);
                }
                let result = retry
                    .send(channel.as_ref(), std::slice::from_ref(&message))
                    .await;
                (delivery, Some(result))
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        for (delivery, result) in results {
            let outcome = match result {
                Some(result) => self.outcome(&delivery, result, summary),
                None => self.lease_ran_out(summary),
            };
            outcomes.push((delivery.log_id, outcome));
        }
        store.complete(&outcomes).await?;
        Ok(())
    }

    /// One message per digest channel for everything collected during the run.
    async fn send_digests(
        &self,
        store: &Store,
        digest: Vec<Claimed>,
        summary: &mut RunSummary,
    ) -> Result<(), Error> {
        let window = self.options.send_window();
        let mut outcomes = Vec::new();
        let mut by_channel: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for item in digest {
            if item.claimed_at.elapsed() > window {
                outcomes.push((item.delivery.log_id, self.lease_ran_out(summary)));
            } else {
                by_channel
                    .entry(item.delivery.channel.clone())
                    .or_default()
                    .push(item);
            }
        }
        for (name, items) in by_channel {
            let channel = &self.channels[&name];
            let messages: Vec<Message> = items.iter().map(|i| i.message.clone()).collect();
            let result = self.options.retry.send(channel.as_ref(), &messages).await;
            for item in &items {
                let outcome = self.outcome(&item.delivery, result.clone(), summary);
                outcomes.push((item.delivery.log_id, outcome));
            }
        }
        store.complete(&outcomes).await?;
        Ok(())
    }

    /// A claimed delivery whose lease could run out mid-send goes back for the next run.
    fn lease_ran_out(&self, summary: &mut RunSummary) -> Outcome {
        summary.retrying += 1;
        Outcome::Retry {
            error: "not sent: the run's lease on it was running out".into(),
            after: 0.0,
        }
    }

    fn outcome(
        &self,
        delivery: &ClaimedDelivery,
        result: Result<notify::Receipt, notify::Error>,
        summary: &mut RunSummary,
    ) -> Outcome {
        match result {
            Ok(receipt) => {
                summary.sent += 1;
                Outcome::Sent {
                    provider_message_id: receipt.provider_message_id,
                }
            }
            Err(err) if err.is_transient() && delivery.attempts < self.options.max_attempts => {
                summary.retrying += 1;
                tracing::warn!(workflow = %delivery.workflow.id, channel = %delivery.channel, reason = err.reason(), error = %err, "delivery failed, a later run retries it");
                Outcome::Retry {
                    error: format!("{}: {err}", err.reason()),
                    after: err
                        .retry_after()
                        .unwrap_or(self.options.retry_later)
                        .as_secs_f64(),
                }
            }
            Err(err) => {
                summary.failed += 1;
                tracing::warn!(workflow = %delivery.workflow.id, channel = %delivery.channel, reason = err.reason(), error = %err, "delivery failed");
                Outcome::Failed {
                    error: format!("{}: {err}", err.reason()),
                }
            }
        }
    }

    fn message(&self, delivery: &ClaimedDelivery) -> Result<Message, String> {
        let workflow = &delivery.workflow;
        let zone = self.timing.zone_for(workflow);
        let local = |t: DateTime<Utc>| {
            t.with_timezone(&zone)
                .format("%Y-%m-%d %H:%M %Z")
                .to_string()
        };
        let deadline = self.timing.deadline(workflow);
        let context = TemplateContext {
            workflow_id: workflow.id.to_string(),
            workflow_type: workflow.workflow_type.clone(),
            signer_name: workflow.signer_name.clone(),
            signer_email: workflow.signer_email.clone(),
            document_title: workflow.document_title.clone(),
            signing_url: workflow.signing_url.clone(),
            requested_at: local(workflow.requested_at),
            deadline: deadline.map(local),
            reminder_number: delivery.sequence,
            max_reminders: self.spec.reminders.as_ref().map_or(0, |r| r.max_reminders),
            kind: delivery.kind.as_str(),
        };
        Ok(Message {
            log_id: delivery.log_id,
            kind: delivery.kind,
            sequence: delivery.sequence,
            workflow_id: workflow.id,
            workflow_type: workflow.workflow_type.clone(),
            signer_email: workflow.signer_email.clone(),
            signer_name: workflow.signer_name.clone(),
            document_title: workflow.document_title.clone(),
            signing_url: workflow.signing_url.clone(),
            deadline,
            idempotency_key: delivery.idempotency_key.clone(),
            content: self.renderer.render(delivery.kind, &context)?,
        })
    }
}

/// A claimed delivery kept for a digest, with when it was claimed.
struct Claimed {
    delivery: ClaimedDelivery,
    message: Message,
    claimed_at: Instant,
}

/// Logs the counters now and then during long runs.
struct Progress {
    every: Duration,
    last: Instant,
}

impl Progress {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
        }
    }

    fn log(&mut self, summary: &RunSummary) {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            tracing::info!(
                due = summary.due,
                sent = summary.sent,
                held = summary.held,
                failed = summary.failed,
                retrying = summary.retrying,
                "progress"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_must_outlast_a_send_with_its_retries() {
        let options = RunOptions::default();
        // 4 tries of 30s and 3 waits of up to 60s (Retry-After) or 20s (backoff cap).
        assert_eq!(options.worst_send(), Duration::from_secs(4 * 30 + 3 * 60));
        assert_eq!(options.send_window(), Duration::from_secs(15 * 60 - 300));

        let spec: SignaturePolicySpec = serde_saphyr::from_str(
            "database: {urlSecretRef: {name: db, key: url}}\nreminders: {channels: [log]}\nchannels: [{name: log, log: {}}]\n",
        )
        .unwrap();
        let out = crate::notify::log::stdout();
        let channels: BTreeMap<String, Arc<dyn Channel>> = BTreeMap::from([(
            "log".to_owned(),
            Arc::new(crate::notify::log::Log::new("log", out)) as Arc<dyn Channel>,
        )]);
        let short = RunOptions {
            lease: Duration::from_secs(300),
            ..RunOptions::default()
        };
        let err = Run::new(&spec, &channels, short).err().unwrap();
        assert!(err.is_configuration(), "{err}");
        assert!(err.to_string().contains("lease (300s)"), "{err}");
        assert!(Run::new(&spec, &channels, RunOptions::default()).is_ok());
        let missing = BTreeMap::new();
        let err = Run::new(&spec, &missing, RunOptions::default())
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: channel log is not configured"
        );
    }
}
