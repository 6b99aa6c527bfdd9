//! What every reconcile shares: the client, the owned-object stores, the metrics, and the little
//! the controller remembers per policy between reconciles (consecutive failures, a run-now
//! request's stamp). That memory holds an entry only while there is something to remember and
//! is dropped with the policy ([`Context::forget`], called when the watch sees it deleted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use super::build::WorkerSettings;
use super::cache::Stores;
use super::metrics::Metrics;
use crate::crd::SignaturePolicy;

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Who Events are from. A Recorder is made per Event: Signet emits Events on transitions
    /// only, so the Recorder's series cache would only hold memory for every policy.
    pub reporter: Reporter,
    /// How worker containers run.
    pub settings: WorkerSettings,
    /// The owned objects, as the watches see them.
    pub stores: Stores,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per policy with something to remember; no entry otherwise.
    policies: Mutex<HashMap<ObjectRef<SignaturePolicy>, Remembered>>,
}

/// What is remembered of one policy between reconciles.
#[derive(Default, Debug)]
struct Remembered {
    /// Consecutive failed reconciles, for backoff.
    failures: u32,
    /// The policy's resourceVersion when its pending run-now request was first seen: it names
    /// the request's Job, so retries of one request start one Job however often the policy is
    /// written meanwhile (only a restart in that window forgets it).
    run_now_stamp: Option<String>,
}

impl Remembered {
    fn is_empty(&self) -> bool {
        self.failures == 0 && self.run_now_stamp.is_none()
    }
}

impl Context {
    /// A context for reconciles.
    pub fn new(
        client: Client,
        reporter: Reporter,
        settings: WorkerSettings,
        stores: Stores,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            reporter,
            settings,
            stores,
            metrics,
            policies: Mutex::default(),
        }
    }

    fn policies(&self) -> MutexGuard<'_, HashMap<ObjectRef<SignaturePolicy>, Remembered>> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes what is remembered of `policy`, dropping the entry once it holds nothing.
    fn update<T>(&self, policy: &SignaturePolicy, change: impl FnOnce(&mut Remembered) -> T) -> T {
        let mut policies = self.policies();
        let key = ObjectRef::from_obj(policy);
        let entry = policies.entry(key.clone()).or_default();
        let result = change(entry);
        if entry.is_empty() {
            policies.remove(&key);
        }
        result
    }

    /// Counts a failed reconcile of `policy`; the count so far, from 1.
    pub(super) fn failed(&self, policy: &SignaturePolicy) -> u32 {
        self.update(policy, |r| {
            r.failures = r.failures.saturating_add(1);
            r.failures
        })
    }

    /// `policy` reconciled: its failures are forgotten.
    pub(super) fn succeeded(&self, policy: &SignaturePolicy) {
        self.update(policy, |r| r.failures = 0);
    }

    /// The stamp naming the Job of `policy`'s run-now request (see [`Remembered`]).
    pub(super) fn run_now_stamp(&self, policy: &SignaturePolicy) -> String {
        self.update(policy, |r| {
            r.run_now_stamp
                .get_or_insert_with(|| policy.resource_version().unwrap_or_default())
                .clone()
        })
    }

    /// Forgets the stamp of `policy`'s run-now request (cleared, or gone).
    pub(super) fn forget_run_now(&self, policy: &SignaturePolicy) {
        self.update(policy, |r| r.run_now_stamp = None);
    }

    /// `policy` is gone: everything remembered of it, and its metric series, are dropped.
    pub fn forget(&self, policy: &SignaturePolicy) {
        self.policies().remove(&ObjectRef::from_obj(policy));
        let namespace = policy.namespace().unwrap_or_default();
        self.metrics
            .policy_ready(&format!("{namespace}/{}", policy.name_any()), None);
        self.metrics.forget_policy(&namespace, &policy.name_any());
    }

    /// How many policies the controller remembers something of (failures, run-now stamps).
    pub fn remembered_policies(&self) -> usize {
        self.policies().len()
    }
}
