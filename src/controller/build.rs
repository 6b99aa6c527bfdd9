//! Desired state, pure: from a [`ValidPolicy`] build the worker CronJobs, ServiceAccount, Role and
//! RoleBinding exactly as they should exist. No API calls; `signet render` prints these and the
//! reconciler applies them.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::names;
use crate::constants::*;
use crate::crd::{ConcurrencyPolicy, SecretKeyRef, SignaturePolicySpec};
use crate::policy::{Policy, Section, ValidPolicy, time};
use crate::schedule::Schedule;

/// How worker containers are run; set by the controller's flags (and the Helm chart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The image of the workers: the controller's own.
    pub image: String,
    /// `imagePullPolicy` of the worker container; Kubernetes' default when `None`.
    pub image_pull_policy: Option<String>,
    /// Pushgateway the workers push their run metrics to (`SIGNET_PUSHGATEWAY_URL`); none when
    /// `None`.
    pub pushgateway_url: Option<String>,
}

/// Defaults for what `spec.jobTemplate` may override.
pub mod defaults {
    /// Retries of a failed run.
    pub const BACKOFF_LIMIT: i32 = 2;
    /// Finished Jobs are deleted after a day; the CronJob's history and the policy status remain.
    pub const TTL_SECONDS_AFTER_FINISHED: i32 = 86_400;
    /// Successful Jobs kept.
    pub const SUCCESSFUL_JOBS_HISTORY: i32 = 3;
    /// Failed Jobs kept.
    pub const FAILED_JOBS_HISTORY: i32 = 3;
    /// Never more than an hour late; also keeps a long outage far below Kubernetes'
    /// 100-missed-schedules limit.
    pub const MAX_STARTING_DEADLINE_SECONDS: i64 = 3_600;
    /// A run never lasts longer than this, however rare its schedule.
    pub const MAX_ACTIVE_DEADLINE_SECONDS: i64 = 6 * 3_600;
    /// Floor for both deadlines.
    pub const MIN_DEADLINE_SECONDS: i64 = 30;
    /// Exit code of a configuration error: the Job fails at once, no retry.
    pub const CONFIG_ERROR_EXIT_CODE: i32 = 2;
    /// UID and GID the worker runs as (the image's non-root user).
    pub const RUN_AS_USER: i64 = 65_532;
}

/// Everything a policy should own.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Signet's worker ServiceAccount, `<policy>-signet-worker`: the pods run as it unless
    /// `spec.jobTemplate.serviceAccountName` names another. Created either way, holding nothing
    /// then, so that dropping the override falls back at once; the controller never deletes
    /// ServiceAccounts (the owner reference takes it away with the policy).
    pub service_account: ServiceAccount,
    /// May patch this policy's status, nothing else.
    pub role: Role,
    /// Binds the Role to the ServiceAccount the worker pods run as ([`worker_service_account`]).
    pub role_binding: RoleBinding,
    /// One CronJob per enabled section, reminders first.
    pub cron_jobs: Vec<(Section, CronJob)>,
}

/// Builds everything `policy` should own.
pub fn desired(policy: &ValidPolicy, settings: &WorkerSettings) -> Desired {
    let account = names::worker_account(&policy.name);
    let mut cron_jobs = Vec::new();
    if let Some(schedule) = policy.schedule(Section::Reminders) {
        cron_jobs.push((
            Section::Reminders,
            cron_job(policy, settings, Section::Reminders, schedule),
        ));
    }
    if let Some(schedule) = policy.schedule(Section::Timeouts) {
        cron_jobs.push((
            Section::Timeouts,
            cron_job(policy, settings, Section::Timeouts, schedule),
        ));
    }
    Desired {
        service_account: ServiceAccount {
            metadata: metadata(policy, &account, "worker"),
            ..Default::default()
        },
        role: Role {
            metadata: metadata(policy, &account, "worker"),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![API_GROUP.into()]),
                resources: Some(vec!["signaturepolicies/status".into()]),
                resource_names: Some(vec![policy.name.clone()]),
                verbs: vec!["patch".into()],
                ..Default::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: metadata(policy, &account, "worker"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: account.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: worker_service_account(policy),
                namespace: Some(policy.namespace.clone()),
                ..Default::default()
            }]),
        },
        cron_jobs,
    }
}

/// The ServiceAccount the worker pods run as, in the policy's namespace: the policy's own
/// (`spec.jobTemplate.serviceAccountName`) when set, else Signet's `<policy>-signet-worker`.
/// Whichever it is, the worker Role is bound to it, so a worker can report its run.
pub fn worker_service_account(policy: &ValidPolicy) -> String {
    policy
        .spec()
        .job_template
        .as_ref()
        .and_then(|overrides| overrides.service_account_name.clone())
        .unwrap_or_else(|| names::worker_account(&policy.name))
}

/// Labels on everything a policy owns; pruning selects on them.
pub fn labels(policy: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_POLICY.to_owned(), policy.to_owned()),
        (LABEL_NAME.to_owned(), "signet".to_owned()),
        (LABEL_COMPONENT.to_owned(), component.to_owned()),
    ])
}

/// The policy named by `signet.dev/policy`, when the object is managed by Signet: what
/// [`labels`] wrote, read back.
pub fn managing_policy(meta: &ObjectMeta) -> Option<&str> {
    let labels = meta.labels.as_ref()?;
    (labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY))
        .then(|| labels.get(LABEL_POLICY).map(String::as_str))?
}

/// The label selector matching everything owned by `policy`.
pub fn owned_selector(policy: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_POLICY}={policy}")
}

fn metadata(policy: &ValidPolicy, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(policy.namespace.clone()),
        labels: Some(labels(&policy.name, component)),
        owner_references: policy
            .policy
            .controller_owner_ref(&())
            .map(|owner| vec![owner]),
        ..Default::default()
    }
}

fn cron_job(
    policy: &ValidPolicy,
    settings: &WorkerSettings,
    section: Section,
    schedule: &Schedule,
) -> CronJob {
    let spec = policy.spec();
    let overrides = spec.job_template.clone().unwrap_or_default();
    let schedule_text = match section {
        Section::Reminders => spec.reminders.as_ref().map(|r| r.schedule.clone()),
        Section::Timeouts => spec.timeout.as_ref().map(|t| t.schedule.clone()),
    }
    .unwrap_or_default();
    let period = shortest_period(schedule, policy.time_zone());
    let starting_deadline = (period.as_secs() as i64).clamp(
        defaults::MIN_DEADLINE_SECONDS,
        defaults::MAX_STARTING_DEADLINE_SECONDS,
    );
    // Shorter than the period, so with Forbid a stuck run never swallows the next one.
    let active_deadline = (period.as_secs() as i64 * 9 / 10).clamp(
        defaults::MIN_DEADLINE_SECONDS,
        defaults::MAX_ACTIVE_DEADLINE_SECONDS,
    );

    let mut pod_labels = labels(&policy.name, section.as_str());
    pod_labels.extend(overrides.pod_labels.clone());
    let pod_annotations =
        (!overrides.pod_annotations.is_empty()).then(|| overrides.pod_annotations.clone());
    let resources = overrides
        .resources
        .clone()
        .unwrap_or_else(default_resources);

    let container = Container {
        name: WORKER_CONTAINER.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        args: Some(vec![section.subcommand().into()]),
        env: Some(worker_env(policy, section, settings)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let pod = PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(worker_service_account(policy)),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(defaults::RUN_AS_USER),
            run_as_group: Some(defaults::RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        node_selector: (!overrides.node_selector.is_empty())
            .then(|| overrides.node_selector.clone()),
        tolerations: (!overrides.tolerations.is_empty()).then(|| overrides.tolerations.clone()),
        affinity: overrides.affinity.clone(),
        priority_class_name: overrides.priority_class_name.clone(),
        image_pull_secrets: (!overrides.image_pull_secrets.is_empty())
            .then(|| overrides.image_pull_secrets.clone()),
        ..Default::default()
    };
    let job = JobSpec {
        backoff_limit: Some(overrides.backoff_limit.unwrap_or(defaults::BACKOFF_LIMIT)),
        active_deadline_seconds: Some(overrides.active_deadline_seconds.unwrap_or(active_deadline)),
        ttl_seconds_after_finished: Some(
            overrides
                .ttl_seconds_after_finished
                .unwrap_or(defaults::TTL_SECONDS_AFTER_FINISHED),
        ),
        pod_failure_policy: Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "FailJob".into(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(WORKER_CONTAINER.into()),
                    operator: "In".into(),
                    values: vec![defaults::CONFIG_ERROR_EXIT_CODE],
                }),
                ..Default::default()
            }],
        }),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(pod_labels.clone()),
                annotations: pod_annotations,
                ..Default::default()
            }),
            spec: Some(pod),
        },
        ..Default::default()
    };
    let concurrency = overrides
        .concurrency_policy
        .unwrap_or(ConcurrencyPolicy::Forbid);
    CronJob {
        metadata: metadata(
            policy,
            &names::cronjob(&policy.name, section),
            section.as_str(),
        ),
        spec: Some(CronJobSpec {
            schedule: schedule_text,
            time_zone: Some(spec.time_zone.clone()),
            suspend: Some(spec.suspend),
            concurrency_policy: Some(format!("{concurrency:?}")),
            starting_deadline_seconds: Some(
                overrides
                    .starting_deadline_seconds
                    .unwrap_or(starting_deadline),
            ),
            successful_jobs_history_limit: Some(
                overrides
                    .successful_jobs_history_limit
                    .unwrap_or(defaults::SUCCESSFUL_JOBS_HISTORY),
            ),
            failed_jobs_history_limit: Some(
                overrides
                    .failed_jobs_history_limit
                    .unwrap_or(defaults::FAILED_JOBS_HISTORY),
            ),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&policy.name, section.as_str())),
                    ..Default::default()
                }),
                spec: Some(job),
            },
        }),
        status: None,
    }
}

/// The shortest gap between runs, measured over a fixed year so the result does not depend on
/// when the controller runs (DST changes are inside the horizon either way).
pub fn shortest_period(schedule: &Schedule, zone: &TimeZone) -> Duration {
    let reference = time::earliest(zone, jiff::civil::date(2026, 1, 5).at(0, 0, 0, 0));
    reference
        .and_then(|from| schedule.shortest_period(&from))
        .unwrap_or(Duration::from_secs(86_400))
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("10m".into())),
            ("memory".to_owned(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("128Mi".into()),
        )])),
        ..Default::default()
    }
}

/// The worker's environment: the policy, where it lives, and each secret it needs as a
/// `secretKeyRef` (never a value).
fn worker_env(policy: &ValidPolicy, section: Section, settings: &WorkerSettings) -> Vec<EnvVar> {
    let spec = policy.spec();
    // Pod overrides are the controller's business; the worker gets what it acts on.
    let worker_spec = SignaturePolicySpec {
        job_template: None,
        ..spec.clone()
    };
    let mut env = vec![
        plain(
            ENV_POLICY,
            serde_json::to_string(&worker_spec).expect("the spec serializes"),
        ),
        plain(
            ENV_POLICY_REF,
            format!("{}/{}", policy.namespace, policy.name),
        ),
        plain(
            ENV_POLICY_GENERATION,
            policy
                .policy
                .metadata
                .generation
                .unwrap_or_default()
                .to_string(),
        ),
        plain("SIGNET_LOG_FORMAT", "json".into()),
        EnvVar {
            name: ENV_JOB_NAME.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.labels['{LABEL_JOB_NAME}']"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(url) = &settings.pushgateway_url {
        env.push(plain("SIGNET_PUSHGATEWAY_URL", url.clone()));
    }
    for secret in section_secrets(&policy.core, section) {
        env.push(EnvVar {
            name: secret.env_var(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    env
}

fn plain(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// The secrets one worker needs: the database, and the channels its section uses (least
/// privilege: the timeouts worker never sees the signers' email API key unless it alerts by it).
pub fn section_secrets(policy: &Policy, section: Section) -> Vec<SecretKeyRef> {
    let spec = policy.spec();
    let channel_names = policy.section_channels(section);
    let mut secrets = vec![spec.database.url_secret_ref.clone()];
    for channel in spec
        .channels
        .iter()
        .filter(|c| channel_names.contains(c.name.as_str()))
    {
        for (_, secret) in channel.secret_refs() {
            if !secrets.contains(&secret) {
                secrets.push(secret);
            }
        }
    }
    secrets
}
