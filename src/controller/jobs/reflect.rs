//! The reflect step: a worker run Kubernetes failed becomes the section's `lastRun` (outcome
//! `JobFailed`, Kubernetes' reason and message), unless the worker reported that Job's run itself
//! or a later run was reported; a Warning Event names the Job, once. The write is a merge patch
//! conditioned on the policy's resourceVersion, so it never overwrites a report it did not see.

use std::borrow::Cow;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;

use super::{Cause, Trouble, UNSCHEDULABLE_AFTER};
use crate::constants::event;
use crate::controller::context::Context;
use crate::controller::delivering::{RunView, enabled_sections, last_run};
use crate::controller::error::Error;
use crate::crd::{
    ReminderRun, RemindersStatus, RunOutcome, SignaturePolicy, SignaturePolicyStatus, TimeoutRun,
    TimeoutsStatus,
};
use crate::policy::Section;

/// What becomes of a section's latest troubled run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Written as the section's `lastRun`, and announced.
    Reflect(Trouble),
    /// The worker reported this Job's run itself: its report stays, the failure is announced.
    WorkerReported(Trouble),
    /// `lastRun` already shows it (written by an earlier reconcile, which announced it).
    AlreadyReflected(Trouble),
}

/// What the reflect step does for a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Per section with a trouble to act on.
    pub verdicts: Vec<(Section, Verdict)>,
    /// When a pod now unschedulable will have been so for [`UNSCHEDULABLE_AFTER`].
    pub recheck_at: Option<Timestamp>,
}

/// Decides, purely, what the troubles of `policy` (from the index) mean at `now`: per enabled
/// section, the latest run in trouble is reflected unless `lastRun` is that Job's (the worker's
/// own report wins) or a run that started later.
pub fn decide(policy: &SignaturePolicy, troubles: &[Trouble], now: Timestamp) -> Decision {
    let mut decision = Decision::default();
    for section in enabled_sections(policy) {
        let reported = last_run(policy.status.as_ref(), section);
        let newer = |t: &&Trouble| match &reported {
            None => true,
            Some(run) => {
                t.job.as_ref() != run.job
                    && t.started.as_ref().is_some_and(|s| s.0 > run.started_at.0)
            }
        };
        let mut latest: Option<&Trouble> = None;
        for trouble in troubles.iter().filter(|t| t.section == section) {
            match trouble.fails_at() {
                Some(at) if at > now => {
                    if newer(&trouble) {
                        decision.recheck_at = Some(decision.recheck_at.map_or(at, |r| r.min(at)));
                    }
                }
                _ => {
                    let key = |t: &Trouble| {
                        (t.started.as_ref().map(|s| s.0), t.cause == Cause::JobFailed)
                    };
                    if latest.is_none_or(|l| key(trouble) > key(l)) {
                        latest = Some(trouble);
                    }
                }
            }
        }
        let Some(trouble) = latest else { continue };
        let verdict = match &reported {
            Some(run) if run.job == trouble.job.as_ref() => {
                if run.outcome == RunOutcome::JobFailed {
                    Verdict::AlreadyReflected(trouble.clone())
                } else {
                    Verdict::WorkerReported(trouble.clone())
                }
            }
            _ if newer(&trouble) => Verdict::Reflect(trouble.clone()),
            _ => continue,
        };
        decision.verdicts.push((section, verdict));
    }
    decision
}

/// The policy as the rest of the reconcile sees it after the reflect step.
pub struct Reflected<'a> {
    /// `policy`, with the `lastRun`s written.
    pub policy: Cow<'a, SignaturePolicy>,
    /// When to look again: a pod unschedulable for less than [`UNSCHEDULABLE_AFTER`].
    pub recheck_in: Option<Duration>,
}

/// The reflect step: writes the `lastRun` of each section whose latest run Kubernetes failed,
/// and announces each such Job once.
pub async fn reflect<'a>(
    policy: &'a SignaturePolicy,
    namespace: &str,
    now: &Time,
    ctx: &Context,
) -> Result<Reflected<'a>, Error> {
    let troubles = ctx.stores.troubles.of_policy(namespace, &policy.name_any());
    let mut reflected = Reflected {
        policy: Cow::Borrowed(policy),
        recheck_in: None,
    };
    if troubles.is_empty() {
        return Ok(reflected);
    }
    let decision = decide(policy, &troubles, now.0);
    // A second past the threshold, so the reconcile then finds it passed despite rounding.
    reflected.recheck_in = decision.recheck_at.map(|at| {
        Duration::try_from(now.0.duration_until(at)).unwrap_or_default() + Duration::from_secs(1)
    });
    let mut written = SignaturePolicyStatus::default();
    for (section, verdict) in &decision.verdicts {
        if let Verdict::Reflect(trouble) = verdict {
            let run = failed_run(trouble, now);
            match section {
                Section::Reminders => written.reminders = Some(reminders(run)),
                Section::Timeouts => written.timeouts = Some(timeouts(run)),
            }
        }
    }
    if written != SignaturePolicyStatus::default() {
        write(policy, namespace, &written, ctx).await?;
        let status = reflected
            .policy
            .to_mut()
            .status
            .get_or_insert_with(Default::default);
        if let Some(run) = written.reminders.and_then(|r| r.last_run) {
            status
                .reminders
                .get_or_insert_with(Default::default)
                .last_run = Some(run);
        }
        if let Some(run) = written.timeouts.and_then(|t| t.last_run) {
            status
                .timeouts
                .get_or_insert_with(Default::default)
                .last_run = Some(run);
        }
    }
    for (section, verdict) in decision.verdicts {
        let troubles = &ctx.stores.troubles;
        match verdict {
            Verdict::AlreadyReflected(trouble) => troubles.mark_announced(namespace, &trouble.job),
            Verdict::Reflect(trouble) | Verdict::WorkerReported(trouble)
                if !troubles.announced(namespace, &trouble.job) =>
            {
                let worker = last_run(policy.status.as_ref(), section)
                    .filter(|run| run.job == trouble.job.as_ref());
                announce(ctx, policy, section, &trouble, worker).await;
                troubles.mark_announced(namespace, &trouble.job);
            }
            Verdict::Reflect(_) | Verdict::WorkerReported(_) => {}
        }
    }
    Ok(reflected)
}

/// The run as the status shows it: no counts, Kubernetes' reason, the pod named in the message.
struct FailedRun {
    job: String,
    started_at: Time,
    finished_at: Time,
    reason: String,
    message: String,
}

fn failed_run(trouble: &Trouble, now: &Time) -> FailedRun {
    let message = match (&trouble.pod, trouble.cause) {
        (Some(pod), Cause::Unschedulable) => format!(
            "pod {pod} could not be scheduled for {}m: {}",
            UNSCHEDULABLE_AFTER.as_secs() / 60,
            trouble.message
        ),
        (Some(pod), _) => format!("pod {pod}: {}", trouble.message),
        (None, _) => trouble.message.to_string(),
    };
    FailedRun {
        job: trouble.job.to_string(),
        started_at: trouble.started.clone().unwrap_or_else(|| now.clone()),
        // A Job failed when its condition says; a pod's run counts as failed from when it is
        // seen so (or its grace ran out), which is at most now.
        finished_at: trouble
            .fails_at()
            .filter(|at| *at <= now.0)
            .map_or_else(|| now.clone(), Time),
        reason: trouble.reason.to_string(),
        message,
    }
}

fn reminders(run: FailedRun) -> RemindersStatus {
    RemindersStatus {
        last_run: Some(ReminderRun {
            job: run.job,
            started_at: run.started_at,
            finished_at: run.finished_at,
            outcome: RunOutcome::JobFailed,
            reason: Some(run.reason),
            message: Some(run.message),
            due: 0,
            sent: 0,
            held: 0,
            failed: 0,
            possible_duplicates: 0,
        }),
        ..Default::default()
    }
}

fn timeouts(run: FailedRun) -> TimeoutsStatus {
    TimeoutsStatus {
        last_run: Some(TimeoutRun {
            job: run.job,
            started_at: run.started_at,
            finished_at: run.finished_at,
            outcome: RunOutcome::JobFailed,
            reason: Some(run.reason),
            message: Some(run.message),
            timed_out: 0,
            alerted: 0,
            failed: 0,
        }),
        ..Default::default()
    }
}

/// The merge patch of the reflect step: `lastRun`s, on the condition that the policy is still
/// the one read (a worker's report since then makes it a 409, and the retry sees the report).
#[derive(Debug, Serialize)]
struct LastRunPatch<'a> {
    metadata: Precondition<'a>,
    status: &'a SignaturePolicyStatus,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Precondition<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_version: Option<&'a str>,
}

async fn write(
    policy: &SignaturePolicy,
    namespace: &str,
    status: &SignaturePolicyStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let patch = LastRunPatch {
        metadata: Precondition {
            resource_version: policy.metadata.resource_version.as_deref(),
        },
        status,
    };
    let api: Api<SignaturePolicy> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        &policy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Status {
        policy: format!("{namespace}/{}", policy.name_any()),
        source,
    })?;
    Ok(())
}

/// A Warning naming the Job (as the Event's related object too); best effort.
async fn announce(
    ctx: &Context,
    policy: &SignaturePolicy,
    section: Section,
    trouble: &Trouble,
    worker: Option<RunView<'_>>,
) {
    let what = match (&trouble.pod, trouble.cause) {
        (None, _) => "failed".to_owned(),
        (Some(pod), Cause::Unschedulable) => format!(
            "cannot run: pod {pod} could not be scheduled for {}m",
            UNSCHEDULABLE_AFTER.as_secs() / 60
        ),
        (Some(pod), Cause::ReportFailed) => format!("could not report: pod {pod}"),
        (Some(pod), _) => format!("cannot run: pod {pod} cannot start"),
    };
    let mut note = format!(
        "Job {} ({}) {what}: {}",
        trouble.job,
        section.as_str(),
        trouble.reason
    );
    if !trouble.message.is_empty() {
        note.push_str(&format!(": {}", trouble.message));
    }
    if let Some(run) = worker {
        note.push_str(&format!(
            "; its worker reported the run itself ({}), which the status keeps",
            run.outcome.as_str()
        ));
    }
    let job = ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: Some(trouble.namespace.to_string()),
        name: Some(trouble.job.to_string()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: event::JOB_FAILED.into(),
        note: Some(note),
        action: "Reflect".into(),
        secondary: Some(job),
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(policy = %policy.name_any(), %error, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests;
