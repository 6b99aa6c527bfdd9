//! Publishes a finished worker run: in a cluster, merge-patches `lastRun` (and, for a successful
//! run, `lastSuccessfulRunAt`) into the policy's status ([`status`]) and writes the summary line
//! to the container's termination message ([`termination`]); with a Pushgateway URL, pushes the
//! run's metrics ([`pushgateway`]). Failures are logged and reported, never the run's failure.

pub mod pushgateway;
pub mod status;
pub mod termination;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::{RunSummary, TimeoutSummary};
use crate::constants::{ENV_JOB_NAME, ENV_POLICY_REF};
use crate::crd::{
    ReminderRun, RemindersStatus, RunOutcome, SignaturePolicyStatus, TimeoutRun, TimeoutsStatus,
};
use crate::notify::{self, EnvLookup, RetryPolicy};

pub use pushgateway::{PUSH_TIMEOUTS, encode_metrics, push_metrics, push_url};
pub use status::{STATUS_RETRY, write_status};
pub use termination::{
    DEFAULT_TERMINATION_MESSAGE_PATH, MAX_TERMINATION_MESSAGE, termination_message,
    write_termination_message,
};

/// Set by the kubelet in every pod; its absence means the worker runs outside a cluster.
const ENV_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
/// The job name (and metrics grouping) outside a cluster.
const LOCAL: &str = "local";

/// Options shared by the worker subcommands for publishing their result.
#[derive(Clone, Debug, clap::Args)]
pub struct ReportArgs {
    /// Prometheus Pushgateway to push the run's metrics to (e.g. http://pushgateway:9091); none: no push.
    // A String, not a Url: an empty variable means "no push", and a bad URL must not fail the run.
    #[arg(long, env = "SIGNET_PUSHGATEWAY_URL")]
    pub pushgateway_url: Option<String>,

    /// Where the summary line goes as the container's termination message (in a cluster only).
    #[arg(long, env = "SIGNET_TERMINATION_MESSAGE_PATH", default_value = DEFAULT_TERMINATION_MESSAGE_PATH)]
    pub termination_message_path: PathBuf,
}

impl Default for ReportArgs {
    fn default() -> Self {
        Self {
            pushgateway_url: None,
            termination_message_path: DEFAULT_TERMINATION_MESSAGE_PATH.into(),
        }
    }
}

/// `<namespace>/<name>` of a policy, both parts valid Kubernetes names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRef {
    /// The policy's namespace (an RFC 1123 label).
    pub namespace: String,
    /// The policy's name (an RFC 1123 subdomain).
    pub name: String,
}

impl PolicyRef {
    /// The grouping used for metrics of a run outside a cluster: `local/local`.
    pub fn local() -> Self {
        Self {
            namespace: LOCAL.into(),
            name: LOCAL.into(),
        }
    }
}

impl FromStr for PolicyRef {
    type Err = String;

    /// Parses `<namespace>/<name>` strictly: exactly one `/`, a valid label and a valid subdomain.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = value
            .split_once('/')
            .ok_or_else(|| format!("{value:?} is not <namespace>/<name>"))?;
        if !is_label(namespace) {
            return Err(format!("{value:?}: {namespace:?} is not a valid namespace"));
        }
        if name.len() > 253 || !name.split('.').all(is_label) {
            return Err(format!("{value:?}: {name:?} is not a valid policy name"));
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An RFC 1123 label: 1 to 63 of `[a-z0-9-]`, alphanumeric at both ends.
fn is_label(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&c| alnum(c) || c == b'-')
}

/// Where a run's result goes, decided once from the options and the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportTarget {
    /// The policy whose status to write: set only in a cluster (`KUBERNETES_SERVICE_HOST` and a
    /// valid `SIGNET_POLICY_REF`). `None` means: print the summary line, nothing else.
    pub cluster_policy: Option<PolicyRef>,
    /// The grouping of pushed metrics: the policy when `SIGNET_POLICY_REF` is valid, else
    /// `local/local`. Callers that know a local policy's name may set it.
    pub metrics_policy: PolicyRef,
    /// `SIGNET_JOB_NAME`, or `local`.
    pub job: String,
    /// Where to push metrics, if anywhere.
    pub pushgateway_url: Option<reqwest::Url>,
    /// Where the termination message goes (in a cluster only).
    pub termination_message_path: PathBuf,
}

impl ReportTarget {
    /// Reads `KUBERNETES_SERVICE_HOST`, `SIGNET_POLICY_REF` and `SIGNET_JOB_NAME` through `env`.
    /// A malformed policy reference or Pushgateway URL is logged and treated as absent; an
    /// empty one is absent.
    pub fn from_env(args: &ReportArgs, env: EnvLookup<'_>) -> Self {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let policy = set(ENV_POLICY_REF).and_then(|value| match value.parse::<PolicyRef>() {
            Ok(policy) => Some(policy),
            Err(err) => {
                tracing::warn!(
                    "{ENV_POLICY_REF}: {err}; the run's status will not be written back"
                );
                None
            }
        });
        let in_cluster = set(ENV_SERVICE_HOST).is_some();
        Self {
            cluster_policy: policy.clone().filter(|_| in_cluster),
            metrics_policy: policy.unwrap_or_else(PolicyRef::local),
            job: set(ENV_JOB_NAME).unwrap_or_else(|| LOCAL.into()),
            pushgateway_url: args.pushgateway_url.as_deref().and_then(pushgateway_url),
            termination_message_path: args.termination_message_path.clone(),
        }
    }
}

/// The Pushgateway base URL: `None` when empty, or (with a warning) when not an http(s) URL.
fn pushgateway_url(value: &str) -> Option<reqwest::Url> {
    if value.trim().is_empty() {
        return None;
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) | Err(_) => {
            tracing::warn!(
                url = value,
                "the Pushgateway URL is not an http(s) URL; metrics will not be pushed"
            );
            None
        }
    }
}

/// A finished run of either worker, as written to the policy's status.
#[derive(Clone, Debug, PartialEq)]
pub enum SectionRun {
    /// A `send-reminders` run (`status.reminders`).
    Reminders(ReminderRun),
    /// A `check-timeouts` run (`status.timeouts`).
    Timeouts(TimeoutRun),
}

impl SectionRun {
    /// A reminders run from its summary; for a run that failed before it had one, pass
    /// `RunSummary::default()` and the failure's outcome.
    pub fn reminders(
        job: String,
        started_at: Time,
        finished_at: Time,
        outcome: RunOutcome,
        summary: &RunSummary,
    ) -> Self {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Self::Reminders(ReminderRun {
            job,
            started_at,
            finished_at,
            outcome,
            reason: None,
            message: None,
            due: count(summary.due),
            sent: count(summary.deliveries.sent),
            held: count(summary.held),
            failed: count(summary.deliveries.failed),
            possible_duplicates: count(summary.deliveries.possible_duplicates),
        })
    }

    /// A timeouts run from its summary; for a run that failed before it had one, pass
    /// `TimeoutSummary::default()` and the failure's outcome.
    pub fn timeouts(
        job: String,
        started_at: Time,
        finished_at: Time,
        outcome: RunOutcome,
        summary: &TimeoutSummary,
    ) -> Self {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Self::Timeouts(TimeoutRun {
            job,
            started_at,
            finished_at,
            outcome,
            reason: None,
            message: None,
            timed_out: count(summary.timed_out),
            alerted: count(summary.alerts.sent),
            failed: count(summary.alerts.failed),
        })
    }

    /// The run with `lastRun.reason` and `.message` set (`None`: a completed run, none).
    pub fn with_reason(mut self, reason: Option<(&'static str, String)>) -> Self {
        let (reason, message) = match reason {
            Some((reason, message)) => (Some(reason.to_owned()), Some(message)),
            None => (None, None),
        };
        match &mut self {
            Self::Reminders(run) => (run.reason, run.message) = (reason, message),
            Self::Timeouts(run) => (run.reason, run.message) = (reason, message),
        }
        self
    }

    /// The status field and Pushgateway `section` label: `reminders` or `timeouts`.
    pub fn section(&self) -> &'static str {
        match self {
            Self::Reminders(_) => "reminders",
            Self::Timeouts(_) => "timeouts",
        }
    }

    /// How the run ended.
    pub fn outcome(&self) -> RunOutcome {
        match self {
            Self::Reminders(run) => run.outcome,
            Self::Timeouts(run) => run.outcome,
        }
    }

    /// Whether the run sets `lastSuccessfulRunAt` (what staleness measures): `Succeeded`, or
    /// `CompletedWithFailures` with at least one delivery sent. A run whose every send failed
    /// is not a success, even when each failure was the row's own.
    pub fn is_successful(&self) -> bool {
        let sent = match self {
            Self::Reminders(run) => run.sent,
            Self::Timeouts(run) => run.alerted,
        };
        match self.outcome() {
            RunOutcome::Succeeded => true,
            RunOutcome::CompletedWithFailures => sent > 0,
            _ => false,
        }
    }

    /// When the run started.
    pub fn started_at(&self) -> &Time {
        match self {
            Self::Reminders(run) => &run.started_at,
            Self::Timeouts(run) => &run.started_at,
        }
    }

    /// When the run ended.
    pub fn finished_at(&self) -> &Time {
        match self {
            Self::Reminders(run) => &run.finished_at,
            Self::Timeouts(run) => &run.finished_at,
        }
    }

    /// The run's counts as `(result label, value)`, in status order.
    pub fn counts(&self) -> Vec<(&'static str, i64)> {
        match self {
            Self::Reminders(r) => vec![
                ("due", r.due),
                ("sent", r.sent),
                ("held", r.held),
                ("failed", r.failed),
                ("possible_duplicates", r.possible_duplicates),
            ],
            Self::Timeouts(t) => vec![
                ("timed_out", t.timed_out),
                ("alerted", t.alerted),
                ("failed", t.failed),
            ],
        }
    }

    /// The status this run writes: only its section's `lastRun` and, when successful,
    /// `lastSuccessfulRunAt`. Everything else is absent, so a merge patch leaves the
    /// controller's fields (conditions, observedGeneration, cronJob, lastScheduleTime) alone.
    pub fn status(&self) -> SignaturePolicyStatus {
        let succeeded_at = self.is_successful().then(|| self.finished_at().clone());
        match self {
            Self::Reminders(run) => SignaturePolicyStatus {
                reminders: Some(RemindersStatus {
                    last_run: Some(run.clone()),
                    last_successful_run_at: succeeded_at,
                    ..RemindersStatus::default()
                }),
                ..SignaturePolicyStatus::default()
            },
            Self::Timeouts(run) => SignaturePolicyStatus {
                timeouts: Some(TimeoutsStatus {
                    last_run: Some(run.clone()),
                    last_successful_run_at: succeeded_at,
                    ..TimeoutsStatus::default()
                }),
                ..SignaturePolicyStatus::default()
            },
        }
    }
}

/// Why publishing some part of a run's result failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The API server answered with an error status.
    #[error("the API server answered {code} {reason}: {message}")]
    Api {
        /// HTTP status code.
        code: u16,
        /// The Status reason (`Forbidden`, `NotFound`, ...).
        reason: String,
        /// The Status message.
        message: String,
        /// Seconds the server asked to wait before retrying, if it did.
        retry_after: Option<u32>,
    },
    /// The API server could not be reached or did not answer in time.
    #[error("cannot reach the API server: {0}")]
    Unreachable(String),
    /// No usable in-cluster configuration, or a request that could not be built.
    #[error("cannot talk to the API server: {0}")]
    Client(String),
    /// The termination message could not be written.
    #[error("cannot write the termination message to {path}: {error}")]
    TerminationMessage {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The Pushgateway refused the metrics.
    #[error("the Pushgateway answered {status}: {body}")]
    PushRejected {
        /// HTTP status code.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The Pushgateway could not be reached or did not answer in time.
    #[error("cannot reach the Pushgateway: {0}")]
    PushUnreachable(String),
}

impl ReportError {
    /// A stable name for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Api { code: 403, .. } => "Forbidden",
            Self::Api { code: 404, .. } => "NotFound",
            Self::Api { code: 422, .. } => "Invalid",
            Self::Api { code: 429, .. } => "TooManyRequests",
            Self::Api { code: 500.., .. } => "ServerError",
            Self::Api { .. } => "ApiError",
            Self::Unreachable(_) => "Unreachable",
            Self::Client(_) => "ClientError",
            Self::TerminationMessage { .. } => "TerminationMessageFailed",
            Self::PushRejected { .. } => "PushRejected",
            Self::PushUnreachable(_) => "PushgatewayUnreachable",
        }
    }

    /// Whether trying again soon may help: 429, 5xx and connection failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, .. } => *code == 429 || *code >= 500,
            Self::Unreachable(_) | Self::PushUnreachable(_) => true,
            Self::PushRejected { status, .. } => *status == 429 || *status >= 500,
            Self::Client(_) | Self::TerminationMessage { .. } => false,
        }
    }

    /// The policy is gone (deleted while the run ran): nothing to write to.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { code: 404, .. })
    }
}

impl From<kube::Error> for ReportError {
    fn from(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Self::Api {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
                retry_after: status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                Self::Unreachable(err.to_string())
            }
            other => Self::Client(other.to_string()),
        }
    }
}

/// What happened to one part of publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Not attempted: outside a cluster, or no Pushgateway URL.
    Skipped,
    /// Done.
    Done,
    /// Attempted and failed (logged); the [`ReportError::reason`].
    Failed(&'static str),
}

/// What [`publish`] did, for the caller's logs and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishReport {
    /// The status merge patch.
    pub status: Published,
    /// The termination message.
    pub termination_message: Published,
    /// The Pushgateway push.
    pub pushgateway: Published,
}

/// Publishes a finished run. Outside a cluster it only pushes metrics (with a Pushgateway URL);
/// in a cluster it also writes the status (in-cluster config, the worker's service account) and
/// the termination message. Failures are logged as warnings and never change the exit code.
pub async fn publish(target: &ReportTarget, run: &SectionRun, summary: &Value) -> PublishReport {
    publish_with(
        target,
        run,
        summary,
        status::in_cluster_client,
        &STATUS_RETRY,
    )
    .await
}

/// [`publish`] with the API client (made only in a cluster) and the status retries given.
pub async fn publish_with(
    target: &ReportTarget,
    run: &SectionRun,
    summary: &Value,
    client: impl FnOnce() -> Result<kube::Client, ReportError>,
    retry: &RetryPolicy,
) -> PublishReport {
    let section = run.section();
    let in_cluster = async {
        let Some(policy) = &target.cluster_policy else {
            return (Published::Skipped, Published::Skipped);
        };
        let status = match client() {
            Ok(client) => write_status(&client, &policy.namespace, &policy.name, run, retry).await,
            Err(err) => Err(err),
        };
        let status = match status {
            Ok(()) => Published::Done,
            Err(err) if err.is_not_found() => {
                tracing::info!(%policy, section, "the policy is gone; its status was not written");
                Published::Failed(err.reason())
            }
            Err(err) => {
                tracing::warn!(%policy, section, reason = err.reason(), error = %err, "cannot write the run's status");
                Published::Failed(err.reason())
            }
        };
        // The termination message says when the status write failed, so that the controller,
        // which reads it from the finished pod, can report the run and the failure itself.
        let mut summary = summary.clone();
        if let Published::Failed(reason) = &status {
            summary["statusWriteFailed"] = Value::from(*reason);
        }
        let message = match write_termination_message(&target.termination_message_path, &summary) {
            Ok(()) => Published::Done,
            Err(err) => {
                tracing::warn!(reason = err.reason(), error = %err, "cannot write the termination message");
                Published::Failed(err.reason())
            }
        };
        (status, message)
    };
    let push = async {
        let Some(base) = &target.pushgateway_url else {
            return Published::Skipped;
        };
        let pushed = match notify::http_client(PUSH_TIMEOUTS) {
            Ok(http) => push_metrics(&http, base, &target.metrics_policy, run).await,
            Err(err) => Err(ReportError::PushUnreachable(err.to_string())),
        };
        match pushed {
            Ok(()) => Published::Done,
            Err(err) => {
                tracing::warn!(policy = %target.metrics_policy, section, reason = err.reason(), error = %err, "cannot push the run's metrics");
                Published::Failed(err.reason())
            }
        }
    };
    let ((status, termination_message), pushgateway) = tokio::join!(in_cluster, push);
    PublishReport {
        status,
        termination_message,
        pushgateway,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn policy_refs_are_parsed_strictly() {
        let ok: PolicyRef = "enrollment/enrollment-agreements".parse().unwrap();
        assert_eq!(ok.namespace, "enrollment");
        assert_eq!(ok.name, "enrollment-agreements");
        assert_eq!(ok.to_string(), "enrollment/enrollment-agreements");
        assert!("ns/a.b-c".parse::<PolicyRef>().is_ok());
        for bad in [
            "", "name", "/name", "ns/", "ns/a/b", "NS/name", "ns/Name", "ns/-a", "ns/a.", "n_s/a",
            " ns/a",
        ] {
            assert!(bad.parse::<PolicyRef>().is_err(), "{bad:?} was accepted");
        }
        let long = format!("ns/{}", "a".repeat(64));
        assert!(long.parse::<PolicyRef>().is_err());
    }

    #[test]
    fn the_target_is_a_cluster_only_with_a_service_host_and_a_valid_policy_ref() {
        let args = ReportArgs::default();
        let target = |vars: &'static [(&'static str, &'static str)]| {
            let env = move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            ReportTarget::from_env(&args, &env)
        };
        let inside = target(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("SIGNET_POLICY_REF", "enrollment/agreements"),
            ("SIGNET_JOB_NAME", "agreements-reminders-29000000"),
        ]);
        let policy: PolicyRef = "enrollment/agreements".parse().unwrap();
        assert_eq!(inside.cluster_policy.as_ref(), Some(&policy));
        assert_eq!(inside.metrics_policy, policy);
        assert_eq!(inside.job, "agreements-reminders-29000000");

        let no_host = target(&[("SIGNET_POLICY_REF", "enrollment/agreements")]);
        assert_eq!(no_host.cluster_policy, None);
        assert_eq!(no_host.metrics_policy, policy);
        assert_eq!(no_host.job, "local");

        let bad_ref = target(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("SIGNET_POLICY_REF", "agreements"),
        ]);
        assert_eq!(bad_ref.cluster_policy, None);
        assert_eq!(bad_ref.metrics_policy, PolicyRef::local());

        let nothing = target(&[]);
        assert_eq!(nothing.cluster_policy, None);
        assert_eq!(
            nothing.termination_message_path,
            Path::new("/dev/termination-log")
        );
    }

    #[test]
    fn only_runs_that_delivered_are_successful() {
        let sent_one = RunSummary {
            deliveries: crate::worker::DeliveryCounts {
                sent: 1,
                failed: 2,
                ..Default::default()
            },
            ..RunSummary::default()
        };
        let none_sent = RunSummary {
            deliveries: crate::worker::DeliveryCounts {
                failed: 3,
                ..Default::default()
            },
            ..RunSummary::default()
        };
        for (outcome, summary, successful) in [
            (RunOutcome::Succeeded, &RunSummary::default(), true),
            (RunOutcome::CompletedWithFailures, &sent_one, true),
            // Every send failed, each for its own reason: nothing reached anyone.
            (RunOutcome::CompletedWithFailures, &none_sent, false),
            (RunOutcome::Failed, &sent_one, false),
            (RunOutcome::ConfigError, &RunSummary::default(), false),
            (RunOutcome::Interrupted, &sent_one, false),
            (RunOutcome::JobFailed, &RunSummary::default(), false),
        ] {
            let run = SectionRun::reminders("job".into(), at(100), at(160), outcome, summary);
            assert_eq!(run.is_successful(), successful, "{outcome:?}");
            let status = run.status().reminders.unwrap();
            assert_eq!(
                status.last_successful_run_at,
                successful.then(|| at(160)),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn a_completed_run_clears_an_earlier_failures_reason() {
        let failed = SectionRun::reminders(
            "job".into(),
            at(100),
            at(160),
            RunOutcome::Failed,
            &RunSummary::default(),
        )
        .with_reason(Some((
            "ChannelRejected",
            "channel mail answered 401".into(),
        )));
        let body = status::patch_body(&failed);
        let last_run = &body["status"]["reminders"]["lastRun"];
        assert_eq!(last_run["reason"], "ChannelRejected");
        assert_eq!(last_run["message"], "channel mail answered 401");

        let succeeded = SectionRun::reminders(
            "job".into(),
            at(200),
            at(260),
            RunOutcome::Succeeded,
            &RunSummary::default(),
        )
        .with_reason(None);
        let body = status::patch_body(&succeeded);
        let last_run = body["status"]["reminders"]["lastRun"].as_object().unwrap();
        // A merge patch leaves what it omits: the reason must be nulled, not left out.
        for field in ["reason", "message"] {
            assert_eq!(
                last_run.get(field),
                Some(&serde_json::Value::Null),
                "{field}"
            );
        }
    }
}
