//! The two workers, run as the real binary through every channel: no canary in their logs,
//! summaries, log table, termination message or push.

use super::*;

/// `send-reminders` through every channel, against PostgreSQL reached with a canary password,
/// with the sink accepting, failing (500, 400, 429) and unreachable; the logs, summaries and the
/// log table's errors carry no canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reminders_never_shows_a_secret() {
    let Some((db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let sink = HttpServer::start().await;
    let smtp = SmtpServer::start().await;
    let db_url = with_canary_password(&db.url);
    let answer: Arc<Mutex<Option<Reply>>> = Arc::default();
    let current = answer.clone();
    sink.rule(move |_| current.lock().unwrap().clone());
    for scenario in [
        Sink::Accepts,
        Sink::Answers(500),
        Sink::Answers(400),
        Sink::RateLimits,
        Sink::Refuses,
    ] {
        let base = match scenario {
            Sink::Refuses => format!("http://127.0.0.1:{}", closed_port()),
            _ => format!("http://{}", sink.addr),
        };
        let reply = match scenario {
            Sink::Accepts => None,
            Sink::Answers(status) => {
                Some(Reply::status(status).body("{\"errors\": [{\"message\": \"no\"}]}"))
            }
            Sink::RateLimits => Some(Reply::status(429).header("Retry-After", "1")),
            Sink::Refuses => None,
        };
        *answer.lock().unwrap() = reply;
        let mut env = secret_env(&db_url, &slack_url(&base), &hook_url(&base));
        env.push((
            "SIGNET_POLICY".into(),
            spec(&format!("{base}/v3/mail/send"), smtp.port),
        ));
        let what = format!("send-reminders, sink {scenario:?}");
        let seed = async || {
            testing::seed(
                &store,
                &[Seed::pending(25.0 * HOUR), Seed::pending(26.0 * HOUR)],
            )
            .await
            .unwrap();
        };
        for (stdout, _, code) in
            run_worker(&what, "send-reminders", &env, &[], (BOTH, true), seed).await
        {
            let line = summary(&stdout);
            // SMTP has no STARTTLS here, so that channel rejects every run (with the HTTP
            // channels when nothing listens): the Job fails and says which.
            assert_eq!(code, Some(1), "{what}: {stdout}");
            assert_eq!(line["reason"], "ChannelRejected", "{what}: {line}");
            let rejected = rejected_channels(&line);
            match scenario {
                Sink::Refuses => assert_eq!(rejected, ["hook", "mail", "ops", "smtp"], "{what}"),
                _ => assert_eq!(rejected, ["smtp"], "{what}: {line}"),
            }
            // Two new workflows, four channels; earlier scenarios' retries may come back too.
            assert!(line["due"].as_u64().unwrap() >= 8, "{what}: {line}");
            let sent = line["sent"].as_u64().unwrap();
            match scenario {
                // SendGrid, webhook and Slack accept; SMTP has no STARTTLS here.
                Sink::Accepts => assert_eq!(sent, 6, "{what}: {line}"),
                _ => assert_eq!(sent, 0, "{what}: {line}"),
            }
        }
        if matches!(scenario, Sink::Answers(_) | Sink::RateLimits) {
            assert!(sink.requests().len() > 1, "{what}: the sink was not asked");
        }
        let errors = check_log_table(&what, &store).await;
        assert!(errors > 0, "{what}: no errors recorded");
    }
    // The sink saw the HMAC key only as a signature, and no request carried the database password.
    for request in sink.requests() {
        let text = format!(
            "{:?} {}",
            request.headers,
            String::from_utf8_lossy(&request.body)
        );
        assert!(
            !text.contains(HMAC_KEY) && !text.contains(DB_PASSWORD),
            "{text}"
        );
    }
    store.close().await;
}

/// `check-timeouts` with failing deliveries, "in a cluster" whose API server is unreachable (so
/// the status write fails and says why), with a termination message file and a Pushgateway: the
/// logs, the summary, the termination message and the push carry no canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_timeouts_never_shows_a_secret_in_status_termination_message_or_push() {
    let Some((db, store)) = TestDatabase::new(Backend::Postgres).await else {
        return;
    };
    let sink = HttpServer::start().await;
    sink.rule(|r| r.path.contains("mail").then(|| Reply::status(500)));
    let pushgateway = HttpServer::start().await;
    let smtp = SmtpServer::start().await;
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let base = format!("http://{}", sink.addr);
    let dir = tempdir();
    let message = dir.join("termination-log");
    let mut env = secret_env(
        &with_canary_password(&db.url),
        &slack_url(&refused),
        &hook_url(&base),
    );
    env.push((
        "SIGNET_POLICY".into(),
        spec(&format!("{base}/v3/mail/send"), smtp.port),
    ));
    let cluster = [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT", closed_port().to_string()),
        ("SIGNET_POLICY_REF", "enrollment/agreements".to_owned()),
        ("SIGNET_JOB_NAME", "agreements-timeouts-1".to_owned()),
        (
            "SIGNET_TERMINATION_MESSAGE_PATH",
            message.display().to_string(),
        ),
        (
            "SIGNET_PUSHGATEWAY_URL",
            format!("http://{}/", pushgateway.addr),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let seed = async || {
        let _ = std::fs::remove_file(&message);
        testing::seed(&store, &[Seed::pending(15.0 * 24.0 * HOUR)])
            .await
            .unwrap();
    };
    let what = "check-timeouts in a cluster";
    let runs = run_worker(what, "check-timeouts", &env, &cluster, (BOTH, true), seed).await;
    for (stdout, stderr, code) in &runs {
        // Slack is unreachable and SMTP has no STARTTLS: both reject the run, which fails.
        assert_eq!(*code, Some(1), "{what}: {stdout}");
        let line = summary(stdout);
        let rejected = rejected_channels(&line);
        assert_eq!(rejected, ["ops", "smtp"], "{what}: {line}");
        assert_eq!(
            (&line["timedOut"], &line["sent"]),
            (&1.into(), &1.into()),
            "{what}: only the webhook accepts: {line}"
        );
        assert!(
            stderr.contains("cannot write the run's status"),
            "{what}: the status write did not fail visibly:\n{stderr}"
        );
    }
    // The last run's termination message: its summary line, written despite the status failure.
    let written = std::fs::read_to_string(&message).expect("a termination message");
    assert_no_canary("the termination message", &written);
    assert!(written.contains("\"timedOut\":1"), "{written}");
    let pushes = pushgateway.requests();
    assert_eq!(pushes.len(), 2, "one push per run");
    for push in pushes {
        let text = format!(
            "{} {:?} {}",
            push.path,
            push.headers,
            String::from_utf8_lossy(&push.body)
        );
        assert_no_canary("the Pushgateway push", &text);
        assert!(push.path.contains("/policy/agreements/"), "{}", push.path);
    }
    assert!(check_log_table(what, &store).await >= 4);
    store.close().await;
}

/// The channels a summary line says rejected the run.
fn rejected_channels(line: &serde_json::Value) -> Vec<&str> {
    line["rejectedChannels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["channel"].as_str().unwrap())
        .collect()
}
