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
            ..DeliveryCounts::default()
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
                // Nulled, so that an earlier failure's reason does not survive the merge.
                "reason": null, "message": null,
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
                "reason": null, "message": null,
            },
            "lastSuccessfulRunAt": "2026-09-21T14:13:25Z",
        }}})
    );

    // The wire names are literals: a renamed or re-cased variant must fail here.
    for (outcome, wire) in [
        (RunOutcome::Failed, "Failed"),
        (RunOutcome::ConfigError, "ConfigError"),
    ] {
        let (result, seen) = write(&timeouts(outcome), vec![Answer::Status(StatusCode::OK)]).await;
        result.unwrap();
        let section = seen[0].body["status"]["timeouts"].as_object().unwrap();
        assert!(
            !section.contains_key("lastSuccessfulRunAt"),
            "{outcome:?}: {section:?}"
        );
        assert_eq!(section["lastRun"]["outcome"], wire);
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

mod publish;
