//! One reconcile of one policy: validate → build → apply (only what differs from the cache) →
//! prune → manual run → staleness → status (only when it changed) → events on transitions. A
//! healthy policy is looked at again after [`RESYNC`], or when a section would turn stale if
//! that is sooner.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::build::{self, Desired, WorkerSettings};
use super::cache::{OwnedIndex, change_marker};
use super::error::Error;
use super::metrics::Metrics;
use super::names::{self, Section};
use super::run_now;
use super::staleness::{self, Report, StaleSummary};
use super::status::{self, Outcome};
use crate::constants::{ANNOTATION_RUN_NOW, CONDITION_STALE, FIELD_MANAGER, event, reason};
use crate::crd::SignaturePolicy;
use crate::policy::ValidPolicy;

/// How long a healthy policy waits before it is looked at again without any change.
pub const RESYNC: Duration = Duration::from_secs(3_600);
/// First retry after a transient error.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest wait between retries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// What the controller remembers of the objects it owns, kept current by watches; reconciles
/// read these instead of the API.
#[derive(Clone, Default)]
pub struct Stores {
    /// Worker CronJobs.
    pub cron_jobs: OwnedIndex,
    /// Worker ServiceAccounts.
    pub service_accounts: OwnedIndex,
    /// Worker Roles.
    pub roles: OwnedIndex,
    /// Worker RoleBindings.
    pub role_bindings: OwnedIndex,
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Who Events are from. A Recorder is made per Event: Signet emits Events on transitions
    /// only, so the Recorder's series cache would only hold memory for every policy.
    pub reporter: Reporter,
    /// How worker containers run.
    pub settings: WorkerSettings,
    /// Caches of owned objects.
    pub stores: Stores,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per policy, for backoff.
    failures: Mutex<HashMap<ObjectRef<SignaturePolicy>, u32>>,
    /// Owned objects known to be in place: `Kind/namespace/name` → (fingerprint of the desired
    /// object, change marker of the object then).
    verified: Mutex<HashMap<String, (u64, String)>>,
    /// Per policy with a run-now request not yet cleared: the policy's resourceVersion when the
    /// request was first seen, which names the request's Job.
    run_now_stamps: Mutex<HashMap<ObjectRef<SignaturePolicy>, String>>,
}

impl Context {
    /// A context for reconciles.
    pub fn new(
        client: Client,
        reporter: Reporter,
        settings: WorkerSettings,
        stores: Stores,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            reporter,
            settings,
            stores,
            metrics,
            failures: Mutex::default(),
            verified: Mutex::default(),
            run_now_stamps: Mutex::default(),
        }
    }

    /// The stamp naming the Job of `policy`'s run-now request: its resourceVersion the first
    /// time this request was seen. Kept until [`Self::forget_run_now`], so the retries of one
    /// request name one Job however often the policy is written meanwhile (only a restart in
    /// that window forgets it).
    pub(super) fn run_now_stamp(&self, policy: &SignaturePolicy) -> String {
        let mut stamps = self
            .run_now_stamps
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        stamps
            .entry(ObjectRef::from_obj(policy))
            .or_insert_with(|| policy.resource_version().unwrap_or_default())
            .clone()
    }

    /// Forgets the stamp of `policy`'s run-now request (cleared, or gone).
    pub(super) fn forget_run_now(&self, policy: &SignaturePolicy) {
        self.run_now_stamps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from_obj(policy));
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, String)>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<SignaturePolicy>, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
            ctx.metrics
                .reconciled(if ready { "success" } else { "invalid" }, started.elapsed());
            ctx.metrics.policy_ready(&key, Some(ready));
            ctx.failures().remove(&ObjectRef::from_obj(policy.as_ref()));
            Ok(action)
        }
        Err(err) => {
            ctx.metrics.reconciled("error", started.elapsed());
            tracing::debug!(policy = %key, error = %err, "reconcile failed");
            Err(err)
        }
    }
}

/// Retry policy for failed reconciles: per-object exponential backoff with jitter, never sooner
/// than the API server's `Retry-After`.
pub fn error_policy(policy: Arc<SignaturePolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.reason());
    if !error.is_transient() {
        tracing::error!(policy = %policy.name_any(), %error, "reconcile failed permanently");
        return Action::await_change();
    }
    let attempt = {
        let mut failures = ctx.failures();
        let count = failures
            .entry(ObjectRef::from_obj(policy.as_ref()))
            .or_insert(0);
        *count += 1;
        *count
    };
    // The API server's own `Retry-After` (a 429 from its flow control) is a floor: retrying
    // sooner only earns another 429.
    let asked = error.retry_after().unwrap_or_default().min(BACKOFF_CAP);
    let delay = backoff(attempt, rand::rng().random_range(0.8..1.2)).max(asked);
    tracing::warn!(policy = %policy.name_any(), %error, attempt, retry_in = ?delay, "reconcile failed");
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
        ctx.forget_run_now(policy);
        // Owner references let the garbage collector remove what the policy owned.
        return Ok((Action::await_change(), false));
    }
    let last_schedule = observed_schedules(policy, &namespace, ctx);
    let now = Time(jiff::Timestamp::now());
    let valid = match ValidPolicy::new(policy) {
        Ok(valid) => valid,
        Err(problems) => {
            let computed = status::compute(
                policy,
                &Outcome::Invalid(problems),
                &StaleSummary::invalid_spec(),
                &last_schedule,
                &now,
            );
            let was_invalid = policy
                .status
                .as_ref()
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == computed.ready().type_)
                })
                .is_some_and(|c| {
                    c.reason == computed.ready().reason && c.message == computed.ready().message
                });
            patch_status(policy, &namespace, &computed, ctx).await?;
            if !was_invalid {
                publish(
                    ctx,
                    policy,
                    EventType::Warning,
                    event::INVALID_SPEC,
                    "Validate",
                    computed.ready().message.clone(),
                )
                .await;
            }
            let health = staleness::unmeasured_health(policy);
            ctx.metrics
                .policy_sections(&namespace, &policy.name_any(), &health);
            return Ok((Action::await_change(), false));
        }
    };

    let desired = build::desired(&valid, &ctx.settings);
    let InPlace {
        changed,
        cron_jobs_created,
    } = apply_all(&desired, &namespace, ctx).await?;
    let pruned = prune(&valid, &desired, ctx).await?;
    if let Some(request) = policy.annotations().get(ANNOTATION_RUN_NOW) {
        run_now::run_now(policy, &desired, request, ctx).await?;
    } else {
        // Cleared by an earlier attempt whose answer was lost, or by a person.
        ctx.forget_run_now(policy);
    }

    let cron_jobs = desired
        .cron_jobs
        .iter()
        .map(|(s, cj)| (*s, cj.name_any()))
        .collect();
    let report = Report::evaluate(
        &valid,
        &desired,
        &cron_jobs_created,
        status::active_since(policy, &now).as_ref(),
        &now,
    );
    let computed = status::compute(
        policy,
        &Outcome::Reconciled(cron_jobs),
        &report.summary(),
        &last_schedule,
        &now,
    );
    patch_status(policy, &namespace, &computed, ctx).await?;
    publish_staleness(ctx, policy, &computed, &report).await;
    ctx.metrics
        .policy_sections(&namespace, &policy.name_any(), &report.health());
    if !changed.is_empty() {
        let note = format!("applied {}", changed.join(", "));
        publish(
            ctx,
            policy,
            EventType::Normal,
            event::APPLIED,
            "Apply",
            note,
        )
        .await;
    }
    if !pruned.is_empty() {
        let note = format!("deleted {} (section disabled)", pruned.join(", "));
        publish(ctx, policy, EventType::Normal, event::PRUNED, "Prune", note).await;
    }
    let wait = report
        .recheck_in(&now)
        .map_or(RESYNC, |wait| wait.min(RESYNC));
    Ok((Action::requeue(wait), true))
}

/// Events on transitions of the `Stale` condition only: a Warning when it turns True, a Normal
/// one when it clears because runs succeed again. Clearing by suspension or an invalid spec
/// follows the person's own edit and says so in the condition, so it is not announced.
async fn publish_staleness(
    ctx: &Context,
    policy: &SignaturePolicy,
    computed: &status::ControllerStatus,
    report: &Report,
) {
    let was_stale = policy
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_STALE))
        .is_some_and(|c| c.status == "True");
    let stale = computed.stale();
    if stale.status == "True" && !was_stale {
        let note = stale.message.clone();
        publish(
            ctx,
            policy,
            EventType::Warning,
            event::STALE,
            "Assess",
            note,
        )
        .await;
    } else if stale.status == "False" && was_stale && stale.reason == reason::RUNS_SUCCEEDING {
        let note = report.recovery_note();
        publish(
            ctx,
            policy,
            EventType::Normal,
            event::RECOVERED,
            "Assess",
            note,
        )
        .await;
    }
}

/// Last schedule times of the policy's CronJobs, from the cache.
fn observed_schedules(
    policy: &SignaturePolicy,
    namespace: &str,
    ctx: &Context,
) -> BTreeMap<Section, Time> {
    Section::ALL
        .into_iter()
        .filter_map(|section| {
            let name = names::cronjob(&policy.name_any(), section);
            Some((
                section,
                ctx.stores
                    .cron_jobs
                    .get(namespace, &name)?
                    .last_schedule_time?,
            ))
        })
        .collect()
}

/// What [`apply_all`] wrote and learnt.
struct InPlace {
    /// `Kind name` of each object written.
    changed: Vec<String>,
    /// Creation times of the CronJobs, where known: staleness counts a section's runs from them.
    cron_jobs_created: BTreeMap<Section, Time>,
}

/// What [`apply`] did to one object.
struct Applied {
    /// `Kind name`, when it wrote the object.
    wrote: Option<String>,
    /// The object's `creationTimestamp`, when known.
    created: Option<Time>,
}

/// Applies every desired object not known to be in place.
async fn apply_all(desired: &Desired, namespace: &str, ctx: &Context) -> Result<InPlace, Error> {
    let stores = &ctx.stores;
    let mut changed = Vec::new();
    changed.extend(
        apply(
            ctx,
            &stores.service_accounts,
            namespace,
            &desired.service_account,
        )
        .await?
        .wrote,
    );
    changed.extend(
        apply(ctx, &stores.roles, namespace, &desired.role)
            .await?
            .wrote,
    );
    changed.extend(
        apply(ctx, &stores.role_bindings, namespace, &desired.role_binding)
            .await?
            .wrote,
    );
    let mut cron_jobs_created = BTreeMap::new();
    for (section, cron_job) in &desired.cron_jobs {
        let applied = apply(ctx, &stores.cron_jobs, namespace, cron_job).await?;
        changed.extend(applied.wrote);
        if let Some(created) = applied.created {
            cron_jobs_created.insert(*section, created);
        }
    }
    Ok(InPlace {
        changed,
        cron_jobs_created,
    })
}

/// Server-side applies `object` unless it is known to be in place. The caches remember only a
/// change marker per owned object, so "known" means: this controller verified or applied the
/// same desired object, and the marker (`generation`, else `resourceVersion`) has not moved
/// since. Otherwise the object is read once and compared; only a difference is written. A
/// steady-state reconcile therefore sends nothing, and one after a restart only reads.
/// The object's creation time comes from whichever of the cache, the read or the write saw it.
async fn apply<K>(
    ctx: &Context,
    index: &OwnedIndex,
    namespace: &str,
    object: &K,
) -> Result<Applied, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.name_any();
    let kind = K::kind(&());
    let key = format!("{kind}/{namespace}/{name}");
    let wanted = to_json(object);
    let fingerprint = fingerprint(&wanted);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(cached) = index.get(namespace, &name) {
        if ctx.verified().get(&key) == Some(&(fingerprint, cached.marker.clone())) {
            return Ok(Applied {
                wrote: None,
                created: cached.created,
            });
        }
        let current = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::api(format!("get {kind} {namespace}/{name}"), e))?;
        if let Some(current) = current
            && contains(&to_json(&current), &wanted)
        {
            ctx.verified()
                .insert(key, (fingerprint, change_marker(current.meta())));
            return Ok(Applied {
                wrote: None,
                created: current.meta().creation_timestamp.clone(),
            });
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| Error::api(format!("apply {kind} {namespace}/{name}"), e))?;
    ctx.verified()
        .insert(key, (fingerprint, change_marker(applied.meta())));
    Ok(Applied {
        wrote: Some(format!("{kind} {name}")),
        created: applied.meta().creation_timestamp.clone(),
    })
}

fn fingerprint(value: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

fn to_json(object: &impl Serialize) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// Whether `actual` holds every field of `wanted` with the same value. Fields the API server adds
/// (defaults, status, managed fields) are ignored; lists must match item by item.
pub fn contains(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Value::Object(actual), Value::Object(wanted)) => wanted
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|a| contains(a, value))),
        (Value::Array(actual), Value::Array(wanted)) => {
            actual.len() == wanted.len() && actual.iter().zip(wanted).all(|(a, w)| contains(a, w))
        }
        _ => actual == wanted,
    }
}

/// Deletes the policy's CronJobs that are no longer desired (a section was disabled). Only the
/// names this policy's CronJobs can have are looked up, so the cost does not grow with the
/// number of policies; a CronJob must also carry the policy's labels to be deleted.
async fn prune(
    policy: &ValidPolicy,
    desired: &Desired,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let keep: Vec<String> = desired
        .cron_jobs
        .iter()
        .map(|(_, cj)| cj.name_any())
        .collect();
    let stale: Vec<String> = Section::ALL
        .into_iter()
        .map(|section| names::cronjob(&policy.name, section))
        .filter(|name| !keep.contains(name))
        .filter(|name| {
            let cached = ctx.stores.cron_jobs.get(&policy.namespace, name);
            cached.is_some_and(|cj| cj.policy.as_deref() == Some(policy.name.as_str()))
        })
        .collect();
    let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &policy.namespace);
    for name in &stale {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => {
                return Err(Error::api(
                    format!("delete CronJob {}/{name}", policy.namespace),
                    e,
                ));
            }
        }
    }
    Ok(stale.iter().map(|n| format!("CronJob {n}")).collect())
}

/// Writes the controller's status when the policy does not already show it.
async fn patch_status(
    policy: &SignaturePolicy,
    namespace: &str,
    computed: &status::ControllerStatus,
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
    .map_err(|e| {
        Error::api(
            format!("patch status of {namespace}/{}", policy.name_any()),
            e,
        )
    })?;
    Ok(())
}

/// Publishes an Event; a failure to do so is logged, never fatal.
pub(super) async fn publish(
    ctx: &Context,
    policy: &SignaturePolicy,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, &policy.object_ref(&())).await {
        tracing::warn!(policy = %policy.name_any(), %error, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn containment_ignores_server_added_fields() {
        let wanted = json!({"spec": {"schedule": "* * * * *", "list": [{"a": 1}]}});
        let actual = json!({"spec": {"schedule": "* * * * *", "list": [{"a": 1, "b": 2}], "extra": true}, "status": {}});
        assert!(contains(&actual, &wanted));
        assert!(!contains(
            &json!({"spec": {"schedule": "0 * * * *", "list": [{"a": 1}]}}),
            &wanted
        ));
        assert!(!contains(
            &json!({"spec": {"schedule": "* * * * *", "list": []}}),
            &wanted
        ));
        assert!(!contains(&json!({}), &wanted));
    }
}
