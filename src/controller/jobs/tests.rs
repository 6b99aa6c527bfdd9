use super::*;
use futures::StreamExt;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

fn time(text: &str) -> Time {
    Time(text.parse().unwrap())
}

fn labels() -> Value {
    json!({
        "app.kubernetes.io/managed-by": "signet",
        "signet.dev/policy": "agreements",
        "app.kubernetes.io/component": "reminders",
        "batch.kubernetes.io/job-name": "agreements-reminders-29400000",
    })
}

/// A Job of the reminders CronJob as the API server holds it, with `conditions`.
fn job(name: &str, conditions: Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "enrollment", "labels": labels(),
            "creationTimestamp": "2026-09-21T14:00:00Z",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                "name": "agreements-reminders", "uid": "u", "controller": true}]},
        "spec": {"template": {"spec": {"containers": []}}},
        "status": {"startTime": "2026-09-21T14:00:01Z", "failed": 3, "conditions": conditions},
    }))
    .unwrap()
}

fn failed(reason: &str, message: &str) -> Value {
    json!([
        {"type": "FailureTarget", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-09-21T14:05:00Z"},
        {"type": "Failed", "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-09-21T14:05:02Z"},
    ])
}

/// A pending worker pod with `status`.
fn pod(name: &str, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "enrollment", "labels": labels(),
            "creationTimestamp": "2026-09-21T14:00:02Z",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                "name": "agreements-reminders-29400000", "uid": "j", "controller": true}]},
        "spec": {"containers": [{"name": "worker"}]},
        "status": status,
    }))
    .unwrap()
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [
        {"name": "worker", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}}}
    ]})
}

fn unschedulable() -> Value {
    json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
            "lastTransitionTime": "2026-09-21T14:00:03Z"}
    ]})
}

#[test]
fn a_failed_job_is_a_trouble_with_its_reason_message_and_times() {
    for reason in [
        "BackoffLimitExceeded",
        "DeadlineExceeded",
        "PodFailurePolicy",
    ] {
        let trouble = job_trouble(&job("agreements-reminders-29400000", failed(reason, "m")))
            .unwrap_or_else(|| panic!("{reason}: not a trouble"));
        assert_eq!(
            trouble,
            Trouble {
                namespace: "enrollment".into(),
                policy: "agreements".into(),
                section: Section::Reminders,
                job: "agreements-reminders-29400000".into(),
                pod: None,
                cause: Cause::JobFailed,
                reason: reason.into(),
                message: "m".into(),
                started: Some(time("2026-09-21T14:00:01Z")),
                since: Some(time("2026-09-21T14:05:02Z")),
            }
        );
        assert_eq!(
            trouble.fails_at(),
            Some("2026-09-21T14:05:02Z".parse().unwrap())
        );
    }
}

#[test]
fn a_job_that_did_not_fail_is_no_trouble() {
    let running = json!([]);
    let terminating =
        json!([{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}]);
    let complete = json!([{"type": "Complete", "status": "True"}]);
    let not_failed = json!([{"type": "Failed", "status": "False", "reason": "x"}]);
    for conditions in [running, terminating, complete, not_failed] {
        assert_eq!(
            job_trouble(&job("j", conditions.clone())),
            None,
            "{conditions}"
        );
    }
    let mut no_status = job("j", json!([]));
    no_status.status = None;
    assert_eq!(job_trouble(&no_status), None);
}

#[test]
fn only_jobs_and_pods_of_a_signet_section_are_troubles() {
    let mut foreign = job("j", failed("BackoffLimitExceeded", "m"));
    foreign
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("app.kubernetes.io/managed-by");
    assert_eq!(job_trouble(&foreign), None);
    let mut no_section = job("j", failed("BackoffLimitExceeded", "m"));
    no_section
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app.kubernetes.io/component".into(), "worker".into());
    assert_eq!(job_trouble(&no_section), None);
    let mut timeouts = job("j", failed("DeadlineExceeded", "m"));
    timeouts
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app.kubernetes.io/component".into(), "timeouts".into());
    assert_eq!(job_trouble(&timeouts).unwrap().section, Section::Timeouts);
}

#[test]
fn a_worker_container_that_cannot_start_is_a_trouble_at_once() {
    for reason in [
        "CreateContainerConfigError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    ] {
        let trouble = pod_trouble(&pod("p-1", waiting(reason, "secret \"db\" not found")))
            .unwrap_or_else(|| panic!("{reason}: not a trouble"));
        assert_eq!(trouble.cause, Cause::ContainerStuck);
        assert_eq!(&*trouble.reason, reason);
        assert_eq!(&*trouble.message, "secret \"db\" not found");
        assert_eq!(&*trouble.job, "agreements-reminders-29400000");
        assert_eq!(trouble.pod.as_deref(), Some("p-1"));
        assert_eq!(trouble.started, Some(time("2026-09-21T14:00:02Z")));
        assert_eq!(trouble.fails_at(), None, "failed from when it is seen");
    }
}

#[test]
fn a_pod_starting_normally_is_no_trouble() {
    for reason in ["ContainerCreating", "PodInitializing"] {
        assert_eq!(
            pod_trouble(&pod("p", waiting(reason, ""))),
            None,
            "{reason}"
        );
    }
    // Another container's trouble is not the worker's.
    let mut sidecar = waiting("ImagePullBackOff", "");
    sidecar["containerStatuses"][0]["name"] = json!("istio-proxy");
    assert_eq!(pod_trouble(&pod("p", sidecar)), None);
    let scheduled = json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "True"}]});
    assert_eq!(pod_trouble(&pod("p", scheduled)), None);
}

#[test]
fn an_unschedulable_pod_fails_its_run_after_the_grace() {
    let trouble = pod_trouble(&pod("p-1", unschedulable())).unwrap();
    assert_eq!(trouble.cause, Cause::Unschedulable);
    assert_eq!(&*trouble.reason, "Unschedulable");
    assert_eq!(
        &*trouble.message,
        "0/3 nodes are available: 3 Insufficient memory."
    );
    let since: Timestamp = "2026-09-21T14:00:03Z".parse().unwrap();
    assert_eq!(trouble.since, Some(Time(since)));
    assert_eq!(
        trouble.fails_at(),
        Some(since + SignedDuration::from_secs(300))
    );
}

#[test]
fn a_pods_job_comes_from_its_label_or_its_owner() {
    let mut unlabelled = pod("p-1", waiting("ErrImagePull", ""));
    unlabelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("batch.kubernetes.io/job-name");
    assert_eq!(
        &*pod_trouble(&unlabelled).unwrap().job,
        "agreements-reminders-29400000"
    );
    unlabelled.metadata.owner_references = None;
    assert_eq!(pod_trouble(&unlabelled), None, "no Job to name");
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    let long = "é".repeat(MAX_MESSAGE);
    let trouble = job_trouble(&job("j", failed("DeadlineExceeded", &long))).unwrap();
    assert!(
        trouble.message.len() <= MAX_MESSAGE,
        "{}",
        trouble.message.len()
    );
    assert!(trouble.message.ends_with("é..."));
}

#[test]
fn jobs_and_pods_map_to_their_policy() {
    let reference = policy_of(job("j", json!([]))).unwrap();
    assert_eq!(reference, ObjectRef::new("agreements").within("enrollment"));
    assert_eq!(
        policy_of(pod("p", json!({}))),
        Some(ObjectRef::new("agreements").within("enrollment"))
    );
    let mut foreign = job("j", json!([]));
    foreign.metadata.labels = None;
    assert_eq!(policy_of(foreign), None);
}

#[test]
fn the_index_keeps_troubles_only_and_says_when_one_appears_or_changes() {
    let troubles = Troubles::default();
    let running = job("agreements-reminders-29400000", json!([]));
    assert!(!troubles.follow(&Event::Apply(running.clone())));
    assert!(troubles.is_empty(), "a healthy Job costs nothing");
    let failed_job = job(
        "agreements-reminders-29400000",
        failed("BackoffLimitExceeded", "m"),
    );
    assert!(troubles.follow(&Event::Apply(failed_job.clone())));
    assert!(
        !troubles.follow(&Event::Apply(failed_job.clone())),
        "the same again"
    );
    let stuck = pod("p-1", waiting("CreateContainerConfigError", "no secret"));
    assert!(troubles.follow(&Event::Apply(stuck.clone())));
    assert_eq!(troubles.of_policy("enrollment", "agreements").len(), 2);
    assert_eq!(troubles.of_policy("enrollment", "other"), vec![]);
    assert_eq!(troubles.of_policy("elsewhere", "agreements"), vec![]);
    let reworded = pod(
        "p-1",
        waiting("CreateContainerConfigError", "still no secret"),
    );
    assert!(troubles.follow(&Event::Apply(reworded)));
    // The pod starts (or leaves Pending, which the watch sends as a deletion).
    assert!(!troubles.follow(&Event::Delete(stuck)));
    assert_eq!(troubles.len(), 1);
    // A Job retried to success is no trouble any more.
    assert!(!troubles.follow(&Event::Apply(running)));
    assert!(troubles.is_empty());
    assert_eq!(
        troubles.of_policy("enrollment", "agreements"),
        vec![],
        "no empty entry is left"
    );
}

#[test]
fn an_announcement_lasts_until_the_job_is_deleted() {
    let troubles = Troubles::default();
    let failed_job = job("j-1", failed("DeadlineExceeded", "m"));
    troubles.follow(&Event::Apply(failed_job.clone()));
    troubles.mark_announced("enrollment", "j-1");
    // A pod of it going does not forget it; the Job going does.
    troubles.follow(&Event::Delete(pod("p-1", json!({}))));
    assert!(troubles.announced("enrollment", "j-1"));
    troubles.follow(&Event::Delete(failed_job));
    assert!(!troubles.announced("enrollment", "j-1"));
}

#[tokio::test]
async fn a_relist_removes_what_it_did_not_list_and_keeps_what_it_did() {
    let troubles = Troubles::default();
    let ready = {
        let troubles = troubles.clone();
        tokio::spawn(async move { troubles.wait_until_ready().await })
    };
    let kept = job("j-kept", failed("DeadlineExceeded", "m"));
    let gone = job("j-gone", failed("BackoffLimitExceeded", "m"));
    let stuck = pod("p-1", waiting("ImagePullBackOff", "m"));
    for event in [
        Event::Init,
        Event::InitApply(kept.clone()),
        Event::InitApply(gone.clone()),
        Event::InitDone,
    ] {
        troubles.follow(&event);
    }
    troubles.mark_announced("enrollment", "j-kept");
    troubles.mark_announced("enrollment", "j-gone");
    // Ready only once both watches have listed.
    tokio::task::yield_now().await;
    assert!(!ready.is_finished());
    for event in [
        Event::Init,
        Event::InitApply(stuck.clone()),
        Event::InitDone,
    ] {
        troubles.follow(&event);
    }
    tokio::time::timeout(std::time::Duration::from_secs(1), ready)
        .await
        .expect("ready after both lists")
        .unwrap();
    assert_eq!(troubles.len(), 3);

    // The Job watch lists again (after a desync): j-gone was deleted meanwhile.
    assert!(!troubles.follow(&Event::<Job>::Init));
    assert!(
        !troubles.follow(&Event::InitApply(kept.clone())),
        "known, unchanged: no trigger"
    );
    let newly = job("j-new", failed("BackoffLimitExceeded", "m"));
    assert!(
        troubles.follow(&Event::InitApply(newly)),
        "a new trouble triggers as it is listed"
    );
    assert_eq!(
        troubles.len(),
        4,
        "nothing is removed before the list is complete"
    );
    troubles.follow(&Event::<Job>::InitDone);
    let jobs: Vec<Box<str>> = troubles
        .of_policy("enrollment", "agreements")
        .into_iter()
        .map(|t| t.job)
        .collect();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert!(!jobs.iter().any(|j| &**j == "j-gone"), "{jobs:?}");
    assert!(troubles.announced("enrollment", "j-kept"));
    assert!(!troubles.announced("enrollment", "j-gone"));
    // The pod watch's entries are not the Job watch's business.
    assert!(
        troubles
            .of_policy("enrollment", "agreements")
            .iter()
            .any(|t| t.pod.as_deref() == Some("p-1"))
    );
}

#[tokio::test]
async fn the_trigger_stream_passes_on_new_troubles_only() {
    let troubles = Troubles::default();
    let running = job("j-1", json!([]));
    let failed_job = job("j-1", failed("BackoffLimitExceeded", "m"));
    let events = futures::stream::iter([
        Ok(Event::Init),
        Ok(Event::InitApply(running.clone())),
        Ok(Event::InitDone),
        Ok(Event::Apply(running)),
        Ok(Event::Apply(failed_job.clone())),
        Ok(Event::Apply(failed_job.clone())),
        Ok(Event::Delete(failed_job)),
    ]);
    let passed: Vec<Job> = triggers(events, troubles.clone())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(passed.len(), 1, "{passed:?}");
    assert_eq!(passed[0].metadata.name.as_deref(), Some("j-1"));
    assert!(troubles.is_empty());
}
