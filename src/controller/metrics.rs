//! The controller's Prometheus metrics (prometheus-client), served on `/metrics`. The per-policy
//! section gauges (`signet_policy_stale`, `signet_policy_last_run_failed`) are what the Helm
//! chart's alerts select on: keep their names and labels stable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::policy::Section;

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

/// Labels of `signet_reconcile_refusals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The step, from `controller::Error::reason`.
    pub reason: &'static str,
    /// What the API server said, from `controller::Error::category`: `Forbidden`, `Invalid`,
    /// `AdmissionDenied`, ...
    pub category: &'static str,
}

/// Label `ready` of `signet_policies`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabel {
    /// `true` or `false`.
    pub ready: &'static str,
}

/// Labels of the per-section gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SectionLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
    /// `reminders` or `timeouts`.
    pub section: &'static str,
}

/// What the gauges say about one enabled section of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionHealth {
    /// Which section.
    pub section: Section,
    /// The `Stale` verdict for it.
    pub stale: bool,
    /// Its last run ended `Failed` or `ConfigError`.
    pub last_run_failed: bool,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    duration: Histogram,
    policies: Family<ReadyLabel, Gauge>,
    leader: Gauge,
    ready_by_policy: Mutex<HashMap<String, bool>>,
    stale: Family<SectionLabels, Gauge>,
    last_run_failed: Family<SectionLabels, Gauge>,
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
        let refusals = Family::<RefusalLabels, Counter>::default();
        let duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let policies = Family::<ReadyLabel, Gauge>::default();
        let leader = Gauge::default();
        let stale = Family::<SectionLabels, Gauge>::default();
        let last_run_failed = Family::<SectionLabels, Gauge>::default();
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
            "reconcile_refusals",
            "Failed reconciles the API server refused (retried only at the backoff cap), by reason and category",
            refusals.clone(),
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
        registry.register(
            "policy_stale",
            "1 while a policy's section has gone three scheduled runs without a successful run",
            stale.clone(),
        );
        registry.register(
            "policy_last_run_failed",
            "1 while the last run of a policy's section ended Failed or ConfigError",
            last_run_failed.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            refusals,
            duration,
            policies,
            leader,
            ready_by_policy: Mutex::default(),
            stale,
            last_run_failed,
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

    /// Counts a failed reconcile the API server refused (also counted by [`Metrics::failed`]).
    pub fn refused(&self, reason: &'static str, category: &'static str) {
        self.refusals
            .get_or_create(&RefusalLabels { reason, category })
            .inc();
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

    /// Sets the section gauges of a policy: one series per enabled section in `sections`; the
    /// series of any other section of the policy are removed.
    pub fn policy_sections(&self, namespace: &str, policy: &str, sections: &[SectionHealth]) {
        for section in Section::ALL {
            let labels = SectionLabels {
                namespace: namespace.to_owned(),
                policy: policy.to_owned(),
                section: section.as_str(),
            };
            match sections.iter().find(|s| s.section == section) {
                Some(health) => {
                    self.stale
                        .get_or_create(&labels)
                        .set(i64::from(health.stale));
                    self.last_run_failed
                        .get_or_create(&labels)
                        .set(i64::from(health.last_run_failed));
                }
                None => {
                    self.stale.remove(&labels);
                    self.last_run_failed.remove(&labels);
                }
            }
        }
    }

    /// Removes every series of a deleted policy.
    pub fn forget_policy(&self, namespace: &str, policy: &str) {
        self.policy_sections(namespace, policy, &[]);
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
        metrics.refused("ApplyFailed", "AdmissionDenied");
        metrics.policy_ready("a/x", Some(true));
        metrics.policy_ready("a/y", Some(false));
        metrics.policy_ready("a/z", Some(true));
        metrics.policy_ready("a/z", None);
        metrics.set_leader(true);
        let text = metrics.encode();
        for line in [
            "signet_reconciles_total{result=\"success\"} 1",
            "signet_reconcile_errors_total{reason=\"ServerError\"} 1",
            "signet_reconcile_refusals_total{reason=\"ApplyFailed\",category=\"AdmissionDenied\"} 1",
            "signet_reconcile_duration_seconds_count 1",
            "signet_policies{ready=\"true\"} 1",
            "signet_policies{ready=\"false\"} 1",
            "signet_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    fn health(section: Section, stale: bool, last_run_failed: bool) -> SectionHealth {
        SectionHealth {
            section,
            stale,
            last_run_failed,
        }
    }

    #[test]
    fn section_gauges_follow_the_sections_and_go_with_the_policy() {
        let metrics = Metrics::new();
        metrics.policy_sections(
            "enrollment",
            "agreements",
            &[
                health(Section::Reminders, true, true),
                health(Section::Timeouts, false, false),
            ],
        );
        metrics.policy_sections("hr", "offers", &[health(Section::Reminders, false, true)]);
        let text = metrics.encode();
        for line in [
            "# TYPE signet_policy_stale gauge",
            "# TYPE signet_policy_last_run_failed gauge",
            "signet_policy_stale{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 1",
            "signet_policy_stale{namespace=\"enrollment\",policy=\"agreements\",section=\"timeouts\"} 0",
            "signet_policy_last_run_failed{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 1",
            "signet_policy_last_run_failed{namespace=\"enrollment\",policy=\"agreements\",section=\"timeouts\"} 0",
            "signet_policy_stale{namespace=\"hr\",policy=\"offers\",section=\"reminders\"} 0",
            "signet_policy_last_run_failed{namespace=\"hr\",policy=\"offers\",section=\"reminders\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }

        // Timeouts disabled, a run succeeded and the section recovered.
        metrics.policy_sections(
            "enrollment",
            "agreements",
            &[health(Section::Reminders, false, false)],
        );
        let text = metrics.encode();
        assert!(text.contains(
            "signet_policy_stale{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 0"
        ));
        assert!(text.contains(
            "signet_policy_last_run_failed{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 0"
        ));
        assert!(
            !text.contains("policy=\"agreements\",section=\"timeouts\""),
            "a disabled section's series are removed:\n{text}"
        );

        metrics.forget_policy("enrollment", "agreements");
        let text = metrics.encode();
        assert!(
            !text.contains("policy=\"agreements\""),
            "a deleted policy's series are removed:\n{text}"
        );
        assert!(text.contains("policy=\"offers\""), "others stay");
    }
}
