//! Worker runs that Kubernetes failed, seen from the Jobs and pods of the policies' CronJobs: a
//! Job whose `Failed` condition is set, a worker container that cannot start, a pod that stays
//! unschedulable for [`UNSCHEDULABLE_AFTER`]. The watches keep only such runs, a few hundred
//! bytes each, in a [`Troubles`] index by policy (a healthy Job or pod costs nothing); the
//! reflect step ([`reflect`]) writes them into the policy's `lastRun` unless the worker reported.

mod index;
pub mod reflect;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;

pub use index::{Source, Troubles, triggers};

use super::build::managing_policy;
use crate::constants::{LABEL_COMPONENT, LABEL_JOB_NAME, WORKER_CONTAINER};
use crate::crd::SignaturePolicy;
use crate::policy::Section;

/// How long a worker pod may stay unschedulable before its run counts as failed: long enough
/// for a cluster autoscaler to add a node (typically one to three minutes).
pub const UNSCHEDULABLE_AFTER: Duration = Duration::from_secs(5 * 60);

/// Waiting reasons of the worker container that mean it will not start without a change: a
/// missing Secret or key (`CreateContainerConfigError`), an image that cannot be pulled.
pub const STUCK_WAITING_REASONS: [&str; 4] = [
    "CreateContainerConfigError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
];

/// Longest Kubernetes message kept; status and Events stay small.
pub const MAX_MESSAGE: usize = 1_024;

/// How a run failed, as Kubernetes tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The Job's `Failed` condition is True (`BackoffLimitExceeded`, `DeadlineExceeded`,
    /// `PodFailurePolicy`, ...).
    JobFailed,
    /// The worker container is waiting for a reason in [`STUCK_WAITING_REASONS`].
    ContainerStuck,
    /// The pod's `PodScheduled` condition is False; a failure once it has been so for
    /// [`UNSCHEDULABLE_AFTER`].
    Unschedulable,
    /// The worker finished, but its status write-back failed (its termination message says
    /// `statusWriteFailed`): the run is lost to the status unless reported here.
    ReportFailed,
}

/// Reason of a run whose worker could not write its status.
pub const STATUS_WRITE_FAILED: &str = "StatusWriteFailed";

/// One worker run in trouble: what the index keeps of a failed Job or a stuck pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    /// The policy's namespace.
    pub namespace: Box<str>,
    /// The policy, from the `signet.dev/policy` label.
    pub policy: Box<str>,
    /// The section, from the `app.kubernetes.io/component` label.
    pub section: Section,
    /// The Job of the run.
    pub job: Box<str>,
    /// The pod, for a pod's trouble.
    pub pod: Option<Box<str>>,
    /// How it failed.
    pub cause: Cause,
    /// Kubernetes' reason: the condition's or the waiting container's.
    pub reason: Box<str>,
    /// Kubernetes' message, at most [`MAX_MESSAGE`] bytes.
    pub message: Box<str>,
    /// When the run began: the Job's `startTime` (else its creation), a pod's creation.
    pub started: Option<Time>,
    /// Since when: the `Failed` or `PodScheduled=False` condition's `lastTransitionTime`.
    pub since: Option<Time>,
}

impl Trouble {
    /// From when the run counts as failed; `None`: from when it was seen.
    pub fn fails_at(&self) -> Option<Timestamp> {
        let since = self.since.as_ref()?.0;
        match self.cause {
            Cause::Unschedulable => {
                let grace = SignedDuration::try_from(UNSCHEDULABLE_AFTER).ok()?;
                since.checked_add(grace).ok()
            }
            Cause::JobFailed | Cause::ContainerStuck | Cause::ReportFailed => Some(since),
        }
    }
}

/// The trouble of a worker Job: its `Failed` condition, when True.
pub fn job_trouble(job: &Job) -> Option<Trouble> {
    let status = job.status.as_ref()?;
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True")?;
    let (namespace, policy, section) = owner(&job.metadata)?;
    Some(Trouble {
        namespace,
        policy,
        section,
        job: job.metadata.name.as_deref()?.into(),
        pod: None,
        cause: Cause::JobFailed,
        reason: failed.reason.as_deref().unwrap_or("Failed").into(),
        message: bounded(failed.message.as_deref().unwrap_or_default()),
        started: status
            .start_time
            .clone()
            .or_else(|| job.metadata.creation_timestamp.clone()),
        since: failed.last_transition_time.clone(),
    })
}

/// The trouble of a worker pod: its worker container stuck waiting, the pod unschedulable, or
/// the worker finished without writing its status.
pub fn pod_trouble(pod: &Pod) -> Option<Trouble> {
    let status = pod.status.as_ref()?;
    if let Some(unreported) = report_trouble(pod) {
        return Some(unreported);
    }
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == WORKER_CONTAINER)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref())
        .filter(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| STUCK_WAITING_REASONS.contains(&r))
        });
    let unschedulable = || {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    };
    let (cause, reason, message, since) = match waiting {
        Some(waiting) => (
            Cause::ContainerStuck,
            waiting.reason.as_deref().unwrap_or_default(),
            waiting.message.as_deref().unwrap_or_default(),
            None,
        ),
        None => {
            let condition = unschedulable()?;
            (
                Cause::Unschedulable,
                condition.reason.as_deref().unwrap_or("Unschedulable"),
                condition.message.as_deref().unwrap_or_default(),
                // The pod's creation when the condition carries no time: never sooner.
                condition
                    .last_transition_time
                    .clone()
                    .or_else(|| pod.metadata.creation_timestamp.clone()),
            )
        }
    };
    pod_trouble_of(pod, cause, reason, message, since)
}

/// The trouble of `pod`'s run: its policy, section and Job from its labels, begun when the pod
/// was created.
fn pod_trouble_of(
    pod: &Pod,
    cause: Cause,
    reason: &str,
    message: &str,
    since: Option<Time>,
) -> Option<Trouble> {
    let (namespace, policy, section) = owner(&pod.metadata)?;
    Some(Trouble {
        namespace,
        policy,
        section,
        job: pod_job(&pod.metadata)?.into(),
        pod: Some(pod.metadata.name.as_deref()?.into()),
        cause,
        reason: reason.into(),
        message: bounded(message),
        started: pod.metadata.creation_timestamp.clone(),
        since,
    })
}

/// A finished worker whose status write-back failed: its termination message (the run's
/// summary line) carries `statusWriteFailed`, the API server's reason (`Forbidden`: the pods'
/// ServiceAccount may not patch the policy's status).
fn report_trouble(pod: &Pod) -> Option<Trouble> {
    let terminated = pod
        .status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == WORKER_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    let summary: serde_json::Value = serde_json::from_str(terminated.message.as_deref()?).ok()?;
    let failed = summary.get("statusWriteFailed")?.as_str()?;
    let outcome = summary["outcome"].as_str().unwrap_or("unknown");
    let sent = summary["sent"].as_u64().unwrap_or_default();
    let message = format!(
        "the worker's run ended {outcome} ({sent} sent) but it could not write this status: the \
         API server answered {failed}; the pods' ServiceAccount needs patch on \
         signaturepolicies/status (see jobTemplate.serviceAccountName)"
    );
    pod_trouble_of(
        pod,
        Cause::ReportFailed,
        STATUS_WRITE_FAILED,
        &message,
        terminated.finished_at.clone(),
    )
}

/// The policy whose CronJob started `object` (a Job or a pod), from its labels.
pub fn policy_of<K: Resource>(object: K) -> Option<ObjectRef<SignaturePolicy>> {
    let meta = object.meta();
    let policy = managing_policy(meta)?;
    Some(ObjectRef::new(policy).within(meta.namespace.as_deref()?))
}

/// Namespace, policy and section of a Job or pod Signet's CronJobs made.
fn owner(meta: &ObjectMeta) -> Option<(Box<str>, Box<str>, Section)> {
    let section = meta.labels.as_ref()?.get(LABEL_COMPONENT)?;
    Some((
        meta.namespace.as_deref()?.into(),
        managing_policy(meta)?.into(),
        Section::parse(section)?,
    ))
}

/// A pod's Job: the label Kubernetes sets, else its controlling owner.
fn pod_job(meta: &ObjectMeta) -> Option<&str> {
    let labelled = meta.labels.as_ref().and_then(|l| l.get(LABEL_JOB_NAME));
    labelled.map(String::as_str).or_else(|| {
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Job" && o.controller == Some(true))
            .map(|o| o.name.as_str())
    })
}

/// `message` cut to [`MAX_MESSAGE`] bytes on a character boundary.
fn bounded(message: &str) -> Box<str> {
    if message.len() <= MAX_MESSAGE {
        return message.into();
    }
    let mut cut = MAX_MESSAGE - 3;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &message[..cut]).into()
}

#[cfg(test)]
mod tests;
