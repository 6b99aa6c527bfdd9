//! The workers. A reminders run (`signet send-reminders`, [`Run`]) first retries deliveries an
//! earlier run left pending past their lease, then pages through the workflows due by the
//! database clock, holds what the send window holds, claims the rest (log rows written before
//! any send), sends with bounded concurrency and records each outcome. A timeouts run
//! (`signet check-timeouts`, [`Timeouts`]) marks expired workflows `timed_out` with their alerts
//! logged in the same statement, then sends the alerts the same way. Slack-style digest
//! channels get one message at the end of a run.

mod deliver;
pub mod plan;
pub mod report;
mod timeouts;

pub use deliver::{CHANNEL_REJECTED, ChannelRejection, DeliveryCounts, INTERRUPTED};
pub use timeouts::{TimeoutSummary, Timeouts};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use uuid::Uuid;

use crate::notify::{self, Channels, RetryPolicy};
use crate::policy::timing::Readiness;
use crate::policy::{DueQuery, NoticeKind, Policy, Section};
use crate::store::{self, DueCursor, Store};
use deliver::{Deliverer, Digests};

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

/// How long sends in flight may finish after SIGTERM: well inside Kubernetes' default 30 s
/// `terminationGracePeriodSeconds`, leaving time to record outcomes and write the status.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A request to stop a run (SIGTERM): the run claims nothing more, gives back what it has not
/// started sending, lets sends in flight finish within [`RunOptions::shutdown_grace`], and
/// ends with outcome `Interrupted`. Clones share the request.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    requested: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// Asks the run to stop.
    pub fn request(&self) {
        self.0.requested.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Waits until a stop is requested.
    pub async fn requested(&self) {
        let notified = self.0.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.is_requested() {
            notified.await;
        }
    }

    /// Runs `work` to its end, unless a stop is requested and `grace` passes first (`None`).
    pub async fn or_grace<T>(&self, grace: Duration, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            done = work => Some(done),
            () = async { self.requested().await; tokio::time::sleep(grace).await } => None,
        }
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
    /// After a stop is requested, how long sends in flight may take to finish before they are
    /// recorded as unanswered (retried by the next run, counted as possible duplicates).
    pub shutdown_grace: Duration,
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
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
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

/// The result of a reminders run: the JSON summary line on stdout, and the policy's
/// `status.reminders`. Counts are deliveries (one workflow, notice and channel).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Due now: claimed, recovered or held.
    pub due: u64,
    /// Held by the send window for a later run.
    pub held: u64,
    /// What happened to the deliveries the run held.
    #[serde(flatten)]
    pub deliveries: DeliveryCounts,
    /// Wall time of the run.
    pub duration_ms: u64,
}

impl RunSummary {
    /// How the run ended, as in the policy's status ([`DeliveryCounts::outcome`]).
    pub fn outcome(&self) -> crate::crd::RunOutcome {
        self.deliveries.outcome()
    }
}

impl DeliveryCounts {
    /// How the run ended, as in the policy's status: `Failed` when a channel rejected it
    /// (reason `ChannelRejected`), `Interrupted` when the worker was asked to stop, else
    /// `Succeeded`, or `CompletedWithFailures` when some deliveries failed or wait for a retry.
    pub fn outcome(&self) -> crate::crd::RunOutcome {
        use crate::crd::RunOutcome;
        if !self.rejected_channels.is_empty() {
            RunOutcome::Failed
        } else if self.interrupted {
            RunOutcome::Interrupted
        } else if self.failed == 0 && self.retrying == 0 {
            RunOutcome::Succeeded
        } else {
            RunOutcome::CompletedWithFailures
        }
    }

    /// Why the run did not succeed, and what happened, for `lastRun.reason` and `.message`:
    /// the rejected channels with their provider's answer (never a secret or a URL), or the
    /// interruption. `None` for a completed run.
    pub fn failure(&self) -> Option<(&'static str, String)> {
        if !self.rejected_channels.is_empty() {
            let channels: Vec<String> = self
                .rejected_channels
                .iter()
                .map(|r| {
                    let status = r.status.map(|s| format!(" {s}")).unwrap_or_default();
                    format!("channel {} answered{status}: {}", r.channel, r.error)
                })
                .collect();
            let message = format!(
                "{}; {} deliveries were left due for the next run",
                channels.join("; "),
                self.released
            );
            Some((CHANNEL_REJECTED, message))
        } else if self.interrupted {
            let message = format!(
                "the worker was asked to stop; {} deliveries were left due for the next run",
                self.released
            );
            Some((INTERRUPTED, message))
        } else {
            None
        }
    }
}

/// Everything a reminders run needs besides the database.
pub struct Run<'a> {
    deliverer: Deliverer<'a>,
    query: Option<DueQuery>,
    routes: &'a BTreeMap<NoticeKind, Vec<String>>,
}

impl<'a> Run<'a> {
    /// Prepares a run; every channel the policy routes to must be in `channels`.
    pub fn new(
        policy: &'a Policy,
        channels: &'a Channels,
        options: RunOptions,
    ) -> Result<Self, Error> {
        let routes = policy.routes();
        let sent_here = Section::Reminders
            .kinds()
            .filter_map(|kind| routes.get(&kind));
        let deliverer = Deliverer::new(policy, channels, sent_here.flatten(), options)?;
        Ok(Self {
            query: policy.due_query(),
            deliverer,
            routes,
        })
    }

    /// Makes the run heed `stop` (SIGTERM).
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.deliverer.set_stop(stop);
        self
    }

    /// Runs once against `store`. Per-delivery failures are counted, never returned.
    pub async fn send_reminders(&self, store: &Store) -> Result<RunSummary, Error> {
        let started = Instant::now();
        let mut summary = RunSummary::default();
        let Some(query) = &self.query else {
            tracing::info!("the policy has no reminders section; nothing to do");
            return Ok(summary);
        };
        let options = self.deliverer.options();
        let mut digests = Digests::default();
        let mut progress = Progress::new(options.progress_every);
        let lease = options.lease;

        summary.due += self
            .deliverer
            .recover(
                store,
                &Section::Reminders.kinds().collect::<Vec<_>>(),
                &query.workflow_types,
                &mut digests,
                &mut summary.deliveries,
                |counts| progress.log(counts, &[]),
            )
            .await?;

        let mut cursor = DueCursor::default();
        while !self.deliverer.stopping() {
            let rows = store
                .due_page(query, &mut cursor, options.batch_size)
                .await?;
            if rows.is_empty() {
                break;
            }
            let now = store.now().await?;
            let mut ready: BTreeMap<NoticeKind, Vec<Uuid>> = BTreeMap::new();
            for workflow in &rows {
                for notice in self.deliverer.timing().assess(workflow, now) {
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
                if self.deliverer.stopping() {
                    break;
                }
                if self.deliverer.route_rejected(route) {
                    // Every channel rejected the run: leave these due rather than claim them.
                    let left = (ids.len() * route.len()) as u64;
                    summary.due += left;
                    summary.deliveries.released += left;
                    continue;
                }
                let claimed = store.claim(kind, &ids, route, query, lease).await?;
                summary.due += claimed.len() as u64;
                self.deliverer
                    .deliver(store, claimed, &mut digests, &mut summary.deliveries)
                    .await?;
            }
            progress.log(
                &summary.deliveries,
                &[("due", summary.due), ("held", summary.held)],
            );
        }

        self.deliverer
            .send_digests(store, digests, &mut summary.deliveries)
            .await?;
        self.deliverer
            .finish(store, &mut summary.deliveries)
            .await?;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

/// Logs the counters now and then during long runs.
pub(crate) struct Progress {
    every: Duration,
    last: Instant,
}

impl Progress {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
        }
    }

    /// Logs `counts` and the worker's own `extra` counters if `every` has passed.
    pub(crate) fn log(&mut self, counts: &DeliveryCounts, extra: &[(&str, u64)]) {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            let extra: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tracing::info!(
                sent = counts.sent,
                failed = counts.failed,
                retrying = counts.retrying,
                recovered = counts.recovered,
                "progress {}",
                extra.join(" ")
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

        let spec: crate::crd::SignaturePolicySpec = serde_saphyr::from_str(
            "database: {urlSecretRef: {name: db, key: url}}\nreminders: {channels: [log]}\nchannels: [{name: log, log: {}}]\n",
        )
        .unwrap();
        let spec = Policy::parse(&spec).unwrap();
        let out = crate::notify::log::stdout();
        let channels: Channels = BTreeMap::from([(
            "log".to_owned(),
            notify::Channel::Message(std::sync::Arc::new(notify::log::Log::new("log", out))),
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
