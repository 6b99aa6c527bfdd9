//! Publishing a whole report: status, termination message and the Pushgateway (a real loopback
//! HTTP server), in and out of a cluster, and failures reported rather than raised.

use super::*;

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
    // The pod's termination message says the status write failed, and why, for the controller.
    let written = std::fs::read_to_string(&target.termination_message_path).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&written).unwrap(),
        json!({"outcome": "Succeeded", "statusWriteFailed": "Forbidden"})
    );

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
