//! Runs Kubernetes failed, against a scripted API: a failed Job and a pod that cannot start are
//! written into `lastRun` (outcome `JobFailed`), turn `Delivering` False and the gauge to 1, and
//! are announced once; a worker's own report of a failed run keeps its reason; a completed run
//! turns `Delivering` True again.

use std::sync::Mutex;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::staleness::section_gauge;
use super::*;

const REMINDERS_JOB: &str = "enrollment-agreements-reminders-29400000";
const TIMEOUTS_JOB: &str = "enrollment-agreements-timeouts-29400120";

fn labels(section: &str, job: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "signet",
        "app.kubernetes.io/name": "signet",
        "signet.dev/policy": "enrollment-agreements",
        "app.kubernetes.io/component": section,
        "batch.kubernetes.io/job-name": job,
    })
}

/// The reminders Job `name` as the watch delivers it: started ten minutes ago, failed now.
fn failed_job(name: &str, reason: &str, message: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "enrollment",
            "labels": labels("reminders", name),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                "name": "enrollment-agreements-reminders", "uid": "u", "controller": true}]},
        "spec": {"template": {"spec": {"containers": []}}},
        "status": {"startTime": ago(10 * MINUTE), "failed": 3, "conditions": [
            {"type": "Failed", "status": "True", "reason": reason, "message": message,
                "lastTransitionTime": ago(0)}]},
    }))
    .unwrap()
}

/// A pending pod of the timeouts Job whose worker container waits for `reason`.
fn stuck_pod(reason: &str, message: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{TIMEOUTS_JOB}-x7k2q"), "namespace": "enrollment",
            "labels": labels("timeouts", TIMEOUTS_JOB), "creationTimestamp": ago(2 * MINUTE),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": TIMEOUTS_JOB,
                "uid": "j", "controller": true}]},
        "spec": {"containers": [{"name": "worker"}]},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "worker", "ready": false,
            "restartCount": 0, "image": "registry.example/signet:1", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}}}]},
    }))
    .unwrap()
}

/// A pending pod of the reminders Job, unschedulable since `since` seconds ago.
fn unschedulable_pod(since: i64) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{REMINDERS_JOB}-b4p9z"), "namespace": "enrollment",
            "labels": labels("reminders", REMINDERS_JOB), "creationTimestamp": ago(since),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": REMINDERS_JOB,
                "uid": "j", "controller": true}]},
        "spec": {"containers": [{"name": "worker"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory.",
            "lastTransitionTime": ago(since)}]},
    }))
    .unwrap()
}

/// The request bodies a step saw, to merge them as the API server would.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<Value>>>);

impl Written {
    fn keep(&self, body: &Value) {
        self.0.lock().unwrap().push(body.clone());
    }

    /// `policy` with every status patch kept so far merged in.
    fn applied_to(&self, policy: &SignaturePolicy) -> SignaturePolicy {
        let mut object = serde_json::to_value(policy).unwrap();
        for body in self.0.lock().unwrap().drain(..) {
            merge(&mut object["status"], &body["status"]);
        }
        serde_json::from_value(object).unwrap()
    }
}

fn delivering(body: &Value) -> &Value {
    let conditions = body["status"]["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no conditions in {body}"));
    let found = conditions.iter().find(|c| c["type"] == "Delivering");
    found.unwrap_or_else(|| panic!("no Delivering condition in {conditions:?}"))
}

#[tokio::test]
async fn a_failed_job_is_reflected_announced_once_and_turns_delivering_false() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("full.yaml"));
    h.observe(&policy);
    let job = failed_job(
        REMINDERS_JOB,
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    );
    assert!(h.writers.troubles.follow(&watcher::Event::Apply(job)));
    let written = Written::default();
    let (reflect, status) = (written.clone(), written.clone());
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, q| {
                assert!(q.contains("application/merge-patch+json"), "{q}");
                assert_eq!(
                    b["metadata"],
                    json!({"resourceVersion": "100"}),
                    "conditioned on the policy read"
                );
                let run = &b["status"]["reminders"]["lastRun"];
                assert_eq!(run["job"], REMINDERS_JOB);
                assert_eq!(run["outcome"], "JobFailed");
                assert_eq!(run["reason"], "BackoffLimitExceeded");
                assert_eq!(
                    run["message"],
                    "Job has reached the specified backoff limit"
                );
                assert_eq!(
                    (run["due"].as_i64(), run["sent"].as_i64()),
                    (Some(0), Some(0))
                );
                assert_eq!(
                    b["status"].as_object().unwrap().keys().collect::<Vec<_>>(),
                    ["reminders"],
                    "nothing but the run"
                );
                reflect.keep(b);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("JobFailed"))
            );
            assert_eq!(
                b["note"],
                format!(
                    "Job {REMINDERS_JOB} (reminders) failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
                )
            );
            assert_eq!(b["regarding"]["name"], "enrollment-agreements");
            assert_eq!(
                (b["related"]["kind"].as_str(), b["related"]["name"].as_str()),
                (Some("Job"), Some(REMINDERS_JOB))
            );
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let condition = delivering(b);
                assert_eq!(condition["status"], "False");
                assert_eq!(condition["reason"], "JobFailed");
                assert_eq!(
                    condition["message"],
                    format!(
                        "reminders: Job {REMINDERS_JOB} ended JobFailed (BackoffLimitExceeded): Job has reached the specified backoff limit"
                    )
                );
                assert!(
                    b["status"]["reminders"].get("lastRun").is_none(),
                    "written once, by the reflect step"
                );
                status.keep(b);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("DeliveryFailing"))
            );
            assert!(b["note"].as_str().unwrap().starts_with("reminders: Job "));
        }),
    ];
    h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "1"
    );
    assert_eq!(section_gauge(&h, "policy_last_run_failed", "timeouts"), "0");

    // A reconcile before the watch delivers the write: the same write, refused as stale (409),
    // and no second Event.
    let stale_write = vec![failing(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        StatusCode::CONFLICT,
    )];
    let err = h.reconcile(&policy, stale_write).await.unwrap_err();
    assert_eq!(
        (err.reason(), err.category()),
        ("StatusWriteFailed", "Conflict")
    );
    assert!(err.is_transient());

    // As written: nothing more, however often it is looked at.
    let mut seen = written.applied_to(&policy);
    seen.metadata.resource_version = Some("101".into());
    h.reconcile(&seen, vec![]).await.unwrap();
    h.reconcile(&seen, vec![]).await.unwrap();
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "1"
    );
}

#[tokio::test]
async fn a_pod_that_cannot_start_fails_its_run() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("full.yaml"));
    h.observe(&policy);
    let pod = stuck_pod(
        "CreateContainerConfigError",
        "secret \"enrollment-db\" not found",
    );
    assert!(h.writers.troubles.follow(&watcher::Event::Apply(pod)));
    let pod_name = format!("{TIMEOUTS_JOB}-x7k2q");
    let written = Written::default();
    let (reflect, status) = (written.clone(), written.clone());
    let expected_message = format!("pod {pod_name}: secret \"enrollment-db\" not found");
    let message = expected_message.clone();
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let run = &b["status"]["timeouts"]["lastRun"];
                assert_eq!(run["job"], TIMEOUTS_JOB);
                assert_eq!(run["outcome"], "JobFailed");
                assert_eq!(run["reason"], "CreateContainerConfigError");
                assert_eq!(run["message"], json!(message));
                assert_eq!(run["timedOut"], 0);
                assert!(b["status"].get("reminders").is_none());
                reflect.keep(b);
            },
        ),
        step(Method::POST, EVENTS, move |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("JobFailed"))
            );
            assert_eq!(
                b["note"],
                format!(
                    "Job {TIMEOUTS_JOB} (timeouts) cannot run: pod {pod_name} cannot start: CreateContainerConfigError: secret \"enrollment-db\" not found"
                )
            );
            assert_eq!(b["related"]["name"], TIMEOUTS_JOB);
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let condition = delivering(b);
                assert_eq!(
                    (condition["status"].as_str(), condition["reason"].as_str()),
                    (Some("False"), Some("JobFailed"))
                );
                assert_eq!(
                    condition["message"],
                    format!(
                        "timeouts: Job {TIMEOUTS_JOB} ended JobFailed (CreateContainerConfigError): {expected_message}"
                    )
                );
                status.keep(b);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "DeliveryFailing");
        }),
    ];
    h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(section_gauge(&h, "policy_last_run_failed", "timeouts"), "1");
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "0"
    );
    let seen = written.applied_to(&policy);
    h.reconcile(&seen, vec![]).await.unwrap();
}

#[tokio::test]
async fn an_unschedulable_pod_fails_its_run_once_its_grace_is_over() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("full.yaml"));
    h.observe(&policy);
    // Unschedulable for four minutes: nothing yet, but a look when five have passed.
    h.writers
        .troubles
        .follow(&watcher::Event::Apply(unschedulable_pod(4 * MINUTE)));
    let action = h.reconcile(&policy, vec![]).await.unwrap();
    let wait = delay_secs(&action).expect("a requeue");
    assert!((59.0..=63.0).contains(&wait), "requeued in {wait} s");
    // Six minutes: the run failed.
    h.writers
        .troubles
        .follow(&watcher::Event::Apply(unschedulable_pod(6 * MINUTE)));
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                let run = &b["status"]["reminders"]["lastRun"];
                assert_eq!(
                    (run["job"].as_str(), run["reason"].as_str()),
                    (Some(REMINDERS_JOB), Some("Unschedulable"))
                );
                assert_eq!(
                    run["message"],
                    format!(
                        "pod {REMINDERS_JOB}-b4p9z could not be scheduled for 5m: 0/3 nodes are available: 3 Insufficient memory."
                    )
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "JobFailed")
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| assert_eq!(delivering(b)["status"], "False"),
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "DeliveryFailing")
        }),
    ];
    let action = h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
}

/// A reminders run as the worker reports it, started `minutes` ago and done a minute later.
fn worker_run(
    job: &str,
    minutes: i64,
    outcome: RunOutcome,
    reason: Option<&str>,
    message: Option<&str>,
) -> ReminderRun {
    ReminderRun {
        job: job.into(),
        started_at: ago(minutes * MINUTE),
        finished_at: ago((minutes - 1) * MINUTE),
        outcome,
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        due: 4,
        sent: 0,
        held: 0,
        failed: 0,
        possible_duplicates: 0,
    }
}

#[tokio::test]
async fn a_workers_own_report_wins_and_a_completed_run_turns_delivering_true() {
    let mut h = harness();
    let mut policy = with_reconciled_status(policy("full.yaml"));
    h.observe(&policy);
    // The worker reports its run failed (a channel refused the key), then exits non-zero, and
    // the Job fails too.
    let rejected = "channel signer-email: SendGrid refused the API key (401)";
    let reminders = policy.status.as_mut().unwrap().reminders.as_mut().unwrap();
    reminders.last_run = Some(worker_run(
        REMINDERS_JOB,
        10,
        RunOutcome::Failed,
        Some("ChannelRejected"),
        Some(rejected),
    ));
    let job = failed_job(
        REMINDERS_JOB,
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    );
    h.writers.troubles.follow(&watcher::Event::Apply(job));
    let written = Written::default();
    let status = written.clone();
    let steps = vec![
        // No lastRun write: the Job failure is an Event.
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("JobFailed"))
            );
            assert_eq!(
                b["note"],
                format!(
                    "Job {REMINDERS_JOB} (reminders) failed: BackoffLimitExceeded: Job has reached the specified backoff limit; its worker reported the run itself (Failed), which the status keeps"
                )
            );
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                assert!(
                    b.get("metadata").is_none(),
                    "the controller's own status write"
                );
                assert!(b["status"]["reminders"].get("lastRun").is_none());
                let condition = delivering(b);
                assert_eq!(
                    (condition["status"].as_str(), condition["reason"].as_str()),
                    (Some("False"), Some("ChannelRejected"))
                );
                assert_eq!(
                    condition["message"],
                    format!(
                        "reminders: Job {REMINDERS_JOB} ended Failed (ChannelRejected): {rejected}"
                    )
                );
                status.keep(b);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("DeliveryFailing"))
            );
        }),
    ];
    h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "1"
    );
    let policy = written.applied_to(&policy);
    h.reconcile(&policy, vec![]).await.unwrap();

    // The next run completes; the failed Job is still kept in the CronJob's history.
    let mut recovered = policy.clone();
    let reminders = recovered
        .status
        .as_mut()
        .unwrap()
        .reminders
        .as_mut()
        .unwrap();
    reminders.last_run = Some(worker_run(
        "enrollment-agreements-reminders-29400030",
        1,
        RunOutcome::Succeeded,
        None,
        None,
    ));
    reminders.last_successful_run_at = Some(ago(0));
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let condition = delivering(b);
                assert_eq!(
                    (condition["status"].as_str(), condition["reason"].as_str()),
                    (Some("True"), Some("LastRunsCompleted"))
                );
                assert_eq!(
                    condition["message"],
                    "the last runs completed: reminders; no run yet: timeouts"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Normal"), Some("DeliveryRecovered"))
            );
        }),
    ];
    h.reconcile(&recovered, steps).await.unwrap();
    assert_eq!(
        section_gauge(&h, "policy_last_run_failed", "reminders"),
        "0"
    );
}

/// The timeouts Job's pod, finished, whose worker could not write its status (403: the pods'
/// ServiceAccount may not patch it) and said so in its termination message.
fn unreported_pod() -> Pod {
    let summary = r#"{"timedOut":3,"sent":3,"failed":0,"outcome":"Succeeded","statusWriteFailed":"Forbidden"}"#;
    serde_json::from_value(json!({
        "metadata": {"name": format!("{TIMEOUTS_JOB}-m2v8c"), "namespace": "enrollment",
            "labels": labels("timeouts", TIMEOUTS_JOB), "creationTimestamp": ago(2 * MINUTE),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": TIMEOUTS_JOB,
                "uid": "j", "controller": true}]},
        "spec": {"containers": [{"name": "worker"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "worker", "ready": false,
            "restartCount": 0, "image": "registry.example/signet:1", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": summary,
                "finishedAt": ago(MINUTE)}}}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_worker_refused_its_status_write_is_reported_by_the_controller() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("full.yaml"));
    h.observe(&policy);
    // A finished pod whose worker wrote its status is no trouble.
    let mut reported = unreported_pod();
    reported
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .state
        .as_mut()
        .unwrap()
        .terminated
        .as_mut()
        .unwrap()
        .message = Some(r#"{"outcome":"Succeeded","sent":3}"#.into());
    h.writers.troubles.follow(&watcher::Event::Apply(reported));
    h.reconcile(&policy, vec![]).await.unwrap();

    h.writers
        .troubles
        .follow(&watcher::Event::Apply(unreported_pod()));
    let pod_name = format!("{TIMEOUTS_JOB}-m2v8c");
    let written = Written::default();
    let (reflect, status) = (written.clone(), written.clone());
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let run = &b["status"]["timeouts"]["lastRun"];
                assert_eq!(run["job"], TIMEOUTS_JOB);
                assert_eq!(run["outcome"], "JobFailed");
                assert_eq!(run["reason"], "StatusWriteFailed");
                let message = run["message"].as_str().unwrap();
                assert!(
                    message.starts_with(&format!(
                        "pod {pod_name}: the worker's run ended Succeeded (3 sent) but it could not write this status: the API server answered Forbidden"
                    )),
                    "{message}"
                );
                assert!(
                    message.contains("jobTemplate.serviceAccountName"),
                    "{message}"
                );
                reflect.keep(b);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("JobFailed"))
            );
            let note = b["note"].as_str().unwrap();
            assert!(note.contains("could not report"), "{note}");
            assert!(note.contains("StatusWriteFailed"), "{note}");
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            move |b, _| {
                let condition = delivering(b);
                assert_eq!(
                    (condition["status"].as_str(), condition["reason"].as_str()),
                    (Some("False"), Some("JobFailed"))
                );
                assert!(
                    condition["message"]
                        .as_str()
                        .unwrap()
                        .contains("StatusWriteFailed"),
                    "{condition}"
                );
                status.keep(b);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "DeliveryFailing");
        }),
    ];
    h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(section_gauge(&h, "policy_last_run_failed", "timeouts"), "1");
    // Reflected once: the next reconcile of what was written sends nothing.
    let seen = written.applied_to(&policy);
    h.reconcile(&seen, vec![]).await.unwrap();
}
