//! The controller's `/metrics` as scrapers see it: without an `Accept` that asks for OpenMetrics
//! it serves the Prometheus text format 0.0.4, which the real `promtool check metrics` (Debian
//! package `prometheus`) accepts; Prometheus's own `Accept` gets OpenMetrics.
//!
//! The gauge the SignetDeliveriesFailing alert reads looks for the very reason the worker writes.
//!
//! promtool is `SIGNET_PROMTOOL`, else `promtool` on `PATH`. Without it the tests fail, unless
//! `SIGNET_TEST_SKIP_PROMTOOL=1` asks to skip them, which CI (`CI=true`) never honours.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use signet::controller::metrics::{
    CHANNEL_REJECTED, ERROR_REASONS, Metrics, RESULT_SUCCESS, SectionHealth,
};
use signet::controller::server::{Health, router};
use signet::policy::Section;

/// What Prometheus 2.x and 3.x send when scraping.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The promtool binary, or `None` (with the reason printed) where the tests were asked to skip.
fn promtool() -> Option<PathBuf> {
    let found = match std::env::var_os("SIGNET_PROMTOOL") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|p| p.is_file())
        }),
    };
    if found.is_some() {
        return found;
    }
    let reason =
        "no promtool (install the Debian package `prometheus`, or point SIGNET_PROMTOOL at one)";
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("SIGNET_TEST_SKIP_PROMTOOL").is_ok_and(|v| v == "1");
    if skip && !ci {
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    panic!("{reason}; outside CI, SIGNET_TEST_SKIP_PROMTOOL=1 skips these tests");
}

/// `promtool check metrics` with `text` on its standard input.
fn check_metrics(promtool: &PathBuf, text: &str) -> Output {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Metrics with a series in every family: a reconciled and a failed policy, both sections.
fn populated() -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    metrics.reconciled(RESULT_SUCCESS, Duration::from_millis(4));
    metrics.failed(ERROR_REASONS[1]);
    metrics.refused(ERROR_REASONS[1], "AdmissionDenied");
    metrics.policy_ready("enrollment/agreements", Some(true));
    metrics.policy_ready("hr/offers", Some(false));
    let health = |section, failed| SectionHealth {
        section,
        stale: false,
        last_run_failed: failed,
        channel_rejected: failed,
    };
    metrics.policy_sections(
        "enrollment",
        "agreements",
        &[
            health(Section::Reminders, true),
            health(Section::Timeouts, false),
        ],
    );
    metrics.set_leader(true);
    metrics
}

/// The `Content-Type` and body of `GET /metrics` from the controller's router, with `accept`.
async fn scrape(metrics: Arc<Metrics>, accept: Option<&str>) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let health = Health {
        ready: Arc::new(AtomicBool::new(true)),
        metrics,
    };
    let server = tokio::spawn(axum::serve(listener, router(health)).into_future());
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    server.abort();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .expect("a Content-Type");
    (content_type, body.to_owned())
}

#[tokio::test]
async fn the_text_format_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else { return };
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let (content_type, body) = scrape(populated(), accept).await;
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "Accept: {accept:?}"
        );
        for family in [
            "signet_reconciles_total",
            "signet_reconcile_errors_total",
            "signet_reconcile_refusals_total",
            "signet_policy_ready",
            "signet_policy_channel_rejected",
            "signet_policy_cronjob_info",
        ] {
            assert!(
                body.contains(&format!("\n# TYPE {family} ")),
                "{family} in\n{body}"
            );
        }
        let checked = check_metrics(&promtool, &body);
        assert!(
            checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
            "promtool check metrics: {}{}\non\n{body}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    // Before any policy is seen, too.
    let (_, body) = scrape(Arc::new(Metrics::new()), None).await;
    let checked = check_metrics(&promtool, &body);
    assert!(
        checked.status.success(),
        "{}{}\non\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[tokio::test]
async fn prometheus_gets_openmetrics_which_promtool_check_metrics_would_refuse() {
    let Some(promtool) = promtool() else { return };
    let (content_type, body) = scrape(populated(), Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE signet_reconciles counter\nsignet_reconciles_total{"),
        "{body}"
    );
    // The check above has teeth: the OpenMetrics text, served as 0.0.4, is what it refuses.
    let checked = check_metrics(&promtool, &body);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        !checked.status.success() && said.contains("no help text"),
        "promtool accepted OpenMetrics as 0.0.4: {said}"
    );
}

/// The controller may not import the worker (tests/module_graph.rs), so it spells the reason
/// itself; this keeps the two spellings one.
#[test]
fn the_controller_looks_for_the_reason_the_worker_writes() {
    assert_eq!(CHANNEL_REJECTED, signet::worker::CHANNEL_REJECTED);
}
