//! `SignaturePolicy.status`: written by the controller (conditions, CronJob names, schedule
//! times) and by the workers (the result of their last run).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignaturePolicyStatus {
    /// The `metadata.generation` the controller last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Suspended`, `Stale` and `Delivering` (once a section has reported a run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The reminders CronJob and its last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<RemindersStatus>,

    /// The timeouts CronJob and its last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsStatus>,
}

/// The reminders section as observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemindersStatus {
    /// Name of the CronJob running `signet send-reminders`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job: Option<String>,

    /// When the CronJob last started a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<ReminderRun>,

    /// When the last run with outcome `Succeeded` or `CompletedWithFailures` finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run_at: Option<Time>,
}

/// The timeouts section as observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsStatus {
    /// Name of the CronJob running `signet check-timeouts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job: Option<String>,

    /// When the CronJob last started a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// The last finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<TimeoutRun>,

    /// When the last run with outcome `Succeeded` or `CompletedWithFailures` finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run_at: Option<Time>,
}

/// How a worker run ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunOutcome {
    /// Everything due was handled (exit code 0).
    Succeeded,
    /// The run completed but some rows failed; see `failed` (exit code 0).
    CompletedWithFailures,
    /// A transient failure aborted the run (exit code 1).
    Failed,
    /// The worker's configuration is wrong (exit code 2).
    ConfigError,
    /// The worker was asked to stop (SIGTERM) before it finished: it stopped claiming, let the
    /// sends in flight finish and left the rest for the next run (exit code 1).
    Interrupted,
    /// The Job failed without the worker reporting (OOM-killed, deadline exceeded, backoff
    /// limit, a pod that could not start): written by the controller from the Job and its pods.
    JobFailed,
}

impl RunOutcome {
    /// The outcome's name in the status (its serde name), for reasons, messages and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Succeeded => "Succeeded",
            RunOutcome::CompletedWithFailures => "CompletedWithFailures",
            RunOutcome::Failed => "Failed",
            RunOutcome::ConfigError => "ConfigError",
            RunOutcome::Interrupted => "Interrupted",
            RunOutcome::JobFailed => "JobFailed",
        }
    }

    /// Whether a run with this outcome handled what was due (`Succeeded`,
    /// `CompletedWithFailures`).
    pub fn completed(self) -> bool {
        matches!(
            self,
            RunOutcome::Succeeded | RunOutcome::CompletedWithFailures
        )
    }
}

/// Result of one `send-reminders` run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReminderRun {
    /// Name of the Job (or `local` outside a cluster).
    pub job: String,
    /// When the run started.
    pub started_at: Time,
    /// When the run ended.
    pub finished_at: Time,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Why, for an outcome other than `Succeeded`: a stable word such as `ChannelRejected`,
    /// `DatabaseUnavailable`, `Interrupted`, or the Job's own (`BackoffLimitExceeded`,
    /// `DeadlineExceeded`, `CreateContainerConfigError`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for a person (never a secret or a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Notifications due when the run looked.
    #[schemars(range(min = 0))]
    pub due: i64,
    /// Notifications delivered.
    #[schemars(range(min = 0))]
    pub sent: i64,
    /// Notifications held back by the send window.
    #[schemars(range(min = 0))]
    pub held: i64,
    /// Notifications that failed permanently or exhausted their retries.
    #[schemars(range(min = 0))]
    pub failed: i64,
    /// Sends retried after a crash whose first attempt may have gone through.
    #[schemars(range(min = 0))]
    pub possible_duplicates: i64,
}

/// Result of one `check-timeouts` run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutRun {
    /// Name of the Job (or `local` outside a cluster).
    pub job: String,
    /// When the run started.
    pub started_at: Time,
    /// When the run ended.
    pub finished_at: Time,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Why, for an outcome other than `Succeeded`: a stable word such as `ChannelRejected`,
    /// `DatabaseUnavailable`, `Interrupted`, or the Job's own (`BackoffLimitExceeded`,
    /// `DeadlineExceeded`, `CreateContainerConfigError`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for a person (never a secret or a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Workflows marked `timed_out`.
    #[schemars(range(min = 0))]
    pub timed_out: i64,
    /// Alerts delivered.
    #[schemars(range(min = 0))]
    pub alerted: i64,
    /// Alerts that failed.
    #[schemars(range(min = 0))]
    pub failed: i64,
}
