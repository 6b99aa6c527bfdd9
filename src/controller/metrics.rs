//! The controller's Prometheus metrics (prometheus-client), served on `/metrics` as OpenMetrics
//! or as the Prometheus text format 0.0.4 ([`Format`]). The per-policy gauges
//! (`signet_policy_ready`, `signet_policy_stale`, `signet_policy_last_run_failed`,
//! `signet_policy_channel_rejected`, `signet_policy_cronjob_info`) are what the Helm chart's
//! alerts select on: keep their names and labels stable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::names;
use crate::policy::Section;

/// `result` of a reconcile that ended with the policy `Ready`.
pub const RESULT_SUCCESS: &str = "success";
/// `result` of a reconcile that found the spec invalid (`Ready=False`).
pub const RESULT_INVALID: &str = "invalid";
/// `result` of a reconcile that failed and is retried.
pub const RESULT_ERROR: &str = "error";
/// Every `result` of `signet_reconciles_total`.
pub const RESULTS: [&str; 3] = [RESULT_SUCCESS, RESULT_INVALID, RESULT_ERROR];
/// Every `reason` of `signet_reconcile_errors_total`: what `controller::Error::reason` returns
/// (a test below fails to compile when a variant is added). Each series exists at 0 from the
/// start, so `increase()` sees the first error.
pub const ERROR_REASONS: [&str; 5] = [
    "MissingMetadata",
    "ApplyFailed",
    "PruneFailed",
    "RunNowFailed",
    "StatusWriteFailed",
];
/// `status.<section>.lastRun.reason` of a run a channel refused outright: the worker's
/// `worker::CHANNEL_REJECTED`, which the controller may not import (tests/metrics_format.rs
/// keeps the two equal).
pub const CHANNEL_REJECTED: &str = "ChannelRejected";

/// Label `result` of `signet_reconciles_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// One of [`RESULTS`].
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

/// Labels of the per-policy gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
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

/// Labels of `signet_policy_cronjob_info`: a section and the CronJob that runs it, which is
/// how an alert on kube-state-metrics' Job series finds the policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CronJobLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
    /// `reminders` or `timeouts`.
    pub section: &'static str,
    /// The section's CronJob ([`names::cronjob`]).
    pub cronjob: String,
}

/// What the gauges say about one enabled section of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionHealth {
    /// Which section.
    pub section: Section,
    /// The `Stale` verdict for it.
    pub stale: bool,
    /// Its last run failed as a whole (`Failed`, `ConfigError`, `Interrupted`, `JobFailed`).
    pub last_run_failed: bool,
    /// Its last run's reason is [`CHANNEL_REJECTED`]: a channel refused every delivery.
    pub channel_rejected: bool,
}

/// The exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0, for clients that ask for it (Prometheus does).
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everyone else (curl, promtool, older scrapers).
    Text004,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text004 => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
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
    ready: Family<PolicyLabels, Gauge>,
    stale: Family<SectionLabels, Gauge>,
    last_run_failed: Family<SectionLabels, Gauge>,
    channel_rejected: Family<SectionLabels, Gauge>,
    cronjob: Family<CronJobLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `signet` prefix; the counters' series and the
    /// `signet_policies` gauges exist at 0 from the start.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("signet");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]);
        let policies = Family::<ReadyLabel, Gauge>::default();
        let leader = Gauge::default();
        let ready = Family::<PolicyLabels, Gauge>::default();
        let stale = Family::<SectionLabels, Gauge>::default();
        let last_run_failed = Family::<SectionLabels, Gauge>::default();
        let channel_rejected = Family::<SectionLabels, Gauge>::default();
        let cronjob = Family::<CronJobLabels, Gauge>::default();
        for result in RESULTS {
            reconciles.get_or_create(&ResultLabel { result }).inc_by(0);
        }
        for reason in ERROR_REASONS {
            errors.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        for ready in ["true", "false"] {
            policies.get_or_create(&ReadyLabel { ready }).set(0);
        }
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
            "policy_ready",
            "1 while a policy's Ready condition is True, 0 while it is False",
            ready.clone(),
        );
        registry.register(
            "policy_stale",
            "1 while a policy's section has gone three scheduled runs without a successful run",
            stale.clone(),
        );
        registry.register(
            "policy_last_run_failed",
            "1 while the last run of a policy's section failed (Failed, ConfigError, Interrupted, JobFailed)",
            last_run_failed.clone(),
        );
        registry.register(
            "policy_channel_rejected",
            "1 while the last run of a policy's section ended with reason ChannelRejected",
            channel_rejected.clone(),
        );
        registry.register(
            "policy_cronjob_info",
            "The CronJob running a policy's section (always 1)",
            cronjob.clone(),
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
            ready,
            stale,
            last_run_failed,
            channel_rejected,
            cronjob,
        }
    }

    /// Counts a reconcile (`result`: one of [`RESULTS`]) and its duration.
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

    /// Records a policy's Ready state (`None`: the policy is gone); `key` is
    /// `namespace/name`.
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
        let (namespace, policy) = key.split_once('/').unwrap_or(("", key));
        let labels = PolicyLabels {
            namespace: namespace.to_owned(),
            policy: policy.to_owned(),
        };
        match ready {
            Some(ready) => {
                self.ready.get_or_create(&labels).set(i64::from(ready));
            }
            None => {
                self.ready.remove(&labels);
            }
        }
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
            let cronjob = CronJobLabels {
                namespace: namespace.to_owned(),
                policy: policy.to_owned(),
                section: section.as_str(),
                cronjob: names::cronjob(policy, section),
            };
            match sections.iter().find(|s| s.section == section) {
                Some(health) => {
                    self.stale
                        .get_or_create(&labels)
                        .set(i64::from(health.stale));
                    self.last_run_failed
                        .get_or_create(&labels)
                        .set(i64::from(health.last_run_failed));
                    self.channel_rejected
                        .get_or_create(&labels)
                        .set(i64::from(health.channel_rejected));
                    self.cronjob.get_or_create(&cronjob).set(1);
                }
                None => {
                    self.stale.remove(&labels);
                    self.last_run_failed.remove(&labels);
                    self.channel_rejected.remove(&labels);
                    self.cronjob.remove(&cronjob);
                }
            }
        }
    }

    /// Removes every series of a deleted policy.
    pub fn forget_policy(&self, namespace: &str, policy: &str) {
        self.policy_ready(&format!("{namespace}/{policy}"), None);
        self.policy_sections(namespace, policy, &[]);
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The exposition in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Text004 => text_004(&self.encode()),
        }
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition as prometheus-client writes it.
/// The formats differ in the metadata only: a 0.0.4 family is named as its samples are (a
/// counter `x` is `x_total`, an info `x` is a gauge `x_info`), `unknown` is `untyped`, and
/// there is no `# UNIT` and no `# EOF`. Samples are kept as they are; the controller records
/// no exemplars, and its help texts hold no backslash or line break, which the formats would
/// escape differently.
pub fn text_004(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    // OpenMetrics writes `# HELP` before `# TYPE`, and the new name depends on the type.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').map_or("", |(_, help)| help));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                kind => (name.to_owned(), kind),
            };
            if let Some(help) = help.take() {
                text.push_str(&format!("# HELP {name} {help}\n"));
            }
            text.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::error::Error;

    #[test]
    fn exports_every_metric() {
        let metrics = Metrics::new();
        metrics.reconciled(RESULT_SUCCESS, Duration::from_millis(3));
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
            "signet_policy_ready{namespace=\"a\",policy=\"x\"} 1",
            "signet_policy_ready{namespace=\"a\",policy=\"y\"} 0",
            "signet_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("policy=\"z\""),
            "a policy that is gone has no Ready series:\n{text}"
        );
    }

    #[test]
    fn counters_exist_at_zero_from_the_start() {
        let text = Metrics::new().encode();
        for result in RESULTS {
            let line = format!("signet_reconciles_total{{result=\"{result}\"}} 0\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        for reason in ERROR_REASONS {
            let line = format!("signet_reconcile_errors_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        for ready in ["true", "false"] {
            let line = format!("signet_policies{{ready=\"{ready}\"}} 0\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    /// One of each `controller::Error`; the match fails to compile when a variant is added, so
    /// [`ERROR_REASONS`] cannot silently miss its reason.
    fn every_reconcile_error() -> Vec<Error> {
        let api = || {
            kube::Error::Api(
                serde_json::from_value(
                    serde_json::json!({"code": 500, "reason": "", "message": ""}),
                )
                .unwrap(),
            )
        };
        let errors = vec![
            Error::MissingMetadata("name"),
            Error::Apply {
                object: "CronJob ns/x".into(),
                source: api(),
            },
            Error::Prune {
                object: "CronJob ns/x".into(),
                source: api(),
            },
            Error::RunNow {
                action: "create Job ns/x".into(),
                source: api(),
            },
            Error::Status {
                policy: "ns/x".into(),
                source: api(),
            },
        ];
        for error in &errors {
            match error {
                Error::MissingMetadata(_)
                | Error::Apply { .. }
                | Error::Prune { .. }
                | Error::RunNow { .. }
                | Error::Status { .. } => {}
            }
        }
        errors
    }

    #[test]
    fn every_error_reason_is_initialised() {
        let reasons: Vec<&str> = every_reconcile_error().iter().map(Error::reason).collect();
        let mut listed = ERROR_REASONS.to_vec();
        listed.sort_unstable();
        let mut expected = reasons.clone();
        expected.sort_unstable();
        assert_eq!(listed, expected);
    }

    fn health(section: Section, stale: bool, last_run_failed: bool) -> SectionHealth {
        SectionHealth {
            section,
            stale,
            last_run_failed,
            channel_rejected: false,
        }
    }

    #[test]
    fn section_gauges_follow_the_sections_and_go_with_the_policy() {
        let metrics = Metrics::new();
        metrics.policy_ready("enrollment/agreements", Some(false));
        metrics.policy_sections(
            "enrollment",
            "agreements",
            &[
                SectionHealth {
                    channel_rejected: true,
                    ..health(Section::Reminders, true, true)
                },
                health(Section::Timeouts, false, false),
            ],
        );
        metrics.policy_sections("hr", "offers", &[health(Section::Reminders, false, true)]);
        let text = metrics.encode();
        for line in [
            "# TYPE signet_policy_stale gauge",
            "# TYPE signet_policy_last_run_failed gauge",
            "# TYPE signet_policy_channel_rejected gauge",
            "# TYPE signet_policy_cronjob_info gauge",
            "signet_policy_stale{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 1",
            "signet_policy_stale{namespace=\"enrollment\",policy=\"agreements\",section=\"timeouts\"} 0",
            "signet_policy_last_run_failed{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 1",
            "signet_policy_last_run_failed{namespace=\"enrollment\",policy=\"agreements\",section=\"timeouts\"} 0",
            "signet_policy_channel_rejected{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"} 1",
            "signet_policy_channel_rejected{namespace=\"enrollment\",policy=\"agreements\",section=\"timeouts\"} 0",
            "signet_policy_cronjob_info{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\",cronjob=\"agreements-reminders\"} 1",
            "signet_policy_cronjob_info{namespace=\"enrollment\",policy=\"agreements\",section=\"timeouts\",cronjob=\"agreements-timeouts\"} 1",
            "signet_policy_stale{namespace=\"hr\",policy=\"offers\",section=\"reminders\"} 0",
            "signet_policy_last_run_failed{namespace=\"hr\",policy=\"offers\",section=\"reminders\"} 1",
            "signet_policy_channel_rejected{namespace=\"hr\",policy=\"offers\",section=\"reminders\"} 0",
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
        for gauge in ["stale", "last_run_failed", "channel_rejected"] {
            let line = format!(
                "signet_policy_{gauge}{{namespace=\"enrollment\",policy=\"agreements\",section=\"reminders\"}} 0"
            );
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
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

    #[test]
    fn a_long_policy_name_maps_to_its_truncated_cronjob() {
        let metrics = Metrics::new();
        let policy = "a".repeat(60);
        metrics.policy_sections("ns", &policy, &[health(Section::Timeouts, false, false)]);
        let cronjob = names::cronjob(&policy, Section::Timeouts);
        assert!(cronjob.len() <= names::MAX_CRONJOB_NAME);
        assert!(
            metrics
                .encode()
                .contains(&format!("section=\"timeouts\",cronjob=\"{cronjob}\"}} 1")),
            "{}",
            metrics.encode()
        );
    }

    #[test]
    fn text_004_names_families_as_their_samples_and_drops_what_0_0_4_lacks() {
        let openmetrics = "\
# HELP jobs Jobs started.
# TYPE jobs counter
jobs_total{kind=\"a\"} 3
# HELP build Build.
# TYPE build info
build_info{version=\"1\"} 1
# HELP took_seconds Time taken.
# TYPE took_seconds histogram
# UNIT took_seconds seconds
took_seconds_sum 0.5
took_seconds_count 1
took_seconds_bucket{le=\"+Inf\"} 1
# HELP odd Something.
# TYPE odd unknown
odd 2
# HELP up Up.
# TYPE up gauge
up 1
# EOF
";
        assert_eq!(
            text_004(openmetrics),
            "\
# HELP jobs_total Jobs started.
# TYPE jobs_total counter
jobs_total{kind=\"a\"} 3
# HELP build_info Build.
# TYPE build_info gauge
build_info{version=\"1\"} 1
# HELP took_seconds Time taken.
# TYPE took_seconds histogram
took_seconds_sum 0.5
took_seconds_count 1
took_seconds_bucket{le=\"+Inf\"} 1
# HELP odd Something.
# TYPE odd untyped
odd 2
# HELP up Up.
# TYPE up gauge
up 1
"
        );
    }

    #[test]
    fn each_format_says_what_it_is() {
        let metrics = Metrics::new();
        metrics.reconciled(RESULT_ERROR, Duration::from_millis(1));
        let open = metrics.encode_as(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE signet_reconciles counter\n"),
            "{open}"
        );
        let text = metrics.encode_as(Format::Text004);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains(
                "# HELP signet_reconciles_total Reconciles of SignaturePolicies by result.\n\
                 # TYPE signet_reconciles_total counter\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("signet_reconciles_total{result=\"error\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            Format::Text004.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(
            Format::OpenMetrics
                .content_type()
                .starts_with("application/openmetrics-text; version=1.0.0")
        );
    }
}
