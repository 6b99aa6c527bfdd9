//! The `Delivering` condition, computed purely from the enabled sections' `lastRun`: False when a
//! last run ended other than `Succeeded` or `CompletedWithFailures` (reason: the run's, `JobFailed`
//! for a Job Kubernetes failed), True when every last run completed, absent before any run (its
//! Events are [`super::events::announce_delivering`]'s).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::constants::reason;
use crate::crd::{RunOutcome, SignaturePolicy, SignaturePolicyStatus};
use crate::policy::Section;

/// The `Delivering` condition's status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveringSummary {
    /// Whether every enabled section's last run completed.
    pub delivering: bool,
    /// [`reason::LAST_RUNS_COMPLETED`], [`reason::JOB_FAILED`], or the failed run's own reason.
    pub reason: String,
    /// Per section: what ended how, in which Job, and why.
    pub message: String,
}

/// A section's `lastRun`, whichever section it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunView<'a> {
    /// `job`.
    pub job: &'a str,
    /// `outcome`.
    pub outcome: RunOutcome,
    /// `reason`.
    pub reason: Option<&'a str>,
    /// `message`.
    pub message: Option<&'a str>,
    /// `startedAt`.
    pub started_at: &'a Time,
    /// `finishedAt`.
    pub finished_at: &'a Time,
}

/// `status.<section>.lastRun`, if any.
pub fn last_run(status: Option<&SignaturePolicyStatus>, section: Section) -> Option<RunView<'_>> {
    let status = status?;
    match section {
        Section::Reminders => status
            .reminders
            .as_ref()?
            .last_run
            .as_ref()
            .map(|r| RunView {
                job: &r.job,
                outcome: r.outcome,
                reason: r.reason.as_deref(),
                message: r.message.as_deref(),
                started_at: &r.started_at,
                finished_at: &r.finished_at,
            }),
        Section::Timeouts => status
            .timeouts
            .as_ref()?
            .last_run
            .as_ref()
            .map(|r| RunView {
                job: &r.job,
                outcome: r.outcome,
                reason: r.reason.as_deref(),
                message: r.message.as_deref(),
                started_at: &r.started_at,
                finished_at: &r.finished_at,
            }),
    }
}

/// The sections the spec enables, reminders first.
pub fn enabled_sections(policy: &SignaturePolicy) -> Vec<Section> {
    let enabled = [
        (Section::Reminders, policy.spec.reminders.is_some()),
        (Section::Timeouts, policy.spec.timeout.is_some()),
    ];
    enabled
        .into_iter()
        .filter_map(|(section, on)| on.then_some(section))
        .collect()
}

/// The `Delivering` condition of `policy`; `None` while no enabled section has reported a run.
pub fn summary(policy: &SignaturePolicy) -> Option<DeliveringSummary> {
    let status = policy.status.as_ref();
    let runs: Vec<(Section, Option<RunView<'_>>)> = enabled_sections(policy)
        .into_iter()
        .map(|section| (section, last_run(status, section)))
        .collect();
    let failed: Vec<(Section, RunView<'_>)> = runs
        .iter()
        .filter_map(|(section, run)| Some((*section, (*run)?)))
        .filter(|(_, run)| !run.outcome.completed())
        .collect();
    if let Some((_, first)) = failed.first() {
        let lines: Vec<String> = failed
            .iter()
            .map(|(section, run)| failure_line(*section, run))
            .collect();
        return Some(DeliveringSummary {
            delivering: false,
            reason: condition_reason(first),
            message: lines.join("; "),
        });
    }
    let ran: Vec<&str> = runs
        .iter()
        .filter(|(_, run)| run.is_some())
        .map(|(section, _)| section.as_str())
        .collect();
    if ran.is_empty() {
        return None;
    }
    let not_yet: Vec<&str> = runs
        .iter()
        .filter(|(_, run)| run.is_none())
        .map(|(section, _)| section.as_str())
        .collect();
    let mut message = format!("the last runs completed: {}", ran.join(", "));
    if !not_yet.is_empty() {
        message.push_str(&format!("; no run yet: {}", not_yet.join(", ")));
    }
    Some(DeliveringSummary {
        delivering: true,
        reason: reason::LAST_RUNS_COMPLETED.into(),
        message,
    })
}

/// `JobFailed` for a Job Kubernetes failed (its own reason goes in the message), else the
/// worker's reason when it is a valid condition reason, else the outcome.
fn condition_reason(run: &RunView<'_>) -> String {
    if run.outcome == RunOutcome::JobFailed {
        return reason::JOB_FAILED.into();
    }
    match run.reason {
        Some(reason) if is_condition_reason(reason) => reason.into(),
        _ => run.outcome.as_str().into(),
    }
}

/// What the API server accepts as a condition reason: `[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?`,
/// at most 1024 characters.
fn is_condition_reason(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b',' | b':');
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 1_024
                && first.is_ascii_alphabetic()
                && (last.is_ascii_alphanumeric() || *last == b'_')
                && bytes.iter().all(inner)
        }
        _ => false,
    }
}

/// "reminders: Job x ended JobFailed (BackoffLimitExceeded): Job has reached ...".
fn failure_line(section: Section, run: &RunView<'_>) -> String {
    let mut line = format!(
        "{}: Job {} ended {}",
        section.as_str(),
        run.job,
        run.outcome.as_str()
    );
    if let Some(reason) = run.reason.filter(|r| !r.is_empty()) {
        line.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = run.message.filter(|m| !m.is_empty()) {
        line.push_str(&format!(": {message}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ReminderRun, RemindersStatus, TimeoutRun, TimeoutsStatus};
    use serde_json::json;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    fn policy(timeouts: bool) -> SignaturePolicy {
        let mut spec = json!({
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            "reminders": {"channels": ["log"]},
            "channels": [{"name": "log", "log": {}}],
        });
        if timeouts {
            spec["timeout"] = json!({"after": "14d", "channels": ["log"]});
        }
        SignaturePolicy::new("p", serde_json::from_value(spec).unwrap())
    }

    fn reminders(
        outcome: RunOutcome,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> RemindersStatus {
        RemindersStatus {
            last_run: Some(ReminderRun {
                job: "p-reminders-1".into(),
                started_at: at(100),
                finished_at: at(110),
                outcome,
                reason: reason.map(Into::into),
                message: message.map(Into::into),
                due: 0,
                sent: 0,
                held: 0,
                failed: 0,
                possible_duplicates: 0,
            }),
            ..Default::default()
        }
    }

    fn timeouts(outcome: RunOutcome) -> TimeoutsStatus {
        TimeoutsStatus {
            last_run: Some(TimeoutRun {
                job: "p-timeouts-1".into(),
                started_at: at(100),
                finished_at: at(110),
                outcome,
                reason: None,
                message: None,
                timed_out: 0,
                alerted: 0,
                failed: 0,
            }),
            ..Default::default()
        }
    }

    fn with(
        mut policy: SignaturePolicy,
        reminders: Option<RemindersStatus>,
        timeouts: Option<TimeoutsStatus>,
    ) -> SignaturePolicy {
        policy.status = Some(SignaturePolicyStatus {
            reminders,
            timeouts,
            ..Default::default()
        });
        policy
    }

    #[test]
    fn absent_before_any_run() {
        assert_eq!(summary(&policy(true)), None);
        let status_without_runs = with(policy(true), Some(RemindersStatus::default()), None);
        assert_eq!(summary(&status_without_runs), None);
    }

    #[test]
    fn true_when_every_last_run_completed() {
        let p = with(
            policy(true),
            Some(reminders(RunOutcome::CompletedWithFailures, None, None)),
            Some(timeouts(RunOutcome::Succeeded)),
        );
        let s = summary(&p).unwrap();
        assert!(s.delivering);
        assert_eq!(s.reason, "LastRunsCompleted");
        assert_eq!(s.message, "the last runs completed: reminders, timeouts");
        // A section that has not run yet does not hold the others back, and is named.
        let p = with(
            policy(true),
            Some(reminders(RunOutcome::Succeeded, None, None)),
            None,
        );
        let s = summary(&p).unwrap();
        assert!(s.delivering);
        assert_eq!(
            s.message,
            "the last runs completed: reminders; no run yet: timeouts"
        );
    }

    #[test]
    fn a_worker_failure_gives_its_own_reason() {
        let p = with(
            policy(true),
            Some(reminders(
                RunOutcome::Failed,
                Some("ChannelRejected"),
                Some("channel signer-email refused the API key (401)"),
            )),
            Some(timeouts(RunOutcome::Succeeded)),
        );
        let s = summary(&p).unwrap();
        assert!(!s.delivering);
        assert_eq!(s.reason, "ChannelRejected");
        assert_eq!(
            s.message,
            "reminders: Job p-reminders-1 ended Failed (ChannelRejected): channel signer-email refused the API key (401)"
        );
    }

    #[test]
    fn a_job_failure_is_job_failed_with_the_kubernetes_reason_in_the_message() {
        let p = with(
            policy(true),
            Some(reminders(
                RunOutcome::JobFailed,
                Some("BackoffLimitExceeded"),
                Some("Job has reached the specified backoff limit"),
            )),
            Some(timeouts(RunOutcome::Interrupted)),
        );
        let s = summary(&p).unwrap();
        assert!(!s.delivering);
        assert_eq!(s.reason, "JobFailed");
        assert_eq!(
            s.message,
            "reminders: Job p-reminders-1 ended JobFailed (BackoffLimitExceeded): Job has reached the specified backoff limit; timeouts: Job p-timeouts-1 ended Interrupted"
        );
    }

    #[test]
    fn without_a_usable_reason_the_outcome_is_the_reason() {
        for (reason, expected) in [
            (None, "ConfigError"),
            (Some("not a reason"), "ConfigError"),
            (Some(""), "ConfigError"),
            (Some("Database_Unavailable"), "Database_Unavailable"),
        ] {
            let p = with(
                policy(false),
                Some(reminders(RunOutcome::ConfigError, reason, None)),
                None,
            );
            assert_eq!(summary(&p).unwrap().reason, expected, "{reason:?}");
        }
    }

    #[test]
    fn a_disabled_section_does_not_count() {
        let p = with(
            policy(false),
            Some(reminders(RunOutcome::Succeeded, None, None)),
            Some(timeouts(RunOutcome::Failed)),
        );
        let s = summary(&p).unwrap();
        assert!(s.delivering, "{s:?}");
        assert_eq!(s.message, "the last runs completed: reminders");
    }
}
