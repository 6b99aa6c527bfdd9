//! Staleness against a scripted API: a section without a recent success turns Stale once,
//! with its Event and gauge, recovers with a success, and is looked at again when it would turn
//! stale.

use super::*;

/// A reminders run as a worker reports it.
fn reminder_run(finished: &Time, outcome: RunOutcome, job: &str) -> ReminderRun {
    ReminderRun {
        job: job.into(),
        started_at: finished.clone(),
        finished_at: finished.clone(),
        outcome,
        reason: None,
        message: None,
        due: 5,
        sent: 0,
        held: 0,
        failed: 0,
        possible_duplicates: 0,
    }
}

/// `full.yaml`, created and first reconciled 30 days ago. Reminders (`*/30 * * * *`) last
/// succeeded 10 days ago and their last run failed an hour ago; timeouts succeeded 10 minutes ago.
fn failing_reminders() -> SignaturePolicy {
    let mut policy = policy("full.yaml");
    policy.metadata.creation_timestamp = Some(ago(30 * DAY));
    policy.status = Some(SignaturePolicyStatus {
        reminders: Some(RemindersStatus {
            last_run: Some(reminder_run(
                &ago(60 * MINUTE),
                RunOutcome::Failed,
                "enrollment-agreements-reminders-29400000",
            )),
            last_successful_run_at: Some(ago(10 * DAY)),
            ..Default::default()
        }),
        timeouts: Some(TimeoutsStatus {
            last_successful_run_at: Some(ago(10 * MINUTE)),
            ..Default::default()
        }),
        ..Default::default()
    });
    reconciled_at(policy, ago(30 * DAY))
}

fn reminders_status(policy: &mut SignaturePolicy) -> &mut RemindersStatus {
    policy.status.as_mut().unwrap().reminders.as_mut().unwrap()
}

fn stale_condition(
    policy: &SignaturePolicy,
) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let status = policy.status.as_ref().unwrap();
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stale")
        .unwrap()
}

pub(crate) fn section_gauge(h: &Harness, name: &str, section: &str) -> String {
    let prefix = format!(
        "signet_{name}{{namespace=\"enrollment\",policy=\"enrollment-agreements\",section=\"{section}\"}} "
    );
    let text = h.metrics.encode();
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {prefix}in\n{text}"))
}

#[tokio::test]
async fn a_section_without_a_recent_success_turns_stale_once_and_recovers_with_a_success() {
    let mut h = harness();
    let policy = failing_reminders();
    assert_eq!(
        stale_condition(&policy).status,
        "False",
        "fresh 30 days ago"
    );
    h.observe(&policy);
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, q| {
                assert!(q.contains("application/merge-patch+json"), "{q}");
                let conditions = &b["status"]["conditions"];
                assert_eq!(conditions[0]["type"], "Ready");
                assert_eq!(
                    conditions[0]["status"], "True",
                    "Ready is about reconciling"
                );
                let stale = &conditions[2];
                assert_eq!(stale["type"], "Stale");
                assert_eq!(stale["status"], "True");
                assert_eq!(stale["reason"], "NoRecentSuccess");
                let message = stale["message"].as_str().unwrap();
                for part in [
                    "reminders: no successful run since the last one at ",
                    "at least 3 scheduled runs (*/30 * * * * in Europe/Berlin) have passed",
                    "last run: Failed at ",
                    "(Job enrollment-agreements-reminders-29400000)",
                    "see `kubectl get jobs -n enrollment -l signet.dev/policy=enrollment-agreements` and the worker logs",
                ] {
                    assert!(message.contains(part), "{part:?} not in {message:?}");
                }
                assert!(
                    !message.contains("timeouts"),
                    "timeouts are fine: {message}"
                );
                assert!(
                    b["status"]["reminders"]
                        .get("lastSuccessfulRunAt")
                        .is_none(),
                    "worker-owned fields are left alone"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("Stale"))
            );
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .starts_with("reminders: no successful run since")
            );
        }),
    ];
    let action = h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(3600)),
        "nothing turns stale within the hour: timeouts run every 2 hours"
    );
    assert_eq!(section_gauge(&h, "policy_stale", "reminders"), "1");
    assert_eq!(section_gauge(&h, "policy_stale", "timeouts"), "0");
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "1"
    );
    assert_eq!(section_gauge(&h, "policy_last_run_failed", "timeouts"), "0");

    // The status now says Stale (written an hour ago): a reconcile sends nothing new.
    let stale = reconciled_at(policy.clone(), ago(60 * MINUTE));
    let since = stale_condition(&stale).last_transition_time.clone();
    assert_eq!(stale_condition(&stale).status, "True");
    h.reconcile(&stale, vec![]).await.unwrap();

    // Another failed run: the message follows, the transition time and the Events do not.
    let mut failed_again = stale.clone();
    reminders_status(&mut failed_again).last_run = Some(reminder_run(
        &ago(5 * MINUTE),
        RunOutcome::ConfigError,
        "enrollment-agreements-reminders-29400030",
    ));
    let steps = vec![step(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        move |b, _| {
            let stale = &b["status"]["conditions"][2];
            assert_eq!(stale["status"], "True");
            assert_eq!(stale["lastTransitionTime"], json!(since));
            assert!(
                stale["message"]
                    .as_str()
                    .unwrap()
                    .contains("last run: ConfigError at ")
            );
        },
    )];
    h.reconcile(&failed_again, steps).await.unwrap();
    let failed_again = reconciled_at(failed_again, ago(4 * MINUTE));

    // A run succeeds: Stale clears, with a Normal Event.
    let mut recovered = failed_again.clone();
    let reminders = reminders_status(&mut recovered);
    reminders.last_run = Some(reminder_run(
        &ago(MINUTE),
        RunOutcome::CompletedWithFailures,
        "enrollment-agreements-reminders-29400060",
    ));
    reminders.last_successful_run_at = Some(ago(MINUTE));
    let was_stale_since = stale_condition(&failed_again).last_transition_time.clone();
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let stale = &b["status"]["conditions"][2];
                assert_eq!(
                    (stale["status"].as_str(), stale["reason"].as_str()),
                    (Some("False"), Some("RunsSucceeding"))
                );
                assert_ne!(stale["lastTransitionTime"], json!(was_stale_since));
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Normal"), Some("Recovered"))
            );
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .contains("last successful runs: reminders at ")
            );
        }),
        // The failed run had also made Delivering False.
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Normal"), Some("DeliveryRecovered"))
            );
            assert_eq!(
                b["note"],
                "the last runs completed: reminders; no run yet: timeouts"
            );
        }),
    ];
    let action = h.reconcile(&recovered, steps).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(3600)),
        "three half-hourly runs and their deadline are more than an hour away"
    );
    assert_eq!(section_gauge(&h, "policy_stale", "reminders"), "0");
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "0"
    );

    // Recovered, as written: nothing more.
    let recovered = reconciled_at(recovered, ago(0));
    h.reconcile(&recovered, vec![]).await.unwrap();
}

#[tokio::test]
async fn a_fresh_section_is_looked_at_again_when_it_would_turn_stale() {
    let mut h = harness();
    let mut policy = failing_reminders();
    // 75 minutes ago: the third run after it is due within 15 minutes, and may take 25 (the
    // policy's activeDeadlineSeconds) plus 2 of slack.
    reminders_status(&mut policy).last_successful_run_at = Some(ago(75 * MINUTE));
    let policy = reconciled_at(policy, ago(0));
    assert_eq!(stale_condition(&policy).status, "False");
    h.observe(&policy);
    let action = h.reconcile(&policy, vec![]).await.unwrap();
    let wait = delay_secs(&action).expect("a requeue");
    assert!(
        (12.0 * 60.0..=42.0 * 60.0 + 2.0).contains(&wait),
        "requeued in {wait} s"
    );
}
