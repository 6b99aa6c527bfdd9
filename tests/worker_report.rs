//! Publishing a finished run: the status merge patch against a scripted API (tower-test), the
//! termination message in a temporary file, and the Pushgateway push against a real loopback
//! HTTP server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::http::StatusCode as AxumStatus;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use serde_json::{Value, json};
use signet::crd::RunOutcome;
use signet::notify::RetryPolicy;
use signet::worker::report::{
    self, MAX_TERMINATION_MESSAGE, PolicyRef, PublishReport, Published, ReportArgs, ReportError,
    ReportTarget, SectionRun,
};
use signet::worker::{DeliveryCounts, RunSummary, TimeoutSummary};
use tower_test::mock;

const STATUS_PATH: &str =
    "/apis/signet.dev/v1alpha1/namespaces/enrollment/signaturepolicies/agreements/status";

/// Retries without the waits.
const FAST: RetryPolicy = RetryPolicy {
    attempts: 4,
    base: Duration::from_millis(1),
    cap: Duration::from_millis(2),
    max_retry_after: Duration::from_millis(2),
};

fn at(second: i64) -> Time {
    Time(jiff::Timestamp::from_second(second).unwrap())
}

fn reminders(outcome: RunOutcome) -> SectionRun {
    let summary = RunSummary {
        due: 12,
        held: 2,
        deliveries: DeliveryCounts {
            sent: 9,
            failed: 1,
            possible_duplicates: 1,
            retrying: 0,
            recovered: 1,
            skipped: 0,
        },
        duration_ms: 42_000,
    };
    SectionRun::reminders(
        "agreements-reminders-29000000".into(),
        at(1_790_000_000),
        at(1_790_000_042),
        outcome,
        &summary,
    )
}

fn timeouts(outcome: RunOutcome) -> SectionRun {
    let summary = TimeoutSummary {
        timed_out: 7,
        alerts: DeliveryCounts {
            sent: 6,
            failed: 1,
            ..DeliveryCounts::default()
        },
        duration_ms: 5_000,
    };
    SectionRun::timeouts(
        "agreements-timeouts-29000000".into(),
        at(1_790_000_000),
        at(1_790_000_005),
        outcome,
        &summary,
    )
}

/// One request the scripted API server saw.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    content_type: String,
    body: Value,
}

/// What the scripted API server answers, in order.
enum Answer {
    Status(StatusCode),
    ConnectionError,
}

/// A client whose API server answers `answers` in order and records each request; any request
/// beyond the script fails the test.
fn scripted(answers: Vec<Answer>) -> (kube::Client, tokio::task::JoinHandle<Vec<Seen>>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let api = tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in answers {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .expect("the scripted request came")
                    .expect("client alive");
            let content_type = request
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            seen.push(Seen {
                method,
                path,
                content_type,
                body: serde_json::from_slice(&bytes).unwrap(),
            });
            match answer {
                Answer::Status(status) if status.is_success() => send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(b"{}".to_vec()))
                        .unwrap(),
                ),
                Answer::Status(status) => {
                    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": "injected", "reason": "Injected", "code": status.as_u16()});
                    send.send_response(
                        Response::builder()
                            .status(status)
                            .body(Body::from(serde_json::to_vec(&body).unwrap()))
                            .unwrap(),
                    )
                }
                Answer::ConnectionError => send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "injected",
                )),
            }
        }
        let extra = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
        assert!(
            !matches!(extra, Ok(Some(_))),
            "an unscripted request was sent"
        );
        seen
    });
    (client, api)
}

async fn write(run: &SectionRun, answers: Vec<Answer>) -> (Result<(), ReportError>, Vec<Seen>) {
    let (client, api) = scripted(answers);
    let result = report::write_status(&client, "enrollment", "agreements", run, &FAST).await;
    (
        result,
        api.await.expect("the scripted API saw what it expected"),
    )
}

fn is_status_patch(seen: &Seen) {
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.path, STATUS_PATH);
    assert_eq!(seen.content_type, "application/merge-patch+json");
}

#[tokio::test]
async fn a_successful_reminders_run_writes_last_run_and_last_success() {
    let (result, seen) = write(
        &reminders(RunOutcome::CompletedWithFailures),
        vec![Answer::Status(StatusCode::OK)],
    )
    .await;
    result.unwrap();
    is_status_patch(&seen[0]);
    assert_eq!(
        seen[0].body,
        json!({"status": {"reminders": {
            "lastRun": {
                "job": "agreements-reminders-29000000",
                "startedAt": "2026-09-21T14:13:20Z",
                "finishedAt": "2026-09-21T14:14:02Z",
                "outcome": "CompletedWithFailures",
                "due": 12, "sent": 9, "held": 2, "failed": 1, "possibleDuplicates": 1,
            },
            "lastSuccessfulRunAt": "2026-09-21T14:14:02Z",
        }}}),
        "only the worker's fields: no conditions, observedGeneration, cronJob or lastScheduleTime"
    );
}

#[tokio::test]
async fn a_failed_reminders_run_does_not_move_last_success() {
    let (result, seen) = write(
        &reminders(RunOutcome::Failed),
        vec![Answer::Status(StatusCode::OK)],
    )
    .await;
    result.unwrap();
    is_status_patch(&seen[0]);
    let section = &seen[0].body["status"]["reminders"];
    assert_eq!(section["lastRun"]["outcome"], "Failed");
    assert_eq!(
        section.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["lastRun"]
    );
    assert_eq!(
        seen[0].body["status"].as_object().unwrap().len(),
        1,
        "{}",
        seen[0].body
    );
}

#[tokio::test]
async fn a_timeouts_run_writes_its_own_section() {
    let (result, seen) = write(
        &timeouts(RunOutcome::Succeeded),
        vec![Answer::Status(StatusCode::OK)],
    )
    .await;
    result.unwrap();
    is_status_patch(&seen[0]);
    assert_eq!(
        seen[0].body,
        json!({"status": {"timeouts": {
            "lastRun": {
                "job": "agreements-timeouts-29000000",
                "startedAt": "2026-09-21T14:13:20Z",
                "finishedAt": "2026-09-21T14:13:25Z",
                "outcome": "Succeeded",
                "timedOut": 7, "alerted": 6, "failed": 1,
            },
            "lastSuccessfulRunAt": "2026-09-21T14:13:25Z",
        }}})
    );

    for outcome in [RunOutcome::Failed, RunOutcome::ConfigError] {
        let (result, seen) = write(&timeouts(outcome), vec![Answer::Status(StatusCode::OK)]).await;
        result.unwrap();
        let section = seen[0].body["status"]["timeouts"].as_object().unwrap();
        assert!(
            !section.contains_key("lastSuccessfulRunAt"),
            "{outcome:?}: {section:?}"
        );
        assert_eq!(section["lastRun"]["outcome"], json!(outcome));
    }
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let (result, seen) = write(
        &reminders(RunOutcome::Succeeded),
        vec![
            Answer::Status(StatusCode::INTERNAL_SERVER_ERROR),
            Answer::ConnectionError,
            Answer::Status(StatusCode::TOO_MANY_REQUESTS),
            Answer::Status(StatusCode::OK),
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(seen.len(), 4);
    for request in &seen {
        is_status_patch(request);
        assert_eq!(request.body, seen[0].body, "every try sends the same patch");
    }
}

#[tokio::test]
async fn retries_end_after_the_last_attempt() {
    let (result, seen) = write(
        &reminders(RunOutcome::Succeeded),
        (0..4)
            .map(|_| Answer::Status(StatusCode::SERVICE_UNAVAILABLE))
            .collect(),
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.reason(), "ServerError");
    assert!(err.is_transient());
    assert_eq!(seen.len(), 4);
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    for (status, reason) in [
        (StatusCode::FORBIDDEN, "Forbidden"),
        (StatusCode::NOT_FOUND, "NotFound"),
        (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
    ] {
        let (result, seen) = write(
            &reminders(RunOutcome::Succeeded),
            vec![Answer::Status(status)],
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.reason(), reason);
        assert!(!err.is_transient(), "{status}");
        assert_eq!(err.is_not_found(), status == StatusCode::NOT_FOUND);
        assert_eq!(seen.len(), 1, "{status} was retried");
    }
}

#[test]
fn a_long_summary_becomes_a_reduced_valid_json_message() {
    let summary = json!({
        "outcome": "Failed",
        "reason": "DatabaseUnavailable",
        "error": "é".repeat(5000),
        "due": 3,
        "details": {"rows": vec!["x"; 2000]},
    });
    let message = report::termination_message(&summary);
    assert!(
        message.len() <= MAX_TERMINATION_MESSAGE,
        "{}",
        message.len()
    );
    assert!(message.ends_with('\n'));
    let parsed: Value = serde_json::from_str(message.trim_end()).unwrap();
    assert_eq!(parsed["outcome"], "Failed");
    assert_eq!(parsed["reason"], "DatabaseUnavailable");
    assert_eq!(parsed["due"], 3);
    assert_eq!(parsed["truncated"], true);
    assert!(parsed.get("details").is_none());
    let error = parsed["error"].as_str().unwrap();
    assert!(error.ends_with('…') && error.starts_with("éé"), "{error}");

    // So many fields that even shortened strings do not fit: the outcome is what remains.
    let mut huge = serde_json::Map::new();
    huge.insert("outcome".into(), json!("Succeeded"));
    for i in 0..2000 {
        huge.insert(format!("field{i}"), json!(format!("value {i}")));
    }
    let message = report::termination_message(&Value::Object(huge));
    assert_eq!(
        serde_json::from_str::<Value>(&message).unwrap(),
        json!({"outcome": "Succeeded", "truncated": true})
    );
}

#[test]
fn the_termination_message_replaces_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("termination-log");
    std::fs::write(&path, "old content that is longer than the new one").unwrap();
    report::write_termination_message(&path, &json!({"outcome": "Succeeded"})).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"outcome\":\"Succeeded\"}\n"
    );
    let err = report::write_termination_message(
        &dir.path().join("missing/dir/file"),
        &json!({"outcome": "Succeeded"}),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "TerminationMessageFailed");
}

/// One request the loopback Pushgateway saw.
#[derive(Clone, Debug)]
struct Pushed {
    method: String,
    path: String,
    content_type: String,
    body: String,
}

/// A loopback "Pushgateway" answering `status`; returns its base URL and what it saw.
async fn pushgateway(status: u16) -> (reqwest::Url, Arc<Mutex<Vec<Pushed>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: AxumRequest| {
        let record = record.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            record.lock().unwrap().push(Pushed {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                body: String::from_utf8(bytes.to_vec()).unwrap(),
            });
            AxumStatus::from_u16(status).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/").parse().unwrap(), seen)
}

/// Samples of a Prometheus text exposition: `name{labels}` to value. Panics on a line that is
/// not a comment, a `# HELP`/`# TYPE` line or a sample.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            if let Some(kind) = comment.strip_prefix("TYPE ") {
                assert!(kind.ends_with(" gauge"), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            series
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic()),
            "{line}"
        );
        samples.insert(series.to_owned(), value.parse().unwrap());
    }
    samples
}

fn target(cluster: bool, pushgateway: Option<reqwest::Url>, dir: &Path) -> ReportTarget {
    let policy: PolicyRef = "enrollment/agreements".parse().unwrap();
    ReportTarget {
        cluster_policy: cluster.then(|| policy.clone()),
        metrics_policy: policy,
        job: "agreements-reminders-29000000".into(),
        pushgateway_url: pushgateway,
        termination_message_path: dir.join("termination-log"),
    }
}

fn no_cluster() -> Result<kube::Client, ReportError> {
    panic!("no API client may be made outside a cluster")
}

#[tokio::test]
async fn in_a_cluster_everything_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let (url, pushed) = pushgateway(200).await;
    let target = target(true, Some(url), dir.path());
    let run = reminders(RunOutcome::Succeeded);
    let summary = json!({"outcome": "Succeeded", "due": 12, "sent": 9});
    let (client, api) = scripted(vec![Answer::Status(StatusCode::OK)]);

    let report = report::publish_with(&target, &run, &summary, || Ok(client), &FAST).await;

    assert_eq!(
        report,
        PublishReport {
            status: Published::Done,
            termination_message: Published::Done,
            pushgateway: Published::Done,
        }
    );
    let seen = api.await.unwrap();
    is_status_patch(&seen[0]);
    assert_eq!(
        std::fs::read_to_string(&target.termination_message_path).unwrap(),
        format!("{summary}\n")
    );

    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].method, "POST");
    assert_eq!(
        pushed[0].path,
        "/metrics/job/signet/namespace/enrollment/policy/agreements/section/reminders"
    );
    assert!(
        pushed[0]
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        pushed[0].content_type
    );
    let samples = samples(&pushed[0].body);
    let expected: BTreeMap<String, f64> = [
        ("signet_worker_run_duration_seconds", 42.0),
        ("signet_worker_last_run_timestamp_seconds", 1_790_000_042.0),
        (
            "signet_worker_last_success_timestamp_seconds",
            1_790_000_042.0,
        ),
        ("signet_worker_run_succeeded", 1.0),
        ("signet_worker_run_outcome{outcome=\"Succeeded\"}", 1.0),
        ("signet_worker_notifications{result=\"due\"}", 12.0),
        ("signet_worker_notifications{result=\"sent\"}", 9.0),
        ("signet_worker_notifications{result=\"held\"}", 2.0),
        ("signet_worker_notifications{result=\"failed\"}", 1.0),
        (
            "signet_worker_notifications{result=\"possible_duplicates\"}",
            1.0,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(samples, expected, "{}", pushed[0].body);
}

#[tokio::test]
async fn a_failed_run_pushes_no_last_success() {
    let dir = tempfile::tempdir().unwrap();
    let (url, pushed) = pushgateway(202).await;
    let target = target(false, Some(url), dir.path());
    let report = report::publish_with(
        &target,
        &timeouts(RunOutcome::Failed),
        &json!({}),
        no_cluster,
        &FAST,
    )
    .await;
    assert_eq!(report.pushgateway, Published::Done);
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(
        pushed[0].path,
        "/metrics/job/signet/namespace/enrollment/policy/agreements/section/timeouts"
    );
    let samples = samples(&pushed[0].body);
    assert!(!samples.contains_key("signet_worker_last_success_timestamp_seconds"));
    assert_eq!(samples["signet_worker_run_succeeded"], 0.0);
    assert_eq!(
        samples["signet_worker_run_outcome{outcome=\"Failed\"}"],
        1.0
    );
    assert_eq!(samples["signet_worker_timeouts{result=\"timed_out\"}"], 7.0);
    assert_eq!(samples["signet_worker_timeouts{result=\"alerted\"}"], 6.0);
    assert_eq!(samples["signet_worker_timeouts{result=\"failed\"}"], 1.0);
    assert_eq!(samples["signet_worker_run_duration_seconds"], 5.0);
}

#[tokio::test]
async fn outside_a_cluster_without_a_pushgateway_nothing_happens() {
    let dir = tempfile::tempdir().unwrap();
    let env = |_: &str| None;
    let args = ReportArgs {
        pushgateway_url: None,
        termination_message_path: dir.path().join("termination-log"),
    };
    let target = ReportTarget::from_env(&args, &env);
    let report = report::publish_with(
        &target,
        &reminders(RunOutcome::Succeeded),
        &json!({"outcome": "Succeeded"}),
        no_cluster,
        &FAST,
    )
    .await;
    assert_eq!(
        report,
        PublishReport {
            status: Published::Skipped,
            termination_message: Published::Skipped,
            pushgateway: Published::Skipped,
        }
    );
    assert!(!args.termination_message_path.exists());

    // The same, through the entry point the commands call.
    let report = report::publish(
        &target,
        &reminders(RunOutcome::Succeeded),
        &json!({"outcome": "Succeeded"}),
    )
    .await;
    assert_eq!(report.status, Published::Skipped);
    assert!(!args.termination_message_path.exists());
}

#[tokio::test]
async fn outside_a_cluster_metrics_are_grouped_as_local() {
    let dir = tempfile::tempdir().unwrap();
    let (url, pushed) = pushgateway(200).await;
    let env = |_: &str| None;
    let args = ReportArgs {
        pushgateway_url: Some(url.to_string()),
        termination_message_path: dir.path().join("termination-log"),
    };
    let target = ReportTarget::from_env(&args, &env);
    let report = report::publish_with(
        &target,
        &reminders(RunOutcome::Succeeded),
        &json!({}),
        no_cluster,
        &FAST,
    )
    .await;
    assert_eq!(report.status, Published::Skipped);
    assert_eq!(report.pushgateway, Published::Done);
    assert_eq!(
        pushed.lock().unwrap()[0].path,
        "/metrics/job/signet/namespace/local/policy/local/section/reminders"
    );
}

#[tokio::test]
async fn failures_are_reported_not_raised() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = pushgateway(500).await;
    let target = target(true, Some(url), dir.path());
    let (client, api) = scripted(vec![Answer::Status(StatusCode::FORBIDDEN)]);
    let report = report::publish_with(
        &target,
        &reminders(RunOutcome::Succeeded),
        &json!({"outcome": "Succeeded"}),
        || Ok(client),
        &FAST,
    )
    .await;
    assert_eq!(
        report,
        PublishReport {
            status: Published::Failed("Forbidden"),
            termination_message: Published::Done,
            pushgateway: Published::Failed("PushRejected"),
        }
    );
    assert_eq!(api.await.unwrap().len(), 1);

    // No API client (no service account token) and nothing listening at the Pushgateway.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", listener.local_addr().unwrap())
    };
    let target = ReportTarget {
        pushgateway_url: Some(closed.parse().unwrap()),
        ..target
    };
    let report = report::publish_with(
        &target,
        &reminders(RunOutcome::Succeeded),
        &json!({}),
        || Err(ReportError::Client("no service account token".into())),
        &FAST,
    )
    .await;
    assert_eq!(
        report,
        PublishReport {
            status: Published::Failed("ClientError"),
            termination_message: Published::Done,
            pushgateway: Published::Failed("PushgatewayUnreachable"),
        }
    );
}

#[test]
fn report_args_flatten_into_a_command() {
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        report: ReportArgs,
    }
    // Without the flags (SIGNET_PUSHGATEWAY_URL unset or empty in the test's environment).
    let defaults = Command::try_parse_from(["signet"]).unwrap().report;
    let no_env = |_: &str| None;
    assert_eq!(
        ReportTarget::from_env(&defaults, &no_env).pushgateway_url,
        None
    );
    assert_eq!(
        defaults.termination_message_path,
        Path::new("/dev/termination-log")
    );
    let given = Command::try_parse_from([
        "signet",
        "--pushgateway-url",
        "http://pushgateway.monitoring:9091",
        "--termination-message-path",
        "/tmp/message",
    ])
    .unwrap()
    .report;
    assert_eq!(given.termination_message_path, Path::new("/tmp/message"));
    let url = |value: &str| {
        let args = ReportArgs {
            pushgateway_url: Some(value.to_owned()),
            ..given.clone()
        };
        ReportTarget::from_env(&args, &no_env)
            .pushgateway_url
            .map(String::from)
    };
    assert_eq!(
        url("http://pushgateway.monitoring:9091").as_deref(),
        Some("http://pushgateway.monitoring:9091/")
    );
    // An empty variable (a chart's unset value) and a bad URL mean no push, not a failed run.
    assert_eq!(url(""), None);
    assert_eq!(url("not a url"), None);
    assert_eq!(url("ftp://pushgateway:9091"), None);
}
