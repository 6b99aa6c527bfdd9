//! Targeted regressions of the controller under API faults: restarts over changed policies,
//! `Retry-After` floors, one Job per manual run; and the harness's own helpers.

use super::*;

/// Objects a controller reconciling generation 1 of `policy` left in the API, and that status.
async fn reconciled_generation_1(policy: &SignaturePolicy) -> FakeApi {
    let api = FakeApi::default();
    api.put("signaturepolicies", serde_json::to_value(policy).unwrap());
    let mut before = Driver::start(&api, true);
    while before.step(Duration::ZERO, Duration::ZERO).await {}
    let key = format!(
        "{}/{}",
        policy.metadata.namespace.as_deref().unwrap(),
        policy.metadata.name.as_deref().unwrap()
    );
    assert_eq!(not_converged(&api, &key), None);
    api
}

/// The spec edit made while the controller was down: a new reminder schedule, timeouts off.
fn edit_while_down(api: &FakeApi, namespace: &str, name: &str) -> Value {
    let mut stored = api.get("signaturepolicies", namespace, name).unwrap();
    stored["spec"]["reminders"]["schedule"] = json!("15 * * * *");
    stored["spec"].as_object_mut().unwrap().remove("timeout");
    stored["metadata"]["generation"] = json!(2);
    api.put("signaturepolicies", stored.clone());
    stored
}

#[tokio::test(flavor = "current_thread")]
async fn a_policy_changed_while_the_controller_was_down_is_reconciled_on_start() {
    let mut policy = example("full.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    for synced in [true, false] {
        let api = reconciled_generation_1(&policy).await;
        let mut stored = api
            .get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap();
        assert_eq!(stored["status"]["observedGeneration"], 1);
        stored["spec"]["reminders"]["schedule"] = json!("15 * * * *");
        stored["metadata"]["generation"] = json!(2);
        api.put("signaturepolicies", stored);
        let old = api
            .get("cronjobs", "enrollment", "enrollment-agreements-reminders")
            .unwrap();
        assert_eq!(old["spec"]["schedule"], "*/30 * * * *");

        // Restart: a fresh Context, caches synced from the API or not yet.
        let mut driver = Driver::start(&api, synced);
        let requests = api.state().requests;
        assert!(driver.step(Duration::ZERO, Duration::ZERO).await);
        let sent = api.state().requests - requests;
        let cron_job = api
            .get("cronjobs", "enrollment", "enrollment-agreements-reminders")
            .unwrap();
        assert_eq!(cron_job["spec"]["schedule"], "15 * * * *");
        let stored = api
            .get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap();
        assert_eq!(stored["status"]["observedGeneration"], 2);
        assert_eq!(
            not_converged(&api, "enrollment/enrollment-agreements"),
            None
        );
        println!(
            "restart with caches {}: the first reconcile sent {sent} requests and brought generation 2 in",
            if synced { "synced" } else { "empty" }
        );
        assert!(api.state().unexpected.is_empty());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_section_disabled_while_the_controller_was_down_is_pruned_on_start() {
    let mut policy = example("full.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    for synced in [true, false] {
        let api = reconciled_generation_1(&policy).await;
        edit_while_down(&api, "enrollment", "enrollment-agreements");
        let mut driver = Driver::start(&api, synced);
        assert!(driver.step(Duration::ZERO, Duration::ZERO).await);
        if !synced {
            // The CronJob watch lists the old CronJob after the first reconcile; that triggers
            // the reconcile which prunes it.
            driver.sync_all_triggering();
            while driver.step(Duration::ZERO, Duration::ZERO).await {}
        }
        assert_eq!(
            api.get("cronjobs", "enrollment", "enrollment-agreements-timeouts"),
            None,
            "the disabled section's CronJob is deleted (caches {})",
            if synced { "synced" } else { "empty" }
        );
        let stored = api
            .get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap();
        assert_eq!(stored["status"]["observedGeneration"], 2);
        assert!(stored["status"]["timeouts"].is_null());
        assert_eq!(
            not_converged(&api, "enrollment/enrollment-agreements"),
            None
        );
        assert!(api.state().unexpected.is_empty());
    }
}

/// Regression: `error_policy` retried a 429 after its own backoff (about 1 s at first) even when
/// the API server had asked for more with `Retry-After`.
#[tokio::test(flavor = "current_thread")]
async fn a_429_with_retry_after_is_not_retried_sooner() {
    let api = FakeApi::default();
    let mut policy = example("minimal.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    api.put("signaturepolicies", serde_json::to_value(&policy).unwrap());
    let driver = Driver::start(&api, true);
    let stored: SignaturePolicy = serde_json::from_value(
        api.get("signaturepolicies", "enrollment", "enrollment-agreements")
            .unwrap(),
    )
    .unwrap();
    let policy = Arc::new(stored);
    for (retry_after, floor) in [(30, 30), (3_600, BACKOFF_CAP.as_secs())] {
        {
            let mut state = api.state();
            state.faults = Some(Faults {
                rate: 1.0,
                retry_after,
            });
            // Seeds until the first request's fault is a 429 with Retry-After.
            let seed = (0..)
                .find(|seed| {
                    let mut rng = StdRng::seed_from_u64(*seed);
                    rng.random_bool(1.0);
                    rng.random_range(0..4) == 3
                })
                .unwrap();
            state.rng = Some(StdRng::seed_from_u64(seed));
        }
        let error = reconcile(policy.clone(), driver.ctx.clone())
            .await
            .expect_err("the API refuses");
        assert_eq!(
            (error.reason(), error.category()),
            ("ApplyFailed", "TooManyRequests")
        );
        let delay = requeue_after(&error_policy(policy.clone(), &error, driver.ctx.clone()));
        assert!(
            delay.is_some_and(|d| d >= Duration::from_secs(floor)),
            "Retry-After {retry_after}s: retried after {delay:?}"
        );
    }
}

/// Regression: a manual run's Job was named after the policy's resourceVersion when the
/// reconcile ran, so when clearing the annotation failed and anything else wrote the policy
/// before the retry (a worker's status report, a spec edit), the retry started a second Job.
#[tokio::test(flavor = "current_thread")]
async fn a_manual_run_starts_one_job_even_when_the_policy_changes_before_the_retry() {
    let api = FakeApi::default();
    let mut policy = example("minimal.yaml");
    policy.metadata.namespace = Some("enrollment".into());
    policy.metadata.annotations = Some([(RUN_NOW.to_owned(), "reminders".to_owned())].into());
    api.put("signaturepolicies", serde_json::to_value(&policy).unwrap());
    api.state().scripted.push((
        Method::PATCH,
        "/signaturepolicies/enrollment-agreements".into(),
        500,
    ));
    let mut driver = Driver::start(&api, true);
    assert!(driver.step(Duration::ZERO, Duration::ZERO).await);
    assert_eq!(driver.runs["enrollment/enrollment-agreements"].failures, 1);
    assert_eq!(api.list("jobs").len(), 1, "the Job started");
    // A worker reports a run meanwhile.
    let mut stored = api
        .get("signaturepolicies", "enrollment", "enrollment-agreements")
        .unwrap();
    stored["status"]["reminders"]["lastSuccessfulRunAt"] = json!("2026-01-01T00:00:00Z");
    api.put("signaturepolicies", stored);
    while driver.step(BACKOFF_CAP, Duration::ZERO).await {}
    let jobs: Vec<Value> = api
        .list("jobs")
        .iter()
        .map(|j| j["metadata"]["name"].clone())
        .collect();
    assert_eq!(jobs.len(), 1, "one Job for one request: {jobs:?}");
    assert_eq!(
        not_converged(&api, "enrollment/enrollment-agreements"),
        None
    );
}

#[test]
fn requeue_delays_are_read_from_actions() {
    assert_eq!(
        requeue_after(&Action::requeue(Duration::from_millis(1_500))),
        Some(Duration::from_millis(1_500))
    );
    assert_eq!(
        requeue_after(&Action::requeue(Duration::from_secs(300))),
        Some(Duration::from_secs(300))
    );
    assert_eq!(requeue_after(&Action::await_change()), None);
    assert_eq!(attempts_within(Duration::ZERO), 1);
    // 0.8 + 1.6 + 3.2 = 5.6 s
    assert_eq!(attempts_within(Duration::from_secs_f64(5.6)), 4);
}

#[test]
fn containment_ignores_server_added_fields() {
    let wanted = json!({"spec": {"schedule": "* * * * *", "list": [{"a": 1}]}});
    let actual = json!({"spec": {"schedule": "* * * * *", "list": [{"a": 1, "b": 2}], "extra": true}, "status": {}});
    assert!(contains(&actual, &wanted));
    assert!(!contains(
        &json!({"spec": {"schedule": "0 * * * *", "list": [{"a": 1}]}}),
        &wanted
    ));
    assert!(!contains(
        &json!({"spec": {"schedule": "* * * * *", "list": []}}),
        &wanted
    ));
    assert!(!contains(&json!({}), &wanted));
}
