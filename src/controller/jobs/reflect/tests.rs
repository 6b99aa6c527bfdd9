use super::*;
use serde_json::json;

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

const T: i64 = 1_800_000_000;

fn policy(reported: Option<(&str, i64, RunOutcome)>) -> SignaturePolicy {
    let spec = serde_json::from_value(json!({
        "database": {"urlSecretRef": {"name": "db", "key": "url"}},
        "reminders": {"channels": ["log"]},
        "channels": [{"name": "log", "log": {}}],
    }))
    .unwrap();
    let mut policy = SignaturePolicy::new("p", spec);
    policy.metadata.namespace = Some("ns".into());
    if let Some((job, started, outcome)) = reported {
        policy.status = Some(SignaturePolicyStatus {
            reminders: Some(RemindersStatus {
                last_run: Some(ReminderRun {
                    job: job.into(),
                    started_at: at(started),
                    finished_at: at(started + 60),
                    outcome,
                    reason: None,
                    message: None,
                    due: 1,
                    sent: 1,
                    held: 0,
                    failed: 0,
                    possible_duplicates: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    policy
}

fn trouble(job: &str, cause: Cause, started: i64, since: Option<i64>) -> Trouble {
    Trouble {
        namespace: "ns".into(),
        policy: "p".into(),
        section: Section::Reminders,
        job: job.into(),
        pod: (cause != Cause::JobFailed).then(|| format!("{job}-pod").into()),
        cause,
        reason: match cause {
            Cause::JobFailed => "BackoffLimitExceeded",
            Cause::ContainerStuck => "CreateContainerConfigError",
            Cause::Unschedulable => "Unschedulable",
            Cause::ReportFailed => "StatusWriteFailed",
        }
        .into(),
        message: "m".into(),
        started: Some(at(started)),
        since: since.map(at),
    }
}

fn now() -> Timestamp {
    at(T + 3_600).0
}

#[test]
fn a_failed_job_with_nothing_reported_is_reflected() {
    let failed = trouble("p-reminders-2", Cause::JobFailed, T, Some(T + 300));
    let decision = decide(&policy(None), std::slice::from_ref(&failed), now());
    assert_eq!(
        decision,
        Decision {
            verdicts: vec![(Section::Reminders, Verdict::Reflect(failed))],
            recheck_at: None,
        }
    );
}

#[test]
fn a_failure_after_the_reported_run_is_reflected_one_before_it_is_not() {
    let failed = trouble("p-reminders-2", Cause::JobFailed, T, Some(T + 300));
    let earlier = policy(Some(("p-reminders-1", T - 1_800, RunOutcome::Succeeded)));
    assert_eq!(
        decide(&earlier, std::slice::from_ref(&failed), now()).verdicts,
        vec![(Section::Reminders, Verdict::Reflect(failed.clone()))]
    );
    let later = policy(Some(("p-reminders-3", T + 1_800, RunOutcome::Succeeded)));
    assert_eq!(
        decide(&later, std::slice::from_ref(&failed), now()),
        Decision::default(),
        "a later run superseded it"
    );
}

#[test]
fn the_workers_own_report_of_the_same_job_wins() {
    let failed = trouble("p-reminders-2", Cause::JobFailed, T, Some(T + 300));
    for outcome in [
        RunOutcome::Failed,
        RunOutcome::Interrupted,
        RunOutcome::ConfigError,
        RunOutcome::Succeeded,
    ] {
        let reported = policy(Some(("p-reminders-2", T + 5, outcome)));
        assert_eq!(
            decide(&reported, std::slice::from_ref(&failed), now()).verdicts,
            vec![(Section::Reminders, Verdict::WorkerReported(failed.clone()))],
            "{outcome:?}"
        );
    }
    let reflected = policy(Some(("p-reminders-2", T, RunOutcome::JobFailed)));
    assert_eq!(
        decide(&reflected, std::slice::from_ref(&failed), now()).verdicts,
        vec![(
            Section::Reminders,
            Verdict::AlreadyReflected(failed.clone())
        )]
    );
}

#[test]
fn an_unschedulable_pod_is_looked_at_again_when_its_grace_ends() {
    let since = T + 3_500;
    let pending = trouble(
        "p-reminders-2",
        Cause::Unschedulable,
        since - 1,
        Some(since),
    );
    let earlier = policy(Some(("p-reminders-1", T, RunOutcome::Succeeded)));
    let decision = decide(&earlier, std::slice::from_ref(&pending), now());
    assert_eq!(decision.verdicts, vec![]);
    assert_eq!(decision.recheck_at, Some(at(since + 300).0));
    let then = at(since + 300).0;
    assert_eq!(
        decide(&earlier, std::slice::from_ref(&pending), then).verdicts,
        vec![(Section::Reminders, Verdict::Reflect(pending.clone()))]
    );
    // One that is older than the reported run is not waited for.
    let later = policy(Some(("p-reminders-3", since + 10, RunOutcome::Succeeded)));
    assert_eq!(
        decide(&later, std::slice::from_ref(&pending), now()),
        Decision::default()
    );
}

#[test]
fn the_latest_run_in_trouble_is_the_one_reflected() {
    let old = trouble(
        "p-reminders-1",
        Cause::JobFailed,
        T - 1_800,
        Some(T - 1_500),
    );
    let stuck = trouble("p-reminders-2", Cause::ContainerStuck, T, None);
    let decision = decide(&policy(None), &[stuck.clone(), old], now());
    assert_eq!(
        decision.verdicts,
        vec![(Section::Reminders, Verdict::Reflect(stuck))]
    );
}

#[test]
fn a_disabled_sections_troubles_are_left_alone() {
    let mut failed = trouble("p-timeouts-2", Cause::JobFailed, T, Some(T + 300));
    failed.section = Section::Timeouts;
    assert_eq!(decide(&policy(None), &[failed], now()), Decision::default());
}

#[test]
fn the_status_names_the_job_the_reason_and_the_pod() {
    let now = at(T + 3_600);
    let failed = failed_run(
        &trouble("p-reminders-2", Cause::JobFailed, T, Some(T + 300)),
        &now,
    );
    assert_eq!(
        (
            failed.job.as_str(),
            failed.reason.as_str(),
            failed.message.as_str()
        ),
        ("p-reminders-2", "BackoffLimitExceeded", "m")
    );
    assert_eq!(
        (failed.started_at.clone(), failed.finished_at.clone()),
        (at(T), at(T + 300))
    );
    let stuck = failed_run(
        &trouble("p-reminders-2", Cause::ContainerStuck, T, None),
        &now,
    );
    assert_eq!(stuck.message, "pod p-reminders-2-pod: m");
    assert_eq!(stuck.finished_at, now, "seen stuck now");
    let unschedulable = failed_run(
        &trouble("p-reminders-2", Cause::Unschedulable, T, Some(T + 1)),
        &now,
    );
    assert_eq!(
        unschedulable.message,
        "pod p-reminders-2-pod could not be scheduled for 5m: m"
    );
    assert_eq!(unschedulable.finished_at, at(T + 301));
    let body = serde_json::to_value(LastRunPatch {
        metadata: Precondition {
            resource_version: Some("7"),
        },
        status: &SignaturePolicyStatus {
            reminders: Some(reminders(failed)),
            ..Default::default()
        },
    })
    .unwrap();
    assert_eq!(
        body,
        json!({
            "metadata": {"resourceVersion": "7"},
            "status": {"reminders": {"lastRun": {
                "job": "p-reminders-2", "startedAt": "2027-01-15T08:00:00Z",
                "finishedAt": "2027-01-15T08:05:00Z", "outcome": "JobFailed",
                "reason": "BackoffLimitExceeded", "message": "m",
                "due": 0, "sent": 0, "held": 0, "failed": 0, "possibleDuplicates": 0,
            }}},
        }),
        "the whole run, so no field of the previous one survives the merge"
    );
}
