//! kube's `Controller`, played on a virtual clock over a [`FakeApi`]: the policy due first is
//! reconciled, then requeued at the delay `reconcile` or `error_policy` returns (one slot per
//! policy, the earlier time wins); the owned-object caches follow the API's changes and an owner
//! is triggered when one of its objects changes, as the watches would, optionally lagging.
//! Included by `tests/faults_controller/main.rs`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use rand::Rng;
use rand::rngs::StdRng;
use serde::de::DeserializeOwned;
use serde_json::Value;
use signet::controller::build::WorkerSettings;
use signet::controller::cache::{self, OwnedKind, Writer, Writers};
use signet::controller::metrics::Metrics;
use signet::controller::reconcile::{BACKOFF_BASE, BACKOFF_CAP, Context, error_policy, reconcile};
use signet::crd::SignaturePolicy;

use crate::fake_api::{Change, FakeApi, OWNED};

/// What happened to one policy's reconciles.
#[derive(Default, Clone, Copy)]
pub struct PolicyRun {
    pub reconciles: u64,
    pub failures: u64,
    pub successes: u64,
    /// Watch events that scheduled the policy.
    pub triggers: u64,
    /// Reconciles after the faults stopped.
    pub after_faults: u64,
    /// Consecutive failures now, and the most seen.
    pub streak: u64,
    pub longest_streak: u64,
}

/// The controller being driven, its clock, queue and tallies.
pub struct Driver {
    pub api: FakeApi,
    pub ctx: Arc<Context>,
    /// The watches' ends of the controller's stores.
    pub writers: Writers,
    /// Virtual time since the start.
    pub now: Duration,
    /// Policy (`namespace/name`) → when it is due. One slot per policy; the earlier time wins,
    /// as in kube's scheduler.
    pub queue: HashMap<String, Duration>,
    pub runs: HashMap<String, PolicyRun>,
    pub retries: u64,
    pub panics: Vec<String>,
    /// Retries after a 429 carrying `Retry-After`: how many waited as asked, and which did not.
    pub retry_after_honoured: u64,
    pub retry_after_ignored: Vec<String>,
    /// Retries scheduled sooner than the backoff schedule allows for their streak (at least
    /// 0.8 × min(2^(k-1) × base, cap) after the k-th consecutive failure).
    pub backoff_too_short: Vec<String>,
    /// When set, the watches lag: after each reconcile they deliver what is pending (in order)
    /// only half the time, so reconciles also run on stale caches.
    pub watch_lag: Option<StdRng>,
    pub pending: Vec<Change>,
}

pub fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "registry.example/signet:1".into(),
        image_pull_policy: None,
        pushgateway_url: None,
    }
}

/// A fresh Context over `api`, and the writing ends of its (empty) stores.
fn context(api: &FakeApi) -> (Arc<Context>, Writers) {
    let (stores, writers) = cache::stores();
    let ctx = Arc::new(Context::new(
        api.client(),
        Reporter {
            controller: "signet-controller".into(),
            instance: None,
        },
        settings(),
        stores,
        Arc::new(Metrics::new()),
    ));
    (ctx, writers)
}

pub use super::requeue::requeue_after;

/// What a watch does with a change: what is remembered of the object, into the store.
pub fn index<K: OwnedKind + DeserializeOwned>(
    store: &mut Writer<K>,
    object: Option<Value>,
    gone: K,
) {
    let event = match object {
        Some(object) => watcher::Event::Apply(serde_json::from_value::<K>(object).unwrap()),
        None => watcher::Event::Delete(gone),
    };
    cache::follow(store, event);
}

pub fn named<K: kube::Resource<DynamicType = ()> + Default>(namespace: &str, name: &str) -> K {
    let mut k = K::default();
    k.meta_mut().namespace = Some(namespace.into());
    k.meta_mut().name = Some(name.into());
    k
}

impl Driver {
    /// A controller starting now over `api`; its caches see what `api` holds once `synced`.
    pub fn start(api: &FakeApi, synced: bool) -> Self {
        let (ctx, writers) = context(api);
        let mut driver = Driver {
            api: api.clone(),
            ctx,
            writers,
            now: Duration::ZERO,
            queue: HashMap::new(),
            runs: HashMap::new(),
            retries: 0,
            panics: Vec::new(),
            retry_after_honoured: 0,
            retry_after_ignored: Vec::new(),
            backoff_too_short: Vec::new(),
            watch_lag: None,
            pending: Vec::new(),
        };
        if synced {
            driver.sync_all();
        }
        // The policy watch's initial list schedules every policy.
        for policy in api.list("signaturepolicies") {
            driver.schedule(&policy_key(&policy), Duration::ZERO);
        }
        driver
    }

    /// The controller restarts now: a fresh Context (no failure counts, no run-now stamps), caches filled by the watches' initial lists, every policy scheduled.
    pub fn restart(&mut self) {
        let (ctx, writers) = context(&self.api);
        self.ctx = ctx;
        self.writers = writers;
        self.pending.clear();
        self.queue.clear();
        self.sync_all();
        for policy in self.api.list("signaturepolicies") {
            self.schedule(&policy_key(&policy), self.now);
        }
        for run in self.runs.values_mut() {
            run.streak = 0;
        }
    }

    /// The owned watches' initial list.
    pub fn sync_all(&mut self) {
        let api = self.api.clone();
        for resource in OWNED {
            for object in api.list(resource) {
                self.follow(resource, object, false);
            }
        }
        self.api.state().changes.clear();
    }

    pub fn follow(&mut self, resource: &str, object: Value, trigger: bool) {
        let managed = object["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "signet";
        if !managed {
            return;
        }
        let namespace = object["metadata"]["namespace"].as_str().unwrap().to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        self.deliver(resource, &namespace, &name, Some(object.clone()));
        if trigger && let Some(owner) = object["metadata"]["ownerReferences"][0]["name"].as_str() {
            self.trigger(&format!("{namespace}/{owner}"));
        }
    }

    pub fn deliver(&mut self, resource: &str, namespace: &str, name: &str, object: Option<Value>) {
        let s = &mut self.writers;
        match resource {
            "serviceaccounts" => index(
                &mut s.service_accounts,
                object,
                named::<ServiceAccount>(namespace, name),
            ),
            "roles" => index(&mut s.roles, object, named::<Role>(namespace, name)),
            "rolebindings" => index(
                &mut s.role_bindings,
                object,
                named::<RoleBinding>(namespace, name),
            ),
            "cronjobs" => index(&mut s.cron_jobs, object, named::<CronJob>(namespace, name)),
            _ => {}
        }
    }

    pub fn schedule(&mut self, key: &str, at: Duration) {
        let slot = self.queue.entry(key.to_owned()).or_insert(at);
        *slot = (*slot).min(at);
    }

    pub fn trigger(&mut self, key: &str) {
        self.runs.entry(key.to_owned()).or_default().triggers += 1;
        self.schedule(key, self.now);
    }

    /// What the watches deliver after the API changed.
    pub fn watch(&mut self) {
        let fresh = std::mem::take(&mut self.api.state().changes);
        self.pending.extend(fresh);
        if let Some(rng) = self.watch_lag.as_mut()
            && rng.random_bool(0.5)
        {
            return;
        }
        self.flush();
    }

    /// Delivers every pending watch event.
    pub fn flush(&mut self) {
        for change in std::mem::take(&mut self.pending) {
            if change.resource == "signaturepolicies" {
                self.trigger(&format!("{}/{}", change.namespace, change.name));
                continue;
            }
            match change.object {
                Some(object) => self.follow(&change.resource, object, true),
                None => {
                    self.deliver(&change.resource, &change.namespace, &change.name, None);
                    // A deleted CronJob's owner is named by its label.
                    let owner = change.name.rsplit_once('-').map(|(p, _)| p.to_owned());
                    if let Some(owner) = owner {
                        self.trigger(&format!("{}/{owner}", change.namespace));
                    }
                }
            }
        }
    }

    /// Reconciles the policy due first; `false` when none is due before `until`.
    pub async fn step(&mut self, until: Duration, faults_until: Duration) -> bool {
        let Some((key, at)) = self
            .queue
            .iter()
            .min_by_key(|(k, at)| (**at, (*k).clone()))
            .map(|(k, at)| (k.clone(), *at))
        else {
            return false;
        };
        if at > until {
            return false;
        }
        self.queue.remove(&key);
        self.now = self.now.max(at);
        let (namespace, name) = key.split_once('/').unwrap();
        let Some(stored) = self.api.get("signaturepolicies", namespace, name) else {
            return true;
        };
        let policy: Arc<SignaturePolicy> = Arc::new(serde_json::from_value(stored).unwrap());
        let faulty = self.now < faults_until;
        {
            let mut state = self.api.state();
            if !faulty {
                state.faults = None;
            }
            state.current = Some(key.clone());
            state.last_fault = None;
        }
        let run = self.runs.entry(key.clone()).or_default();
        run.reconciles += 1;
        if !faulty {
            run.after_faults += 1;
        }
        let result = tokio::spawn(reconcile(policy.clone(), self.ctx.clone())).await;
        self.api.state().current = None;
        let next = match result {
            Ok(Ok(action)) => {
                let run = self.runs.get_mut(&key).unwrap();
                run.successes += 1;
                run.streak = 0;
                requeue_after(&action)
            }
            Ok(Err(error)) => {
                let run = self.runs.get_mut(&key).unwrap();
                run.failures += 1;
                run.streak += 1;
                run.longest_streak = run.longest_streak.max(run.streak);
                let streak = run.streak;
                self.retries += 1;
                let action = error_policy(policy, &error, self.ctx.clone());
                let delay = requeue_after(&action);
                assert!(
                    delay.is_some(),
                    "a transient error is retried: {error} gave {action:?}"
                );
                let floor = BACKOFF_BASE
                    .saturating_mul(1 << (streak - 1).min(16))
                    .min(BACKOFF_CAP)
                    .mul_f64(0.8);
                if let Some(delay) = delay
                    && delay < floor
                {
                    self.backoff_too_short.push(format!(
                        "{key}: failure {streak} in a row retried after {delay:?} < {floor:?}"
                    ));
                }
                // The request that failed the reconcile is the last fault injected in it.
                let asked = self.api.state().last_fault.and_then(|(_, after)| after);
                if let (Some(asked), Some(delay)) = (asked, delay) {
                    if delay >= Duration::from_secs(asked) {
                        self.retry_after_honoured += 1;
                    } else {
                        self.retry_after_ignored.push(format!(
                            "{key}: asked {asked}s, retried after {delay:?} ({error})"
                        ));
                    }
                }
                delay
            }
            Err(panic) => {
                self.panics.push(format!("{key}: {panic}"));
                Some(BACKOFF_CAP)
            }
        };
        if let Some(delay) = next {
            self.schedule(&key, self.now + delay);
        }
        self.watch();
        true
    }
}

pub fn policy_key(policy: &Value) -> String {
    format!(
        "{}/{}",
        policy["metadata"]["namespace"].as_str().unwrap(),
        policy["metadata"]["name"].as_str().unwrap()
    )
}

impl Driver {
    /// The owned watches' initial list arriving late, triggering the owners as it does.
    pub fn sync_all_triggering(&mut self) {
        let api = self.api.clone();
        for resource in OWNED {
            for object in api.list(resource) {
                self.follow(resource, object, true);
            }
        }
    }
}
