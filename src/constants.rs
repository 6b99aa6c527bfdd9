//! Every string the cluster sees from Signet, in one place: the API group, names, labels,
//! annotations, condition types and reasons, and the environment variables the workers read.

/// API group of Signet's custom resources.
pub const API_GROUP: &str = "signet.dev";
/// The served and stored version of `SignaturePolicy`.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_GROUP_VERSION: &str = "signet.dev/v1alpha1";
/// Kind of the policy resource.
pub const POLICY_KIND: &str = "SignaturePolicy";
/// Name of the CustomResourceDefinition (`<plural>.<group>`).
pub const POLICY_CRD_NAME: &str = "signaturepolicies.signet.dev";

/// Label every object Signet creates carries.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "signet";
/// Label naming the policy an object belongs to (pruning selects on it).
pub const LABEL_POLICY: &str = "signet.dev/policy";

/// Condition type: the policy was reconciled into its CronJobs.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the policy is suspended.
pub const CONDITION_SUSPENDED: &str = "Suspended";
/// Condition type: a section has had no successful run for too long.
pub const CONDITION_STALE: &str = "Stale";
/// Condition type: the last run of every enabled section completed.
pub const CONDITION_DELIVERING: &str = "Delivering";

/// Prefix of the environment variable that carries a secret value into a worker:
/// `SIGNET_SECRET_<NAME>_<KEY>`.
pub const SECRET_ENV_PREFIX: &str = "SIGNET_SECRET_";

/// The SendGrid endpoint used when a channel does not name one.
pub const SENDGRID_DEFAULT_ENDPOINT: &str = "https://api.sendgrid.com/v3/mail/send";

/// Field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "signet-controller";
/// Name the controller reports in Events.
pub const EVENT_REPORTER: &str = "signet-controller";
/// `application_name` of the workers' PostgreSQL connections (`pg_stat_activity` shows it).
pub const DATABASE_APPLICATION_NAME: &str = "signet";
/// Annotation asking the controller to start a run now: `reminders` or `timeouts`.
pub const ANNOTATION_RUN_NOW: &str = "signet.dev/run-now";
/// Annotation the controller stamps on every object it applies: a hash of the desired object,
/// so the watched copy says whether it is still in place without a read.
pub const ANNOTATION_DESIRED_HASH: &str = "signet.dev/desired-hash";
/// Annotation `kubectl create job --from=cronjob/...` also sets; marks manual runs.
pub const ANNOTATION_INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";
/// Label naming the part of Signet an object belongs to (`reminders`, `timeouts`, `worker`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label naming the application.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label Kubernetes puts on a Job's pods, naming the Job.
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Name of the worker container in every Job.
pub const WORKER_CONTAINER: &str = "worker";

/// Environment variable carrying the policy spec (JSON) into a worker.
pub const ENV_POLICY: &str = "SIGNET_POLICY";
/// Environment variable carrying `<namespace>/<name>` of the policy.
pub const ENV_POLICY_REF: &str = "SIGNET_POLICY_REF";
/// Environment variable carrying the policy's `metadata.generation`.
pub const ENV_POLICY_GENERATION: &str = "SIGNET_POLICY_GENERATION";
/// Environment variable carrying the name of the worker's Job.
pub const ENV_JOB_NAME: &str = "SIGNET_JOB_NAME";

/// Condition reasons.
pub mod reason {
    /// Ready: the CronJobs and RBAC match the policy.
    pub const RECONCILED: &str = "Reconciled";
    /// Ready: semantic validation failed; nothing was changed.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready (False): the API server refused to apply an owned object (RBAC, an invalid field,
    /// an admission webhook); the message carries its answer. Also the Warning Event's reason,
    /// and the `reason` label of `signet_reconcile_errors_total` for any failed apply.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Ready (False): the API server refused to delete a disabled section's CronJob.
    pub const PRUNE_FAILED: &str = "PruneFailed";
    /// Ready (False): the API server refused the manual run (creating its Job, or clearing the
    /// run-now annotation).
    pub const RUN_NOW_FAILED: &str = "RunNowFailed";
    /// Suspended: `spec.suspend` is true. Stale (False): not measured while suspended.
    pub const SUSPENDED: &str = "Suspended";
    /// Suspended: the CronJobs run on schedule.
    pub const ACTIVE: &str = "Active";
    /// Stale (True): a section went three scheduled runs without a successful one.
    pub const NO_RECENT_SUCCESS: &str = "NoRecentSuccess";
    /// Stale (False): no section went three scheduled runs without a successful one.
    pub const RUNS_SUCCEEDING: &str = "RunsSucceeding";
    /// Stale (False): not measured, because the spec is invalid.
    pub const NOT_APPLICABLE: &str = "NotApplicable";
    /// Delivering (True): the last run of every enabled section completed.
    pub const LAST_RUNS_COMPLETED: &str = "LastRunsCompleted";
    /// Delivering (False): Kubernetes failed a worker Job (its own reason is in the message).
    /// Also the `lastRun.outcome` the controller writes for such a run.
    pub const JOB_FAILED: &str = "JobFailed";
}

/// Event reasons.
pub mod event {
    /// CronJobs or RBAC were created or changed.
    pub const APPLIED: &str = "Applied";
    /// A section was disabled and its CronJob deleted.
    pub const PRUNED: &str = "Pruned";
    /// Semantic validation failed.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A manual run was started from the run-now annotation.
    pub const MANUAL_RUN: &str = "ManualRunStarted";
    /// The run-now annotation named no enabled section.
    pub const MANUAL_RUN_REFUSED: &str = "ManualRunRefused";
    /// Warning: the `Stale` condition turned True.
    pub const STALE: &str = "Stale";
    /// The `Stale` condition turned False because runs succeed again.
    pub const RECOVERED: &str = "Recovered";
    // Warning: the API server refused a step; the Event's reason is the step's, the `Ready`
    // condition's: `reason::APPLY_FAILED`, `reason::PRUNE_FAILED`, `reason::RUN_NOW_FAILED`.
    /// Warning: Kubernetes failed a worker Job, or its pod cannot start (once per Job).
    pub const JOB_FAILED: &str = "JobFailed";
    /// Warning: the `Delivering` condition turned False.
    pub const DELIVERY_FAILING: &str = "DeliveryFailing";
    /// The `Delivering` condition turned True again.
    pub const DELIVERY_RECOVERED: &str = "DeliveryRecovered";
}

/// Worker image when `--worker-image` is not given: this release of Signet's own image.
pub const DEFAULT_WORKER_IMAGE: &str =
    concat!("ghcr.io/signet-dev/signet:", env!("CARGO_PKG_VERSION"));
