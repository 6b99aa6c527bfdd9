//! Staleness, pure: whether a section of a policy has gone [`MISSED_RUNS`] scheduled runs without a
//! successful one while the policy was not suspended, and from when it will have. The reconcile
//! turns the verdicts into the `Stale` condition, its Events, metrics and the next requeue.
//!
//! The rule, per enabled section ([`assess`]):
//! - the *baseline* is the latest of: the section's `lastSuccessfulRunAt` (a worker writes it when
//!   a run ends `Succeeded` or `CompletedWithFailures`), the creation of the section's CronJob, the
//!   policy's creation, and the time the policy was last resumed (the `Suspended` condition's
//!   `lastTransitionTime` while it is `False`);
//! - the section is stale from the third fire time of its schedule (in `spec.timeZone`) strictly
//!   after the baseline, plus the Job's `activeDeadlineSeconds` (the longest a run may take), plus
//!   [`RUN_SLACK`] (for the CronJob controller to start the Job and the worker to write its
//!   status); that is: three scheduled runs came and none of them succeeded;
//! - a suspended policy is never stale, and resuming restarts the clock.
//!
//! The CronJob's creation is a baseline so that a section enabled (or re-enabled, which clears its
//! status) on an old policy gets its three runs like a new policy does. A schedule change is not:
//! going from monthly to hourly makes a section stale at once when its last success is more than
//! three hours old, until the next successful run.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::build::{Desired, defaults};
use super::delivering::last_run;
use super::metrics::{CHANNEL_REJECTED, SectionHealth};
use crate::constants::{LABEL_POLICY, reason};
use crate::crd::{RunOutcome, SignaturePolicy, SignaturePolicyStatus};
use crate::policy::{Section, ValidPolicy, time};
use crate::schedule::Schedule;

#[cfg(test)]
mod tests;

/// Scheduled runs that may pass without a success before a section is stale.
pub const MISSED_RUNS: usize = 3;
/// Allowed beyond a run's `activeDeadlineSeconds`: the CronJob controller starts a Job within
/// seconds of its time, and a worker retries its status write only briefly.
pub const RUN_SLACK: Duration = Duration::from_secs(120);
/// Added to a requeue at a threshold, so the reconcile lands after it despite timer rounding.
const RECHECK_MARGIN: Duration = Duration::from_secs(1);

/// What a baseline is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// The section's `lastSuccessfulRunAt`.
    LastSuccess,
    /// The creation of the section's CronJob.
    CronJobCreated,
    /// The policy's `creationTimestamp`.
    PolicyCreated,
    /// The policy was last resumed (or first reconciled): the `Suspended=False` transition.
    Resumed,
}

/// The instant staleness is measured from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Baseline {
    /// When.
    pub at: Timestamp,
    /// What happened then.
    pub since: Since,
}

/// What one section's staleness is computed from; every time is optional.
#[derive(Clone, Debug)]
pub struct SectionClock<'a> {
    /// The section's schedule.
    pub schedule: &'a Schedule,
    /// `spec.timeZone`, where the schedule is read.
    pub zone: TimeZone,
    /// The longest a run may take: the Job's `activeDeadlineSeconds`.
    pub run_limit: Duration,
    /// `status.<section>.lastSuccessfulRunAt`.
    pub last_success: Option<Timestamp>,
    /// The section's CronJob `creationTimestamp`.
    pub cron_job_created: Option<Timestamp>,
    /// The policy's `creationTimestamp`.
    pub policy_created: Option<Timestamp>,
    /// The `Suspended` condition's `lastTransitionTime` while it is `False`.
    pub resumed: Option<Timestamp>,
}

/// One section's staleness at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The policy is suspended: not measured.
    Suspended,
    /// No baseline is known, or the schedule never fires again: never stale.
    Unmeasured,
    /// Not stale; stale from `stale_at` unless a run succeeds first.
    Fresh {
        /// What the threshold counts from.
        baseline: Baseline,
        /// When the section turns stale.
        stale_at: Timestamp,
    },
    /// Stale since `stale_at`.
    Stale {
        /// What the threshold counted from.
        baseline: Baseline,
        /// When the section turned stale.
        stale_at: Timestamp,
    },
}

impl SectionClock<'_> {
    /// The latest known time the section's clock restarted; on a tie the last success wins.
    pub fn baseline(&self) -> Option<Baseline> {
        [
            (self.resumed, Since::Resumed),
            (self.policy_created, Since::PolicyCreated),
            (self.cron_job_created, Since::CronJobCreated),
            (self.last_success, Since::LastSuccess),
        ]
        .into_iter()
        .filter_map(|(at, since)| Some(Baseline { at: at?, since }))
        .max_by_key(|baseline| baseline.at)
    }

    /// When a section whose clock restarted at `baseline` turns stale: the [`MISSED_RUNS`]th fire
    /// time after it, plus the run limit and [`RUN_SLACK`]. `None` when the schedule stops firing.
    pub fn stale_at(&self, baseline: Timestamp) -> Option<Timestamp> {
        let mut fire = baseline.to_zoned(self.zone.clone());
        for _ in 0..MISSED_RUNS {
            fire = self.schedule.next_after(&fire)?;
        }
        let fired = fire.timestamp();
        let grace = SignedDuration::try_from(self.run_limit.checked_add(RUN_SLACK)?).ok()?;
        fired.checked_add(grace).ok()
    }
}

/// The staleness of one section at `now`.
pub fn assess(clock: &SectionClock<'_>, suspended: bool, now: Timestamp) -> Verdict {
    if suspended {
        return Verdict::Suspended;
    }
    let Some(baseline) = clock.baseline() else {
        return Verdict::Unmeasured;
    };
    match clock.stale_at(baseline.at) {
        Some(stale_at) if now >= stale_at => Verdict::Stale { baseline, stale_at },
        Some(stale_at) => Verdict::Fresh { baseline, stale_at },
        None => Verdict::Unmeasured,
    }
}

/// A section's last run, as its worker reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastRun {
    /// How it ended.
    pub outcome: RunOutcome,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The Job that ran it.
    pub job: String,
    /// Why, for an outcome other than `Succeeded` (e.g. `ChannelRejected`).
    pub reason: Option<String>,
}

impl LastRun {
    /// What `status.<section>.lastRun` says, if anything.
    pub fn of(status: Option<&SignaturePolicyStatus>, section: Section) -> Option<LastRun> {
        last_run(status, section).map(|r| LastRun {
            outcome: r.outcome,
            finished_at: r.finished_at.0,
            job: r.job.to_owned(),
            reason: r.reason.map(str::to_owned),
        })
    }

    /// Whether the run failed as a whole (`Failed`, `ConfigError`, `Interrupted`, `JobFailed`).
    pub fn failed(&self) -> bool {
        !self.outcome.completed()
    }

    /// Whether a channel refused every delivery of the run (reason `ChannelRejected`).
    pub fn channel_rejected(&self) -> bool {
        self.reason.as_deref() == Some(CHANNEL_REJECTED)
    }
}

/// `status.<section>.lastSuccessfulRunAt`.
pub fn last_success(status: Option<&SignaturePolicyStatus>, section: Section) -> Option<Timestamp> {
    let status = status?;
    match section {
        Section::Reminders => status.reminders.as_ref()?.last_successful_run_at.as_ref(),
        Section::Timeouts => status.timeouts.as_ref()?.last_successful_run_at.as_ref(),
    }
    .map(|t| t.0)
}

/// One section's verdict with what the condition message names.
#[derive(Clone, Debug, PartialEq)]
pub struct SectionStaleness {
    /// Which section.
    pub section: Section,
    /// Its verdict.
    pub verdict: Verdict,
    /// The schedule as written.
    pub schedule: String,
    /// `spec.timeZone`.
    pub zone: TimeZone,
    /// Its last run, if one was reported.
    pub last_run: Option<LastRun>,
}

/// The `Stale` condition's status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleSummary {
    /// Whether a section is stale.
    pub stale: bool,
    /// A reason from [`crate::constants::reason`].
    pub reason: &'static str,
    /// What a person should know and do.
    pub message: String,
}

impl StaleSummary {
    /// Staleness is not measured while the spec is invalid.
    pub fn invalid_spec() -> Self {
        Self {
            stale: false,
            reason: reason::NOT_APPLICABLE,
            message: "not measured while the spec is invalid".into(),
        }
    }
}

/// The staleness of every enabled section of one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub policy: String,
    /// Whether the policy is suspended.
    pub suspended: bool,
    /// Enabled sections, reminders first.
    pub sections: Vec<SectionStaleness>,
}

impl Report {
    /// Assesses each section of `desired` at `now`. `cron_jobs_created` holds the CronJobs'
    /// creation times where known; `resumed` is the `Suspended=False` transition time (`None`
    /// while suspended). Times are cut to whole seconds, as the API server stores them, so a
    /// verdict does not move when a just-written time is read back.
    pub fn evaluate(
        valid: &ValidPolicy,
        desired: &Desired,
        cron_jobs_created: &BTreeMap<Section, Time>,
        resumed: Option<&Time>,
        now: &Time,
    ) -> Report {
        let seconds = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
        let status = valid.policy.status.as_ref();
        let sections = desired
            .cron_jobs
            .iter()
            .filter_map(|(section, cron_job)| {
                let schedule = valid.schedule(*section)?;
                let spec = cron_job.spec.as_ref()?;
                let run_limit = spec
                    .job_template
                    .spec
                    .as_ref()
                    .and_then(|job| job.active_deadline_seconds)
                    .unwrap_or(defaults::MAX_ACTIVE_DEADLINE_SECONDS);
                let clock = SectionClock {
                    schedule,
                    zone: valid.time_zone().clone(),
                    run_limit: Duration::from_secs(run_limit.max(0).unsigned_abs()),
                    last_success: last_success(status, *section).map(seconds),
                    cron_job_created: cron_jobs_created.get(section).map(|t| seconds(t.0)),
                    policy_created: valid.policy.creation_timestamp().map(|t| seconds(t.0)),
                    resumed: resumed.map(|t| seconds(t.0)),
                };
                Some(SectionStaleness {
                    section: *section,
                    verdict: assess(&clock, resumed.is_none(), seconds(now.0)),
                    schedule: spec.schedule.clone(),
                    zone: valid.time_zone().clone(),
                    last_run: LastRun::of(status, *section),
                })
            })
            .collect();
        Report {
            namespace: valid.namespace.clone(),
            policy: valid.name.clone(),
            suspended: resumed.is_none(),
            sections,
        }
    }

    /// Whether any section is stale.
    pub fn is_stale(&self) -> bool {
        self.sections
            .iter()
            .any(|s| matches!(s.verdict, Verdict::Stale { .. }))
    }

    /// The `Stale` condition. Its message depends on the status and spec only, never on the
    /// current time, so a reconcile that finds nothing new writes nothing.
    pub fn summary(&self) -> StaleSummary {
        if self.suspended {
            return StaleSummary {
                stale: false,
                reason: reason::SUSPENDED,
                message: "not measured while spec.suspend is true".into(),
            };
        }
        let stale: Vec<String> = self
            .sections
            .iter()
            .filter_map(|s| match s.verdict {
                Verdict::Stale { baseline, .. } => Some(stale_line(s, baseline)),
                _ => None,
            })
            .collect();
        if stale.is_empty() {
            return StaleSummary {
                stale: false,
                reason: reason::RUNS_SUCCEEDING,
                message: format!(
                    "no section has gone {MISSED_RUNS} scheduled runs without a successful run"
                ),
            };
        }
        StaleSummary {
            stale: true,
            reason: reason::NO_RECENT_SUCCESS,
            message: format!(
                "{}; see `kubectl get jobs -n {} -l {LABEL_POLICY}={}` and the worker logs",
                stale.join("; "),
                self.namespace,
                self.policy
            ),
        }
    }

    /// How long until the next section turns stale, when one is still fresh (a little past the
    /// threshold, so the reconcile then finds it passed).
    pub fn recheck_in(&self, now: &Time) -> Option<Duration> {
        self.sections
            .iter()
            .filter_map(|s| match s.verdict {
                Verdict::Fresh { stale_at, .. } => Some(stale_at),
                _ => None,
            })
            .min()
            .map(|at| Duration::try_from(now.0.duration_until(at)).unwrap_or_default())
            .map(|wait| wait + RECHECK_MARGIN)
    }

    /// The per-section gauges.
    pub fn health(&self) -> Vec<SectionHealth> {
        self.sections
            .iter()
            .map(|s| SectionHealth {
                section: s.section,
                stale: matches!(s.verdict, Verdict::Stale { .. }),
                last_run_failed: s.last_run.as_ref().is_some_and(LastRun::failed),
                channel_rejected: s.last_run.as_ref().is_some_and(LastRun::channel_rejected),
            })
            .collect()
    }

    /// The note of the Event sent when the condition clears because runs succeed again.
    pub fn recovery_note(&self) -> String {
        let successes: Vec<String> = self
            .sections
            .iter()
            .filter_map(|s| match s.verdict {
                Verdict::Fresh { baseline, .. } if baseline.since == Since::LastSuccess => {
                    Some(format!("{} at {}", s.section.as_str(), baseline.at))
                }
                _ => None,
            })
            .collect();
        if successes.is_empty() {
            "no section is stale any more".into()
        } else {
            format!(
                "no section is stale any more; last successful runs: {}",
                successes.join(", ")
            )
        }
    }
}

/// The per-section gauges of a policy whose staleness is not measured (invalid spec): never
/// stale, but a failed last run is still worth an alert.
pub fn unmeasured_health(policy: &SignaturePolicy) -> Vec<SectionHealth> {
    let enabled = [
        (Section::Reminders, policy.spec.reminders.is_some()),
        (Section::Timeouts, policy.spec.timeout.is_some()),
    ];
    enabled
        .into_iter()
        .filter(|(_, enabled)| *enabled)
        .map(|(section, _)| {
            let last_run = LastRun::of(policy.status.as_ref(), section);
            SectionHealth {
                section,
                stale: false,
                last_run_failed: last_run.as_ref().is_some_and(LastRun::failed),
                channel_rejected: last_run.as_ref().is_some_and(LastRun::channel_rejected),
            }
        })
        .collect()
}

/// "reminders: no successful run since ..., ...; last run: ...".
fn stale_line(section: &SectionStaleness, baseline: Baseline) -> String {
    let since = match baseline.since {
        Since::LastSuccess => "the last one at",
        Since::CronJobCreated => "its CronJob was created at",
        Since::PolicyCreated => "the policy was created at",
        Since::Resumed => "the policy was resumed at",
    };
    let last_run = match &section.last_run {
        Some(run) => format!(
            "last run: {:?} at {} (Job {})",
            run.outcome, run.finished_at, run.job
        ),
        None => "last run: none reported".into(),
    };
    format!(
        "{}: no successful run since {since} {}, and at least {MISSED_RUNS} scheduled runs ({} in {}) have passed; {last_run}",
        section.section.as_str(),
        baseline.at,
        section.schedule,
        time::zone_name(&section.zone),
    )
}
