//! The run's metrics for a Prometheus Pushgateway: encoded with prometheus-client's text encoder
//! and POSTed to the group `job/signet/namespace/<ns>/policy/<name>/section/<section>`.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::termination::truncate;
use super::{PolicyRef, ReportError, SectionRun};
use crate::notify::HttpTimeouts;

/// Timeouts of the Pushgateway request.
pub const PUSH_TIMEOUTS: HttpTimeouts = HttpTimeouts {
    connect: Duration::from_secs(2),
    total: Duration::from_secs(5),
};

/// The run's metrics in the Prometheus text format:
/// `signet_worker_run_duration_seconds`, `signet_worker_last_run_timestamp_seconds`,
/// `signet_worker_last_success_timestamp_seconds` (successful runs only),
/// `signet_worker_run_succeeded` (1 or 0), `signet_worker_run_outcome{outcome}` (1), and the
/// counts: `signet_worker_notifications{result}` (reminders: due, sent, held, failed,
/// possible_duplicates) or `signet_worker_timeouts{result}` (timed_out, alerted, failed).
pub fn encode_metrics(run: &SectionRun) -> String {
    let seconds = |t: &Time| t.0.as_millisecond() as f64 / 1000.0;
    let finished = seconds(run.finished_at());
    let mut registry = Registry::default();
    let gauge = |value: f64| {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(value);
        gauge
    };
    registry.register(
        "signet_worker_run_duration_seconds",
        "Wall time of the worker's last run",
        gauge((finished - seconds(run.started_at())).max(0.0)),
    );
    registry.register(
        "signet_worker_last_run_timestamp_seconds",
        "When the worker's last run finished (Unix time)",
        gauge(finished),
    );
    if run.is_successful() {
        registry.register(
            "signet_worker_last_success_timestamp_seconds",
            "When the worker's last successful run finished (Unix time)",
            gauge(finished),
        );
    }
    let succeeded = Gauge::<i64>::default();
    succeeded.set(i64::from(run.is_successful()));
    registry.register(
        "signet_worker_run_succeeded",
        "1 if the last run completed (Succeeded or CompletedWithFailures), else 0",
        succeeded,
    );
    let outcome = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    outcome
        .get_or_create(&vec![("outcome", run.outcome().as_str())])
        .set(1);
    registry.register(
        "signet_worker_run_outcome",
        "The outcome of the last run (the series with value 1)",
        outcome,
    );
    let counts = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    for (result, value) in run.counts() {
        counts.get_or_create(&vec![("result", result)]).set(value);
    }
    let (name, help) = match run {
        SectionRun::Reminders(_) => (
            "signet_worker_notifications",
            "Notifications of the last reminders run, by result",
        ),
        SectionRun::Timeouts(_) => (
            "signet_worker_timeouts",
            "Workflows timed out and alerts of the last timeouts run, by result",
        ),
    };
    registry.register(name, help, counts);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    // OpenMetrics' end marker is not part of the Prometheus text format the Pushgateway takes.
    text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned()
}

/// The Pushgateway grouping URL of a run:
/// `{base}/metrics/job/signet/namespace/{ns}/policy/{name}/section/{section}`, each segment
/// percent-encoded (the values are Kubernetes names, which contain no `/`).
pub fn push_url(base: &reqwest::Url, policy: &PolicyRef, section: &str) -> reqwest::Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend([
            "metrics",
            "job",
            "signet",
            "namespace",
            &policy.namespace,
            "policy",
            &policy.name,
            "section",
            section,
        ]);
    }
    url
}

/// POSTs the run's metrics to the Pushgateway under [`push_url`]. POST, not PUT: PUT would
/// replace the whole group, so a failed run (which has no `last_success_timestamp`) would erase
/// the last success; POST replaces only the metrics it sends, and the last success survives.
pub async fn push_metrics(
    http: &reqwest::Client,
    base: &reqwest::Url,
    policy: &PolicyRef,
    run: &SectionRun,
) -> Result<(), ReportError> {
    let response = http
        .post(push_url(base, policy, run.section()))
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(encode_metrics(run))
        .send()
        .await
        .map_err(|e| ReportError::PushUnreachable(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(ReportError::PushRejected {
        status: status.as_u16(),
        body: truncate(body.trim(), 512),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_push_url_names_the_group_and_escapes_its_segments() {
        let base: reqwest::Url = "http://pushgateway:9091/".parse().unwrap();
        let policy: PolicyRef = "enrollment/agreements".parse().unwrap();
        assert_eq!(
            push_url(&base, &policy, "reminders").as_str(),
            "http://pushgateway:9091/metrics/job/signet/namespace/enrollment/policy/agreements/section/reminders"
        );
        let prefixed: reqwest::Url = "http://gw/prefix?x=1".parse().unwrap();
        let odd = PolicyRef {
            namespace: "a b".into(),
            name: "c/d".into(),
        };
        assert_eq!(
            push_url(&prefixed, &odd, "timeouts").as_str(),
            "http://gw/prefix/metrics/job/signet/namespace/a%20b/policy/c%2Fd/section/timeouts"
        );
    }
}
