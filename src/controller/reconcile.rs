//! One reconcile of one policy, as a pipeline of named steps: reflect (runs Kubernetes failed
//! into `lastRun`, see [`super::jobs::reflect`]) → validate (pure) → build (pure) → apply (only
//! what is not in place) → prune → run-now → status (only when it changed) → events (on
//! transitions). A healthy policy is looked at again after [`RESYNC`], or when a section would
//! turn stale (or a pod's run count as failed) if that is sooner. Transient failures are retried
//! per policy with backoff; a step the API server refuses is shown as `Ready=False` and retried
//! at [`BACKOFF_CAP`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use rand::Rng;

use super::apply;
use super::build::{self, Desired};
use super::cache;
pub use super::cache::Stores;
pub use super::context::Context;
use super::error::Error;
use super::events;
use super::jobs::reflect;
use super::metrics;
use super::names;
use super::run_now;
use super::staleness::{self, Report, StaleSummary};
use super::status::{self, ControllerStatus, Outcome};
use crate::crd::SignaturePolicy;
use crate::policy::Section;
use crate::policy::{FieldError, ValidPolicy};

/// How long a healthy policy waits before it is looked at again without any change.
pub const RESYNC: Duration = Duration::from_secs(3_600);
/// First retry after a transient error.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait between retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Reconciles one policy; the entry point given to kube's `Controller`.
pub async fn reconcile(policy: Arc<SignaturePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_policy(&policy, &ctx).await;
    let key = format!(
        "{}/{}",
        policy.namespace().unwrap_or_default(),
        policy.name_any()
    );
    match result {
        Ok((action, ready)) => {
            let result = if ready {
                metrics::RESULT_SUCCESS
            } else {
                metrics::RESULT_INVALID
            };
            ctx.metrics.reconciled(result, started.elapsed());
            ctx.metrics.policy_ready(&key, Some(ready));
            ctx.succeeded(&policy);
            Ok(action)
        }
        Err(err) => {
            ctx.metrics
                .reconciled(metrics::RESULT_ERROR, started.elapsed());
            tracing::debug!(policy = %key, error = %err, "reconcile failed");
            Err(err)
        }
    }
}

/// Retry policy for failed reconciles: per-object exponential backoff with jitter, never sooner
/// than the API server's `Retry-After`.
pub fn error_policy(policy: Arc<SignaturePolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.reason());
    if error.is_refusal() {
        // The same request gets the same answer until someone changes the policy (a watch
        // event, so a reconcile at once) or the cluster (RBAC, a webhook's rules: unseen, so
        // looked at again at the cap).
        ctx.metrics.refused(error.reason(), error.category());
        let attempt = ctx.failed(&policy);
        tracing::error!(policy = %policy.name_any(), reason = error.reason(), category = error.category(), %error, attempt, retry_in = ?BACKOFF_CAP, "the API server refused the reconcile");
        return Action::requeue(BACKOFF_CAP);
    }
    if !error.is_transient() {
        tracing::error!(policy = %policy.name_any(), reason = error.reason(), category = error.category(), %error, "reconcile failed permanently");
        return Action::await_change();
    }
    let attempt = ctx.failed(&policy);
    // The API server's own `Retry-After` (a 429 from its flow control) is a floor: retrying
    // sooner only earns another 429.
    let asked = error.retry_after().unwrap_or_default().min(BACKOFF_CAP);
    let delay = backoff(attempt, rand::rng().random_range(0.8..1.2)).max(asked);
    tracing::warn!(policy = %policy.name_any(), reason = error.reason(), category = error.category(), %error, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The wait before retry `attempt` (from 1): doubling from [`BACKOFF_BASE`], capped at
/// [`BACKOFF_CAP`], scaled by `jitter` (about 0.8 to 1.2) so failing objects spread out.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exponential = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exponential
        .min(BACKOFF_CAP)
        .mul_f64(jitter.clamp(0.5, 1.5))
        .min(BACKOFF_CAP)
}

/// The pipeline; `Ok((action, ready))`.
async fn reconcile_policy(
    policy: &SignaturePolicy,
    ctx: &Context,
) -> Result<(Action, bool), Error> {
    let namespace = policy
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    if policy.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove what the policy owned.
        ctx.forget_run_now(policy);
        return Ok((Action::await_change(), false));
    }
    let now = Time(jiff::Timestamp::now());
    // Every later step sees the runs Kubernetes failed as the status will show them.
    let reflected = reflect::reflect(policy, &namespace, &now, ctx).await?;
    let policy = reflected.policy.as_ref();
    let last_schedule = observed_schedules(policy, &namespace, ctx);
    let valid = match validate(policy) {
        Ok(valid) => valid,
        Err(problems) => {
            return report_invalid(policy, &namespace, problems, &last_schedule, &now, ctx).await;
        }
    };
    let desired = build(&valid, ctx);
    let (applied, pruned) = match write_owned(policy, &valid, &desired, &namespace, ctx).await {
        Ok(written) => written,
        Err(error) if error.is_refusal() => {
            let refused = Refused {
                valid: &valid,
                desired: &desired,
                last_schedule: &last_schedule,
                now: &now,
            };
            return Err(report_refused(policy, &namespace, refused, error, ctx).await);
        }
        Err(error) => return Err(error),
    };
    let active_since = status::active_since(policy, &now);
    let report = Report::evaluate(
        &valid,
        &desired,
        &applied.cron_jobs_created,
        active_since.as_ref(),
        &now,
    );
    let outcome = Outcome::Reconciled(cron_job_names(&desired));
    let computed = status::compute(policy, &outcome, &report.summary(), &last_schedule, &now);
    write_status(policy, &namespace, &computed, ctx).await?;
    events::announce(ctx, policy, &computed, &report, &applied.changed, &pruned).await;
    events::announce_delivering(ctx, policy, &computed).await;
    ctx.metrics
        .policy_sections(&namespace, &policy.name_any(), &report.health());
    let wait = [report.recheck_in(&now), reflected.recheck_in]
        .into_iter()
        .flatten()
        .fold(RESYNC, Duration::min);
    Ok((Action::requeue(wait), true))
}

/// apply, prune, run-now: the steps that write owned objects.
async fn write_owned(
    policy: &SignaturePolicy,
    valid: &ValidPolicy,
    desired: &Desired,
    namespace: &str,
    ctx: &Context,
) -> Result<(apply::Applied, Vec<String>), Error> {
    let applied = apply::apply(desired, namespace, ctx).await?;
    let pruned = apply::prune(valid, desired, ctx).await?;
    run_now::run_now(policy, desired, ctx).await?;
    Ok((applied, pruned))
}

/// validate: what the CRD's schema and CEL rules cannot check (zones, cron syntax).
fn validate(policy: &SignaturePolicy) -> Result<ValidPolicy, Vec<FieldError>> {
    ValidPolicy::new(policy)
}

/// build: the objects the policy should own.
fn build(valid: &ValidPolicy, ctx: &Context) -> Desired {
    build::desired(valid, &ctx.settings)
}

/// The end of the pipeline for an invalid spec: `Ready=False` with the problems, a Warning on
/// the transition, and no retry until the spec changes. No owned object is touched.
async fn report_invalid(
    policy: &SignaturePolicy,
    namespace: &str,
    problems: Vec<FieldError>,
    last_schedule: &BTreeMap<Section, Time>,
    now: &Time,
    ctx: &Context,
) -> Result<(Action, bool), Error> {
    let computed = status::compute(
        policy,
        &Outcome::Invalid(problems),
        &StaleSummary::invalid_spec(),
        last_schedule,
        now,
    );
    write_status(policy, namespace, &computed, ctx).await?;
    events::announce_invalid(ctx, policy, &computed).await;
    events::announce_delivering(ctx, policy, &computed).await;
    let health = staleness::unmeasured_health(policy);
    ctx.metrics
        .policy_sections(namespace, &policy.name_any(), &health);
    Ok((Action::await_change(), false))
}

/// What [`report_refused`] needs of the reconcile that met the refusal.
struct Refused<'a> {
    valid: &'a ValidPolicy,
    desired: &'a Desired,
    last_schedule: &'a BTreeMap<Section, Time>,
    now: &'a Time,
}

/// The end of the pipeline when the API server refused a step: `Ready=False`, reason the step's,
/// with the API server's answer (it names the field, the webhook or the missing permission), a
/// Warning on the transition only, and the refusal handed back to [`error_policy`], which counts
/// it and retries at the cap. When the status cannot be written either, that error is handed
/// back instead: its retry decides when the refusal can be shown.
async fn report_refused(
    policy: &SignaturePolicy,
    namespace: &str,
    at: Refused<'_>,
    error: Error,
    ctx: &Context,
) -> Error {
    let Some(refusal) = error.refusal_message() else {
        return error;
    };
    // Stable across retries, so a retry meeting the same refusal writes nothing.
    let message = format!(
        "{refusal}; retried every {} minutes and whenever the policy changes",
        BACKOFF_CAP.as_secs() / 60
    );
    let key = format!("{namespace}/{}", policy.name_any());
    ctx.metrics.policy_ready(&key, Some(false));
    // Runs of the CronJobs already in place go on, so staleness is still measured.
    let created = cron_jobs_created(at.desired, namespace, ctx);
    let resumed = status::active_since(policy, at.now);
    let report = Report::evaluate(at.valid, at.desired, &created, resumed.as_ref(), at.now);
    let outcome = Outcome::Refused {
        reason: error.reason(),
        message,
    };
    let computed = status::compute(
        policy,
        &outcome,
        &report.summary(),
        at.last_schedule,
        at.now,
    );
    if let Err(status_error) = write_status(policy, namespace, &computed, ctx).await {
        tracing::warn!(policy = %key, reason = error.reason(), category = error.category(), %error, "the API server refused a step, and the status saying so could not be written");
        return status_error;
    }
    events::announce_refused(ctx, policy, &computed, &report).await;
    events::announce_delivering(ctx, policy, &computed).await;
    ctx.metrics
        .policy_sections(namespace, &policy.name_any(), &report.health());
    error
}

/// Creation times of the policy's desired CronJobs that exist, from the store.
fn cron_jobs_created(desired: &Desired, namespace: &str, ctx: &Context) -> BTreeMap<Section, Time> {
    desired
        .cron_jobs
        .iter()
        .filter_map(|(section, cron_job)| {
            let stored = cache::get(&ctx.stores.cron_jobs, namespace, &cron_job.name_any())?;
            Some((*section, stored.created.clone()?))
        })
        .collect()
}

/// The sections' CronJob names.
fn cron_job_names(desired: &Desired) -> Vec<(Section, String)> {
    desired
        .cron_jobs
        .iter()
        .map(|(s, cj)| (*s, cj.name_any()))
        .collect()
}

/// Last schedule times of the policy's CronJobs, from the store.
fn observed_schedules(
    policy: &SignaturePolicy,
    namespace: &str,
    ctx: &Context,
) -> BTreeMap<Section, Time> {
    Section::ALL
        .into_iter()
        .filter_map(|section| {
            let name = names::cronjob(&policy.name_any(), section);
            let cron_job = cache::get(&ctx.stores.cron_jobs, namespace, &name)?;
            Some((section, cron_job.last_schedule_time.clone()?))
        })
        .collect()
}

/// status: writes the controller's part of the status, when the policy does not already show
/// it. A typed JSON merge patch (see [`status::StatusPatch`]): the workers write their fields
/// with merge patches too, and a disabled section's status must go as a whole.
async fn write_status(
    policy: &SignaturePolicy,
    namespace: &str,
    computed: &ControllerStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if computed.is_reflected_in(policy.status.as_ref()) {
        return Ok(());
    }
    let api: Api<SignaturePolicy> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_status(
        &policy.name_any(),
        &PatchParams::default(),
        &Patch::Merge(computed.merge_patch()),
    )
    .await
    .map_err(|source| Error::Status {
        policy: format!("{namespace}/{}", policy.name_any()),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(9, 1.0), Duration::from_secs(256));
        assert_eq!(backoff(10, 1.0), BACKOFF_CAP);
        assert_eq!(backoff(1_000, 1.2), BACKOFF_CAP);
        assert_eq!(backoff(3, 0.8), Duration::from_millis(3_200));
    }
}
