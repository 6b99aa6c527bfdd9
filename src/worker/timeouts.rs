//! The timeouts worker: one run of `signet check-timeouts`. It first retries alerts an earlier
//! run left pending past their lease, then, chunk by chunk, marks `pending` workflows past their
//! deadline `timed_out` with their alert rows logged in the same transaction, and sends the
//! alerts (webhook and log: one per workflow; email: to the channel's `to` list; Slack: one
//! digest at the end of the run).

use std::time::Instant;

use serde::Serialize;

use super::deliver::{Deliverer, DeliveryCounts, Digests};
use super::{Error, Progress, RunOptions, Stop};
use crate::notify::Channels;
use crate::policy::{Policy, Section, TimeoutQuery};
use crate::store::{Store, TimeoutCursor};

/// The result of a timeouts run: the JSON summary line on stdout, and the policy's
/// `status.timeouts`. `sent` counts alerts delivered (one workflow and channel).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutSummary {
    /// Workflows this run marked `timed_out`.
    pub timed_out: u64,
    /// What happened to the alert deliveries the run held.
    #[serde(flatten)]
    pub alerts: DeliveryCounts,
    /// Wall time of the run.
    pub duration_ms: u64,
}

impl TimeoutSummary {
    /// How the run ended, as in the policy's status ([`DeliveryCounts::outcome`]).
    pub fn outcome(&self) -> crate::crd::RunOutcome {
        self.alerts.outcome()
    }
}

/// Everything a timeouts run needs besides the database.
pub struct Timeouts<'a> {
    deliverer: Deliverer<'a>,
    query: Option<TimeoutQuery>,
    channels: Vec<String>,
}

impl<'a> Timeouts<'a> {
    /// Prepares a run; every channel `timeout.channels` names must be in `channels`.
    pub fn new(
        policy: &'a Policy,
        channels: &'a Channels,
        options: RunOptions,
    ) -> Result<Self, Error> {
        let routes: Vec<String> = policy
            .section_channels(Section::Timeouts)
            .into_iter()
            .map(String::from)
            .collect();
        let deliverer = Deliverer::new(policy, channels, &routes, options)?;
        Ok(Self {
            deliverer,
            query: policy.timeout_query(),
            channels: routes,
        })
    }

    /// Makes the run heed `stop` (SIGTERM).
    pub fn with_stop(mut self, stop: Stop) -> Self {
        self.deliverer.set_stop(stop);
        self
    }

    /// Runs once against `store`. Per-alert failures are counted, never returned.
    pub async fn check_timeouts(&self, store: &Store) -> Result<TimeoutSummary, Error> {
        let started = Instant::now();
        let mut summary = TimeoutSummary::default();
        let Some(query) = &self.query else {
            tracing::info!("the policy has no timeout section; nothing to do");
            return Ok(summary);
        };
        let options = self.deliverer.options();
        let mut digests = Digests::default();
        let mut progress = Progress::new(options.progress_every);

        self.deliverer
            .recover(
                store,
                &Section::Timeouts.kinds().collect::<Vec<_>>(),
                &query.workflow_types,
                &mut digests,
                &mut summary.alerts,
                |counts| progress.log(counts, &[]),
            )
            .await?;

        let mut cursor = TimeoutCursor::default();
        while !self.deliverer.stopping() {
            let chunk = store
                .time_out(
                    query,
                    &mut cursor,
                    &self.channels,
                    options.lease,
                    options.batch_size,
                )
                .await?;
            if chunk.workflows.is_empty() {
                break;
            }
            summary.timed_out += chunk.workflows.len() as u64;
            for workflow in &chunk.workflows {
                tracing::debug!(workflow = %workflow.id, workflow_type = %workflow.workflow_type, "timed out");
            }
            self.deliverer
                .deliver(store, chunk.alerts, &mut digests, &mut summary.alerts)
                .await?;
            progress.log(&summary.alerts, &[("timedOut", summary.timed_out)]);
        }

        self.deliverer
            .send_digests(store, digests, &mut summary.alerts)
            .await?;
        self.deliverer.finish(store, &mut summary.alerts).await?;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}
