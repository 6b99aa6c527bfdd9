//! The controller's Prometheus metrics (prometheus-client), served on `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label `result` of `signet_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success`, `invalid` or `error`.
    pub result: &'static str,
}

/// Label `reason` of `signet_reconcile_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A stable reason from `controller::Error::reason`.
    pub reason: &'static str,
}

/// Label `ready` of `signet_policies`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    /// `true` or `false`.
    pub ready: &'static str,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    policies: Family<ReadyLabel, Gauge>,
    leader: Gauge,
    ready_by_policy: Mutex<HashMap<String, bool>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `signet` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("signet");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let policies = Family::<ReadyLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles of SignaturePolicies by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "policies",
            "SignaturePolicies by their Ready condition",
            policies.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            duration,
            policies,
            leader,
            ready_by_policy: Mutex::default(),
        }
    }

    /// Counts a reconcile and its duration.
    pub fn reconciled(&self, result: &'static str, took: Duration) {
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records a policy's Ready state (`None`: the policy is gone).
    pub fn policy_ready(&self, key: &str, ready: Option<bool>) {
        let mut by_policy = self
            .ready_by_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match ready {
            Some(ready) => by_policy.insert(key.to_owned(), ready),
            None => by_policy.remove(key),
        };
        let ready_count = by_policy.values().filter(|r| **r).count() as i64;
        self.policies
            .get_or_create(&ReadyLabel { ready: "true" })
            .set(ready_count);
        self.policies
            .get_or_create(&ReadyLabel { ready: "false" })
            .set(by_policy.len() as i64 - ready_count);
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_every_metric() {
        let metrics = Metrics::new();
        metrics.reconciled("success", Duration::from_millis(3));
        metrics.failed("ServerError");
        metrics.policy_ready("a/x", Some(true));
        metrics.policy_ready("a/y", Some(false));
        metrics.policy_ready("a/z", Some(true));
        metrics.policy_ready("a/z", None);
        metrics.set_leader(true);
        let text = metrics.encode();
        for line in [
            "signet_reconciles_total{result=\"success\"} 1",
            "signet_reconcile_errors_total{reason=\"ServerError\"} 1",
            "signet_reconcile_duration_seconds_count 1",
            "signet_policies{ready=\"true\"} 1",
            "signet_policies{ready=\"false\"} 1",
            "signet_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
