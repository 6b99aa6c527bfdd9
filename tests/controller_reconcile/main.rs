//! Reconciles against a scripted Kubernetes API (`common/scripted_api.rs`): each test lists the
//! requests the controller must make, in order, with the parts of their bodies that matter, and
//! the answers the "API server" gives. Anything else the controller sends fails the test.

#[path = "../common/requeue.rs"]
mod requeue;
#[path = "../common/scripted_api.rs"]
mod scripted_api;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http::{Method, StatusCode};
use k8s_openapi::api::batch::v1::CronJobStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};
use signet::controller::build;
use signet::controller::reconcile::error_policy;
use signet::controller::runtime::policy_triggers;
use signet::controller::staleness::StaleSummary;
use signet::controller::status::{self, Outcome};
use signet::crd::{
    ReminderRun, RemindersStatus, RunOutcome, SignaturePolicy, SignaturePolicyStatus,
    TimeoutsStatus,
};
use signet::policy::ValidPolicy;

use scripted_api::*;

#[tokio::test]
async fn first_reconcile_applies_rbac_and_cron_jobs_then_writes_status_and_an_event() {
    let mut h = harness();
    let policy = policy("full.yaml");
    let steps = vec![
        step(
            Method::PATCH,
            const_format(NS, "/serviceaccounts/enrollment-agreements-signet-worker"),
            |b, q| {
                is_apply(q);
                assert_eq!(b["kind"], "ServiceAccount");
                assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "policy-uid");
            },
        ),
        step(
            Method::PATCH,
            const_format(RBAC, "/roles/enrollment-agreements-signet-worker"),
            |b, q| {
                is_apply(q);
                assert_eq!(b["rules"][0]["verbs"], json!(["patch"]));
            },
        ),
        step(
            Method::PATCH,
            const_format(RBAC, "/rolebindings/enrollment-agreements-signet-worker"),
            |_, q| is_apply(q),
        ),
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-reminders"),
            |b, q| {
                is_apply(q);
                assert_eq!(b["spec"]["schedule"], "*/30 * * * *");
                assert_eq!(
                    b["metadata"]["labels"]["signet.dev/policy"],
                    "enrollment-agreements"
                );
            },
        ),
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-timeouts"),
            |b, _| {
                assert_eq!(b["spec"]["schedule"], "0 */2 * * *");
            },
        ),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, q| {
                assert!(q.contains("application/merge-patch+json"), "{q}");
                let status = &b["status"];
                assert_eq!(status["observedGeneration"], 1);
                assert_eq!(status["conditions"][0]["type"], "Ready");
                assert_eq!(status["conditions"][0]["status"], "True");
                assert_eq!(status["conditions"][0]["reason"], "Reconciled");
                assert_eq!(status["conditions"][1]["type"], "Suspended");
                assert_eq!(status["conditions"][1]["status"], "False");
                // A new policy has had no chance to run yet.
                assert_eq!(status["conditions"][2]["type"], "Stale");
                assert_eq!(status["conditions"][2]["status"], "False");
                assert_eq!(status["conditions"][2]["reason"], "RunsSucceeding");
                assert_eq!(
                    status["reminders"]["cronJob"],
                    "enrollment-agreements-reminders"
                );
                assert_eq!(
                    status["timeouts"]["cronJob"],
                    "enrollment-agreements-timeouts"
                );
                assert!(
                    status["reminders"].get("lastRun").is_none(),
                    "worker-owned fields are left alone"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Applied");
            assert_eq!(b["type"], "Normal");
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .contains("CronJob enrollment-agreements-reminders")
            );
            assert_eq!(b["regarding"]["name"], "enrollment-agreements");
        }),
    ];
    let action = h.reconcile(&policy, steps).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    assert!(
        h.metrics
            .encode()
            .contains("signet_policies{ready=\"true\"} 1")
    );
}

#[tokio::test]
async fn a_reconcile_that_finds_everything_in_place_writes_nothing() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("full.yaml"));
    // Just started: the stores show what the controller applied (its hash stamp on each of the
    // five objects), so not even the first reconcile reads anything; nor does any after it.
    h.observe(&policy);
    h.reconcile(&policy, vec![]).await.unwrap();
    h.reconcile(&policy, vec![]).await.unwrap();
    h.reconcile(&policy, vec![]).await.unwrap();
}

#[tokio::test]
async fn a_cron_job_edited_by_hand_is_restored() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("minimal.yaml"));
    h.observe(&policy);
    h.reconcile(&policy, vec![]).await.unwrap();
    // Someone edits the schedule: the watch delivers a new generation, written by another field
    // manager after the controller's apply. It is re-applied without a read.
    let desired = build::desired(&ValidPolicy::new(&policy).unwrap(), &settings())
        .cron_jobs
        .remove(0)
        .1;
    let mut edited = cron_job_as_applied(&desired);
    edited.metadata.generation = Some(2);
    edited.spec.as_mut().unwrap().schedule = "0 3 * * *".into();
    let edit = managed_by(
        "kubectl-edit",
        APPLIED_AT + 60,
        json!({"f:spec": {"f:schedule": {}}}),
    );
    edited
        .metadata
        .managed_fields
        .as_mut()
        .unwrap()
        .push(edit.clone());
    h.observe_cron_job(edited);
    let path = const_format(BATCH, "/cronjobs/enrollment-agreements-reminders");
    let steps = vec![
        step(Method::PATCH, path, |b, q| {
            is_apply(q);
            assert_eq!(b["spec"]["schedule"], "*/30 * * * *");
        }),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["note"], "applied CronJob enrollment-agreements-reminders");
        }),
    ];
    h.reconcile(&policy, steps).await.unwrap();
    // The watch delivers the restored object, the controller's write now the latest: in place.
    let mut restored = cron_job_as_applied(&desired);
    restored.metadata.generation = Some(3);
    restored.metadata.managed_fields = Some(vec![
        managed_by("signet-controller", APPLIED_AT + 120, json!({"f:spec": {}})),
        edit,
    ]);
    h.observe_cron_job(restored);
    h.reconcile(&policy, vec![]).await.unwrap();
}

#[tokio::test]
async fn a_spec_change_rewrites_the_cron_jobs_but_not_the_rbac() {
    let mut h = harness();
    let old = with_reconciled_status(policy("full.yaml"));
    h.observe(&old);
    let mut changed = old.clone();
    changed.spec.reminders.as_mut().unwrap().schedule = "*/15 * * * *".into();
    changed.metadata.generation = Some(2);
    let steps = vec![
        // The RBAC is in place (the stores carry the same hash stamps): neither read nor written.
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-reminders"),
            |b, _| {
                assert_eq!(b["spec"]["schedule"], "*/15 * * * *");
                assert_eq!(
                    b["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"], 1500,
                    "override kept"
                );
            },
        ),
        // Every worker carries the spec and its generation, so the timeouts CronJob follows.
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-timeouts"),
            |b, _| {
                assert_eq!(b["spec"]["schedule"], "0 */2 * * *");
            },
        ),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                assert_eq!(b["status"]["observedGeneration"], 2);
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                b["note"],
                "applied CronJob enrollment-agreements-reminders, CronJob enrollment-agreements-timeouts"
            );
        }),
    ];
    h.reconcile(&changed, steps).await.unwrap();
}

#[tokio::test]
async fn a_disabled_section_has_its_cron_job_deleted() {
    let mut h = harness();
    let old = with_reconciled_status(policy("full.yaml"));
    h.observe(&old);
    let mut changed = old.clone();
    changed.spec.timeout = None;
    changed
        .spec
        .escalation
        .as_mut()
        .unwrap()
        .channels
        .retain(|c| c != "ops-email");
    changed.metadata.generation = Some(2);
    let steps = vec![
        // The RBAC is in place. The reminders worker's environment changed (SIGNET_POLICY), so its CronJob is re-applied.
        step(
            Method::PATCH,
            const_format(BATCH, "/cronjobs/enrollment-agreements-reminders"),
            |_, _| {},
        ),
        step(
            Method::DELETE,
            const_format(BATCH, "/cronjobs/enrollment-agreements-timeouts"),
            |b, _| {
                assert_eq!(b["propagationPolicy"], "Background");
            },
        ),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                assert_eq!(
                    b["status"]["timeouts"],
                    Value::Null,
                    "the disabled section leaves the status"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Applied")
        }),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Pruned");
            assert_eq!(
                b["note"],
                "deleted CronJob enrollment-agreements-timeouts (section disabled)"
            );
        }),
    ];
    h.reconcile(&changed, steps).await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_sets_ready_false_and_touches_no_cron_job() {
    let mut h = harness();
    let valid = with_reconciled_status(policy("minimal.yaml"));
    h.observe(&valid);
    // Admission would refuse this; an older CRD in the cluster might not.
    let mut invalid = valid.clone();
    invalid.spec.reminders.as_mut().unwrap().schedule = "*/70 * * * *".into();
    invalid.metadata.generation = Some(2);
    let steps = vec![
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements/status"),
            |b, _| {
                let ready = &b["status"]["conditions"][0];
                assert_eq!(
                    (ready["status"].as_str(), ready["reason"].as_str()),
                    (Some("False"), Some("InvalidSpec"))
                );
                assert!(ready["message"].as_str().unwrap().contains("spec.reminders.schedule: \"*/70 * * * *\" is not a valid cron schedule: minute 70 is out of range (0-59)"));
                let stale = &b["status"]["conditions"][2];
                assert_eq!(
                    (stale["status"].as_str(), stale["reason"].as_str()),
                    (Some("False"), Some("NotApplicable")),
                    "no schedule to measure against"
                );
                assert!(
                    b["status"].get("reminders").is_none(),
                    "section status untouched"
                );
            },
        ),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("InvalidSpec"))
            );
        }),
    ];
    let action = h.reconcile(&invalid, steps).await.unwrap();
    assert_eq!(
        action,
        Action::await_change(),
        "no retry until the spec changes"
    );

    // The status now says so: the next reconcile writes nothing and emits no second Event.
    let mut reported = invalid.clone();
    let computed = status::compute(
        &invalid,
        &Outcome::Invalid(ValidPolicy::new(&invalid).unwrap_err()),
        &StaleSummary::invalid_spec(),
        &Default::default(),
        &Time(jiff::Timestamp::now()),
    );
    let status = reported.status.as_mut().unwrap();
    status.observed_generation = Some(2);
    status.conditions = computed.conditions().into_iter().cloned().collect();
    h.reconcile(&reported, vec![]).await.unwrap();
}

/// The requeue delay of `action`, in seconds (`None`: wait for a change).
fn delay_secs(action: &Action) -> Option<f64> {
    requeue::requeue_after(action).map(|d| d.as_secs_f64())
}

#[tokio::test]
async fn api_errors_back_off_per_object_without_a_hot_loop() {
    // Two policies failing in turn: each backs off on its own count (1, 2, 4, 8 s), which a
    // counter shared between policies would turn into 1, 2, 4, ... 128 s.
    let mut h = harness();
    let first = policy("minimal.yaml");
    let mut second = first.clone();
    second.metadata.name = Some("other-agreements".into());
    second.metadata.uid = Some("other-uid".into());
    let account = |name: &str| const_format(NS, &format!("/serviceaccounts/{name}-signet-worker"));
    let mut delays: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..4 {
        for (i, policy) in [&first, &second].into_iter().enumerate() {
            let path = account(&policy.metadata.name.clone().unwrap());
            let err = h
                .reconcile(
                    policy,
                    vec![failing(
                        Method::PATCH,
                        path,
                        StatusCode::INTERNAL_SERVER_ERROR,
                    )],
                )
                .await
                .unwrap_err();
            assert_eq!(
                (err.reason(), err.category()),
                ("ApplyFailed", "ServerError")
            );
            assert!(err.is_transient());
            let action = error_policy(Arc::new(policy.clone()), &err, h.ctx.clone());
            delays[i].push(delay_secs(&action).expect("a transient error is retried"));
        }
    }
    for (i, secs) in delays.iter().enumerate() {
        for (retry, expected) in [1.0, 2.0, 4.0, 8.0].iter().enumerate() {
            assert!(
                (secs[retry] / expected - 1.0).abs() <= 0.21,
                "policy {i}, retry {retry}: {} s, expected about {expected} s ({delays:?})",
                secs[retry]
            );
        }
    }
    assert!(
        h.metrics
            .encode()
            .contains("signet_reconcile_errors_total{reason=\"ApplyFailed\"} 8")
    );
}

#[tokio::test]
async fn a_conflict_on_the_status_write_is_retried() {
    let mut h = harness();
    let policy = policy("minimal.yaml");
    h.observe(&policy);
    let steps = vec![failing(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        StatusCode::CONFLICT,
    )];
    let err = h.reconcile(&policy, steps).await.unwrap_err();
    assert_eq!(
        (err.reason(), err.category()),
        ("StatusWriteFailed", "Conflict")
    );
    // A conflict is transient: retried soon (the first backoff step, 1 s with jitter), not
    // left waiting for a change.
    let action = error_policy(Arc::new(policy.clone()), &err, h.ctx.clone());
    let delay = delay_secs(&action).expect("a conflict is retried");
    assert!((0.79..=1.21).contains(&delay), "retried after {delay} s");
    // And the retry, with nothing else in between, writes the status and succeeds.
    let retry = vec![step(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        |b, _| assert_eq!(b["status"]["conditions"][0]["type"], "Ready"),
    )];
    h.reconcile(&policy, retry).await.unwrap();
}

#[tokio::test]
async fn run_now_starts_a_job_from_the_cron_job_and_clears_the_annotation() {
    let mut h = harness();
    let mut policy = with_reconciled_status(policy("full.yaml"));
    h.observe(&policy);
    policy.metadata.annotations =
        Some([("signet.dev/run-now".to_owned(), "timeouts".to_owned())].into());
    let steps = vec![
        step(Method::POST, BATCH_JOBS, |b, _| {
            assert_eq!(
                b["metadata"]["name"],
                "enrollment-agreements-timeouts-manual-100"
            );
            assert_eq!(
                b["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
                "manual"
            );
            assert_eq!(b["metadata"]["ownerReferences"][0]["kind"], "CronJob");
            assert_eq!(
                b["metadata"]["ownerReferences"][0]["name"],
                "enrollment-agreements-timeouts"
            );
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"][0]["args"],
                json!(["check-timeouts"])
            );
        }),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "ManualRunStarted");
            assert_eq!(
                b["note"],
                "started Job enrollment-agreements-timeouts-manual-100 from CronJob enrollment-agreements-timeouts"
            );
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements"),
            |b, q| {
                assert!(q.contains("merge-patch"), "{q}");
                assert_eq!(
                    b,
                    &json!({"metadata": {"annotations": {"signet.dev/run-now": null}}})
                );
            },
        ),
    ];
    h.reconcile(&policy, steps).await.unwrap();

    policy.metadata.annotations =
        Some([("signet.dev/run-now".to_owned(), "everything".to_owned())].into());
    let steps = vec![
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Warning"), Some("ManualRunRefused"))
            );
        }),
        step(
            Method::PATCH,
            const_format(POLICIES, "/enrollment-agreements"),
            |_, _| {},
        ),
    ];
    h.reconcile(&policy, steps).await.unwrap();
}

#[tokio::test]
async fn last_schedule_times_are_mirrored_from_the_cron_jobs() {
    let mut h = harness();
    let policy = with_reconciled_status(policy("minimal.yaml"));
    h.observe(&policy);
    let desired = build::desired(&ValidPolicy::new(&policy).unwrap(), &settings())
        .cron_jobs
        .remove(0)
        .1;
    let mut cron_job = cron_job_as_applied(&desired);
    cron_job.status = Some(CronJobStatus {
        last_schedule_time: Some(Time(jiff::Timestamp::from_second(1_790_000_100).unwrap())),
        ..Default::default()
    });
    h.observe_cron_job(cron_job);
    let steps = vec![step(
        Method::PATCH,
        const_format(POLICIES, "/enrollment-agreements/status"),
        |b, _| {
            assert_eq!(
                b["status"]["reminders"]["lastScheduleTime"],
                "2026-09-21T14:15:00Z"
            );
            assert_eq!(
                b["status"]["reminders"]["cronJob"],
                "enrollment-agreements-reminders"
            );
        },
    )];
    h.reconcile(&policy, steps).await.unwrap();
}

#[tokio::test]
async fn a_deleted_policy_leaves_nothing_remembered() {
    let mut h = harness();
    let mut policy = with_reconciled_status(policy("minimal.yaml"));
    h.observe(&policy);
    // A run-now request whose Job cannot be created yet: the controller remembers the request's
    // stamp and counts the failure for backoff.
    policy.metadata.annotations =
        Some([("signet.dev/run-now".to_owned(), "reminders".to_owned())].into());
    let err = h
        .reconcile(
            &policy,
            vec![failing(
                Method::POST,
                BATCH_JOBS,
                StatusCode::SERVICE_UNAVAILABLE,
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RunNowFailed");
    error_policy(Arc::new(policy.clone()), &err, h.ctx.clone());
    assert_eq!(h.ctx.remembered_policies(), 1);
    // The policy is deleted: the watch says so, and nothing of it is kept.
    let (_, store) = reflector::store();
    let events = futures::stream::iter([
        Ok(watcher::Event::Apply(policy.clone())),
        Ok(watcher::Event::Delete(policy.clone())),
    ]);
    let passed: Vec<_> = policy_triggers(events, store, h.ctx.clone())
        .collect()
        .await;
    assert_eq!(passed.len(), 1, "the apply is passed on to the Controller");
    assert_eq!(
        h.ctx.remembered_policies(),
        0,
        "the deleted policy's state stays"
    );
    assert!(
        !h.metrics
            .encode()
            .contains("policy=\"enrollment-agreements\""),
        "the deleted policy's series stay"
    );
}

#[tokio::test]
async fn a_reconciled_policy_leaves_nothing_remembered() {
    let mut h = harness();
    let policy = policy("minimal.yaml");
    let path = const_format(NS, "/serviceaccounts/enrollment-agreements-signet-worker");
    let err = h
        .reconcile(
            &policy,
            vec![failing(
                Method::PATCH,
                path,
                StatusCode::INTERNAL_SERVER_ERROR,
            )],
        )
        .await
        .unwrap_err();
    error_policy(Arc::new(policy.clone()), &err, h.ctx.clone());
    assert_eq!(h.ctx.remembered_policies(), 1);
    let policy = with_reconciled_status(policy);
    h.observe(&policy);
    h.reconcile(&policy, vec![]).await.unwrap();
    assert_eq!(
        h.ctx.remembered_policies(),
        0,
        "failures are forgotten on success"
    );
}

const BATCH_JOBS: &str = "/apis/batch/v1/namespaces/enrollment/jobs";

mod jobs;
mod refusals;
mod staleness;
