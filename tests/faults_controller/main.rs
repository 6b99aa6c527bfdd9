//! The controller under API faults. An in-memory API server (`common/fake_api.rs`, behind
//! `kube::Client::new` like the scripted harness) answers what `reconcile` really sends and fails
//! a seeded share of requests on every verb with 500, 503 and 429 (with and without
//! `Retry-After`), status writes also with 409; half the failed writes take effect before their
//! answer is lost. A driver (`common/controller_driver.rs`) plays kube's `Controller` on a
//! virtual clock, with watches that lag. Checked: no panic; retries spaced by the backoff
//! schedule and never sooner than `Retry-After` (which each scenario injects and sees honoured);
//! requests bounded by the external events and the faults injected; every policy converges at its first reconcile
//! once faults stop; a converged controller sends nothing; one Job per run-now request; a policy
//! changed while the controller was down is reconciled on start.
//! `SIGNET_FAULT_SEED=<n>` replays the API's faults (the backoff jitter stays random).

#[path = "../common/controller_driver.rs"]
mod controller_driver;
#[path = "../common/fake_api.rs"]
mod fake_api;
#[path = "../common/requeue.rs"]
mod requeue;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use signet::admission::Admission;
use signet::controller::build;
use signet::controller::reconcile::{BACKOFF_BASE, BACKOFF_CAP, error_policy, reconcile};
use signet::crd::SignaturePolicy;
use signet::manifests::parse_documents;
use signet::policy::ValidPolicy;

use controller_driver::{Driver, policy_key, requeue_after, settings};
use fake_api::{Counted, FakeApi, Faults, RUN_NOW, contains};

// ---------------------------------------------------------------------------------------------
// Policies and what converged means.

fn example(file: &str) -> SignaturePolicy {
    let text =
        std::fs::read_to_string(format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    Admission::new()
        .check(parse_documents(&text).unwrap().remove(0))
        .policy
        .expect("decodes")
}

/// Twenty policies in four namespaces, from three examples (and one invalid one); every fifth
/// asks for a manual run.
fn policies() -> Vec<SignaturePolicy> {
    let bases = [
        example("full.yaml"),
        example("minimal.yaml"),
        example("timeouts-only.yaml"),
    ];
    let mut policies: Vec<SignaturePolicy> = (0..19)
        .map(|i| {
            let mut p = bases[i % 3].clone();
            p.metadata.name = Some(format!("{}-{i}", p.metadata.name.clone().unwrap()));
            p.metadata.namespace = Some(format!("team-{}", i % 4));
            if i % 5 == 0 {
                let section = if i % 3 == 2 { "timeouts" } else { "reminders" };
                p.metadata.annotations = Some([(RUN_NOW.to_owned(), section.to_owned())].into());
            }
            p
        })
        .collect();
    let mut invalid = example("invalid/unknown-time-zone.yaml");
    invalid.metadata.namespace = Some("team-0".into());
    policies.push(invalid);
    policies
}

/// Why the policy `key` is not converged, if it is not.
fn not_converged(api: &FakeApi, key: &str) -> Option<String> {
    let (namespace, name) = key.split_once('/').unwrap();
    let stored = api.get("signaturepolicies", namespace, name)?;
    let policy: SignaturePolicy = serde_json::from_value(stored.clone()).unwrap();
    let status = &stored["status"];
    if status["observedGeneration"] != stored["metadata"]["generation"] {
        return Some(format!(
            "observedGeneration {}",
            status["observedGeneration"]
        ));
    }
    let ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    let Ok(valid) = ValidPolicy::new(&policy) else {
        return (ready["status"] != "False" || ready["reason"] != "InvalidSpec")
            .then(|| format!("invalid spec shown as {ready}"));
    };
    if ready["status"] != "True" {
        return Some(format!("Ready is {ready}"));
    }
    if !stored["metadata"]["annotations"][RUN_NOW].is_null() {
        return Some("run-now annotation not cleared".into());
    }
    let desired = build::desired(&valid, &settings());
    let wanted: Vec<(&str, String, Value)> = [
        ("serviceaccounts", json!(desired.service_account)),
        ("roles", json!(desired.role)),
        ("rolebindings", json!(desired.role_binding)),
    ]
    .into_iter()
    .chain(
        desired
            .cron_jobs
            .iter()
            .map(|(_, cj)| ("cronjobs", json!(cj))),
    )
    .map(|(r, v)| (r, v["metadata"]["name"].as_str().unwrap().to_owned(), v))
    .collect();
    for (resource, object_name, value) in &wanted {
        match api.get(resource, namespace, object_name) {
            Some(actual) if contains(&actual, value) => {}
            Some(_) => return Some(format!("{resource}/{object_name} differs")),
            None => return Some(format!("{resource}/{object_name} missing")),
        }
    }
    let cron_jobs = api
        .list("cronjobs")
        .into_iter()
        .filter(|cj| cj["metadata"]["labels"]["signet.dev/policy"] == name)
        .filter(|cj| cj["metadata"]["namespace"] == namespace)
        .count();
    (cron_jobs != desired.cron_jobs.len())
        .then(|| format!("{cron_jobs} CronJobs, {} desired", desired.cron_jobs.len()))
}

/// Attempts a policy failing at every try can make within `window`: retry k waits at least
/// 0.8 × min(2^(k-1) s, 5 min).
fn attempts_within(window: Duration) -> u64 {
    let mut elapsed = Duration::ZERO;
    let mut attempts = 1;
    loop {
        let wait = BACKOFF_BASE
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(BACKOFF_CAP)
            .mul_f64(0.8);
        if elapsed + wait > window {
            return attempts;
        }
        elapsed += wait;
        attempts += 1;
    }
}

/// Most requests one reconcile sends: a server-side apply per owned object (service account,
/// role, role binding, two CronJobs; the reflector stores replace reads), a CronJob delete, a
/// Job, the annotation clear, the status patch, and Events (Applied, Pruned, Stale or
/// Recovered, manual run).
const MAX_REQUESTS_PER_RECONCILE: u64 = 5 + 1 + 1 + 1 + 1 + 4;

fn seed() -> u64 {
    std::env::var("SIGNET_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random())
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// How long the API misbehaves, in virtual time.
const FAULTY_FOR: Duration = Duration::from_secs(30 * 60);
/// When the controller restarts during the faults.
const RESTART_AT: Duration = Duration::from_secs(1_500);
/// When every policy's spec is edited during the faults (the last just before they stop, so
/// policies are mid-retry when the API recovers).
const EDITS_AT: [Duration; 3] = [
    Duration::from_secs(600),
    Duration::from_secs(1_200),
    Duration::from_secs(1_790),
];

/// Events outside the controller that schedule each policy during the faults: the policy watch's
/// initial list at start and at the restart, and each spec edit.
const EXTERNAL_EVENTS: u64 = 2 + EDITS_AT.len() as u64;

#[tokio::test(flavor = "current_thread")]
async fn under_api_faults_the_controller_backs_off_then_converges_and_goes_quiet() {
    let seed = seed();
    println!("seed {seed} (replay the API's faults with SIGNET_FAULT_SEED={seed})");
    println!(
        "{} policies; faults for {}s of virtual time with every spec edited at {:?} and a controller restart at {}s, then none",
        policies().len(),
        FAULTY_FOR.as_secs(),
        EDITS_AT.map(|d| d.as_secs()),
        RESTART_AT.as_secs()
    );
    println!(
        "backoff {}s→{}s ±20%: one streak of failures fits at most {} attempts in {}s",
        BACKOFF_BASE.as_secs(),
        BACKOFF_CAP.as_secs(),
        attempts_within(FAULTY_FOR),
        FAULTY_FOR.as_secs()
    );
    // 100%: an outage, where the backoff alone decides how often the controller knocks.
    for (i, rate) in [0.1, 0.3, 0.5, 1.0].into_iter().enumerate() {
        scenario(seed.wrapping_add(i as u64), rate).await;
    }
}

/// Edit `n` of a policy: a new schedule for its first section, a new generation; the second edit
/// also disables the timeouts of policies that remind too (their CronJob is deleted).
fn edit(api: &FakeApi, key: &str, n: usize) {
    let (namespace, name) = key.split_once('/').unwrap();
    let mut stored = api.get("signaturepolicies", namespace, name).unwrap();
    if n == 1 && stored["spec"]["reminders"].is_object() {
        stored["spec"].as_object_mut().unwrap().remove("timeout");
    }
    let section = if stored["spec"]["reminders"].is_object() {
        "reminders"
    } else {
        "timeout"
    };
    stored["spec"][section]["schedule"] = json!(format!("{} * * * *", 10 * (n + 1)));
    let generation = stored["metadata"]["generation"].as_i64().unwrap();
    stored["metadata"]["generation"] = json!(generation + 1);
    api.put("signaturepolicies", stored);
}

async fn scenario(seed: u64, rate: f64) {
    let api = FakeApi::default();
    for policy in policies() {
        api.put("signaturepolicies", serde_json::to_value(&policy).unwrap());
    }
    {
        let mut state = api.state();
        state.faults = Some(Faults {
            rate,
            retry_after: 2,
        });
        state.rng = Some(StdRng::seed_from_u64(seed));
    }
    let mut driver = Driver::start(&api, true);
    driver.watch_lag = Some(StdRng::seed_from_u64(!seed));
    let keys: Vec<String> = api
        .list("signaturepolicies")
        .iter()
        .map(policy_key)
        .collect();

    // The faulty period, with edits and a restart.
    let mut pending_run_now_at_restart = 0;
    for (n, at) in EDITS_AT.into_iter().enumerate() {
        if (EDITS_AT[n.saturating_sub(1)]..at).contains(&RESTART_AT) {
            while driver.step(RESTART_AT, FAULTY_FOR).await {}
            driver.now = RESTART_AT;
            pending_run_now_at_restart = api
                .list("signaturepolicies")
                .iter()
                .filter(|p| !p["metadata"]["annotations"][RUN_NOW].is_null())
                .count();
            driver.restart();
        }
        while driver.step(at, FAULTY_FOR).await {}
        driver.now = driver.now.max(at);
        for key in &keys {
            edit(&api, key, n);
            driver.trigger(key);
        }
    }
    while driver.step(FAULTY_FOR, FAULTY_FOR).await {}
    driver.now = FAULTY_FOR;
    let during: HashMap<String, Counted> = api.state().counted.clone();
    let (requests_during, injected, lost, by_code, by_verb) = {
        let state = api.state();
        (
            state.requests,
            state.injected.values().sum::<u64>(),
            state.lost_answers,
            state.injected.clone(),
            state.by_verb.clone(),
        )
    };
    let retry_after_sent = api.state().retry_after_sent;
    let runs_during = driver.runs.clone();
    let retries_during = driver.retries;
    let longest_streak = runs_during
        .values()
        .map(|r| r.longest_streak)
        .max()
        .unwrap_or(0);

    // Faults stop: every policy must converge at its next reconcile, at most one capped backoff
    // (with jitter) away.
    api.state().faults = None;
    let deadline = FAULTY_FOR + BACKOFF_CAP.mul_f64(1.2) + Duration::from_secs(1);
    let unconverged_at_stop = keys
        .iter()
        .filter(|k| not_converged(&api, k).is_some())
        .count();
    // Policy → (when it converged, reconciles after the faults it took).
    let mut converged_at: HashMap<&String, (Duration, u64)> = HashMap::new();
    loop {
        for key in &keys {
            if !converged_at.contains_key(key) && not_converged(&api, key).is_none() {
                let rounds = driver.runs.get(key).map_or(0, |r| r.after_faults);
                converged_at.insert(key, (driver.now, rounds));
            }
        }
        if converged_at.len() == keys.len() || !driver.step(deadline, FAULTY_FOR).await {
            break;
        }
    }
    let converged_by = converged_at.values().map(|c| c.0).max().unwrap_or_default();
    let late: Vec<String> = keys
        .iter()
        .filter_map(|k| not_converged(&api, k).map(|why| format!("{k}: {why}")))
        .collect();
    let rounds = converged_at.values().map(|c| c.1).max().unwrap_or(0);

    // A converged controller resyncing every policy, its watches caught up, sends nothing.
    driver.watch_lag = None;
    driver.flush();
    let before = api.state().requests;
    for key in &keys {
        driver.schedule(key, driver.now);
    }
    let now = driver.now;
    while driver.step(now, Duration::ZERO).await {}
    let quiet = api.state().requests - before;

    // Requests against the backoff bound, per policy.
    let total_reconciles: u64 = runs_during.values().map(|r| r.reconciles).sum();
    let mut busiest = (0, String::new(), 0, 0, 0);
    let mut over_bound = Vec::new();
    let mut bound_total = 0;
    for key in &keys {
        let run = runs_during.get(key).copied().unwrap_or_default();
        let counted = during.get(key).copied().unwrap_or_default();
        // What schedules a reconcile, none of it counted from the controller's own writes:
        // the watches' initial lists (start, restart) and the spec edits; a retry after each
        // failed reconcile, which took at least one injected fault; and a watch event of the
        // controller's own writes, which change something only in the first reconcile after
        // an external event or after a failed one (applies are idempotent), so at most one
        // follow-up for each of those. The retries' spacing is checked against the backoff
        // schedule by the driver (`backoff_too_short`).
        let reconciles = 2 * (EXTERNAL_EVENTS + counted.injected);
        if run.failures > counted.injected {
            over_bound.push(format!(
                "{key}: {} failed reconciles with {} faults injected",
                run.failures, counted.injected
            ));
        }
        let bound = reconciles * MAX_REQUESTS_PER_RECONCILE;
        bound_total += bound;
        if counted.requests > bound || run.reconciles > reconciles {
            over_bound.push(format!(
                "{key}: {} requests in {} reconciles, bound {bound} in {reconciles}",
                counted.requests, run.reconciles
            ));
        }
        if counted.requests > busiest.0 {
            busiest = (
                counted.requests,
                key.clone(),
                bound,
                run.reconciles,
                reconciles,
            );
        }
    }
    let label = if rate >= 1.0 {
        "outage (100%)".to_owned()
    } else {
        format!("fault rate {:.0}%", rate * 100.0)
    };
    println!("--- {label}, seed {seed}");
    println!(
        "  faulty {}s: {requests_during} requests {by_verb:?}; {injected} errors injected {by_code:?}, {lost} of them on writes that were done; {total_reconciles} reconciles, {retries_during} failed and retried, longest failure streak {longest_streak}",
        FAULTY_FOR.as_secs()
    );
    println!(
        "  requests vs backoff bound: total {requests_during} <= {bound_total}; busiest policy {} sent {} <= {} in {} reconciles <= {} (retrying every 1 s flat: {} reconciles per policy)",
        busiest.1,
        busiest.0,
        busiest.2,
        busiest.3,
        busiest.4,
        FAULTY_FOR.as_secs()
    );
    println!(
        "  retries after a 429 with Retry-After ({retry_after_sent} sent): {} waited at least as asked, {} sooner",
        driver.retry_after_honoured,
        driver.retry_after_ignored.len()
    );
    println!(
        "  faults stop with {unconverged_at_stop} of {} policies unconverged; all converged by virtual {}s ({}s after), at most {rounds} reconcile(s) per policy after the faults",
        keys.len(),
        converged_by.as_secs(),
        converged_by.saturating_sub(FAULTY_FOR).as_secs(),
    );
    let asked = policies()
        .iter()
        .filter(|p| p.metadata.annotations.is_some())
        .count();
    let jobs: Vec<Value> = api
        .list("jobs")
        .iter()
        .map(|j| j["metadata"]["name"].clone())
        .collect();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    for event in api.list("events") {
        *events
            .entry(event["reason"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    println!(
        "  restart at {}s with {pending_run_now_at_restart} run-now request(s) pending; {} Job(s) for {asked} request(s); Events {events:?}",
        RESTART_AT.as_secs(),
        jobs.len()
    );
    println!("  no-op resync of every policy afterwards: {quiet} requests");

    let unexpected = api.state().unexpected.clone();
    assert!(
        unexpected.is_empty(),
        "unexpected requests: {unexpected:#?}"
    );
    assert!(driver.panics.is_empty(), "panicked: {:#?}", driver.panics);
    assert!(injected > 0, "faults were injected");
    assert!(
        over_bound.is_empty(),
        "over the backoff bound: {over_bound:#?}"
    );
    assert!(
        driver.backoff_too_short.is_empty(),
        "retried sooner than the backoff schedule: {:#?}",
        driver.backoff_too_short
    );
    assert!(
        retry_after_sent > 0,
        "the scenario injected 429s with Retry-After"
    );
    assert!(
        driver.retry_after_honoured > 0,
        "a reconcile failed by a 429 with Retry-After was retried as asked ({retry_after_sent} sent)"
    );
    assert!(
        driver.retry_after_ignored.is_empty(),
        "retried sooner than Retry-After: {:#?}",
        driver.retry_after_ignored
    );
    assert!(late.is_empty(), "not converged by {deadline:?}: {late:#?}");
    assert!(rounds <= 1, "one clean reconcile converges a policy");
    assert_eq!(quiet, 0, "a converged controller sends nothing");
    // Each manual run request started one Job, retries notwithstanding; only a restart between
    // starting the Job and clearing the annotation may start a second (the stamp is in memory).
    assert!(
        jobs.len() >= asked && jobs.len() <= asked + pending_run_now_at_restart,
        "one Job per run-now request: {jobs:?}"
    );
}

mod regressions;
