//! Refusals against a scripted API: a step the API server refuses (an invalid field, an admission
//! webhook, RBAC) turns `Ready` False with the step's reason and the API server's words, emits
//! one Warning for the transition however often it is retried, is counted, and is retried at the
//! backoff cap; once the refusal is lifted, the next reconcile turns `Ready` True again.

use std::sync::Mutex;

use signet::controller::reconcile::BACKOFF_CAP;

use super::*;

const STATUS: &str = "/apis/signet.dev/v1alpha1/namespaces/enrollment/signaturepolicies/enrollment-agreements/status";
const REMINDERS: &str =
    "/apis/batch/v1/namespaces/enrollment/cronjobs/enrollment-agreements-reminders";
const TIMEOUTS: &str =
    "/apis/batch/v1/namespaces/enrollment/cronjobs/enrollment-agreements-timeouts";

/// The last status patch the controller sent, so the next reconcile sees the policy as the API
/// server then holds it.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Option<Value>>>);

impl Written {
    /// `policy` with the written status merged into its own.
    fn onto(&self, policy: &SignaturePolicy) -> SignaturePolicy {
        let patch = self
            .0
            .lock()
            .unwrap()
            .clone()
            .expect("a status was written");
        let mut policy = policy.clone();
        let mut status = serde_json::to_value(policy.status.take().unwrap_or_default()).unwrap();
        merge(&mut status, &patch["status"]);
        policy.status = Some(serde_json::from_value(status).unwrap());
        policy
    }
}

/// The status write of a refusal: `Ready=False`, `reason`, a message holding each of
/// `fragments`; the sections' status left as it is.
fn status_refused(written: &Written, reason: &'static str, fragments: &[&str]) -> Step {
    let written = written.clone();
    let fragments: Vec<String> = fragments.iter().map(|f| f.to_string()).collect();
    step(Method::PATCH, STATUS, move |b, q| {
        assert!(q.contains("application/merge-patch+json"), "{q}");
        let ready = &b["status"]["conditions"][0];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some(reason)),
            "{ready}"
        );
        let message = ready["message"].as_str().unwrap();
        for fragment in &fragments {
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        }
        assert_eq!(b["status"]["conditions"][1]["type"], "Suspended");
        assert_eq!(b["status"]["conditions"][2]["type"], "Stale");
        for section in ["reminders", "timeouts"] {
            assert!(
                b["status"].get(section).is_none(),
                "{section} left as it is"
            );
        }
        *written.0.lock().unwrap() = Some(b.clone());
    })
}

/// The Warning Event of a refusal.
fn warning(reason: &'static str, action: &'static str, fragments: &[&str]) -> Step {
    let fragments: Vec<String> = fragments.iter().map(|f| f.to_string()).collect();
    step(Method::POST, EVENTS, move |b, _| {
        assert_eq!(
            (
                b["type"].as_str(),
                b["reason"].as_str(),
                b["action"].as_str()
            ),
            (Some("Warning"), Some(reason), Some(action)),
            "{b}"
        );
        assert_eq!(b["regarding"]["name"], "enrollment-agreements");
        let note = b["note"].as_str().unwrap();
        for fragment in &fragments {
            assert!(note.contains(fragment), "{note:?} lacks {fragment:?}");
        }
    })
}

/// The status write once the refusal is lifted.
fn status_ready() -> Step {
    step(Method::PATCH, STATUS, |b, _| {
        let ready = &b["status"]["conditions"][0];
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("True"), Some("Reconciled")),
            "{ready}"
        );
        assert_eq!(
            b["status"]["reminders"]["cronJob"],
            "enrollment-agreements-reminders"
        );
    })
}

/// `error` is the refusal expected, and `error_policy` retries it at the cap.
fn retried_at_the_cap(
    h: &Harness,
    policy: &SignaturePolicy,
    error: &signet::controller::Error,
    reason: &str,
    category: &str,
) {
    assert_eq!((error.reason(), error.category()), (reason, category));
    assert!(error.is_refusal() && !error.is_transient(), "{error}");
    let action = error_policy(Arc::new(policy.clone()), error, h.ctx.clone());
    assert_eq!(action, Action::requeue(BACKOFF_CAP), "{error}");
}

fn assert_metric(h: &Harness, line: &str) {
    let text = h.metrics.encode();
    assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
}

/// The policy's RBAC, as the watches deliver it once applied.
fn observe_rbac(h: &mut Harness, policy: &SignaturePolicy, role: bool) {
    let desired = build::desired(&ValidPolicy::new(policy).unwrap(), &settings());
    follow(
        &mut h.writers.service_accounts,
        as_applied(&desired.service_account),
    );
    if role {
        follow(&mut h.writers.roles, as_applied(&desired.role));
        follow(
            &mut h.writers.role_bindings,
            as_applied(&desired.role_binding),
        );
    }
}

#[tokio::test]
async fn a_cron_job_the_api_server_finds_invalid_is_reported_once_and_retried_at_the_cap() {
    let mut h = harness();
    let old = with_reconciled_status(policy("full.yaml"));
    h.observe(&old);
    let mut changed = old.clone();
    changed.spec.reminders.as_mut().unwrap().schedule = "*/15 * * * *".into();
    changed.metadata.generation = Some(2);
    // A cluster whose API server has no zone database refuses the zone.
    let invalid = "CronJob.batch \"enrollment-agreements-reminders\" is invalid: spec.timeZone: \
                   Invalid value: \"Europe/Berlin\": unknown time zone Europe/Berlin";
    let refused = || {
        refusing(
            Method::PATCH,
            REMINDERS,
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid,
        )
    };
    let written = Written::default();
    let steps = vec![
        refused(),
        status_refused(
            &written,
            "ApplyFailed",
            &[
                "apply CronJob enrollment/enrollment-agreements-reminders was refused (422 Invalid): ",
                invalid,
                "retried every 5 minutes",
            ],
        ),
        warning("ApplyFailed", "Apply", &[invalid]),
    ];
    let error = h.reconcile(&changed, steps).await.unwrap_err();
    retried_at_the_cap(&h, &changed, &error, "ApplyFailed", "Invalid");
    let reported = written.onto(&changed);
    assert_eq!(
        reported.status.as_ref().unwrap().observed_generation,
        Some(2)
    );
    assert_metric(&h, "signet_policies{ready=\"false\"} 1");

    // The retry meets the same refusal: the status already says so, no second Event.
    let error = h.reconcile(&reported, vec![refused()]).await.unwrap_err();
    retried_at_the_cap(&h, &reported, &error, "ApplyFailed", "Invalid");
    assert_metric(
        &h,
        "signet_reconcile_errors_total{reason=\"ApplyFailed\"} 2",
    );
    assert_metric(
        &h,
        "signet_reconcile_refusals_total{reason=\"ApplyFailed\",category=\"Invalid\"} 2",
    );

    // The cluster gets its zone database.
    let steps = vec![
        step(Method::PATCH, REMINDERS, |b, _| {
            assert_eq!(b["spec"]["schedule"], "*/15 * * * *")
        }),
        step(Method::PATCH, TIMEOUTS, |_, _| {}),
        status_ready(),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(
                (b["type"].as_str(), b["reason"].as_str()),
                (Some("Normal"), Some("Applied"))
            )
        }),
    ];
    let action = h.reconcile(&reported, steps).await.unwrap();
    // A healthy policy's requeue: the hour's resync, or sooner when a section would turn stale
    // (with `*/15` reminders, never within 30 minutes); the cap's backoff is gone.
    let delay = requeue::requeue_after(&action).expect("a requeue");
    assert!(
        (Duration::from_secs(30 * 60)..=Duration::from_secs(3600)).contains(&delay),
        "{action:?}"
    );
    assert_metric(&h, "signet_policies{ready=\"true\"} 1");
    assert_eq!(h.ctx.remembered_policies(), 0, "the failures are forgotten");
}

#[tokio::test]
async fn an_admission_webhooks_denial_is_reported_with_the_webhooks_name() {
    let mut h = harness();
    let policy = policy("minimal.yaml");
    let denial = "admission webhook \"validate.kyverno.svc-fail\" denied the request: \n\n\
                  resource CronJob/enrollment/enrollment-agreements-reminders was blocked due to \
                  the following policies \n\nrequire-team-label:\n  check-team: 'validation error: \
                  label team is required. rule check-team failed at path /metadata/labels/team/'";
    let refused = || refusing(Method::PATCH, REMINDERS, StatusCode::BAD_REQUEST, denial);
    let account = const_format(NS, "/serviceaccounts/enrollment-agreements-signet-worker");
    let role = const_format(RBAC, "/roles/enrollment-agreements-signet-worker");
    let binding = const_format(RBAC, "/rolebindings/enrollment-agreements-signet-worker");
    let written = Written::default();
    let steps = vec![
        step(Method::PATCH, account, |_, _| {}),
        step(Method::PATCH, role, |_, _| {}),
        step(Method::PATCH, binding, |_, _| {}),
        refused(),
        status_refused(
            &written,
            "ApplyFailed",
            &[
                "apply CronJob enrollment/enrollment-agreements-reminders was refused (400 AdmissionDenied): ",
                "admission webhook \"validate.kyverno.svc-fail\" denied the request",
                "label team is required",
            ],
        ),
        warning(
            "ApplyFailed",
            "Apply",
            &["admission webhook \"validate.kyverno.svc-fail\" denied the request"],
        ),
    ];
    let error = h.reconcile(&policy, steps).await.unwrap_err();
    retried_at_the_cap(&h, &policy, &error, "ApplyFailed", "AdmissionDenied");
    let reported = written.onto(&policy);
    observe_rbac(&mut h, &policy, true);

    let error = h.reconcile(&reported, vec![refused()]).await.unwrap_err();
    retried_at_the_cap(&h, &reported, &error, "ApplyFailed", "AdmissionDenied");
    assert_metric(
        &h,
        "signet_reconcile_errors_total{reason=\"ApplyFailed\"} 2",
    );
    assert_metric(
        &h,
        "signet_reconcile_refusals_total{reason=\"ApplyFailed\",category=\"AdmissionDenied\"} 2",
    );
    assert_metric(&h, "signet_policies{ready=\"false\"} 1");

    // The webhook's policy is relaxed.
    let steps = vec![
        step(Method::PATCH, REMINDERS, |_, q| is_apply(q)),
        status_ready(),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["note"], "applied CronJob enrollment-agreements-reminders")
        }),
    ];
    h.reconcile(&reported, steps).await.unwrap();
    assert_metric(&h, "signet_policies{ready=\"true\"} 1");
}

#[tokio::test]
async fn a_role_the_controller_may_not_grant_is_reported_until_its_rbac_is_fixed() {
    let mut h = harness();
    let policy = policy("full.yaml");
    // What Kubernetes answers when the controller's own RBAC lacks what the worker Role grants.
    let forbidden = "roles.rbac.authorization.k8s.io \"enrollment-agreements-signet-worker\" is \
                     forbidden: user \"system:serviceaccount:signet:signet\" (groups=[\"system:serviceaccounts\"]) \
                     is attempting to grant RBAC permissions not currently held:\n\
                     {APIGroups:[\"signet.dev\"], Resources:[\"signaturepolicies/status\"], \
                     ResourceNames:[\"enrollment-agreements\"], Verbs:[\"patch\"]}";
    let account = const_format(NS, "/serviceaccounts/enrollment-agreements-signet-worker");
    let role = const_format(RBAC, "/roles/enrollment-agreements-signet-worker");
    let binding = const_format(RBAC, "/rolebindings/enrollment-agreements-signet-worker");
    let refused = || refusing(Method::PATCH, role, StatusCode::FORBIDDEN, forbidden);
    let written = Written::default();
    let steps = vec![
        step(Method::PATCH, account, |_, _| {}),
        refused(),
        status_refused(
            &written,
            "ApplyFailed",
            &[
                "apply Role enrollment/enrollment-agreements-signet-worker was refused (403 Forbidden): ",
                "is attempting to grant RBAC permissions not currently held",
            ],
        ),
        warning("ApplyFailed", "Apply", &["not currently held"]),
    ];
    let error = h.reconcile(&policy, steps).await.unwrap_err();
    retried_at_the_cap(&h, &policy, &error, "ApplyFailed", "Forbidden");
    let reported = written.onto(&policy);
    observe_rbac(&mut h, &policy, false);

    let error = h.reconcile(&reported, vec![refused()]).await.unwrap_err();
    retried_at_the_cap(&h, &reported, &error, "ApplyFailed", "Forbidden");
    assert_metric(
        &h,
        "signet_reconcile_errors_total{reason=\"ApplyFailed\"} 2",
    );
    assert_metric(
        &h,
        "signet_reconcile_refusals_total{reason=\"ApplyFailed\",category=\"Forbidden\"} 2",
    );

    // The chart's RBAC is fixed; nothing about the policy changed.
    let steps = vec![
        step(Method::PATCH, role, |_, _| {}),
        step(Method::PATCH, binding, |_, _| {}),
        step(Method::PATCH, REMINDERS, |_, _| {}),
        step(Method::PATCH, TIMEOUTS, |_, _| {}),
        status_ready(),
        step(Method::POST, EVENTS, |b, _| {
            assert_eq!(b["reason"], "Applied")
        }),
    ];
    h.reconcile(&reported, steps).await.unwrap();
    assert_metric(&h, "signet_policies{ready=\"true\"} 1");
}

#[tokio::test]
async fn a_refused_prune_is_reported_with_its_own_reason() {
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
    let forbidden = "cronjobs.batch \"enrollment-agreements-timeouts\" is forbidden: User \
                     \"system:serviceaccount:signet:signet\" cannot delete resource \"cronjobs\" \
                     in API group \"batch\" in the namespace \"enrollment\"";
    let written = Written::default();
    let steps = vec![
        step(Method::PATCH, REMINDERS, |_, _| {}),
        refusing(Method::DELETE, TIMEOUTS, StatusCode::FORBIDDEN, forbidden),
        status_refused(
            &written,
            "PruneFailed",
            &[
                "delete CronJob enrollment/enrollment-agreements-timeouts was refused (403 Forbidden): ",
                "cannot delete resource \"cronjobs\"",
            ],
        ),
        warning("PruneFailed", "Prune", &["cannot delete resource"]),
    ];
    let error = h.reconcile(&changed, steps).await.unwrap_err();
    retried_at_the_cap(&h, &changed, &error, "PruneFailed", "Forbidden");
    assert_metric(
        &h,
        "signet_reconcile_refusals_total{reason=\"PruneFailed\",category=\"Forbidden\"} 1",
    );
}

#[tokio::test]
async fn a_refused_status_write_is_counted_and_retried_at_the_cap_not_in_a_loop() {
    let mut h = harness();
    let policy = policy("minimal.yaml");
    h.observe(&policy);
    let forbidden = "signaturepolicies.signet.dev \"enrollment-agreements\" is forbidden: User \
                     \"system:serviceaccount:signet:signet\" cannot patch resource \
                     \"signaturepolicies/status\" in API group \"signet.dev\" in the namespace \
                     \"enrollment\"";
    let refused_status = || refusing(Method::PATCH, STATUS, StatusCode::FORBIDDEN, forbidden);
    // Everything in place, only the status cannot be written: no Event (it would say nothing
    // the log does not).
    let error = h
        .reconcile(&policy, vec![refused_status()])
        .await
        .unwrap_err();
    retried_at_the_cap(&h, &policy, &error, "StatusWriteFailed", "Forbidden");
    assert_metric(
        &h,
        "signet_reconcile_errors_total{reason=\"StatusWriteFailed\"} 1",
    );
    assert_metric(
        &h,
        "signet_reconcile_refusals_total{reason=\"StatusWriteFailed\",category=\"Forbidden\"} 1",
    );

    // An apply refused too: the status saying so cannot be written either, so no Event either;
    // the status write's refusal decides the retry.
    let mut changed = policy.clone();
    changed.spec.reminders.as_mut().unwrap().schedule = "*/15 * * * *".into();
    changed.metadata.generation = Some(2);
    let steps = vec![
        refusing(
            Method::PATCH,
            REMINDERS,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        refused_status(),
    ];
    let error = h.reconcile(&changed, steps).await.unwrap_err();
    retried_at_the_cap(&h, &changed, &error, "StatusWriteFailed", "Forbidden");
    assert_metric(
        &h,
        "signet_reconcile_errors_total{reason=\"StatusWriteFailed\"} 2",
    );
}
